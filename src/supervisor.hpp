#pragma once

// The `--exec` child of `distflow node`: how it is spawned (the options for
// subprocess.hpp), and whether it is restarted: a policy, within a limit per time
// window. Pure: the bridge runs the child and gives the clock.

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "subprocess.hpp"

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

/// How `node --exec` runs its child: argv[0] looked up in PATH, `env` added to ours,
/// stdin and stdout on pipes, stderr ours; a process group of its own, so the signals
/// the node forwards reach the command's own children too; SIGKILL when the node's
/// thread that spawns it ends, also when the node is SIGKILLed (parent_death_signal:
/// spawn from the node's main thread).
SpawnOptions exec_child_options(std::vector<std::string> argv,
                                std::vector<std::pair<std::string, std::string>> env);

}  // namespace distflow
