#pragma once

// The PMD's state and every rule of PROTOCOL.md §2.1-2.3, without sockets or
// clocks: a request body in, the response and the events it causes out.
// Time is passed in (ms since the epoch), so TTL logic is testable.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "framing.hpp"
#include "pmd_protocol.hpp"

namespace distflow {

/// Identifies one client connection of the daemon (assigned by the server).
using ConnectionId = std::uint64_t;

/// What one inbound frame produced, in the order it must be sent.
struct PmdOutcome {
  std::string reply;                ///< response body for the sender (empty: none)
  std::vector<std::string> events;  ///< event bodies for every watcher, after the reply
  bool close = false;               ///< protocol error: close this connection after the reply
  bool shutdown = false;            ///< accepted shutdown: close everything after the reply
  std::string problem;              ///< why `close` was set (for the log)
};

/// The registered nodes, their owners and the watchers.
class Registry {
 public:
  /// `ttl`: nodes that have heartbeated are expired after this long without one (0: never).
  explicit Registry(std::chrono::milliseconds ttl = std::chrono::milliseconds(15000));

  /// Handles one request body from `conn`. Never throws on peer input.
  PmdOutcome handle(ConnectionId conn, std::string_view body, std::int64_t now_ms, bool loopback);
  /// `conn` closed: forgets it as a watcher, removes its nodes (reason socket_closed).
  std::vector<std::string> connection_closed(ConnectionId conn);
  /// Removes heartbeating nodes silent for longer than the TTL (reason ttl_expired).
  std::vector<std::string> expire(std::int64_t now_ms);

  std::size_t size() const { return by_id_.size(); }
  /// Registered nodes in registration order.
  std::vector<NodeInfo> nodes() const;
  const std::set<ConnectionId>& watchers() const { return watchers_; }
  /// Nodes owned by `conn` (0 when none).
  std::size_t owned_by(ConnectionId conn) const;

 private:
  struct Entry {
    NodeInfo info;
    ConnectionId owner = 0;
    bool heartbeated = false;
  };
  using Seq = std::uint64_t;

  std::string on_register(ConnectionId conn, const nlohmann::json* payload, std::int64_t now_ms,
                          std::vector<std::string>& events);
  std::string remove(Seq seq, std::string_view reason);
  Entry* find_id(std::string_view node_id);
  const Entry* find_alias_or_id(std::string_view name) const;

  std::chrono::milliseconds ttl_;
  Seq next_seq_ = 1;
  std::map<Seq, Entry> entries_;  // registration order
  std::unordered_map<std::string, Seq> by_id_;
  std::unordered_map<std::string, std::string> alias_to_id_;
  std::unordered_map<ConnectionId, std::set<Seq>> owned_;
  std::set<ConnectionId> watchers_;
};

/// The whole inbound path of one connection without sockets (the server's read
/// loop and the fuzz target): takes the next complete frame buffered in
/// `decoder` through the registry. nullopt when more bytes are needed; a
/// framing error yields an outcome with the error reply and `close` set.
std::optional<PmdOutcome> next_outcome(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                                       std::int64_t now_ms, bool loopback);

/// The response body {"type":"response",["requestId":R,]"payload":P}; `request_id_json`
/// is the raw JSON text of the request's id, or nullopt when it had none.
std::string pmd_response(const std::optional<std::string>& request_id_json,
                         std::string_view payload_json);

}  // namespace distflow
