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
#include "pmd_cluster.hpp"

namespace distflow {

struct ClusterServiceOptions {
  EtcdOptions etcd;
  ClusterConfig cluster;
};

/// The PmdCluster of a clustered PMD (see pmd_cluster.hpp for each call).
class ClusterService final : public PmdCluster {
 public:
  /// Throws distflow::Error when the etcd options are unusable (TLS files).
  ClusterService(asio::io_context& io, ClusterServiceOptions options);
  ~ClusterService() override;  ///< stop(0)
  ClusterService(const ClusterService&) = delete;
  ClusterService& operator=(const ClusterService&) = delete;

  void start(EventHandler on_event) override;
  void publish(std::string alias, std::string info, Verdict done) override;
  void withdraw(std::string_view alias) override;
  const ClusterNode* find(std::string_view alias) const override;
  std::vector<ClusterNode> nodes() const override;
  ClusterStatus status() const override;
  /// Revokes the lease and stops the client's thread.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(1000)) override;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

/// The factory modes/pmd.cpp hands to the PMD (PmdConfig) when --cluster is given.
PmdClusterFactory cluster_service_factory(ClusterServiceOptions options);

}  // namespace distflow
