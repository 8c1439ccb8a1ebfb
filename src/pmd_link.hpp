#pragma once

// A node's registration with its PMD (PROTOCOL.md §2), on the node's I/O thread:
// connects through the one PMD client (pmd_client.hpp) with backoff and jitter,
// auto-starts a PMD when none answers for a while, registers, heartbeats from
// the I/O thread (the first at registration), watches the peers and keeps their
// view, resolves names, and unregisters at shutdown.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "pmd_protocol.hpp"

namespace distflow {

class PmdConnection;

struct PmdLinkConfig {
  PmdEndpoint pmd;
  NodeInfo self;  ///< node id, alias, advertised host and port, pid
  std::chrono::milliseconds heartbeat_interval{500};
  bool auto_start_pmd = true;
  std::string executable;  ///< binary re-exec'd as the PMD; empty: self
  /// For the PMDs of other hosts (alias@host): TLS and the cookie; owned by the node.
  const class Credentials* credentials = nullptr;
};

class PmdLink {
 public:
  using PeerHandler = std::function<void(const NodeInfo& peer, std::string_view reason)>;
  /// The answer to a resolve: the node, or nullptr with the error text.
  using Resolved = std::function<void(const NodeInfo* node, const std::string& error)>;

  PmdLink(asio::io_context& io, PmdLinkConfig config);
  ~PmdLink();
  PmdLink(const PmdLink&) = delete;
  PmdLink& operator=(const PmdLink&) = delete;

  // ---- the I/O thread
  /// Starts; `started(error)` runs once: empty once registered (with a first view
  /// of the peers), else why the node could not register.
  void start(std::function<void(const std::string& error)> started);
  /// Resolves an alias or node id through the PMD; while it is unreachable, the
  /// last known view of the peers answers. `alias@host[:port]` asks that host's PMD
  /// (PROTOCOL.md §3.2); a node registered there under a loopback or wildcard
  /// address is reached at `host`.
  void resolve(const std::string& name, Resolved done);
  /// Watches `target` (alias@host[:port]) on that host's PMD: `gone` runs once, on
  /// this thread, when it leaves there, is not registered there, or the watch
  /// connection is lost (the reason in words). `id` names the watch for unwatch().
  void watch_remote(std::uint64_t id, const std::string& target,
                    std::function<void(std::string_view why)> gone);
  void unwatch_remote(std::uint64_t id);
  /// Unregisters (when registered) and runs `done` once answered or after `timeout`.
  void unregister(std::chrono::milliseconds timeout, std::function<void()> done);
  /// Closes the connection and stops reconnecting. Idempotent.
  void stop();
  /// A peer left or moved (its routes and link are stale); runs before the peer handlers.
  void on_peer_changed(
      std::function<void(const NodeInfo& peer, bool left, std::string_view why)> hook) {
    changed_hook_ = std::move(hook);
  }

  // ---- any thread
  /// The registered peers, this node excluded.
  std::vector<NodeInfo> peers() const;
  /// In place when the call returns: a peer that joins after it and is not yet in
  /// peers() reaches the handler. Handlers run on the I/O thread.
  void on_peer_join(PeerHandler handler);
  void on_peer_leave(PeerHandler handler);

 private:
  asio::awaitable<void> run();
  asio::awaitable<void> resolve_remote(PmdEndpoint endpoint, std::string name, std::string target,
                                       Resolved done);
  asio::awaitable<void> heartbeat_loop(std::shared_ptr<PmdConnection> connection);
  asio::awaitable<void> run_remote_watch(std::uint64_t id, PmdEndpoint endpoint, std::string name,
                                         std::string target,
                                         std::function<void(std::string_view)> gone);
  void request(std::string_view type, std::string_view payload,
               std::function<void(const PmdReply*, const std::string&)> done);
  void register_self();
  void send_heartbeat();
  void watch_peers();
  void sync_peers(const std::vector<NodeInfo>& nodes);
  void handle_event(const PmdReply& event);
  void settle(const std::string& error);
  void maybe_restart_pmd(std::chrono::steady_clock::time_point down_since);
  std::optional<NodeInfo> find_peer(std::string_view name) const;
  std::chrono::milliseconds jittered(std::chrono::milliseconds base);
  std::string describe_self() const;

  asio::io_context& io_;
  PmdLinkConfig config_;
  std::shared_ptr<PmdConnection> connection_;
  std::map<std::string, std::shared_ptr<PmdConnection>> remote_;     // other hosts' PMDs, kept
  std::map<std::uint64_t, std::shared_ptr<PmdConnection>> watches_;  // watch_remote()
  asio::steady_timer retry_timer_;
  asio::steady_timer heartbeat_timer_;  // one connection's heartbeats at a time
  asio::steady_timer wake_;             // never expires; cancelled when the connection closes
  std::function<void(const std::string&)> started_;
  std::function<void(const NodeInfo&, bool, std::string_view)> changed_hook_;
  std::chrono::steady_clock::time_point last_reply_;
  std::minstd_rand jitter_;
  bool settled_ = false;
  bool registered_ = false;
  bool stopping_ = false;
  std::thread pmd_starter_;
  std::atomic<bool> pmd_starting_{false};

  // Shared with other threads.
  mutable std::mutex peers_mutex_;
  std::vector<NodeInfo> peers_;  // written by the I/O thread
  std::shared_ptr<const PeerHandler> join_handler_, leave_handler_;
};

}  // namespace distflow
