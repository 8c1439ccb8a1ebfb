#include "pmd_protocol.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "framing.hpp"
#include "messages.hpp"

namespace distflow {
namespace {

using nlohmann::json;

/// Bodies longer than this are not worth the fast path (and would grow the
/// parser's buffers for good).
constexpr std::size_t kFastPathMaxBytes = 4096;

// ---- the fast request reader -------------------------------------------------

/// Unescaped strings of the request being read (views into them stay valid).
using Strings = std::deque<std::string>;

bool read_string(std::string_view value, Strings& strings, std::optional<std::string_view>& out) {
  if (out || value.front() != '"')
    return false;
  out = json_string_text(value, strings.emplace_back());
  return true;
}

/// An integer token within int64 (no fraction, no exponent).
bool read_int64(std::string_view value, std::optional<std::int64_t>& out) {
  std::int64_t number = 0;
  const char* end = value.data() + value.size();
  if (out || (value.front() != '-' && (value.front() < '0' || value.front() > '9')))
    return false;
  const auto [at, ec] = std::from_chars(value.data(), end, number);
  if (ec != std::errc() || at != end)
    return false;
  out = number;
  return true;
}

/// A scalar the full parser reads back as the same value: not an object or
/// array, and a number within 64 bits (an integer) or a finite double.
bool plain_scalar(std::string_view value) {
  const char first = value.front();
  if (first == '{' || first == '[')
    return false;
  if (first != '-' && (first < '0' || first > '9'))
    return true;
  const char* end = value.data() + value.size();
  if (value.find_first_of(".eE") == std::string_view::npos) {
    std::int64_t signed_number = 0;
    std::uint64_t unsigned_number = 0;
    const auto s = std::from_chars(value.data(), end, signed_number);
    const auto u = std::from_chars(value.data(), end, unsigned_number);
    return (s.ec == std::errc() && s.ptr == end) || (u.ec == std::errc() && u.ptr == end);
  }
  const std::string token(value);
  return std::isfinite(std::strtod(token.c_str(), nullptr));
}

bool read_bool(std::string_view value, std::optional<bool>& out) {
  if (out || (value != "true" && value != "false"))
    return false;
  out = value == "true";
  return true;
}

/// `padded`: 16 readable bytes follow `value` (it lies inside a padded body).
bool read_payload(std::string_view value, bool padded, JsonObjectWalker& walker, Strings& strings,
                  PmdRequestView& out) {
  if (value == "null")
    return true;
  if (value.front() != '{' || walker.walk(value, padded))
    return false;
  out.payload = true;
  bool alias_seen = false;
  for (const JsonMember& member : walker.members()) {
    if (member.key_escaped)
      return false;
    const std::string_view key = member.key;
    const std::string_view v = member.value;
    bool ok = false;
    if (key == "nodeId") {
      ok = read_string(v, strings, out.node_id);
    } else if (key == "alias") {
      if (alias_seen)
        return false;
      alias_seen = true;
      ok = v == "null" || read_string(v, strings, out.alias);
    } else if (key == "host") {
      ok = read_string(v, strings, out.host);
    } else if (key == "port") {
      ok = read_int64(v, out.port);
    } else if (key == "pid") {
      ok = read_int64(v, out.pid);
    } else if (key == "snapshot") {
      ok = read_bool(v, out.snapshot);
    } else if (key == "force") {
      ok = read_bool(v, out.force);
    }
    if (!ok)
      return false;
  }
  return true;
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

struct PmdRequestParser::Impl {
  JsonObjectWalker request;
  JsonObjectWalker payload;
  Strings strings;
};

PmdRequestParser::PmdRequestParser() : impl_(std::make_unique<Impl>()) {}
PmdRequestParser::~PmdRequestParser() = default;
PmdRequestParser::PmdRequestParser(PmdRequestParser&&) noexcept = default;
PmdRequestParser& PmdRequestParser::operator=(PmdRequestParser&&) noexcept = default;

bool PmdRequestParser::parse(std::string_view body, bool padded, PmdRequestView& out) {
  static_assert(kFramePadding >= 16);
  out = PmdRequestView{};
  if (body.size() > kFastPathMaxBytes)
    return false;
  impl_->strings.clear();
  // Validates the whole body; the payload's members are walked again below.
  if (impl_->request.walk(body, padded))
    return false;
  bool type_seen = false;
  bool payload_seen = false;
  for (const JsonMember& member : impl_->request.members()) {
    if (member.key_escaped)
      return false;
    const std::string_view value = member.value;
    if (member.key == "type") {
      std::optional<std::string_view> type;
      if (type_seen || !read_string(value, impl_->strings, type))
        return false;
      out.type = *type;
      type_seen = true;
    } else if (member.key == "requestId") {
      if (out.request_id || !plain_scalar(value))
        return false;
      out.request_id = value;
    } else if (member.key == "payload") {
      // The payload is followed by the rest of the body (and the padding, if any).
      const auto after = body.data() + body.size() - (value.data() + value.size());
      if (payload_seen ||
          !read_payload(value, padded || after >= 16, impl_->payload, impl_->strings, out)) {
        return false;
      }
      payload_seen = true;
    } else {
      return false;
    }
  }
  return type_seen;
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

std::string PmdEndpoint::to_string() const {
  if (host.find(':') != std::string::npos)
    return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

}  // namespace distflow
