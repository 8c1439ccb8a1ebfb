#pragma once

// What the PMD and a node show at GET /metrics (issue 16): every metric's name,
// type, help and labels in one place, rendered from their counters. Pure.
//
// PMD:  distflow_pmd_nodes, _watchers, _connections (gauges);
//       distflow_pmd_connections_accepted_total, _refused_total,
//       distflow_pmd_connections_closed_total{reason}, distflow_pmd_requests_total{type},
//       distflow_pmd_errors_total{kind}, distflow_pmd_joins_total,
//       distflow_pmd_leaves_total{reason}; distflow_pmd_uptime_seconds.
// Node: distflow_node_info{node_id,alias}, distflow_node_uptime_seconds,
//       distflow_node_messages_received_total, _sent_total, distflow_node_bad_frames_total,
//       distflow_node_send_failures_total, distflow_node_handler_errors_total,
//       distflow_node_dropped_total{reason}, distflow_node_mailbox_depth, _high_water,
//       _capacity, distflow_node_mailbox_accepted_total, _delivered_total,
//       distflow_node_links{direction}.
// Both: distflow_build_info{version}.

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "node_runtime.hpp"
#include "registry.hpp"

namespace distflow {

/// Why the PMD closed or lost a client connection (PmdConnectionCounts::closed).
inline constexpr std::array<std::string_view, 4> kPmdCloseReasons{"slow_reader", "stalled", "idle",
                                                                  "other"};

/// The PMD's client connections since it started.
struct PmdConnectionCounts {
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;  ///< closed on accept: the connection limit was reached
  std::uint64_t open = 0;
  /// By kPmdCloseReasons: its write queue full, no progress for the stall timeout,
  /// nothing valid within the hello timeout, anything else (the peer's close,
  /// a protocol error, shutdown).
  std::array<std::uint64_t, kPmdCloseReasons.size()> closed{};
  /// Counts a close for the session's reason text.
  void count_close(std::string_view reason);
};

/// The PMD's page.
std::string pmd_metrics_page(const Registry& registry, const PmdConnectionCounts& connections,
                             std::chrono::steady_clock::duration uptime);

/// A node's page.
std::string node_metrics_page(const NodeStats& stats, std::string_view node_id,
                              std::string_view alias);

/// A node's counters as one JSON object: the answer to a stats request
/// (`distflow stats`, PROTOCOL.md §3.6).
std::string node_stats_json(const NodeStats& stats, std::string_view node_id,
                            std::string_view alias);

}  // namespace distflow
