#include "process.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "errors.hpp"

namespace distflow {
namespace {

bool is_local_host(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.starts_with("127.");
}

[[noreturn]] void child_fail(int log_fd, const char* what) {
  if (log_fd >= 0) {
    const char* err = std::strerror(errno);  // not async-signal-safe in theory; glibc's is fine
    (void)!::write(log_fd, what, std::strlen(what));
    (void)!::write(log_fd, ": ", 2);
    (void)!::write(log_fd, err, std::strlen(err));
    (void)!::write(log_fd, "\n", 1);
  }
  ::_exit(127);
}

}  // namespace

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status))
    return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status))
    return 128 + WTERMSIG(wait_status);
  return 1;
}

std::string self_executable() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0)
    throw Error(std::string("cannot find the running executable: ") + std::strerror(errno));
  return std::string(buf, static_cast<std::size_t>(n));
}

int spawn_detached(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty())
    throw Error("spawn_detached: empty command");
  // Everything the children need is prepared before fork (only async-signal-safe calls after).
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pid_pipe[2];
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) {
    throw Error(std::string("cannot start '") + argv[0] + "': pipe: " + std::strerror(errno));
  }
  const pid_t first = ::fork();
  if (first < 0) {
    const int err = errno;
    ::close(pid_pipe[0]);
    ::close(pid_pipe[1]);
    throw Error(std::string("cannot start '") + argv[0] + "': fork: " + std::strerror(err));
  }
  if (first == 0) {
    // Double fork: the daemon is reparented to init and never becomes our zombie.
    ::setsid();
    const pid_t second = ::fork();
    if (second != 0) {
      const int pid = second;
      (void)!::write(pid_pipe[1], &pid, sizeof pid);
      ::_exit(second < 0 ? 1 : 0);
    }
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || ::dup2(null_fd, 0) < 0)
      child_fail(log_fd, "open /dev/null");
    const int out_fd = log_fd >= 0 ? log_fd : ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0)
      child_fail(log_fd, "dup2");
    // Inherited descriptors (a caller's pipes) must not stay open in the daemon.
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
      for (int fd = 3; fd < 1024; ++fd) {
        if (fd != pid_pipe[1])
          ::close(fd);
      }
    }
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(args[0], args.data());
    child_fail(2, "exec");
  }
  ::close(pid_pipe[1]);
  int pid = -1;
  ssize_t n = 0;
  do {
    n = ::read(pid_pipe[0], &pid, sizeof pid);
  } while (n < 0 && errno == EINTR);
  ::close(pid_pipe[0]);
  int status = 0;
  while (::waitpid(first, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof pid) || pid <= 0) {
    throw Error(std::string("cannot start '") + argv[0] + "': fork failed");
  }
  return pid;
}

std::string pmd_log_path(std::uint16_t port) {
  // The header's contract: the user's runtime dir, else the temp dir.
  const char* dir = std::getenv("XDG_RUNTIME_DIR");
  if (dir == nullptr || *dir == '\0' || ::access(dir, W_OK) != 0)
    dir = std::getenv("TMPDIR");
  if (dir == nullptr || *dir == '\0' || ::access(dir, W_OK) != 0)
    dir = "/tmp";
  return std::string(dir) + "/distflow-pmd-" + std::to_string(port) + ".log";
}

void ensure_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds deadline,
                const std::string& exe) {
  const auto probe_timeout = std::chrono::milliseconds(1000);
  std::string why;
  switch (probe_pmd(endpoint, probe_timeout, &why)) {
    case PmdProbe::answers:
      return;
    case PmdProbe::not_a_pmd:
      throw Error(why);
    case PmdProbe::refused:
    case PmdProbe::unreachable:
      break;
  }
  if (!is_local_host(endpoint.host)) {
    throw Error(why + " (not auto-starting a PMD on a remote host)");
  }
  if (endpoint.port == 0)
    throw Error("cannot auto-start a PMD on port 0");
  const std::string binary = exe.empty() ? self_executable() : exe;
  const std::string log = pmd_log_path(endpoint.port);
  const int pid = spawn_detached(
      {binary, "pmd", "--port", std::to_string(endpoint.port), "--auto-shutdown", "30s"}, log);
  spdlog::info("auto-starting a PMD on {} pid={} log={}", endpoint.to_string(), pid, log);

  const auto until = std::chrono::steady_clock::now() + deadline;
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    const auto result =
        probe_pmd(endpoint, std::clamp(left, std::chrono::milliseconds(50), probe_timeout), &why);
    if (result == PmdProbe::answers)
      return;
    if (result == PmdProbe::not_a_pmd)
      throw Error(why);
    if (std::chrono::steady_clock::now() + pause >= until) {
      throw Error("auto-started PMD did not answer on " + endpoint.to_string() + " within " +
                  std::to_string(deadline.count()) + " ms (" + why + "; see " + log + ")");
    }
    std::this_thread::sleep_for(pause);  // polling for readiness, bounded by the deadline
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

}  // namespace distflow
