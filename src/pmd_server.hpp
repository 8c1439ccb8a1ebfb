#pragma once

// The port mapper daemon (PROTOCOL.md §2) over the pure registry.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "framing.hpp"
#include "metrics.hpp"
#include "pmd_cluster.hpp"
#include "pmd_protocol.hpp"
#include "registry.hpp"
#include "security_options.hpp"

namespace distflow {

struct PmdConfig {
  std::string bind = "127.0.0.1";
  /// Every address to listen on (`--bind`, repeatable); empty: `bind` alone.
  /// TODO(#12): the server listens on `bind` only; `binds` is parsed and checked.
  std::vector<std::string> binds;
  std::uint16_t port = kDefaultPmdPort;         ///< 0: pick a free port
  std::chrono::milliseconds ttl = kDefaultTtl;  ///< for nodes that do not announce heartbeatMs
  unsigned missed_heartbeats = kDefaultMissedHeartbeats;  ///< for those that do
  std::chrono::milliseconds auto_shutdown{0};  ///< 0: never; else exit when empty this long
  std::size_t max_frame_bytes = kDefaultPmdFrameLimit;
  std::size_t max_write_queue_bytes = 8u << 20;  ///< per connection; slower readers are dropped
  std::size_t max_connections = 4096;
  /// A connection that makes no progress for this long is closed (0: never): one stopped
  /// in the middle of a frame, or one whose replies wait at the pause mark unread.
  std::chrono::milliseconds stall_timeout{30000};
  /// A connection that has not sent one valid request this long after it was
  /// accepted is closed (0: never): idle sockets do not hold slots for ever.
  std::chrono::milliseconds hello_timeout{10000};
  /// When the port is taken, return quietly instead of throwing (an auto-started
  /// daemon that lost the race: the winner serves the port).
  bool quiet_if_port_in_use = false;
  /// A listening socket to serve instead of binding (systemd socket activation); -1: bind.
  int listen_fd = -1;
  /// Cookie, TLS and --insecure (issue 12). TODO(#12): not used by the server yet.
  SecurityOptions security;
  /// Serve Prometheus metrics (HTTP GET /metrics, pmd_metrics_page()) there, on the
  /// daemon's thread; beyond loopback the exposure rule applies. None: off.
  std::optional<MetricsEndpoint> metrics;
  /// One namespace across hosts (issue 15): the cluster agent on the daemon's
  /// io_context (modes/pmd.cpp makes it from --cluster); empty: not clustered.
  PmdClusterFactory cluster;
  std::string cluster_name;  ///< for `status`
  std::string cluster_etcd;  ///< the etcd endpoints, for `status`
  /// How the other PMDs name this one ("host:port" of remote entries' "pmd"); empty:
  /// the first bind address (the host name when it is a wildcard) and the port.
  std::string cluster_advertise;
};

/// Runs the daemon until SIGINT/SIGTERM, a `shutdown` request, or auto-shutdown.
/// `on_listening(port)` runs once the socket is bound (the mode prints the address).
/// Throws distflow::Error when the port cannot be bound (message says why).
void run_pmd(const PmdConfig& config, const std::function<void(std::uint16_t)>& on_listening);

}  // namespace distflow
