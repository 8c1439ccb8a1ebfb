#pragma once

// What the PMD server needs of its cluster agent (issue 15), as an interface, so
// that distflow_core does not link etcd's client: the implementation is
// ClusterService (cluster_service.hpp, library distflow_cluster), which
// modes/pmd.cpp makes from --cluster and hands over as a factory. Every call is
// made on the PMD's io_context thread, and every callback runs on it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace asio {
class io_context;
}

namespace distflow {

/// A node registered on another PMD of the cluster.
struct ClusterNode {
  std::string alias;
  std::string info;                  ///< NodeInfo JSON as its PMD published it (advertised host)
  std::int64_t create_revision = 0;  ///< etcd's: the older registration has the smaller one
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

class PmdCluster {
 public:
  /// The answer to publish(): empty when accepted, else the register error text.
  using Verdict = std::function<void(const std::string& error)>;
  using EventHandler = std::function<void(const ClusterEvent& event)>;

  virtual ~PmdCluster() = default;
  /// Joins the cluster; `on_event` gets every remote join and leave in etcd's order
  /// (and conflicts, stale/current changes).
  virtual void start(EventHandler on_event) = 0;
  /// A local registration of `alias` (`info`: its NodeInfo JSON with the advertised
  /// host), after the local checks. `done` runs once, maybe before publish() returns;
  /// not at all after withdraw(alias).
  virtual void publish(std::string alias, std::string info, Verdict done) = 0;
  /// A local node left (unregister, connection closed, TTL): its key goes at once.
  virtual void withdraw(std::string_view alias) = 0;
  /// A remote node by alias (the local registry answers first), or nullptr.
  virtual const ClusterNode* find(std::string_view alias) const = 0;
  virtual std::vector<ClusterNode> nodes() const = 0;  ///< remote nodes, by alias
  virtual ClusterStatus status() const = 0;
  /// Leaves the cluster: the keys vanish at once (waits up to `grace` for etcd).
  /// No callback runs after it. Idempotent.
  virtual void stop(std::chrono::milliseconds grace) = 0;
};

/// Makes the agent on the PMD's io_context; an empty factory: not clustered.
using PmdClusterFactory = std::function<std::unique_ptr<PmdCluster>(asio::io_context& io)>;

}  // namespace distflow
