#pragma once

// The core of `distflow bench` (issue 5): in-process mailbox runs, and
// multi-process runs (throughput, latency, pmd) that re-execute this binary as
// hidden workers (bench_worker.hpp) and a private PMD. Each run writes the
// banner, then the report (text, or JSON with `json`, plus CSV to a file), and
// returns the report. Every loop is bounded by counts and `timeout`; every
// process started here is stopped by its PID before the call returns.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench_stats.hpp"
#include "mailbox.hpp"

namespace distflow {

/// Flags every bench shares.
struct BenchCommon {
  unsigned reps = 5;
  bool json = false;                  ///< one JSON document on `out` instead of text
  std::string csv_path;               ///< also write CSV rows here when non-empty
  bool progress = false;              ///< draw a progress bar on `err` (the caller saw a tty)
  std::string executable;             ///< binary re-executed for workers; empty: self
  std::uint16_t pmd_port = 0;         ///< 0: start a private PMD (`pmd --port 0`), stop it after
  std::chrono::seconds timeout{120};  ///< deadline for each repetition
};

struct MailboxBenchConfig {
  BenchCommon common;
  unsigned producers = 1;
  std::size_t size = 100;  ///< bytes per item (a heap string); 0: an 8-byte integer
  OverflowPolicy policy = OverflowPolicy::block;
  std::size_t capacity = 1000;  ///< the node's default mailbox size
  std::uint64_t msgs = 2'000'000;
  std::size_t batch = 1;  ///< > 1: producers push runs with try_push_batch()
};

struct ThroughputBenchConfig {
  BenchCommon common;
  std::uint64_t msgs = 2'000'000;  ///< per run, split across senders (or receivers)
  std::size_t size = 100;          ///< payload bytes (a JSON object)
  /// > 1: also `senders` processes into one receiver (fan-in), beside the 1 -> 1 run.
  unsigned senders = 1;
  /// > 1: also one sender round-robin to `receivers` receiver nodes (fan-out).
  unsigned receivers = 1;
  std::string target;  ///< an existing node: only `senders` -> it, no loss count
  /// The receiver counts in an on_message_inline() handler (on its I/O thread)
  /// instead of an on_message() handler on the dispatcher thread.
  bool inline_receiver = false;
  /// Also the limit: a raw sender and receiver moving the same framed bytes.
  bool raw_baseline = true;
  /// Instead: the shell user's path, `distflow send ALIAS - < FILE` (NDJSON) into
  /// `distflow node --alias ALIAS` whose stdout (a pipe) the bench counts lines of.
  bool via_cli = false;
  /// Instead: one sender and one receiver on two simulated hosts (sim_hosts.hpp),
  /// each with its own PMD, plain, cookie and TLS alternating in every repetition
  /// (bench_remote.hpp).
  bool remote = false;
};

enum class PinMode { none, same, different };
/// "none" | "same" | "different"; nullopt for anything else.
std::optional<PinMode> parse_pin_mode(std::string_view text);

/// Which node path a ping-pong measures.
enum class LatencyPath {
  inline_handler,  ///< on_message_inline() on both sides (the I/O thread)
  regular,         ///< pong: on_message() on the dispatcher; ping: send() then receive()
};
/// "inline", "regular" or a comma list of them ("inline,regular"); nullopt otherwise.
std::optional<std::vector<LatencyPath>> parse_latency_paths(std::string_view text);

struct LatencyBenchConfig {
  BenchCommon common;
  std::uint64_t msgs = 50'000;  ///< round trips per repetition (after 1000 warm-up)
  std::size_t size = 100;
  PinMode pin = PinMode::none;
  bool raw_baseline = true;  ///< also run the raw-TCP ping-pong
  /// Each is measured in every repetition, alternating with raw TCP.
  std::vector<LatencyPath> paths{LatencyPath::inline_handler, LatencyPath::regular};
};

struct CallBenchConfig {
  BenchCommon common;
  std::uint64_t msgs = 20'000;  ///< round trips per variant and repetition; rate runs: 4x
  std::size_t size = 100;
  PinMode pin = PinMode::same;  ///< both processes on CPU 0: placement is not measured
  std::vector<unsigned> inflight{1, 16, 256};  ///< calls waiting at once, one rate run each
};

struct PmdBenchConfig {
  BenchCommon common;
  std::uint64_t resolves = 200'000;  ///< per repetition, pipelined; a tenth one at a time
  std::uint64_t churn = 10'000;      ///< register+unregister pairs per repetition
};

/// `distflow bench cluster` (issue 15): PMDs sharing one etcd.
struct ClusterBenchConfig {
  BenchCommon common;
  std::string etcd;                  ///< etcd://...; empty: start a private `etcd` (from PATH)
  unsigned pmds = 10;                ///< clustered PMDs
  std::uint64_t joins = 200;         ///< join on PMD 0 -> seen on PMD 1, one at a time, per rep
  std::uint64_t nodes = 1000;        ///< registrations spread over the PMDs, per rep
  std::uint64_t resolves = 100'000;  ///< pipelined resolves of a local alias, per PMD kind
};

BenchReport run_mailbox_bench(const MailboxBenchConfig& config, std::ostream& out,
                              std::ostream& err);
BenchReport run_throughput_bench(const ThroughputBenchConfig& config, std::ostream& out,
                                 std::ostream& err);
BenchReport run_latency_bench(const LatencyBenchConfig& config, std::ostream& out,
                              std::ostream& err);
BenchReport run_pmd_bench(const PmdBenchConfig& config, std::ostream& out, std::ostream& err);
/// call() round trips (callback and future) against raw TCP's ping-pong in the same
/// run, and calls/s with 1, 16, 256... in flight (issue 14).
BenchReport run_call_bench(const CallBenchConfig& config, std::ostream& out, std::ostream& err);
BenchReport run_cluster_bench(const ClusterBenchConfig& config, std::ostream& out,
                              std::ostream& err);

/// A JSON payload of exactly max(size, minimum) bytes carrying sender `id` and
/// sequence `seq`: {"s":1,"q":42,"p":"xxxx"}. Written into `out` (replaced).
void make_bench_payload(std::string& out, unsigned id, std::uint64_t seq, std::size_t size);
/// Reads back (id, seq) from a payload made above; false for anything else.
bool parse_bench_payload(std::string_view payload, unsigned& id, std::uint64_t& seq);

}  // namespace distflow
