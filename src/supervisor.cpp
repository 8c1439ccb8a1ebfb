#include "supervisor.hpp"

#include <signal.h>

namespace distflow {

std::optional<RestartPolicy> parse_restart_policy(std::string_view text) {
  if (text == "never")
    return RestartPolicy::never;
  if (text == "on-failure")
    return RestartPolicy::on_failure;
  if (text == "always")
    return RestartPolicy::always;
  return std::nullopt;
}

std::string_view to_string(RestartPolicy policy) {
  switch (policy) {
    case RestartPolicy::never:
      return "never";
    case RestartPolicy::on_failure:
      return "on-failure";
    case RestartPolicy::always:
      return "always";
  }
  return "never";
}

RestartLimiter::RestartLimiter(RestartPolicy policy, std::size_t max_restarts,
                               std::chrono::milliseconds window)
    : policy_(policy), max_(max_restarts), window_(window) {}

bool RestartLimiter::allow(int exit_code, Clock::time_point now) {
  limit_reached_ = false;
  if (policy_ == RestartPolicy::never)
    return false;
  if (policy_ == RestartPolicy::on_failure && exit_code == 0)
    return false;
  while (!restarts_.empty() && now - restarts_.front() >= window_)
    restarts_.pop_front();
  if (restarts_.size() >= max_) {
    limit_reached_ = true;
    return false;
  }
  restarts_.push_back(now);
  return true;
}

SpawnOptions exec_child_options(std::vector<std::string> argv,
                                std::vector<std::pair<std::string, std::string>> env) {
  SpawnOptions options;
  options.argv = std::move(argv);
  options.search_path = true;
  options.env = std::move(env);
  options.in = Stdio::pipe;
  options.out = Stdio::pipe;
  options.own_process_group = true;
  // SIGKILL, not SIGTERM: a command that ignores SIGTERM must not outlive the node either.
  options.parent_death_signal = SIGKILL;
  return options;
}

}  // namespace distflow
