#include "pmd_protocol.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include "framing.hpp"

namespace distflow {
namespace {

using nlohmann::json;
namespace ondemand = simdjson::ondemand;

static_assert(kFramePadding >= simdjson::SIMDJSON_PADDING);

/// Bodies longer than this are not worth the fast path (and would grow the
/// parser's buffers for good).
constexpr std::size_t kFastPathMaxBytes = 4096;

bool plain_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
  });
}

void append_json_string(std::string& out, std::string_view text) {
  if (plain_ascii(text)) {  // what dump() would produce, without a DOM
    out += '"';
    out += text;
    out += '"';
    return;
  }
  // Replace invalid UTF-8 rather than throw: names come from peers.
  out += json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- the fast request reader -------------------------------------------------

/// The key's spelling when it has no escape (then it is its own unescaped text).
std::optional<std::string_view> plain_key(ondemand::field& field) {
  // raw() points just after the opening quote; stage 1 guarantees the closing one.
  const char* begin = field.key().raw();
  const char* end = begin;
  while (*end != '"') {
    if (*end == '\\')
      return std::nullopt;
    ++end;
  }
  return std::string_view(begin, static_cast<std::size_t>(end - begin));
}

/// The raw text of a scalar value (validated, then consumed); false for anything else.
bool scalar_token(ondemand::value& value, std::string_view& raw) {
  ondemand::json_type type{};
  if (value.type().get(type))
    return false;
  raw = value.raw_json_token();  // runs up to the next token: drop the whitespace
  while (!raw.empty() &&
         (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' || raw.back() == '\r')) {
    raw.remove_suffix(1);
  }
  switch (type) {
    case ondemand::json_type::string: {
      std::string_view text;
      return !value.get_string().get(text);
    }
    case ondemand::json_type::number: {
      ondemand::number number;
      return !value.get_number().get(number);
    }
    case ondemand::json_type::boolean: {
      bool flag = false;
      return !value.get_bool().get(flag);
    }
    case ondemand::json_type::null: {
      bool is_null = false;
      return !value.is_null().get(is_null) && is_null;
    }
    default:
      return false;
  }
}

bool read_string(ondemand::value& value, std::optional<std::string_view>& out) {
  std::string_view text;
  if (out || value.get_string().get(text))
    return false;
  out = text;
  return true;
}

bool read_int64(ondemand::value& value, std::optional<std::int64_t>& out) {
  ondemand::number_type type{};
  std::int64_t number = 0;
  if (out || value.get_number_type().get(type) || type != ondemand::number_type::signed_integer ||
      value.get_int64().get(number)) {
    return false;
  }
  out = number;
  return true;
}

bool read_bool(ondemand::value& value, std::optional<bool>& out) {
  bool flag = false;
  if (out || value.get_bool().get(flag))
    return false;
  out = flag;
  return true;
}

bool read_payload(ondemand::value& value, PmdRequestView& out) {
  ondemand::json_type type{};
  if (value.type().get(type))
    return false;
  if (type == ondemand::json_type::null) {
    bool is_null = false;
    return !value.is_null().get(is_null) && is_null;
  }
  ondemand::object object;
  if (type != ondemand::json_type::object || value.get_object().get(object))
    return false;
  out.payload = true;
  bool alias_seen = false;
  for (auto item : object) {
    ondemand::field field;
    if (std::move(item).get(field))
      return false;
    const auto key = plain_key(field);
    if (!key)
      return false;
    ondemand::value member = field.value();
    bool ok = false;
    if (*key == "nodeId") {
      ok = read_string(member, out.node_id);
    } else if (*key == "alias") {
      if (alias_seen)
        return false;
      alias_seen = true;
      bool is_null = false;
      ondemand::json_type member_type{};
      if (member.type().get(member_type))
        return false;
      ok = member_type == ondemand::json_type::null ? !member.is_null().get(is_null) && is_null
                                                    : read_string(member, out.alias);
    } else if (*key == "host") {
      ok = read_string(member, out.host);
    } else if (*key == "port") {
      ok = read_int64(member, out.port);
    } else if (*key == "pid") {
      ok = read_int64(member, out.pid);
    } else if (*key == "snapshot") {
      ok = read_bool(member, out.snapshot);
    } else if (*key == "force") {
      ok = read_bool(member, out.force);
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
  ondemand::parser parser;
  std::string padded;  // a copy of bodies that come without padding
};

PmdRequestParser::PmdRequestParser() : impl_(std::make_unique<Impl>()) {}
PmdRequestParser::~PmdRequestParser() = default;
PmdRequestParser::PmdRequestParser(PmdRequestParser&&) noexcept = default;
PmdRequestParser& PmdRequestParser::operator=(PmdRequestParser&&) noexcept = default;

bool PmdRequestParser::parse(std::string_view body, bool padded, PmdRequestView& out) {
  out = PmdRequestView{};
  if (body.size() > kFastPathMaxBytes)
    return false;
  const char* data = body.data();
  std::size_t capacity = body.size() + kFramePadding;
  if (!padded) {
    impl_->padded.assign(body);
    impl_->padded.resize(body.size() + simdjson::SIMDJSON_PADDING);
    data = impl_->padded.data();
    capacity = impl_->padded.size();
  }
  ondemand::document doc;
  ondemand::object object;
  if (impl_->parser.iterate(data, body.size(), capacity).get(doc) || doc.get_object().get(object))
    return false;
  bool type_seen = false;
  bool payload_seen = false;
  for (auto item : object) {
    ondemand::field field;
    if (std::move(item).get(field))
      return false;
    const auto key = plain_key(field);
    if (!key)
      return false;
    ondemand::value value = field.value();
    if (*key == "type") {
      if (type_seen || value.get_string().get(out.type))
        return false;
      type_seen = true;
    } else if (*key == "requestId") {
      std::string_view raw;
      if (out.request_id || !scalar_token(value, raw))
        return false;
      out.request_id = raw;
    } else if (*key == "payload") {
      if (payload_seen || !read_payload(value, out))
        return false;
      payload_seen = true;
    } else {
      return false;
    }
  }
  // current_location() fails (out of bounds) exactly when the object was the whole input.
  const char* trailing = nullptr;
  return type_seen && doc.current_location().get(trailing) != simdjson::SUCCESS;
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
