#include "service_metrics.hpp"

#include <catch2/catch.hpp>

#include "framing.hpp"
#include "support.hpp"

namespace distflow {
namespace {

using test::metric_value;
constexpr std::int64_t kT0 = 1'700'000'000'000;

std::string reg(std::string_view id, std::string_view alias) {
  return R"({"type":"register","payload":{"nodeId":")" + std::string(id) + R"(","alias":")" +
         std::string(alias) + R"(","host":"127.0.0.1","port":5000,"heartbeatMs":500}})";
}

double value(const std::string& page, const std::string& series) {
  auto v = metric_value(page, series);
  INFO(series << " in\n" << page);
  REQUIRE(v);
  return *v;
}

}  // namespace

TEST_CASE("service_metrics: the PMD page counts requests by type, errors by kind, leaves",
          "[service_metrics]") {
  Registry registry(std::chrono::milliseconds(15000), 4);
  PmdConnectionCounts connections;
  const std::string empty = pmd_metrics_page(registry, connections, std::chrono::seconds(3));
  for (std::string_view type : kPmdRequestTypes)
    CHECK(value(empty, "distflow_pmd_requests_total{type=\"" + std::string(type) + "\"}") == 0);
  for (std::string_view kind : kPmdErrorKinds)
    CHECK(value(empty, "distflow_pmd_errors_total{kind=\"" + std::string(kind) + "\"}") == 0);
  CHECK(value(empty, "distflow_pmd_uptime_seconds") == 3);

  registry.handle(1, reg("n1", "a"), kT0, true);
  registry.handle(2, reg("n2", "b"), kT0, true);
  registry.handle(3, reg("n3", "a"), kT0, true);  // alias taken
  registry.handle(2, R"({"type":"register","payload":{"nodeId":"x"}})", kT0, true);
  registry.handle(3, R"({"type":"watch","payload":{"snapshot":true}})", kT0, true);
  registry.handle(3, R"({"type":"list"})", kT0, true);
  for (int i = 0; i < 5; ++i)
    registry.handle(3, R"({"type":"resolve","payload":{"alias":"a"}})", kT0, true);
  registry.handle(3, R"({"type":"resolve","payload":{"alias":"nobody"}})", kT0, true);
  registry.handle(1, R"({"type":"heartbeat","payload":{"nodeId":"n1"}})", kT0 + 1, true);
  registry.handle(3, R"({"type":"unregister","payload":{"nodeId":"n1"}})", kT0, true);
  registry.handle(2, R"({"type":"unregister","payload":{"nodeId":"n2"}})", kT0, true);
  registry.handle(3, R"({"type":"shutdown"})", kT0, false);
  registry.handle(3, R"({"type":"frobnicate"})", kT0, true);
  registry.handle(3, R"({"requestId":1})", kT0, true);
  registry.handle(3, R"({"type":)", kT0, true);
  registry.handle(3, R"([1,2])", kT0, true);
  registry.connection_closed(1);  // n1 leaves: socket_closed
  FrameDecoder decoder(64);
  const std::string oversize = std::string("\x00\x00\x01\x00", 4);
  decoder.feed(oversize);
  REQUIRE(next_outcome(registry, 4, decoder, kT0, true)->close);

  connections.accepted = 9;
  connections.refused = 2;
  connections.open = 4;
  connections.count_close("slow reader: its reply queue is full");
  connections.count_close("stalled 30000 ms inside a frame");
  connections.count_close("nothing valid received within 10000 ms");
  connections.count_close("end of stream");
  connections.count_close("shutdown");
  const std::string page = pmd_metrics_page(registry, connections, std::chrono::seconds(5));
  const auto requests = [&](const char* type) {
    return value(page, std::string("distflow_pmd_requests_total{type=\"") + type + "\"}");
  };
  CHECK(requests("register") == 4);
  CHECK(requests("watch") == 1);
  CHECK(requests("list") == 1);
  CHECK(requests("resolve") == 6);
  CHECK(requests("heartbeat") == 1);
  CHECK(requests("unregister") == 2);
  CHECK(requests("shutdown") == 1);
  CHECK(requests("other") == 2);  // frobnicate, and no type at all
  const auto errors = [&](const char* kind) {
    return value(page, std::string("distflow_pmd_errors_total{kind=\"") + kind + "\"}");
  };
  CHECK(errors("name_conflict") == 1);
  CHECK(errors("invalid_register") == 1);
  CHECK(errors("not_found") == 1);
  CHECK(errors("not_owner") == 1);  // n1 is connection 1's
  CHECK(errors("shutdown_refused") == 1);
  CHECK(errors("unknown_type") == 2);
  CHECK(errors("malformed_json") == 2);
  CHECK(errors("frame") == 1);
  CHECK(value(page, "distflow_pmd_nodes") == 0);
  CHECK(value(page, "distflow_pmd_watchers") == 1);
  CHECK(value(page, "distflow_pmd_joins_total") == 2);
  CHECK(value(page, "distflow_pmd_leaves_total{reason=\"unregister\"}") == 1);
  CHECK(value(page, "distflow_pmd_leaves_total{reason=\"socket_closed\"}") == 1);
  CHECK(value(page, "distflow_pmd_leaves_total{reason=\"ttl_expired\"}") == 0);
  CHECK(value(page, "distflow_pmd_connections") == 4);
  CHECK(value(page, "distflow_pmd_connections_accepted_total") == 9);
  CHECK(value(page, "distflow_pmd_connections_refused_total") == 2);
  for (const char* reason : {"slow_reader", "stalled", "idle"}) {
    CHECK(value(page, std::string("distflow_pmd_connections_closed_total{reason=\"") + reason +
                          "\"}") == 1);
  }
  CHECK(value(page, "distflow_pmd_connections_closed_total{reason=\"other\"}") == 2);
  CHECK(value(page, "distflow_build_info{version=\"" DISTFLOW_VERSION "\"}") == 1);
}

TEST_CASE("service_metrics: the node page has every NodeStats counter", "[service_metrics]") {
  NodeStats stats;
  stats.received = 1000;
  stats.sent = 999;
  stats.bad_frames = 3;
  stats.send_failures = 4;
  stats.handler_errors = 5;
  stats.drops = {{"mailbox full (1000, drop-newest)", 20}, {"output \"closed\"", 2}};
  stats.dropped = 22;
  stats.mailbox.accepted = 980;
  stats.mailbox.delivered = 970;
  stats.mailbox.size = 10;
  stats.mailbox.high_water = 1000;
  stats.mailbox.capacity = 1000;
  stats.inbound_links = 2;
  stats.outbound_links = 1;
  stats.uptime = std::chrono::microseconds(2500000);
  const std::string page = node_metrics_page(stats, "w-1-abc", "w");
  CHECK(value(page, R"(distflow_node_info{node_id="w-1-abc",alias="w"})") == 1);
  CHECK(value(page, "distflow_node_uptime_seconds") == 2.5);
  CHECK(value(page, "distflow_node_messages_received_total") == 1000);
  CHECK(value(page, "distflow_node_messages_sent_total") == 999);
  CHECK(value(page, "distflow_node_bad_frames_total") == 3);
  CHECK(value(page, "distflow_node_send_failures_total") == 4);
  CHECK(value(page, "distflow_node_handler_errors_total") == 5);
  CHECK(value(page,
              R"x(distflow_node_dropped_total{reason="mailbox full (1000, drop-newest)"})x") == 20);
  CHECK(value(page, R"(distflow_node_dropped_total{reason="output \"closed\""})") == 2);
  CHECK(value(page, "distflow_node_mailbox_depth") == 10);
  CHECK(value(page, "distflow_node_mailbox_high_water") == 1000);
  CHECK(value(page, "distflow_node_mailbox_capacity") == 1000);
  CHECK(value(page, "distflow_node_mailbox_accepted_total") == 980);
  CHECK(value(page, "distflow_node_mailbox_delivered_total") == 970);
  CHECK(value(page, R"(distflow_node_links{direction="inbound"})") == 2);
  CHECK(value(page, R"(distflow_node_links{direction="outbound"})") == 1);
  // No drops yet: the family is there, without samples.
  const std::string quiet = node_metrics_page(NodeStats{}, "n", "");
  CHECK(quiet.find("# TYPE distflow_node_dropped_total counter\n") != std::string::npos);
  CHECK(quiet.find("distflow_node_dropped_total{") == std::string::npos);
  CHECK(value(quiet, R"(distflow_node_info{node_id="n",alias=""})") == 1);
}

}  // namespace distflow
