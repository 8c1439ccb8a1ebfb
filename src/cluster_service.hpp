#pragma once

// The PMD's etcd agent at work: a ClusterAgent (cluster.hpp, the decisions) on the
// PMD's io_context, an EtcdClient (its own thread) for the requests, and a timer
// for the agent's deadlines. Everything here is called on the io_context's thread
// and calls back on it; the client's answers cross over by asio::post.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/io_context.hpp>

#include "cluster.hpp"
#include "etcd_client.hpp"

namespace distflow {

struct ClusterServiceOptions {
  EtcdOptions etcd;
  ClusterConfig cluster;
};

/// A remote node joined or left (for the PMD's watchers and its remote entries); a
/// local registration lost its alias to `node` (conflict: it stays local only); the
/// view went stale (etcd unreachable: `reason`) or is current again.
struct ClusterEvent {
  enum class Kind { join, leave, conflict, stale, current };
  Kind kind = Kind::join;
  ClusterNode node;
  std::string reason;
};

struct ClusterStatus {
  bool stale = true;         ///< etcd unreachable (or not read yet): the view may be old
  std::string stale_reason;  ///< the last error while stale
  std::int64_t revision = 0;
  std::int64_t lease = 0;
  std::size_t remote_nodes = 0;
};

class ClusterService {
 public:
  /// The answer to publish(): empty when accepted, else the register error text.
  using Verdict = std::function<void(const std::string& error)>;
  using EventHandler = std::function<void(const ClusterEvent& event)>;

  /// Throws distflow::Error when the etcd options are unusable (TLS files).
  ClusterService(asio::io_context& io, ClusterServiceOptions options);
  ~ClusterService();  ///< stop(0)
  ClusterService(const ClusterService&) = delete;
  ClusterService& operator=(const ClusterService&) = delete;

  /// Grants the lease, reads the cluster, watches it; `on_event` gets every remote
  /// join and leave in etcd's order (and conflicts, stale/current changes).
  void start(EventHandler on_event);
  /// A local registration of `alias` (`info`: its NodeInfo JSON, advertised host).
  /// `done` runs once, maybe before publish() returns; not at all after withdraw(alias).
  void publish(std::string alias, std::string info, Verdict done);
  /// A local node left (unregister, connection closed, TTL): its key goes at once.
  void withdraw(std::string_view alias);

  /// A remote node by alias (the local registry answers first), or nullptr.
  const ClusterNode* find(std::string_view alias) const;
  std::vector<ClusterNode> nodes() const;  ///< remote nodes, by alias
  ClusterStatus status() const;

  /// Revokes the lease (the keys vanish at once; waits up to `grace` for etcd) and
  /// stops the client's thread. No callback runs after it. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace distflow
