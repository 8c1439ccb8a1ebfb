#pragma once

// The core of `distflow watch`: the registered peers, then every join and leave
// as the PMD reports it, one line each on an fd the caller gives (human text, or
// NDJSON with --json). Written per event: the output is read by pipes.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "pmd_client.hpp"
#include "security_options.hpp"

namespace distflow {

struct WatchOptions {
  PmdEndpoint pmd;
  std::string node;             ///< alias or node id to follow; empty: every node
  bool json = false;            ///< NDJSON lines instead of text
  bool until_leave = false;     ///< return once `node` leaves (or at once if it is absent)
  SecurityOptions security;     ///< cookie and TLS, for a PMD on another host
  std::optional<bool> cluster;  ///< clustered PMD: false for its own nodes only (default: all)
};

/// Runs until the PMD goes away (throws distflow::Error) or, with until_leave,
/// until the followed node leaves (returns 0). Connecting to no PMD throws too.
int watch_peers(const WatchOptions& options, int out_fd);

/// One output line with its '\n'. `event` is "peer:present" (already registered
/// when the watch began), "peer:join" or "peer:leave"; `reason` may be empty.
///   text: "join   worker  id=worker-1f3a  127.0.0.1:40123"
///   json: {"event":"peer:join","peer":{NodeInfo},"reason":"socket_closed"}
std::string format_peer_event(std::string_view event, const NodeInfo& peer, std::string_view reason,
                              bool json);

}  // namespace distflow
