#pragma once

// The hidden worker roles of `distflow bench` (`distflow bench worker --role R`),
// each a separate process started by bench_runner. A worker prints `ready ...`
// once it can be used, then (for the measuring roles) one JSON line of results,
// and exits. Every wait is bounded by `timeout`.
//
//   rx        a node that counts messages: loss, reordering, first/last arrival
//   tx        a node that sends `msgs` sequenced payloads to `target`, then flushes;
//             with several targets, round-robin, a sequence per target
//   pong      a node that sends every message back to its sender
//   ping      a node that times `msgs` round trips to `target` (a pong)
//   raw-pong  a plain blocking TCP echo of frames on 127.0.0.1:0
//   raw-ping  times `msgs` round trips of one frame to `port` (a raw-pong); with
//             `split`, over two one-way connections (frames out on the first, the
//             echo back on the second), the shape of two nodes' links
//   raw-rx    accepts one TCP connection on 127.0.0.1:0 and counts `msgs` frames by
//             walking their length prefixes (256 KiB reads, no parsing)
//   raw-tx    writes `msgs` envelope frames (encoded once, as a node would send
//             them from `alias` to `target`) to `port` in 1 MiB writes
//   idle      a node that registers and waits (SIGKILLed by the pmd bench)
//   call-server  a node that answers every request (reply(), on its I/O thread)
//   call-client  times `msgs` call() round trips to `target` (a call-server), one at
//             a time, with the callback and the future, then calls/s with `inflight`
//             calls waiting at once (each list entry a run of `msgs` calls)

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "tls.hpp"

namespace distflow {

struct BenchWorkerConfig {
  std::string role;
  std::uint16_t pmd_port = 0;
  std::string alias;
  std::string target;  ///< tx, ping, raw-tx: the alias to send to
  /// tx: every alias to send to, round-robin (`target` is the first); empty: `target`.
  std::vector<std::string> targets;
  std::uint64_t msgs = 0;  ///< rx: expected total; tx: to send; ping: round trips
  std::size_t size = 100;
  unsigned id = 0;                 ///< tx: sender id carried in the payload
  std::uint16_t port = 0;          ///< raw-ping, raw-tx: the raw-pong's or raw-rx's port
  bool split = false;              ///< raw-ping, raw-pong: two one-way connections
  bool auto_pmd = false;           ///< idle: start the PMD if none answers (as `distflow node`)
  std::vector<unsigned> inflight;  ///< call-client: calls in flight, one run per entry
  /// Node roles, across hosts (`throughput --remote`): the PMD's host, the address the
  /// node listens on (and advertises), its cookie file and TLS files.
  std::string pmd_host = "127.0.0.1";
  std::string listen_host = "127.0.0.1";
  std::string cookie_file;
  TlsFiles tls;
  bool insecure = false;  ///< listen beyond loopback with neither
  std::chrono::seconds timeout{120};
};

/// Runs one role; results go to `out` (the worker's stdout). Returns the exit code.
/// Throws distflow::Error for an unknown role or a failure to start.
int run_bench_worker(const BenchWorkerConfig& config, std::ostream& out);

/// Monotonic nanoseconds (CLOCK_MONOTONIC: comparable across processes on one host).
std::uint64_t monotonic_ns();

}  // namespace distflow
