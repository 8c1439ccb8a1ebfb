#include "registry.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "errors.hpp"

namespace distflow {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxNameBytes = 128;
constexpr std::size_t kMaxWhyBytes = 200;

void append_json_string(std::string& out, std::string_view text) {
  out += json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_payload(std::string_view message) {
  std::string out = "{\"error\":";
  append_json_string(out, message);
  out += '}';
  return out;
}

constexpr std::string_view kSuccess = R"({"success":true})";
constexpr std::string_view kNotFound = "Node not found";

std::string event_body(std::string_view event, const NodeInfo& node, std::string_view reason) {
  std::string out = R"({"type":"event","payload":{"event":")";
  out += event;
  out += "\",\"peer\":";
  append_node_info(out, node);
  if (!reason.empty()) {
    out += ",\"reason\":\"";
    out += reason;
    out += '"';
  }
  out += "}}";
  return out;
}

// --- raw requestId: the response copies the request's JSON text verbatim ------
// The body has already been validated by the JSON parser, so this scanner only
// needs to skip tokens, not to check them.

std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
    ++i;
  return i;
}

std::size_t skip_string(std::string_view s, std::size_t i) {  // s[i] == '"'
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size())
    return std::string_view::npos;
  if (s[i] == '"')
    return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos)
          return i;
        continue;
      }
      if (c == '{' || c == '[')
        ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0)
          return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
         s[i] != '\n' && s[i] != '\r') {
    ++i;
  }
  return i;
}

/// Raw text of the last top-level member named exactly `key` (unescaped spelling).
std::optional<std::string_view> raw_member(std::string_view s, std::string_view key) {
  std::size_t i = 0;
  if (s.starts_with("\xEF\xBB\xBF"))
    i = 3;
  i = skip_ws(s, i);
  if (i >= s.size() || s[i] != '{')
    return std::nullopt;
  std::optional<std::string_view> found;
  i = skip_ws(s, i + 1);
  while (i < s.size() && s[i] == '"') {
    const std::size_t key_end = skip_string(s, i);
    if (key_end == std::string_view::npos)
      return std::nullopt;
    const std::string_view name = s.substr(i + 1, key_end - i - 2);
    i = skip_ws(s, key_end);
    if (i >= s.size() || s[i] != ':')
      return std::nullopt;
    i = skip_ws(s, i + 1);
    const std::size_t value_end = skip_value(s, i);
    if (value_end == std::string_view::npos)
      return std::nullopt;
    if (name == key)
      found = s.substr(i, value_end - i);
    i = skip_ws(s, value_end);
    if (i < s.size() && s[i] == ',')
      i = skip_ws(s, i + 1);
  }
  return found;
}

std::string parse_error_text(const json::parse_error& e) {
  std::string_view what = e.what();
  if (auto pos = what.find("] "); pos != std::string_view::npos)
    what.remove_prefix(pos + 2);
  std::string out(what.substr(0, kMaxWhyBytes));
  return out;
}

std::string_view string_field(const json* payload, const char* key) {
  if (payload == nullptr || !payload->is_object())
    return {};
  auto it = payload->find(key);
  if (it == payload->end() || !it->is_string())
    return {};
  return it->get_ref<const std::string&>();
}

bool bool_field(const json* payload, const char* key) {
  if (payload == nullptr || !payload->is_object())
    return false;
  auto it = payload->find(key);
  return it != payload->end() && it->is_boolean() && it->get<bool>();
}

bool has_control_chars(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

}  // namespace

std::string pmd_response(const std::optional<std::string>& request_id_json,
                         std::string_view payload_json) {
  std::string out = R"({"type":"response",)";
  if (request_id_json) {
    out += "\"requestId\":";
    out += *request_id_json;
    out += ',';
  }
  out += "\"payload\":";
  out += payload_json;
  out += '}';
  return out;
}

Registry::Registry(std::chrono::milliseconds ttl) : ttl_(ttl) {}

std::vector<NodeInfo> Registry::nodes() const {
  std::vector<NodeInfo> out;
  out.reserve(entries_.size());
  for (const auto& [seq, entry] : entries_)
    out.push_back(entry.info);
  return out;
}

std::size_t Registry::owned_by(ConnectionId conn) const {
  auto it = owned_.find(conn);
  return it == owned_.end() ? 0 : it->second.size();
}

Registry::Entry* Registry::find_id(std::string_view node_id) {
  auto it = by_id_.find(std::string(node_id));
  return it == by_id_.end() ? nullptr : &entries_.at(it->second);
}

const Registry::Entry* Registry::find_alias_or_id(std::string_view name) const {
  const std::string key(name);
  if (auto a = alias_to_id_.find(key); a != alias_to_id_.end()) {
    return &entries_.at(by_id_.at(a->second));
  }
  if (auto id = by_id_.find(key); id != by_id_.end())
    return &entries_.at(id->second);
  return nullptr;
}

PmdOutcome Registry::handle(ConnectionId conn, std::string_view body, std::int64_t now_ms,
                            bool loopback) {
  PmdOutcome out;
  json request;
  try {
    request = json::parse(body);
  } catch (const json::parse_error& e) {
    out.reply = pmd_response(std::nullopt, error_payload("malformed JSON: " + parse_error_text(e)));
    return out;
  }
  if (!request.is_object()) {
    out.reply = pmd_response(std::nullopt, error_payload("malformed JSON: not an object"));
    return out;
  }

  std::optional<std::string> request_id;
  if (auto id = request.find("requestId"); id != request.end()) {
    if (auto raw = raw_member(body, "requestId")) {
      request_id = std::string(*raw);
    } else {  // an escaped key spelling: fall back to the parsed value
      request_id = id->dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  const json* payload = nullptr;
  if (auto p = request.find("payload"); p != request.end() && !p->is_null())
    payload = &*p;
  std::string_view type;
  if (auto t = request.find("type"); t != request.end() && t->is_string()) {
    type = t->get_ref<const std::string&>();
  }

  std::string reply_payload;
  if (type == "register") {
    reply_payload = on_register(conn, payload, now_ms, out.events);
  } else if (type == "unregister") {
    const std::string_view node_id = string_field(payload, "nodeId");
    Entry* entry = find_id(node_id);
    if (entry == nullptr) {
      reply_payload = error_payload(kNotFound);
    } else if (entry->owner != conn) {
      reply_payload =
          error_payload("Node '" + std::string(node_id) + "' is registered by another connection");
    } else {
      out.events.push_back(remove(by_id_.at(std::string(node_id)), "unregister"));
      reply_payload = kSuccess;
    }
  } else if (type == "resolve") {
    std::string_view name = string_field(payload, "alias");
    if (name.empty())
      name = string_field(payload, "nodeId");
    const Entry* entry = name.empty() ? nullptr : find_alias_or_id(name);
    if (entry == nullptr) {
      reply_payload = error_payload(kNotFound);
    } else {
      reply_payload = "{\"node\":";
      append_node_info(reply_payload, entry->info);
      reply_payload += '}';
    }
  } else if (type == "list" || type == "watch") {
    const bool watch = type == "watch";
    const bool snapshot = !watch || bool_field(payload, "snapshot");
    if (watch)
      watchers_.insert(conn);
    reply_payload = watch ? (snapshot ? R"({"success":true,"nodes":[)" : R"({"success":true)")
                          : R"({"nodes":[)";
    if (snapshot) {
      bool first = true;
      for (const auto& [seq, entry] : entries_) {
        if (!first)
          reply_payload += ',';
        first = false;
        append_node_info(reply_payload, entry.info);
      }
      reply_payload += ']';
    }
    reply_payload += '}';
  } else if (type == "heartbeat") {
    Entry* entry = find_id(string_field(payload, "nodeId"));
    if (entry == nullptr) {
      reply_payload = error_payload(kNotFound);
    } else {
      entry->info.last_heartbeat = now_ms;
      entry->heartbeated = true;
      reply_payload = kSuccess;
    }
  } else if (type == "shutdown") {
    if (!loopback) {
      reply_payload = error_payload("shutdown is accepted only from a loopback address");
    } else if (!by_id_.empty() && !bool_field(payload, "force")) {
      reply_payload =
          error_payload(std::to_string(by_id_.size()) + " nodes are registered; use force");
    } else {
      reply_payload = kSuccess;
      out.shutdown = true;
    }
  } else {
    reply_payload = error_payload("Unknown message type");
  }
  out.reply = pmd_response(request_id, reply_payload);
  return out;
}

std::string Registry::on_register(ConnectionId conn, const json* payload, std::int64_t now_ms,
                                  std::vector<std::string>& events) {
  auto invalid = [](std::string_view why) {
    return error_payload("invalid register payload: " + std::string(why));
  };
  if (payload == nullptr)
    return invalid("missing payload");
  if (!payload->is_object())
    return invalid("payload must be an object");
  auto node_id = payload->find("nodeId");
  if (node_id == payload->end() || !node_id->is_string() ||
      node_id->get_ref<const std::string&>().empty()) {
    return invalid("'nodeId' must be a non-empty string");
  }
  if (node_id->get_ref<const std::string&>().size() > kMaxNameBytes) {
    return invalid("'nodeId' exceeds 128 bytes");
  }
  std::string alias;
  if (auto a = payload->find("alias"); a != payload->end() && !a->is_null()) {
    if (!a->is_string() || a->get_ref<const std::string&>().empty()) {
      return invalid("'alias' must be a non-empty string");
    }
    alias = a->get<std::string>();
    if (alias.size() > kMaxNameBytes)
      return invalid("'alias' exceeds 128 bytes");
    if (has_control_chars(alias))
      return invalid("'alias' contains control characters");
  }
  auto host = payload->find("host");
  if (host == payload->end() || !host->is_string() || host->get_ref<const std::string&>().empty()) {
    return invalid("'host' must be a non-empty string");
  }
  auto port = payload->find("port");
  const bool port_ok =
      port != payload->end() &&
      (port->is_number_unsigned()
           ? (port->get<std::uint64_t>() >= 1 && port->get<std::uint64_t>() <= 65535)
           : (port->is_number_integer() && port->get<std::int64_t>() >= 1 &&
              port->get<std::int64_t>() <= 65535));
  if (!port_ok)
    return invalid("'port' must be an integer 1-65535");
  std::int64_t pid = 0;
  if (auto p = payload->find("pid"); p != payload->end() && p->is_number_integer()) {
    pid = p->get<std::int64_t>();
  }
  const std::string& id = node_id->get_ref<const std::string&>();
  if (!alias.empty()) {
    if (auto owner = alias_to_id_.find(alias); owner != alias_to_id_.end() && owner->second != id) {
      return error_payload("Alias '" + alias + "' already in use");
    }
  }

  NodeInfo info;
  info.node_id = id;
  info.alias = alias;
  info.host = host->get<std::string>();
  info.port = static_cast<std::uint16_t>(port->get<std::int64_t>());
  info.last_heartbeat = now_ms;
  info.registered_at = now_ms;
  info.pid = pid;

  if (auto existing = by_id_.find(id); existing != by_id_.end()) {
    // Same nodeId: replace in place (keeps its place in the order), no event.
    Entry& entry = entries_.at(existing->second);
    if (!entry.info.alias.empty() && entry.info.alias != alias)
      alias_to_id_.erase(entry.info.alias);
    if (entry.owner != conn) {
      owned_[entry.owner].erase(existing->second);
      if (owned_[entry.owner].empty())
        owned_.erase(entry.owner);
      owned_[conn].insert(existing->second);
      entry.owner = conn;
    }
    entry.info = std::move(info);
    if (!alias.empty())
      alias_to_id_[alias] = id;
    return std::string(kSuccess);
  }
  const Seq seq = next_seq_++;
  Entry& entry = entries_[seq];
  entry.info = std::move(info);
  entry.owner = conn;
  by_id_.emplace(id, seq);
  if (!alias.empty())
    alias_to_id_[alias] = id;
  owned_[conn].insert(seq);
  events.push_back(event_body("peer:join", entry.info, {}));
  return std::string(kSuccess);
}

std::string Registry::remove(Seq seq, std::string_view reason) {
  auto it = entries_.find(seq);
  DISTFLOW_ASSERT(it != entries_.end());
  Entry entry = std::move(it->second);
  entries_.erase(it);
  by_id_.erase(entry.info.node_id);
  if (!entry.info.alias.empty())
    alias_to_id_.erase(entry.info.alias);
  if (auto owned = owned_.find(entry.owner); owned != owned_.end()) {
    owned->second.erase(seq);
    if (owned->second.empty())
      owned_.erase(owned);
  }
  return event_body("peer:leave", entry.info, reason);
}

std::vector<std::string> Registry::connection_closed(ConnectionId conn) {
  watchers_.erase(conn);
  std::vector<std::string> events;
  auto owned = owned_.find(conn);
  if (owned == owned_.end())
    return events;
  const std::set<Seq> seqs = owned->second;
  for (Seq seq : seqs)
    events.push_back(remove(seq, "socket_closed"));
  return events;
}

std::vector<std::string> Registry::expire(std::int64_t now_ms) {
  std::vector<std::string> events;
  if (ttl_.count() <= 0)
    return events;
  std::vector<Seq> expired;
  for (const auto& [seq, entry] : entries_) {
    if (entry.heartbeated && now_ms - entry.info.last_heartbeat > ttl_.count()) {
      expired.push_back(seq);
    }
  }
  for (Seq seq : expired)
    events.push_back(remove(seq, "ttl_expired"));
  return events;
}

std::optional<PmdOutcome> next_outcome(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                                       std::int64_t now_ms, bool loopback) {
  std::error_code ec;
  auto body = decoder.next(ec);
  if (body)
    return registry.handle(conn, *body, now_ms, loopback);
  if (!ec)
    return std::nullopt;
  PmdOutcome out;
  out.problem = describe_frame_error(ec, decoder);
  if (ec == errc::frame_empty) {
    out.problem += " (expected 1 to " + std::to_string(decoder.max_frame_bytes()) + " bytes)";
  }
  out.reply = pmd_response(std::nullopt, error_payload(out.problem));
  out.close = true;
  return out;
}

}  // namespace distflow
