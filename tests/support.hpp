#pragma once

// Test support for end-to-end tests: real child processes with pipes, and a raw
// framed TCP client that speaks exactly what the original TypeScript peers send.
// Every wait has a deadline; every process started here is stopped by its PID.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "throwaway_pki.hpp"

namespace distflow::test {

using namespace std::chrono_literals;

/// Path of the built `distflow` binary.
std::string distflow_binary();

/// A child process with its stdin, stdout and stderr on pipes.
class ChildProcess {
 public:
  /// Starts `argv` (argv[0] is the path). `env` entries are added to ours.
  explicit ChildProcess(const std::vector<std::string>& argv,
                        const std::map<std::string, std::string>& env = {});
  ~ChildProcess();  ///< SIGKILLs the child if still running, and reaps it
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  int pid() const { return pid_; }
  /// Next stdout line (without '\n'), or nullopt on timeout or EOF.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 10s);
  /// Reads stdout lines until one contains `needle`; returns it, or nullopt.
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout = 10s);
  /// Everything on stdout until EOF (or timeout).
  std::string read_all(std::chrono::milliseconds timeout = 10s);
  /// Everything written to stderr so far (non-blocking drain; call after exit for all).
  std::string stderr_text();
  void write(const std::string& data);
  void close_stdin();
  void signal(int sig);
  /// Exit code (128+signal when killed), or nullopt if still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout = 10s);

 private:
  int pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::string out_buf_, err_buf_;
  std::optional<int> status_;
  bool fill(std::chrono::steady_clock::time_point deadline);
  void drain_stderr(int timeout_ms);
};

/// Runs a command to completion; returns {exit code, stdout, stderr}.
struct RunResult {
  int code = -1;
  std::string out, err;
};
RunResult run(const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env = {},
              std::chrono::milliseconds timeout = 20s, const std::string& stdin_data = {});

/// A throwaway PKI (bench/harness/throwaway_pki.hpp): a CA and certificates it signed.
using TestPki = ThrowawayPki;

/// Sends `request` (raw bytes) to 127.0.0.1:`port` and returns everything the peer
/// sends until it closes; nullopt if it does not close within `timeout`.
std::optional<std::string> http_exchange(std::uint16_t port, const std::string& request,
                                         std::chrono::milliseconds timeout = 5s);
/// The body of GET /metrics from 127.0.0.1:`port` (HTTP/1.1); throws unless it is a 200.
std::string scrape_metrics(std::uint16_t port);
/// The value of the sample `series` (`name` or `name{labels}` exactly as printed) in a
/// metrics page; nullopt when absent.
std::optional<double> metric_value(const std::string& page, const std::string& series);
/// Waits until `stderr_text()` of `child` has "metrics: listening on http://ADDR:PORT/"
/// and returns PORT; 0 at the deadline. `log` receives what was read.
std::uint16_t metrics_port_from_log(ChildProcess& child, std::string& log,
                                    std::chrono::milliseconds timeout = 10s);

/// A free TCP port on 127.0.0.1 (bound then released; races are unlikely, not impossible).
std::uint16_t free_port();

/// True once process `pid` has exited (gone, or a zombie nobody reaps) within `timeout`.
bool process_gone(int pid, std::chrono::milliseconds timeout);

/// PIDs of running `distflow pmd --port <port> --auto-shutdown ...` processes
/// (PMDs auto-started by nodes; zombies excluded).
std::vector<int> auto_started_daemons(std::uint16_t port);

/// Starts `distflow pmd --port 0 ...` and reads the bound port from its first line.
struct PmdProcess {
  explicit PmdProcess(const std::vector<std::string>& extra_args = {});
  std::unique_ptr<ChildProcess> process;
  std::uint16_t port = 0;
  std::string port_str() const { return std::to_string(port); }
};

/// A blocking, framed TCP client (4-byte big-endian length + JSON).
class RawClient {
 public:
  RawClient(const std::string& host, std::uint16_t port);
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  void send_frame(const std::string& body);
  void send_raw(const std::string& bytes);
  /// Next frame body, or nullopt on timeout / EOF.
  std::optional<std::string> read_frame(std::chrono::milliseconds timeout = 5s);
  /// Sends a request and returns the next frame that is not an event.
  std::optional<std::string> request(const std::string& body,
                                     std::chrono::milliseconds timeout = 5s);
  /// True once the peer has closed the connection (EOF or reset) within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout = 5s);
  void shutdown_write();
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
  bool fill(std::chrono::steady_clock::time_point deadline);
};

}  // namespace distflow::test
