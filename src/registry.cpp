#include "registry.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "messages.hpp"

namespace distflow {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxNameBytes = 128;
constexpr std::size_t kMaxWhyBytes = 200;

void append_error(std::string& out, std::string_view message) {
  out += "{\"error\":";
  append_json_string(out, message);
  out += '}';
}

std::string error_payload(std::string_view message) {
  std::string out;
  append_error(out, message);
  return out;
}

constexpr std::string_view kSuccess = R"({"success":true})";
constexpr std::string_view kNotFound = "Node not found";

std::string event_body(std::string_view event, std::string_view node_json,
                       std::string_view reason) {
  std::string out = R"({"type":"event","payload":{"event":")";
  out += event;
  out += "\",\"peer\":";
  out += node_json;
  if (!reason.empty()) {
    out += ",\"reason\":\"";
    out += reason;
    out += '"';
  }
  out += "}}";
  return out;
}

/// {"type":"response",["requestId":R,]"payload": — the caller appends P and '}'.
void append_response_head(std::string& out, std::optional<std::string_view> request_id_json) {
  if (request_id_json) {
    out += R"({"type":"response","requestId":)";
    out += *request_id_json;
    out += R"(,"payload":)";
  } else {
    out += R"({"type":"response","payload":)";
  }
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

std::string parse_error_text(const json::exception& e) {
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
  auto it = by_id_.find(node_id);
  return it == by_id_.end() ? nullptr : &entries_.at(it->second);
}

const Registry::Entry* Registry::find_alias_or_id(std::string_view name) const {
  if (auto a = by_alias_.find(name); a != by_alias_.end())
    return &entries_.at(a->second);
  if (auto id = by_id_.find(name); id != by_id_.end())
    return &entries_.at(id->second);
  return nullptr;
}

PmdOutcome Registry::handle(ConnectionId conn, std::string_view body, std::int64_t now_ms,
                            bool loopback) {
  PmdOutcome out;
  handle_into(conn, body, false, now_ms, loopback, out.reply, out);
  return out;
}

void Registry::handle_into(ConnectionId conn, std::string_view body, bool padded,
                           std::int64_t now_ms, bool loopback, std::string& reply,
                           PmdOutcome& outcome) {
  PmdRequestView request;
  if (fast_path_ && parser_.parse(body, padded, request) &&
      handle_fast(conn, request, now_ms, loopback, reply, outcome)) {
    return;
  }
  handle_full(conn, body, now_ms, loopback, reply, outcome);
}

bool Registry::handle_fast(ConnectionId conn, const PmdRequestView& request, std::int64_t now_ms,
                           bool loopback, std::string& reply, PmdOutcome& outcome) {
  const std::string_view type = request.type;
  const std::string_view node_id = request.node_id.value_or(std::string_view());
  if (type == "resolve") {
    append_response_head(reply, request.request_id);
    do_resolve(request.alias.value_or(std::string_view()), node_id, reply);
  } else if (type == "heartbeat") {
    append_response_head(reply, request.request_id);
    do_heartbeat(node_id, now_ms, reply);
  } else if (type == "register") {
    // Only a valid payload here: every error text comes from the full parser.
    const std::string_view alias = request.alias.value_or(std::string_view());
    const std::string_view host = request.host.value_or(std::string_view());
    const std::int64_t port = request.port.value_or(0);
    if (!request.payload || node_id.empty() || node_id.size() > kMaxNameBytes ||
        (request.alias &&
         (alias.empty() || alias.size() > kMaxNameBytes || has_control_chars(alias))) ||
        host.empty() || port < 1 || port > 65535) {
      return false;
    }
    append_response_head(reply, request.request_id);
    do_register(conn,
                Registration{node_id, alias, host, static_cast<std::uint16_t>(port),
                             request.pid.value_or(0)},
                now_ms, reply, outcome.events);
  } else if (type == "unregister") {
    append_response_head(reply, request.request_id);
    do_unregister(conn, node_id, reply, outcome.events);
  } else if (type == "list" || type == "watch") {
    const bool watch = type == "watch";
    append_response_head(reply, request.request_id);
    do_list(conn, watch, !watch || request.snapshot.value_or(false), reply);
  } else if (type == "shutdown") {
    append_response_head(reply, request.request_id);
    do_shutdown(loopback, request.force.value_or(false), reply, outcome);
  } else {
    append_response_head(reply, request.request_id);
    append_error(reply, "Unknown message type");
  }
  reply += '}';
  return true;
}

void Registry::handle_full(ConnectionId conn, std::string_view body, std::int64_t now_ms,
                           bool loopback, std::string& reply, PmdOutcome& outcome) {
  json request;
  try {
    request = json::parse(body);
  } catch (const json::exception& e) {  // parse_error; out_of_range for 1e400
    reply += pmd_response(std::nullopt, error_payload("malformed JSON: " + parse_error_text(e)));
    return;
  }
  if (!request.is_object()) {
    reply += pmd_response(std::nullopt, error_payload("malformed JSON: not an object"));
    return;
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

  std::string out;
  if (type == "register") {
    auto invalid = [&out](std::string_view why) {
      append_error(out, "invalid register payload: " + std::string(why));
    };
    const auto member = [payload](const char* key) {
      auto it = payload->find(key);
      return it == payload->end() ? nullptr : &*it;
    };
    const json* node_id = payload != nullptr && payload->is_object() ? member("nodeId") : nullptr;
    const json* alias = payload != nullptr && payload->is_object() ? member("alias") : nullptr;
    const json* host = payload != nullptr && payload->is_object() ? member("host") : nullptr;
    const json* port = payload != nullptr && payload->is_object() ? member("port") : nullptr;
    const json* pid = payload != nullptr && payload->is_object() ? member("pid") : nullptr;
    if (alias != nullptr && alias->is_null())
      alias = nullptr;
    const auto str = [](const json* j) -> std::string_view {
      return j != nullptr && j->is_string() ? std::string_view(j->get_ref<const std::string&>())
                                            : std::string_view();
    };
    const bool port_ok =
        port != nullptr &&
        (port->is_number_unsigned()
             ? (port->get<std::uint64_t>() >= 1 && port->get<std::uint64_t>() <= 65535)
             : (port->is_number_integer() && port->get<std::int64_t>() >= 1 &&
                port->get<std::int64_t>() <= 65535));
    if (payload == nullptr) {
      invalid("missing payload");
    } else if (!payload->is_object()) {
      invalid("payload must be an object");
    } else if (str(node_id).empty()) {
      invalid("'nodeId' must be a non-empty string");
    } else if (str(node_id).size() > kMaxNameBytes) {
      invalid("'nodeId' exceeds 128 bytes");
    } else if (alias != nullptr && str(alias).empty()) {
      invalid("'alias' must be a non-empty string");
    } else if (alias != nullptr && str(alias).size() > kMaxNameBytes) {
      invalid("'alias' exceeds 128 bytes");
    } else if (alias != nullptr && has_control_chars(str(alias))) {
      invalid("'alias' contains control characters");
    } else if (str(host).empty()) {
      invalid("'host' must be a non-empty string");
    } else if (!port_ok) {
      invalid("'port' must be an integer 1-65535");
    } else {
      const std::int64_t pid_value =
          pid != nullptr && pid->is_number_integer() ? pid->get<std::int64_t>() : 0;
      do_register(conn,
                  Registration{str(node_id), str(alias), str(host),
                               static_cast<std::uint16_t>(port->get<std::int64_t>()), pid_value},
                  now_ms, out, outcome.events);
    }
  } else if (type == "unregister") {
    do_unregister(conn, string_field(payload, "nodeId"), out, outcome.events);
  } else if (type == "resolve") {
    do_resolve(string_field(payload, "alias"), string_field(payload, "nodeId"), out);
  } else if (type == "list" || type == "watch") {
    const bool watch = type == "watch";
    do_list(conn, watch, !watch || bool_field(payload, "snapshot"), out);
  } else if (type == "heartbeat") {
    do_heartbeat(string_field(payload, "nodeId"), now_ms, out);
  } else if (type == "shutdown") {
    do_shutdown(loopback, bool_field(payload, "force"), out, outcome);
  } else {
    append_error(out, "Unknown message type");
  }
  reply += pmd_response(request_id, out);
}

void Registry::do_register(ConnectionId conn, const Registration& r, std::int64_t now_ms,
                           std::string& out, std::vector<std::string>& events) {
  if (!r.alias.empty()) {
    if (auto owner = by_alias_.find(r.alias);
        owner != by_alias_.end() && entries_.at(owner->second).info.node_id != r.node_id) {
      append_error(out, "Alias '" + std::string(r.alias) + "' already in use");
      return;
    }
  }
  NodeInfo info;
  info.node_id = r.node_id;
  info.alias = r.alias;
  info.host = r.host;
  info.port = r.port;
  info.last_heartbeat = now_ms;
  info.registered_at = now_ms;
  info.pid = r.pid;

  if (auto existing = by_id_.find(r.node_id); existing != by_id_.end()) {
    // Same nodeId: replace in place (keeps its place in the order), no event.
    const Seq seq = existing->second;
    Entry& entry = entries_.at(seq);
    if (!entry.info.alias.empty() && entry.info.alias != r.alias)
      by_alias_.erase(entry.info.alias);
    if (entry.owner != conn) {
      owned_[entry.owner].erase(seq);
      if (owned_[entry.owner].empty())
        owned_.erase(entry.owner);
      owned_[conn].insert(seq);
      entry.owner = conn;
    }
    entry.info = std::move(info);
    entry.json.clear();
    append_node_info(entry.json, entry.info);
    if (!r.alias.empty())
      by_alias_.insert_or_assign(std::string(r.alias), seq);
    out += kSuccess;
    return;
  }
  const Seq seq = next_seq_++;
  Entry& entry = entries_[seq];
  entry.info = std::move(info);
  append_node_info(entry.json, entry.info);
  entry.owner = conn;
  by_id_.emplace(entry.info.node_id, seq);
  if (!r.alias.empty())
    by_alias_.insert_or_assign(entry.info.alias, seq);
  owned_[conn].insert(seq);
  events.push_back(event_body("peer:join", entry.json, {}));
  out += kSuccess;
}

void Registry::do_unregister(ConnectionId conn, std::string_view node_id, std::string& out,
                             std::vector<std::string>& events) {
  auto it = by_id_.find(node_id);
  if (it == by_id_.end()) {
    append_error(out, kNotFound);
  } else if (entries_.at(it->second).owner != conn) {
    append_error(out, "Node '" + std::string(node_id) + "' is registered by another connection");
  } else {
    events.push_back(remove(it->second, "unregister"));
    out += kSuccess;
  }
}

void Registry::do_resolve(std::string_view alias, std::string_view node_id,
                          std::string& out) const {
  const std::string_view name = alias.empty() ? node_id : alias;
  const Entry* entry = name.empty() ? nullptr : find_alias_or_id(name);
  if (entry == nullptr) {
    append_error(out, kNotFound);
    return;
  }
  out += "{\"node\":";
  out += entry->json;
  out += '}';
}

void Registry::do_list(ConnectionId conn, bool watch, bool snapshot, std::string& out) {
  if (watch)
    watchers_.insert(conn);
  out +=
      watch ? (snapshot ? R"({"success":true,"nodes":[)" : R"({"success":true)") : R"({"nodes":[)";
  if (snapshot) {
    bool first = true;
    for (const auto& [seq, entry] : entries_) {
      if (!first)
        out += ',';
      first = false;
      out += entry.json;
    }
    out += ']';
  }
  out += '}';
}

void Registry::do_heartbeat(std::string_view node_id, std::int64_t now_ms, std::string& out) {
  Entry* entry = find_id(node_id);
  if (entry == nullptr) {
    append_error(out, kNotFound);
    return;
  }
  entry->heartbeated = true;
  if (entry->info.last_heartbeat != now_ms) {
    entry->info.last_heartbeat = now_ms;
    entry->json.clear();
    append_node_info(entry->json, entry->info);
  }
  out += kSuccess;
}

void Registry::do_shutdown(bool loopback, bool force, std::string& out, PmdOutcome& outcome) const {
  if (!loopback) {
    append_error(out, "shutdown is accepted only from a loopback address");
  } else if (!by_id_.empty() && !force) {
    append_error(out, std::to_string(by_id_.size()) + " nodes are registered; use force");
  } else {
    out += kSuccess;
    outcome.shutdown = true;
  }
}

std::string Registry::remove(Seq seq, std::string_view reason) {
  auto it = entries_.find(seq);
  DISTFLOW_ASSERT(it != entries_.end());
  Entry entry = std::move(it->second);
  entries_.erase(it);
  by_id_.erase(entry.info.node_id);
  if (!entry.info.alias.empty())
    by_alias_.erase(entry.info.alias);
  if (auto owned = owned_.find(entry.owner); owned != owned_.end()) {
    owned->second.erase(seq);
    if (owned->second.empty())
      owned_.erase(owned);
  }
  return event_body("peer:leave", entry.json, reason);
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

namespace {

/// The reply to a framing error (the connection is then closed).
void frame_error(std::error_code ec, const FrameDecoder& decoder, std::string& reply,
                 PmdOutcome& outcome) {
  outcome.problem = describe_frame_error(ec, decoder);
  if (ec == errc::frame_empty) {
    outcome.problem += " (expected 1 to " + std::to_string(decoder.max_frame_bytes()) + " bytes)";
  }
  reply += pmd_response(std::nullopt, error_payload(outcome.problem));
  outcome.close = true;
}

}  // namespace

std::optional<PmdOutcome> next_outcome(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                                       std::int64_t now_ms, bool loopback) {
  std::error_code ec;
  auto body = decoder.next(ec);
  if (body) {
    PmdOutcome out;
    registry.handle_into(conn, *body, true, now_ms, loopback, out.reply, out);
    return out;
  }
  if (!ec)
    return std::nullopt;
  PmdOutcome out;
  frame_error(ec, decoder, out.reply, out);
  return out;
}

bool next_outcome_into(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                       std::int64_t now_ms, bool loopback, std::string& frames,
                       PmdOutcome& outcome) {
  std::error_code ec;
  auto body = decoder.next(ec);
  if (!body && !ec)
    return false;
  const std::size_t header = begin_frame(frames);
  if (body) {
    registry.handle_into(conn, *body, true, now_ms, loopback, frames, outcome);
  } else {
    frame_error(ec, decoder, frames, outcome);
  }
  end_frame(frames, header);
  return true;
}

}  // namespace distflow
