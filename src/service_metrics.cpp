#include "service_metrics.hpp"

#include "json.hpp"
#include "metrics.hpp"

namespace distflow {
namespace {

constexpr MetricType kCounter = MetricType::counter;
constexpr MetricType kGauge = MetricType::gauge;

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

void build_info(MetricsPage& page) {
  page.add("distflow_build_info", kGauge, "The distflow version serving these metrics.",
           std::uint64_t{1}, {{"version", DISTFLOW_VERSION}});
}

}  // namespace

void PmdConnectionCounts::count_close(std::string_view reason) {
  std::size_t kind = 3;
  if (reason.starts_with("slow reader")) {
    kind = 0;
  } else if (reason.starts_with("stalled")) {
    kind = 1;
  } else if (reason.starts_with("nothing valid")) {
    kind = 2;
  }
  ++closed[kind];
}

std::string pmd_metrics_page(const Registry& registry, const PmdConnectionCounts& connections,
                             std::chrono::steady_clock::duration uptime) {
  MetricsPage page;
  build_info(page);
  page.add("distflow_pmd_uptime_seconds", kGauge, "Seconds since the daemon started.",
           seconds(uptime));
  page.add("distflow_pmd_nodes", kGauge, "Nodes registered now.", std::uint64_t{registry.size()});
  page.add("distflow_pmd_watchers", kGauge, "Connections subscribed to peer events now.",
           std::uint64_t{registry.watchers().size()});
  page.add("distflow_pmd_connections", kGauge, "Client connections open now.", connections.open);
  page.add("distflow_pmd_connections_accepted_total", kCounter, "Client connections accepted.",
           connections.accepted);
  page.add("distflow_pmd_connections_refused_total", kCounter,
           "Connections closed on accept because --max-connections were open.",
           connections.refused);
  for (std::size_t i = 0; i < kPmdCloseReasons.size(); ++i) {
    page.add("distflow_pmd_connections_closed_total", kCounter,
             "Client connections closed, by reason: slow_reader (write queue full), stalled "
             "(no progress), idle (nothing valid after accept), other (peer close, protocol "
             "error, shutdown).",
             connections.closed[i], {{"reason", kPmdCloseReasons[i]}});
  }
  const PmdRequestCounts& requests = registry.requests();
  for (std::size_t i = 0; i < kPmdRequestTypes.size(); ++i) {
    page.add("distflow_pmd_requests_total", kCounter,
             "Requests read, by type (other: an unknown or missing type).", requests.by_type[i],
             {{"type", kPmdRequestTypes[i]}});
  }
  for (std::size_t i = 0; i < kPmdErrorKinds.size(); ++i) {
    page.add("distflow_pmd_errors_total", kCounter, "Error replies, by kind.", requests.errors[i],
             {{"kind", kPmdErrorKinds[i]}});
  }
  const RegistryStats& stats = registry.stats();
  page.add("distflow_pmd_joins_total", kCounter, "Nodes registered (peer:join events).",
           stats.joins);
  constexpr std::string_view kLeaves = "Nodes removed (peer:leave events), by reason.";
  page.add("distflow_pmd_leaves_total", kCounter, kLeaves, stats.unregistered,
           {{"reason", "unregister"}});
  page.add("distflow_pmd_leaves_total", kCounter, kLeaves, stats.socket_closed,
           {{"reason", "socket_closed"}});
  page.add("distflow_pmd_leaves_total", kCounter, kLeaves, stats.ttl_expired,
           {{"reason", "ttl_expired"}});
  return page.render();
}

std::string node_metrics_page(const NodeStats& stats, std::string_view node_id,
                              std::string_view alias) {
  MetricsPage page;
  build_info(page);
  page.add("distflow_node_info", kGauge, "This node's id and alias (empty: none).",
           std::uint64_t{1}, {{"node_id", node_id}, {"alias", alias}});
  page.add("distflow_node_uptime_seconds", kGauge, "Seconds since the node started.",
           std::chrono::duration<double>(stats.uptime).count());
  page.add("distflow_node_messages_received_total", kCounter, "Messages parsed from peers.",
           stats.received);
  page.add("distflow_node_messages_sent_total", kCounter, "Messages written to sockets.",
           stats.sent);
  page.add("distflow_node_bad_frames_total", kCounter,
           "Malformed or oversized frames received from peers.", stats.bad_frames);
  page.add("distflow_node_send_failures_total", kCounter,
           "Messages that will never be written (unknown target, connection lost, ...).",
           stats.send_failures);
  page.add("distflow_node_handler_errors_total", kCounter,
           "Exceptions thrown by the message handler.", stats.handler_errors);
  constexpr std::string_view kDropped =
      "Received messages dropped, by reason (mailbox policy, output closed, ...).";
  page.declare("distflow_node_dropped_total", kCounter, kDropped);
  for (const auto& [reason, count] : stats.drops)
    page.add("distflow_node_dropped_total", kCounter, kDropped, count, {{"reason", reason}});
  page.add("distflow_node_mailbox_depth", kGauge, "Messages in the mailbox now.",
           std::uint64_t{stats.mailbox.size});
  page.add("distflow_node_mailbox_high_water", kGauge,
           "The most messages the mailbox has held at once.",
           std::uint64_t{stats.mailbox.high_water});
  page.add("distflow_node_mailbox_capacity", kGauge, "The mailbox's bound (--mailbox-size).",
           std::uint64_t{stats.mailbox.capacity});
  page.add("distflow_node_mailbox_accepted_total", kCounter, "Messages queued in the mailbox.",
           stats.mailbox.accepted);
  page.add("distflow_node_mailbox_delivered_total", kCounter,
           "Messages taken from the mailbox by the application.", stats.mailbox.delivered);
  constexpr std::string_view kLinks = "Connections to peers now, by direction.";
  page.add("distflow_node_links", kGauge, kLinks, std::uint64_t{stats.inbound_links},
           {{"direction", "inbound"}});
  page.add("distflow_node_links", kGauge, kLinks, std::uint64_t{stats.outbound_links},
           {{"direction", "outbound"}});
  return page.render();
}

std::string node_stats_json(const NodeStats& stats, std::string_view node_id,
                            std::string_view alias) {
  std::string out = "{\"nodeId\":";
  append_json_string(out, node_id);
  out += ",\"alias\":";
  append_json_string(out, alias);
  auto number = [&out](std::string_view key, std::uint64_t value) {
    out += ",\"";
    out += key;
    out += "\":";
    out += std::to_string(value);
  };
  number("uptimeMs", static_cast<std::uint64_t>(stats.uptime.count() / 1000));
  number("received", stats.received);
  number("sent", stats.sent);
  number("bytesReceived", stats.bytes_received);
  number("bytesSent", stats.bytes_sent);
  number("badFrames", stats.bad_frames);
  number("sendFailures", stats.send_failures);
  number("handlerErrors", stats.handler_errors);
  number("dropped", stats.dropped);
  out += ",\"drops\":{";
  for (std::size_t i = 0; i < stats.drops.size(); ++i) {
    if (i > 0)
      out += ',';
    append_json_string(out, stats.drops[i].first);
    out += ':';
    out += std::to_string(stats.drops[i].second);
  }
  out += "},\"mailbox\":{\"depth\":";
  out += std::to_string(stats.mailbox.size);
  out += ",\"highWater\":";
  out += std::to_string(stats.mailbox.high_water);
  out += ",\"capacity\":";
  out += std::to_string(stats.mailbox.capacity);
  out += ",\"accepted\":";
  out += std::to_string(stats.mailbox.accepted);
  out += ",\"delivered\":";
  out += std::to_string(stats.mailbox.delivered);
  out += "},\"inboundLinks\":";
  out += std::to_string(stats.inbound_links);
  out += ",\"links\":[";
  for (std::size_t i = 0; i < stats.links.size(); ++i) {
    const OutboundLinkStats& link = stats.links[i];
    out += i > 0 ? ",{\"nodeId\":" : "{\"nodeId\":";
    append_json_string(out, link.node_id);
    out += ",\"alias\":";
    append_json_string(out, link.alias);
    out += ",\"address\":";
    append_json_string(out, link.address);
    out += ",\"queuedFrames\":";
    out += std::to_string(link.queued_frames);
    out += ",\"unwrittenBytes\":";
    out += std::to_string(link.unwritten_bytes);
    out += '}';
  }
  out += "],\"calls\":{\"inFlight\":";
  out += std::to_string(stats.calls_in_flight);
  out += ",\"timeouts\":";
  out += std::to_string(stats.call_timeouts);
  out += ",\"lateReplies\":";
  out += std::to_string(stats.late_replies);
  out += "}}";
  return out;
}

}  // namespace distflow
