#pragma once

// A process `distflow bench` starts (a receiver, a sender, a private PMD): a
// Subprocess (subprocess.hpp) with stdin from /dev/null, stdout on a pipe read
// line by line with deadlines, stderr inherited. Stopped by its PID: SIGTERM,
// then SIGKILL after a grace period, always reaped.

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "subprocess.hpp"

namespace distflow {

class BenchChild {
 public:
  /// Starts `argv` (argv[0] is the path). Throws distflow::Error when it cannot.
  /// `cpu` >= 0 pins the child to that CPU before it is used.
  explicit BenchChild(const std::vector<std::string>& argv, int cpu = -1);
  ~BenchChild();  ///< stop()
  BenchChild(const BenchChild&) = delete;
  BenchChild& operator=(const BenchChild&) = delete;

  int pid() const { return process_.pid(); }
  /// Next stdout line without its '\n'; nullopt on EOF or when `timeout` passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  /// Up to `n` bytes of stdout (what read_line() buffered first): the count, 0 at
  /// EOF, nullopt when `timeout` passes with nothing to read.
  std::optional<std::size_t> read_some(char* data, std::size_t n,
                                       std::chrono::milliseconds timeout);
  /// Waits up to `timeout` for the exit; the exit code (128 + signal when killed).
  std::optional<int> wait(std::chrono::milliseconds timeout) { return process_.wait(timeout); }
  /// SIGKILL now (the crash the PMD bench measures); does not reap.
  void kill_now() { process_.signal(SIGKILL); }
  /// SIGTERM, up to `grace` for the exit, then SIGKILL; reaps. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(2));

 private:
  Subprocess process_;
  int out_ = -1;
  std::string buf_;
};

/// What run_command() saw.
struct CommandResult {
  int code = -1;       ///< the exit code; -1 when it ran past its deadline (then killed)
  std::string output;  ///< its standard output and error, together
};
/// Runs `argv` (argv[0] a path) to completion, stdout and stderr together, killed
/// after `timeout`. Throws distflow::Error when it cannot be started.
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

/// Resident set size of process `pid` in KiB (VmRSS in /proc/PID/status); 0 when unknown.
std::uint64_t resident_kib(int pid);

}  // namespace distflow
