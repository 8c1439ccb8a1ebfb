#include "supervisor.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "errors.hpp"
#include "process.hpp"

extern char** environ;  // NOLINT: POSIX declares it nowhere else

namespace distflow {
namespace {

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

/// posix_spawn's attribute and file-action objects, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attr{};
  SpawnSetup() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

}  // namespace

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

Child::Child(const ChildSpec& spec) {
  DISTFLOW_ASSERT(!spec.argv.empty());
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    const std::string why = std::strerror(errno);
    for (int fd : {in[0], in[1], out[0], out[1]}) {
      if (fd >= 0)
        ::close(fd);
    }
    throw Error(fmt::format("cannot run '{}': pipe: {}", spec.argv[0], why));
  }

  // Everything the child needs is built before the spawn: nothing allocates after it.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [key, value] : spec.env)
      replaced = replaced || key == name;
    if (!replaced)
      env_strings.emplace_back(entry);
  }
  for (const auto& [key, value] : spec.env)
    env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings)
    envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  SpawnSetup setup;
  ::posix_spawn_file_actions_adddup2(&setup.actions, in[0], STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&setup.actions, out[1], STDOUT_FILENO);
  // The node ignores SIGPIPE and handles SIGTERM/SIGINT; the child starts clean.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  ::posix_spawnattr_setsigdefault(&setup.attr, &all);
  ::posix_spawnattr_setsigmask(&setup.attr, &none);
  ::posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  pid_t pid = -1;
  const int rc =
      ::posix_spawnp(&pid, argv[0], &setup.actions, &setup.attr, argv.data(), envp.data());
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    throw Error(fmt::format("cannot run '{}': {}", spec.argv[0], std::strerror(rc)));
  }
  pid_ = pid;
  stdin_ = in[1];
  stdout_ = out[0];
  ::fcntl(stdin_, F_SETFL, ::fcntl(stdin_, F_GETFL) | O_NONBLOCK);
  pidfd_ = pidfd_open(pid_);
  if (pidfd_ < 0) {
    const std::string why = std::strerror(errno);
    signal(SIGKILL);
    wait(std::chrono::seconds(5));
    throw Error(fmt::format("cannot watch child '{}': pidfd_open: {}", spec.argv[0], why));
  }
  ::fcntl(pidfd_, F_SETFD, FD_CLOEXEC);
}

Child::~Child() {
  if (!status_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close_fd(pidfd_);
  close_fd(stdin_);
  close_fd(stdout_);
}

int Child::take_stdin() {
  return std::exchange(stdin_, -1);
}
int Child::take_stdout() {
  return std::exchange(stdout_, -1);
}

void Child::signal(int sig) {
  if (!status_ && pid_ > 0)
    ::kill(pid_, sig);
}

std::optional<int> Child::try_wait() {
  if (status_)
    return status_;
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_)
    status_ = exit_code_of(status);
  return status_;
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto code = try_wait())
      return code;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    } else {
      ::usleep(1000);
    }
  }
}

}  // namespace distflow
