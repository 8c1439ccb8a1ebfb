#include "registry.hpp"

#include <algorithm>

#include "errors.hpp"
#include "json.hpp"

namespace distflow {
namespace {

constexpr std::size_t kMaxNameBytes = 128;
// handle_request() counts each type by its index.
static_assert(kPmdRequestTypes[0] == "register" && kPmdRequestTypes[1] == "unregister" &&
              kPmdRequestTypes[2] == "resolve" && kPmdRequestTypes[3] == "heartbeat" &&
              kPmdRequestTypes[4] == "list" && kPmdRequestTypes[5] == "watch" &&
              kPmdRequestTypes[6] == "shutdown" && kPmdRequestTypes[7] == "other");
static_assert(kPmdErrorKinds[0] == "frame");  // count_frame_error()

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

/// A string field's text; empty when it is absent or not a string.
std::string_view text_of(const PmdField& field) {
  return field.kind == PmdField::Kind::string ? field.text : std::string_view();
}

bool is_true(const PmdField& field) {
  return field.kind == PmdField::Kind::boolean && field.number == 1;
}

/// Absent, or null: an optional register field that was not given.
bool omitted(const PmdField& field) {
  return field.kind == PmdField::Kind::absent || field.kind == PmdField::Kind::null;
}

/// Why `name` is no good as a node's name or host: control characters (C0, DEL,
/// C1: they would act on a terminal that shows them) or invalid UTF-8. Empty if fine.
std::string_view name_problem(std::string_view name) {
  for (std::size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f)
      return "contains control characters";
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    unsigned char lo = 0x80, hi = 0xbf;  // the second byte's range
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      lo = c == 0xe0 ? 0xa0 : 0x80;
      hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      lo = c == 0xf0 ? 0x90 : 0x80;
      hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
      return "is not valid UTF-8";
    }
    if (name.size() - i < length)
      return "is not valid UTF-8";
    for (std::size_t k = 1; k < length; ++k) {
      const auto b = static_cast<unsigned char>(name[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf))
        return "is not valid UTF-8";
    }
    if (c == 0xc2 && static_cast<unsigned char>(name[i + 1]) <= 0x9f)
      return "contains control characters";  // C1: U+0080..U+009F
    i += length;
  }
  return {};
}

/// An integer field within [min, max].
bool integer_in(const PmdField& field, std::int64_t min, std::int64_t max) {
  return field.kind == PmdField::Kind::integer && field.number >= min && field.number <= max;
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

Registry::Registry(std::chrono::milliseconds ttl, unsigned missed_heartbeats)
    : ttl_(ttl), missed_heartbeats_(missed_heartbeats) {}

std::vector<NodeInfo> Registry::nodes() const {
  std::vector<NodeInfo> out;
  out.reserve(entries_.size());
  for (const auto& [seq, entry] : entries_) {
    if (!entry.pending)
      out.push_back(entry.info);
  }
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
  const Entry* found = nullptr;
  if (auto a = by_alias_.find(name); a != by_alias_.end()) {
    found = &entries_.at(a->second);
  } else if (auto id = by_id_.find(name); id != by_id_.end()) {
    found = &entries_.at(id->second);
  }
  return found != nullptr && !found->pending ? found : nullptr;
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
  PmdRequest request;
  std::string why;
  if (auto ec = parser_.parse(body, padded, request, &why)) {
    append_response_head(reply, std::nullopt);
    fail(reply, "malformed_json",
         "malformed JSON: " + (ec == errc::not_an_object ? std::string("not an object") : why));
    reply += '}';
    return;
  }
  handle_request(conn, request, now_ms, loopback, reply, outcome);
}

void Registry::handle_request(ConnectionId conn, const PmdRequest& request, std::int64_t now_ms,
                              bool loopback, std::string& reply, PmdOutcome& outcome) {
  const std::string_view type = request.type;
  auto& count = requests_.by_type;  // indexes: kPmdRequestTypes
  const std::size_t start = reply.size();
  append_response_head(reply, request.request_id);
  if (!loopback && (type == "register" || type == "unregister" || type == "heartbeat")) {
    // epmd's rule: a host's PMD serves its own nodes; others may only look them up.
    ++count[type == "register" ? 0 : type == "unregister" ? 1 : 3];
    append_error(reply, std::string("'") + std::string(type) +
                            "' is accepted only from a loopback address: a node registers with "
                            "its own host's PMD");
    outcome.close = true;
    outcome.problem = std::string(type) + " from a remote address";
  } else if (type == "resolve") {
    ++count[2];
    do_resolve(text_of(request.alias), text_of(request.node_id), reply);
  } else if (type == "heartbeat") {
    ++count[3];
    do_heartbeat(text_of(request.node_id), now_ms, reply);
  } else if (type == "register") {
    ++count[0];
    Registration registration;
    std::string_view why;
    std::string_view field;
    if (request.payload == PmdRequest::Payload::absent) {
      why = "missing payload";
    } else if (request.payload == PmdRequest::Payload::other) {
      why = "payload must be an object";
    }
    const auto check_name = [&why, &field](const PmdField& value, std::string_view name,
                                           bool optional, bool limited) {
      if (!why.empty() || (optional && omitted(value)))
        return;
      field = name;
      const std::string_view text = text_of(value);
      if (text.empty()) {
        why = "must be a non-empty string";
      } else if (limited && text.size() > kMaxNameBytes) {
        why = "exceeds 128 bytes";
      } else {
        why = name_problem(text);
      }
    };
    check_name(request.node_id, "nodeId", false, true);
    check_name(request.alias, "alias", true, true);
    check_name(request.host, "host", false, false);
    if (why.empty() && !integer_in(request.port, 1, 65535)) {
      field = "port";
      why = "must be an integer 1-65535";
    }
    if (why.empty() && !omitted(request.heartbeat_ms) &&
        !integer_in(request.heartbeat_ms, kMinHeartbeatMs, kMaxHeartbeatMs)) {
      field = "heartbeatMs";
      why = "must be an integer 100-600000";
    }
    if (why.empty() && !omitted(request.max_frame) &&
        !integer_in(request.max_frame, kMinMaxFrame, kMaxMaxFrame)) {
      field = "maxFrame";
      why = "must be an integer 16-1073741824";
    }
    if (!why.empty()) {
      std::string message = "invalid register payload: ";
      if (request.payload == PmdRequest::Payload::object) {
        message += '\'';
        message += field;
        message += "' ";
      }
      message += why;
      fail(reply, "invalid_register", message);
    } else {
      registration.node_id = request.node_id.text;
      registration.alias = text_of(request.alias);
      registration.host = request.host.text;
      registration.port = static_cast<std::uint16_t>(request.port.number);
      if (request.pid.kind == PmdField::Kind::integer)
        registration.pid = request.pid.number;
      if (request.heartbeat_ms.kind == PmdField::Kind::integer)
        registration.heartbeat_ms = request.heartbeat_ms.number;
      if (request.max_frame.kind == PmdField::Kind::integer)
        registration.max_frame = static_cast<std::uint32_t>(request.max_frame.number);
      do_register(conn, registration, now_ms, reply, outcome);
      if (outcome.held) {
        // The reply comes with the cluster's verdict (finish_register).
        reply.resize(start);
        if (request.request_id)
          outcome.held->request_id = std::string(*request.request_id);
        return;
      }
    }
  } else if (type == "unregister") {
    ++count[1];
    do_unregister(conn, text_of(request.node_id), reply, outcome.events);
  } else if (type == "list" || type == "watch") {
    const bool watch = type == "watch";
    ++count[watch ? 5 : 4];
    // Clustered, list and watch include the cluster unless told "cluster":false.
    const bool cluster = clustered() && !(request.cluster.kind == PmdField::Kind::boolean &&
                                          request.cluster.number == 0);
    do_list(conn, watch, !watch || is_true(request.snapshot), cluster, reply);
  } else if (type == "shutdown") {
    ++count[6];
    do_shutdown(loopback, is_true(request.force), reply, outcome);
  } else {
    ++count[7];
    fail(reply, "unknown_type", "Unknown message type");
  }
  reply += '}';
}

void Registry::do_register(ConnectionId conn, const Registration& r, std::int64_t now_ms,
                           std::string& out, PmdOutcome& outcome) {
  std::vector<std::string>& events = outcome.events;
  // Names are unambiguous: one node per nodeId (its connection's), one per alias,
  // and no alias that is another node's nodeId (resolve takes either).
  const auto other_node = [&r, this](const NameIndex& index, std::string_view name) {
    auto it = index.find(name);
    return it != index.end() && entries_.at(it->second).info.node_id != r.node_id;
  };
  if (auto existing = by_id_.find(r.node_id);
      existing != by_id_.end() && entries_.at(existing->second).owner != conn) {
    fail(out, "name_conflict",
         "nodeId '" + std::string(r.node_id) + "' is registered by another connection");
    return;
  }
  if (!r.alias.empty() && other_node(by_alias_, r.alias)) {
    fail(out, "name_conflict", "Alias '" + std::string(r.alias) + "' already in use");
    return;
  }
  if (!r.alias.empty() && other_node(by_id_, r.alias)) {
    fail(out, "name_conflict",
         "alias '" + std::string(r.alias) + "' is the nodeId of another node");
    return;
  }
  if (other_node(by_alias_, r.node_id)) {
    fail(out, "name_conflict",
         "nodeId '" + std::string(r.node_id) + "' is the alias of another node");
    return;
  }
  // Clustered, an alias is unique across the cluster: a remote node holds it.
  if (clustered() && !r.alias.empty() && remote_.contains(r.alias)) {
    auto existing = by_alias_.find(r.alias);
    if (existing == by_alias_.end() || entries_.at(existing->second).info.node_id != r.node_id) {
      fail(out, "name_conflict", "Alias '" + std::string(r.alias) + "' already in use");
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
  info.max_frame = r.max_frame;
  const auto cluster_info = [this](NodeInfo node) {
    node.pmd = pmd_;
    std::string json;
    append_node_info(json, node);
    return json;
  };

  if (auto existing = by_id_.find(r.node_id); existing != by_id_.end()) {
    // Same nodeId: replace in place (keeps its place in the order), no event.
    const Seq seq = existing->second;
    Entry& entry = entries_.at(seq);
    if (!entry.info.alias.empty() && entry.info.alias != r.alias)
      by_alias_.erase(entry.info.alias);
    if (entry.published) {
      // Its key in the cluster is replaced (not held: the node is known already).
      cluster_ops_.push_back({entry.info.alias, {}});
      entry.published = !r.alias.empty();
      if (entry.published)
        cluster_ops_.push_back({std::string(r.alias), cluster_info(info)});
    }
    entry.info = std::move(info);
    entry.heartbeat_ms = r.heartbeat_ms;
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
  entry.heartbeat_ms = r.heartbeat_ms;
  by_id_.emplace(entry.info.node_id, seq);
  if (!r.alias.empty())
    by_alias_.insert_or_assign(entry.info.alias, seq);
  owned_[conn].insert(seq);
  if (clustered() && !r.alias.empty()) {
    // Invisible, its alias taken here, until the cluster says whether it is free.
    entry.pending = true;
    outcome.held = PmdOutcome::Held{entry.info.node_id, entry.info.alias, cluster_info(entry.info),
                                    std::nullopt};
    return;
  }
  ++stats_.joins;
  events.push_back(event_body("peer:join", entry.json, {}));
  out += kSuccess;
}

void Registry::set_cluster(std::string pmd, std::function<void(std::string&)> state) {
  pmd_ = std::move(pmd);
  cluster_state_ = std::move(state);
}

bool Registry::finish_register(ConnectionId conn, std::string_view node_id, std::string_view error,
                               std::string& payload, std::vector<std::string>& events) {
  auto it = by_id_.find(node_id);
  if (it == by_id_.end())
    return false;
  const Seq seq = it->second;
  Entry& entry = entries_.at(seq);
  if (!entry.pending || entry.owner != conn)
    return false;
  if (!error.empty()) {
    by_id_.erase(it);
    by_alias_.erase(entry.info.alias);
    if (auto owned = owned_.find(conn); owned != owned_.end()) {
      owned->second.erase(seq);
      if (owned->second.empty())
        owned_.erase(owned);
    }
    entries_.erase(seq);
    fail(payload, "name_conflict", error);
    return true;
  }
  entry.pending = false;
  entry.published = true;
  ++stats_.joins;
  events.push_back(event_body("peer:join", entry.json, {}));
  payload += kSuccess;
  return true;
}

std::vector<std::string> Registry::remote_join(NodeInfo node) {
  std::vector<std::string> events;
  if (node.alias.empty())
    return events;
  node.remote = true;
  if (auto it = remote_.find(node.alias); it != remote_.end()) {
    if (it->second.info.node_id != node.node_id) {
      for (auto& event : remote_leave(node.alias))
        events.push_back(std::move(event));
    } else {
      remote_alias_of_.erase(it->second.info.node_id);
      remote_.erase(it);  // the same node, its entry updated: no event
      Remote& remote = remote_[node.alias];
      append_node_info(remote.json, node);
      remote_alias_of_.insert_or_assign(node.node_id, node.alias);
      remote.info = std::move(node);
      return events;
    }
  }
  Remote& remote = remote_[node.alias];
  append_node_info(remote.json, node);
  remote_alias_of_.insert_or_assign(node.node_id, node.alias);
  remote.info = std::move(node);
  events.push_back(event_body("peer:join", remote.json, {}));
  return events;
}

std::vector<std::string> Registry::remote_leave(std::string_view alias) {
  std::vector<std::string> events;
  auto it = remote_.find(alias);
  if (it == remote_.end())
    return events;
  if (auto id = remote_alias_of_.find(it->second.info.node_id);
      id != remote_alias_of_.end() && id->second == alias) {
    remote_alias_of_.erase(id);
  }
  events.push_back(event_body("peer:leave", it->second.json, "cluster"));
  remote_.erase(it);
  return events;
}

std::vector<NodeInfo> Registry::remote_nodes() const {
  std::vector<NodeInfo> out;
  out.reserve(remote_.size());
  for (const auto& [alias, remote] : remote_)
    out.push_back(remote.info);
  return out;
}

void Registry::do_unregister(ConnectionId conn, std::string_view node_id, std::string& out,
                             std::vector<std::string>& events) {
  auto it = by_id_.find(node_id);
  if (it == by_id_.end()) {
    fail(out, "not_found", kNotFound);
  } else if (entries_.at(it->second).owner != conn) {
    fail(out, "not_owner",
         "Node '" + std::string(node_id) + "' is registered by another connection");
  } else {
    if (auto event = remove(it->second, "unregister"); !event.empty())
      events.push_back(std::move(event));
    out += kSuccess;
  }
}

void Registry::do_resolve(std::string_view alias, std::string_view node_id, std::string& out) {
  const std::string_view name = alias.empty() ? node_id : alias;
  const Entry* entry = name.empty() ? nullptr : find_alias_or_id(name);
  const std::string* json = entry != nullptr ? &entry->json : nullptr;
  if (json == nullptr && !name.empty() && !remote_.empty()) {
    // Local first, then the cluster: a remote alias, then a remote nodeId.
    auto remote = remote_.find(name);
    if (remote == remote_.end()) {
      if (auto id = remote_alias_of_.find(name); id != remote_alias_of_.end())
        remote = remote_.find(id->second);
    }
    if (remote != remote_.end())
      json = &remote->second.json;
  }
  if (json == nullptr) {
    fail(out, "not_found", kNotFound);
    return;
  }
  out += "{\"node\":";
  out += *json;
  out += '}';
}

void Registry::do_list(ConnectionId conn, bool watch, bool snapshot, bool cluster,
                       std::string& out) {
  if (watch) {
    watchers_.insert(conn);
    if (clustered() && !cluster)
      local_watchers_.insert(conn);
  }
  out +=
      watch ? (snapshot ? R"({"success":true,"nodes":[)" : R"({"success":true)") : R"({"nodes":[)";
  if (snapshot) {
    bool first = true;
    for (const auto& [seq, entry] : entries_) {
      if (entry.pending)
        continue;
      if (!first)
        out += ',';
      first = false;
      out += entry.json;
    }
    if (cluster) {
      for (const auto& [alias, remote] : remote_) {
        if (!first)
          out += ',';
        first = false;
        out += remote.json;
      }
    }
    out += ']';
  }
  if (cluster && !watch) {
    out += ",\"cluster\":";
    cluster_state_(out);
  }
  out += '}';
}

void Registry::do_heartbeat(std::string_view node_id, std::int64_t now_ms, std::string& out) {
  Entry* entry = find_id(node_id);
  if (entry == nullptr) {
    fail(out, "not_found", kNotFound);
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

void Registry::do_shutdown(bool loopback, bool force, std::string& out, PmdOutcome& outcome) {
  if (!loopback) {
    fail(out, "shutdown_refused", "shutdown is accepted only from a loopback address");
  } else if (!by_id_.empty() && !force) {
    fail(out, "shutdown_refused",
         std::to_string(by_id_.size()) + " nodes are registered; use force");
  } else {
    out += kSuccess;
    outcome.shutdown = true;
  }
}

void Registry::fail(std::string& out, std::string_view kind, std::string_view message) {
  const auto at = std::find(kPmdErrorKinds.begin(), kPmdErrorKinds.end(), kind);
  DISTFLOW_ASSERT(at != kPmdErrorKinds.end());
  ++requests_.errors[static_cast<std::size_t>(at - kPmdErrorKinds.begin())];
  append_error(out, message);
}

std::string Registry::remove(Seq seq, std::string_view reason) {
  auto it = entries_.find(seq);
  DISTFLOW_ASSERT(it != entries_.end());
  Entry entry = std::move(it->second);
  entries_.erase(it);
  if (entry.published || entry.pending)
    cluster_ops_.push_back({entry.info.alias, {}});
  by_id_.erase(entry.info.node_id);
  if (!entry.info.alias.empty())
    by_alias_.erase(entry.info.alias);
  if (auto owned = owned_.find(entry.owner); owned != owned_.end()) {
    owned->second.erase(seq);
    if (owned->second.empty())
      owned_.erase(owned);
  }
  if (entry.pending)
    return {};  // it never joined
  ++stats_.leaves;
  if (reason == "ttl_expired") {
    ++stats_.ttl_expired;
  } else if (reason == "unregister") {
    ++stats_.unregistered;
  } else if (reason == "socket_closed") {
    ++stats_.socket_closed;
  }
  return event_body("peer:leave", entry.json, reason);
}

std::vector<std::string> Registry::connection_closed(ConnectionId conn) {
  watchers_.erase(conn);
  local_watchers_.erase(conn);
  std::vector<std::string> events;
  auto owned = owned_.find(conn);
  if (owned == owned_.end())
    return events;
  const std::set<Seq> seqs = owned->second;
  for (Seq seq : seqs) {
    if (auto event = remove(seq, "socket_closed"); !event.empty())
      events.push_back(std::move(event));
  }
  return events;
}

std::vector<std::string> Registry::expire(std::int64_t now_ms) {
  std::vector<std::string> events;
  if (ttl_.count() <= 0)
    return events;
  std::vector<Seq> expired;
  for (const auto& [seq, entry] : entries_) {
    // A node that announced its interval heartbeats from its registration on.
    if ((!entry.heartbeated && entry.heartbeat_ms == 0) || entry.pending)
      continue;
    const std::int64_t ttl =
        entry.heartbeat_ms > 0 ? static_cast<std::int64_t>(missed_heartbeats_) * entry.heartbeat_ms
                               : ttl_.count();
    if (now_ms - entry.info.last_heartbeat > ttl)
      expired.push_back(seq);
  }
  for (Seq seq : expired)
    events.push_back(remove(seq, "ttl_expired"));
  return events;
}

std::chrono::milliseconds expiry_sweep_period(std::chrono::milliseconds ttl) {
  using std::chrono::milliseconds;
  // Announced intervals are short (distflow's nodes: 500 ms, so 2 s): the sweep
  // runs often enough for those whatever the TTL of the others.
  constexpr milliseconds kAnnouncedBasis{2000};
  if (ttl.count() <= 0)
    return milliseconds(1000);
  return std::clamp(std::min(ttl, kAnnouncedBasis) / 8, milliseconds(10), milliseconds(1000));
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
  registry.count_frame_error();
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
    if (outcome.held) {
      frames.resize(header);  // no reply yet: the cluster's verdict gives it
      return true;
    }
  } else {
    registry.count_frame_error();
    frame_error(ec, decoder, frames, outcome);
  }
  end_frame(frames, header);
  return true;
}

}  // namespace distflow
