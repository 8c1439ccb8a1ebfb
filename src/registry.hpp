#pragma once

// The PMD's state and every rule of PROTOCOL.md §2.1-2.3, without sockets or
// clocks: a request body in, the response and the events it causes out.
// Time is passed in (ms since the epoch), so TTL logic is testable.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

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
  /// Clustered: a register that waits for the cluster's verdict. No reply was
  /// written; Registry::finish_register() gives it, and the connection's later
  /// requests wait until then.
  struct Held {
    std::string node_id, alias;
    std::string info;                       ///< the NodeInfo JSON to publish
    std::optional<std::string> request_id;  ///< its raw JSON text
  };
  std::optional<Held> held;
};

/// What the cluster agent must be told after a request (clustered registries only):
/// publish `alias` with `info`, or (`info` empty) withdraw it.
struct ClusterOp {
  std::string alias;
  std::string info;
};

/// What the registry has done since it was made (for the daemon's periodic log line).
struct RegistryStats {
  std::uint64_t joins = 0;
  std::uint64_t leaves = 0;         ///< for every reason
  std::uint64_t ttl_expired = 0;    ///< the leaves for reason ttl_expired
  std::uint64_t unregistered = 0;   ///< ... for reason unregister
  std::uint64_t socket_closed = 0;  ///< ... for reason socket_closed
  friend bool operator==(const RegistryStats&, const RegistryStats&) = default;
};

/// Request types as counted (PmdRequestCounts::by_type): the protocol's, then
/// "other" for a request object whose type is none of them (or absent).
inline constexpr std::array<std::string_view, 8> kPmdRequestTypes{
    "register", "unregister", "resolve", "heartbeat", "list", "watch", "shutdown", "other"};
/// Error replies as counted (PmdRequestCounts::errors): a bad frame (empty, over
/// the limit), a body that is not a JSON object, an unknown type, an invalid
/// register payload, a name taken by another node, a node owned by another
/// connection, an unknown node, a refused shutdown.
inline constexpr std::array<std::string_view, 8> kPmdErrorKinds{
    "frame",         "malformed_json", "unknown_type", "invalid_register",
    "name_conflict", "not_owner",      "not_found",    "shutdown_refused"};

/// The requests read and the errors answered since the registry was made.
struct PmdRequestCounts {
  std::array<std::uint64_t, kPmdRequestTypes.size()> by_type{};  ///< kPmdRequestTypes' order
  std::array<std::uint64_t, kPmdErrorKinds.size()> errors{};     ///< kPmdErrorKinds' order
};

/// The TTL of nodes that heartbeat without announcing their interval.
inline constexpr std::chrono::milliseconds kDefaultTtl{15000};
/// Announced intervals without a heartbeat before a node is expired.
inline constexpr unsigned kDefaultMissedHeartbeats = 4;

/// The registered nodes, their owners and the watchers.
class Registry {
 public:
  /// A node that announced its heartbeat interval ("heartbeatMs") at registration
  /// is removed after `missed_heartbeats` intervals without a heartbeat, counted
  /// from its registration. One that did not (the TypeScript original, every 5 s)
  /// is held to `ttl` once it has sent a heartbeat, and never expired before.
  /// `ttl` 0: no node ever expires.
  explicit Registry(std::chrono::milliseconds ttl = kDefaultTtl,
                    unsigned missed_heartbeats = kDefaultMissedHeartbeats);

  /// Handles one request body from `conn`. Never throws on peer input.
  PmdOutcome handle(ConnectionId conn, std::string_view body, std::int64_t now_ms, bool loopback);
  /// The same, for the server's hot path: appends the reply body to `reply` (no
  /// temporary strings) and fills the rest of `outcome`, whose `reply` it leaves
  /// alone. `padded`: at least kFramePadding readable bytes follow `body`.
  void handle_into(ConnectionId conn, std::string_view body, bool padded, std::int64_t now_ms,
                   bool loopback, std::string& reply, PmdOutcome& outcome);
  /// The same for a request already read (tests give it another reader's reading).
  void handle_request(ConnectionId conn, const PmdRequest& request, std::int64_t now_ms,
                      bool loopback, std::string& reply, PmdOutcome& outcome);
  /// `conn` closed: forgets it as a watcher, removes its nodes (reason socket_closed).
  std::vector<std::string> connection_closed(ConnectionId conn);
  /// Removes the nodes silent for longer than their TTL (reason ttl_expired).
  std::vector<std::string> expire(std::int64_t now_ms);

  const RegistryStats& stats() const { return stats_; }
  const PmdRequestCounts& requests() const { return requests_; }
  /// Counts a frame the connection's decoder refused (next_outcome does).
  void count_frame_error() { ++requests_.errors[0]; }
  std::size_t size() const { return by_id_.size(); }
  /// Registered nodes in registration order.
  std::vector<NodeInfo> nodes() const;
  const std::set<ConnectionId>& watchers() const { return watchers_; }
  /// Nodes owned by `conn` (0 when none).
  std::size_t owned_by(ConnectionId conn) const;

  // ---- the cluster (issue 15) -----------------------------------------------------
  /// Makes this registry clustered: a register of a new aliased node is held
  /// (PmdOutcome::held) until finish_register(); its published NodeInfo names
  /// `pmd` ("host:port", this PMD); `list` with the cluster appends
  /// "cluster": the JSON `state` appends.
  void set_cluster(std::string pmd, std::function<void(std::string&)> state);
  bool clustered() const { return static_cast<bool>(cluster_state_); }
  const std::string& pmd() const { return pmd_; }  ///< this PMD, as the cluster names it
  /// The cluster's verdict on a held register: appends its response payload to
  /// `payload` and its events to `events`; false when the node is gone meanwhile
  /// (its connection closed: nothing to answer).
  bool finish_register(ConnectionId conn, std::string_view node_id, std::string_view error,
                       std::string& payload, std::vector<std::string>& events);
  /// A remote node joined (or changed): its events (marked remote) for the watchers.
  std::vector<std::string> remote_join(NodeInfo node);
  /// A remote node left: its peer:leave (reason "cluster"), or nothing when unknown.
  std::vector<std::string> remote_leave(std::string_view alias);
  /// Remote nodes, by alias.
  std::vector<NodeInfo> remote_nodes() const;
  /// Publishes and withdrawals owed to the cluster since the last call, in order.
  std::vector<ClusterOp> take_cluster_ops() { return std::exchange(cluster_ops_, {}); }
  /// False for a watcher that asked for local events only ("cluster":false).
  bool wants_cluster(ConnectionId conn) const { return !local_watchers_.contains(conn); }

 private:
  struct Entry {
    NodeInfo info;
    std::string json;  ///< `info` rendered (append_node_info), kept in step with it
    ConnectionId owner = 0;
    bool heartbeated = false;
    std::int64_t heartbeat_ms = 0;  ///< announced at registration; 0: not announced
    bool pending = false;    ///< clustered: waiting for the verdict (invisible, no event yet)
    bool published = false;  ///< clustered: its alias is in the cluster (withdraw it on leave)
  };
  struct Remote {
    NodeInfo info;
    std::string json;
  };
  using Seq = std::uint64_t;
  /// A validated register payload (views into the request).
  struct Registration {
    std::string_view node_id;
    std::string_view alias;  ///< empty: none
    std::string_view host;
    std::uint16_t port = 0;
    std::int64_t pid = 0;
    std::int64_t heartbeat_ms = 0;
    std::uint32_t max_frame = 0;
  };
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using NameIndex = std::unordered_map<std::string, Seq, NameHash, std::equal_to<>>;

  /// The operations; each appends its response payload to `out`.
  void do_register(ConnectionId conn, const Registration& r, std::int64_t now_ms, std::string& out,
                   PmdOutcome& outcome);
  void do_unregister(ConnectionId conn, std::string_view node_id, std::string& out,
                     std::vector<std::string>& events);
  void do_resolve(std::string_view alias, std::string_view node_id, std::string& out);
  void do_list(ConnectionId conn, bool watch, bool snapshot, bool cluster, std::string& out);
  void do_heartbeat(std::string_view node_id, std::int64_t now_ms, std::string& out);
  void do_shutdown(bool loopback, bool force, std::string& out, PmdOutcome& outcome);
  /// Appends an error payload, counted under `kind` (one of kPmdErrorKinds).
  void fail(std::string& out, std::string_view kind, std::string_view message);
  std::string remove(Seq seq, std::string_view reason);
  Entry* find_id(std::string_view node_id);
  const Entry* find_alias_or_id(std::string_view name) const;

  std::chrono::milliseconds ttl_;
  unsigned missed_heartbeats_;
  PmdRequestParser parser_;
  RegistryStats stats_;
  PmdRequestCounts requests_;
  Seq next_seq_ = 1;
  std::map<Seq, Entry> entries_;  // registration order
  NameIndex by_id_;
  NameIndex by_alias_;
  std::unordered_map<ConnectionId, std::set<Seq>> owned_;
  std::set<ConnectionId> watchers_;
  // The cluster (empty unless set_cluster()).
  std::string pmd_;
  std::function<void(std::string&)> cluster_state_;
  std::map<std::string, Remote, std::less<>> remote_;  // by alias
  std::unordered_map<std::string, std::string, NameHash, std::equal_to<>> remote_alias_of_;  // id
  std::set<ConnectionId> local_watchers_;
  std::vector<ClusterOp> cluster_ops_;
};

/// How often the daemon should call expire() for `ttl`: clamp(ttl / 8, 10 ms, 1 s),
/// and 1 s when `ttl` is 0.
std::chrono::milliseconds expiry_sweep_period(std::chrono::milliseconds ttl);

/// The whole inbound path of one connection without sockets (the server's read
/// loop and the fuzz target): takes the next complete frame buffered in
/// `decoder` through the registry. nullopt when more bytes are needed; a
/// framing error yields an outcome with the error reply and `close` set.
std::optional<PmdOutcome> next_outcome(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                                       std::int64_t now_ms, bool loopback);
/// The same for the server's hot path: appends the reply to `frames` as one frame
/// (`outcome.reply` stays empty); false, with nothing written, when more bytes are needed.
bool next_outcome_into(Registry& registry, ConnectionId conn, FrameDecoder& decoder,
                       std::int64_t now_ms, bool loopback, std::string& frames,
                       PmdOutcome& outcome);

/// The response body {"type":"response",["requestId":R,]"payload":P}; `request_id_json`
/// is the raw JSON text of the request's id, or nullopt when it had none.
std::string pmd_response(const std::optional<std::string>& request_id_json,
                         std::string_view payload_json);

}  // namespace distflow
