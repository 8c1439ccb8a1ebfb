#pragma once

// The `--exec` child of `distflow node`: spawned with pipes for its stdin and
// stdout (stderr passes through), restarted by a policy within a limit per time
// window, and signalled on the node's behalf. Linux: exit is watched via a pidfd.

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distflow {

enum class RestartPolicy { never, on_failure, always };

/// "never" | "on-failure" | "always"; nullopt for anything else.
std::optional<RestartPolicy> parse_restart_policy(std::string_view text);
std::string_view to_string(RestartPolicy policy);

/// Decides restarts: at most `max_restarts` within any `window`. Pure (time is given).
class RestartLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  RestartLimiter(RestartPolicy policy, std::size_t max_restarts, std::chrono::milliseconds window);

  /// True when a child that ended with `exit_code` is to be restarted at `now`
  /// (the restart is then recorded). False under `never`, for a success under
  /// `on-failure`, and once the limit is reached.
  bool allow(int exit_code, Clock::time_point now);
  /// True when the last refusal came from the limit, not from the policy.
  bool limit_reached() const { return limit_reached_; }

 private:
  RestartPolicy policy_;
  std::size_t max_;
  std::chrono::milliseconds window_;
  std::deque<Clock::time_point> restarts_;
  bool limit_reached_ = false;
};

/// What to run: argv[0] is looked up in PATH; `env` is added to the inherited environment.
struct ChildSpec {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
};

/// One running child with our ends of its stdin and stdout pipes.
class Child {
 public:
  /// Starts `spec`. Throws distflow::Error when it cannot be run ("cannot run 'x': ...").
  explicit Child(const ChildSpec& spec);
  /// SIGKILLs and reaps a child still running; closes the fds it still owns.
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  int pid() const { return pid_; }
  /// Readable once the child has exited (a pidfd); owned by the Child.
  int exit_fd() const { return pidfd_; }
  /// Our write end of the child's stdin (non-blocking, close-on-exec); the caller owns it.
  int take_stdin();
  /// Our read end of the child's stdout (close-on-exec); the caller owns it.
  int take_stdout();

  void signal(int sig);
  /// Reaps without waiting: the exit code (128 + signal when killed), or nullopt.
  std::optional<int> try_wait();
  /// Waits up to `timeout`: the exit code, or nullopt if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  int pid_ = -1;
  int pidfd_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::optional<int> status_;
};

}  // namespace distflow
