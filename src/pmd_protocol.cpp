#include "pmd_protocol.hpp"

#include <limits>

#include <nlohmann/json.hpp>

namespace distflow {
namespace {

using nlohmann::json;

void append_json_string(std::string& out, std::string_view text) {
  // Replace invalid UTF-8 rather than throw: names come from peers.
  out += json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<NodeInfo> node_from_json(const json& j) {
  if (!j.is_object())
    return std::nullopt;
  NodeInfo node;
  auto id = j.find("nodeId");
  if (id == j.end() || !id->is_string())
    return std::nullopt;
  node.node_id = id->get<std::string>();
  if (auto a = j.find("alias"); a != j.end() && a->is_string())
    node.alias = a->get<std::string>();
  if (auto h = j.find("host"); h != j.end() && h->is_string())
    node.host = h->get<std::string>();
  if (auto p = j.find("port"); p != j.end() && p->is_number_integer()) {
    const auto port = p->get<std::int64_t>();
    if (port >= 0 && port <= 65535)
      node.port = static_cast<std::uint16_t>(port);
  }
  auto int_field = [&j](const char* key) -> std::int64_t {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number())
      return 0;
    if (it->is_number_integer())
      return it->get<std::int64_t>();
    return static_cast<std::int64_t>(it->get<double>());
  };
  node.last_heartbeat = int_field("lastHeartbeat");
  node.registered_at = int_field("registeredAt");
  node.pid = int_field("pid");
  return node;
}

}  // namespace

void append_node_info(std::string& out, const NodeInfo& node) {
  out += "{\"nodeId\":";
  append_json_string(out, node.node_id);
  if (!node.alias.empty()) {
    out += ",\"alias\":";
    append_json_string(out, node.alias);
  }
  out += ",\"host\":";
  append_json_string(out, node.host);
  out += ",\"port\":";
  out += std::to_string(node.port);
  out += ",\"lastHeartbeat\":";
  out += std::to_string(node.last_heartbeat);
  if (node.registered_at != 0) {
    out += ",\"registeredAt\":";
    out += std::to_string(node.registered_at);
  }
  if (node.pid != 0) {
    out += ",\"pid\":";
    out += std::to_string(node.pid);
  }
  out += '}';
}

std::string encode_request(std::string_view type, std::string_view payload_json,
                           std::uint64_t request_id) {
  std::string out = "{\"type\":";
  append_json_string(out, type);
  out += ",\"payload\":";
  out += payload_json.empty() ? std::string_view("{}") : payload_json;
  out += ",\"requestId\":";
  out += std::to_string(request_id);
  out += '}';
  return out;
}

std::string register_payload(const NodeInfo& node) {
  std::string out = "{\"nodeId\":";
  append_json_string(out, node.node_id);
  if (!node.alias.empty()) {
    out += ",\"alias\":";
    append_json_string(out, node.alias);
  }
  out += ",\"host\":";
  append_json_string(out, node.host);
  out += ",\"port\":";
  out += std::to_string(node.port);
  if (node.pid != 0) {
    out += ",\"pid\":";
    out += std::to_string(node.pid);
  }
  out += '}';
  return out;
}

std::optional<PmdReply> parse_reply(std::string_view body, std::string* why) {
  auto fail = [why](std::string text) -> std::optional<PmdReply> {
    if (why)
      *why = std::move(text);
    return std::nullopt;
  };
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded())
    return fail("not valid JSON");
  if (!j.is_object())
    return fail("not a JSON object");
  auto type = j.find("type");
  if (type == j.end() || !type->is_string())
    return fail("no 'type'");
  PmdReply reply;
  const auto& type_text = type->get_ref<const std::string&>();
  if (type_text == "event") {
    reply.is_event = true;
  } else if (type_text != "response") {
    return fail("unexpected type '" + type_text + "'");
  }
  if (auto id = j.find("requestId"); id != j.end() && id->is_number_unsigned()) {
    reply.request_id = id->get<std::uint64_t>();
  } else if (id != j.end() && id->is_number_integer() && id->get<std::int64_t>() >= 0) {
    reply.request_id = static_cast<std::uint64_t>(id->get<std::int64_t>());
  }
  auto payload = j.find("payload");
  if (payload == j.end() || !payload->is_object())
    return fail("no 'payload' object");
  const json& p = *payload;
  if (reply.is_event) {
    if (auto e = p.find("event"); e != p.end() && e->is_string())
      reply.event = e->get<std::string>();
    if (auto peer = p.find("peer"); peer != p.end())
      reply.peer = node_from_json(*peer);
    if (auto r = p.find("reason"); r != p.end() && r->is_string())
      reply.reason = r->get<std::string>();
    if (reply.event.empty() || !reply.peer)
      return fail("event without 'event' or 'peer'");
    return reply;
  }
  if (auto e = p.find("error"); e != p.end()) {
    reply.error = e->is_string() ? e->get<std::string>() : e->dump();
    if (reply.error.empty())
      reply.error = "error";
  }
  if (auto s = p.find("success"); s != p.end() && s->is_boolean())
    reply.success = s->get<bool>();
  if (auto n = p.find("node"); n != p.end())
    reply.node = node_from_json(*n);
  if (auto ns = p.find("nodes"); ns != p.end() && ns->is_array()) {
    std::vector<NodeInfo> nodes;
    for (const auto& item : *ns) {
      if (auto node = node_from_json(item))
        nodes.push_back(std::move(*node));
    }
    reply.nodes = std::move(nodes);
  }
  return reply;
}

}  // namespace distflow
