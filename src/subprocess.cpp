#include "subprocess.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string_view>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"

extern char** environ;  // NOLINT: POSIX declares it nowhere else

namespace distflow {
namespace {

// Two ways in, one module. posix_spawn is the default: glibc runs it as
// clone(CLONE_VM | CLONE_VFORK), which is safe in a multi-threaded process and
// costs nothing however large our address space is. It cannot do two things:
// set a parent-death signal (a prctl() between fork and exec) and start a
// process that is not our child. For those two options only, the child is
// forked and makes a short list of async-signal-safe calls before execve.
// Weighed and not chosen: a helper program between us and the command
// (`setpriv --pdeathsig`, or a hidden mode of our own binary) costs an extra
// exec, depends on a program that may be missing or different (busybox's
// setpriv has no --pdeathsig) or puts argv parsing in the core, and cannot
// check that we were still alive when the signal was armed; vfork would save
// the page-table copy, but the child would run on our memory and stack, which
// only glibc's own posix_spawn does safely. An --exec start or restart and a
// PMD auto-start are rare, so fork's copy does not matter there.

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

[[noreturn]] void fail(const SpawnOptions& options, std::string_view step, int err) {
  if (step.empty())
    throw Error(fmt::format("cannot run '{}': {}", options.argv[0], std::strerror(err)));
  throw Error(fmt::format("cannot run '{}': {}: {}", options.argv[0], step, std::strerror(err)));
}

/// Moves `fd` to a number above 2. The child's streams are dup2'ed onto 0, 1 and 2:
/// a source among them (pipe2 returns 0 to a caller whose stdin is closed) could be
/// overwritten before it is used.
UniqueFd above_stdio(UniqueFd fd, const SpawnOptions& options) {
  if (fd.get() < 0 || fd.get() > 2)
    return fd;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0)
    fail(options, "fcntl", errno);
  return UniqueFd(moved);
}

/// Everything the child needs, built before it exists: nothing allocates after the spawn.
struct Launch {
  std::vector<std::string> arg_strings, env_strings;
  std::vector<char*> argv, envp;
  std::vector<UniqueFd> owned;     // the child's ends, closed in the parent after the spawn
  int child_fd[3] = {-1, -1, -1};  // what becomes its 0, 1, 2; -1: ours, inherited
  UniqueFd our_stdin, our_stdout;
};

Launch prepare(const SpawnOptions& options) {
  DISTFLOW_ASSERT(!options.argv.empty());
  DISTFLOW_ASSERT(options.in != Stdio::log_file && options.err != Stdio::pipe);
  Launch launch;
  launch.arg_strings = options.argv;
  for (auto& arg : launch.arg_strings)
    launch.argv.push_back(arg.data());
  launch.argv.push_back(nullptr);

  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const std::string_view name = text.substr(0, text.find('='));
    bool replaced = false;
    for (const auto& [key, value] : options.env)
      replaced = replaced || key == name;
    if (!replaced)
      launch.env_strings.emplace_back(text);
  }
  for (const auto& [key, value] : options.env)
    launch.env_strings.push_back(key + "=" + value);
  for (auto& entry : launch.env_strings)
    launch.envp.push_back(entry.data());
  launch.envp.push_back(nullptr);

  int log_fd = -1;
  const Stdio modes[3] = {options.in, options.out, options.err};
  for (int stream = 0; stream < 3; ++stream) {
    int fd = -1;
    switch (modes[stream]) {
      case Stdio::inherit:
        continue;
      case Stdio::null:
        fd = ::open("/dev/null", (stream == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
        if (fd < 0)
          fail(options, "/dev/null", errno);
        break;
      case Stdio::pipe: {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0)
          fail(options, "pipe", errno);
        const bool in = stream == 0;
        UniqueFd theirs(in ? ends[0] : ends[1]);
        UniqueFd ours = above_stdio(UniqueFd(in ? ends[1] : ends[0]), options);
        fd = theirs.release();
        if (in) {
          ::fcntl(ours.get(), F_SETFL, ::fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
          launch.our_stdin = std::move(ours);
        } else {
          launch.our_stdout = std::move(ours);
        }
        break;
      }
      case Stdio::log_file:
        if (log_fd < 0) {
          fd = ::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
          if (fd < 0) {
            spdlog::warn("cannot open log file '{}': {}: the output of '{}' is discarded",
                         options.log_file, std::strerror(errno), options.argv[0]);
            fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (fd < 0)
              fail(options, "/dev/null", errno);
          }
        }
        break;
    }
    if (fd >= 0) {
      launch.owned.push_back(above_stdio(UniqueFd(fd), options));
      fd = launch.owned.back().get();
      if (modes[stream] == Stdio::log_file)
        log_fd = fd;
    } else {
      fd = log_fd;  // out and err share the one log descriptor
    }
    launch.child_fd[stream] = fd;
  }
  return launch;
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

pid_t spawn_with_posix_spawn(const SpawnOptions& options, Launch& launch) {
  SpawnSetup setup;
  for (int stream = 0; stream < 3; ++stream) {
    if (launch.child_fd[stream] >= 0)
      ::posix_spawn_file_actions_adddup2(&setup.actions, launch.child_fd[stream], stream);
  }
  // Asio's sockets are not close-on-exec: nothing of ours but the streams goes along.
  ::posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);
  // The node ignores SIGPIPE and handles SIGTERM/SIGINT/SIGHUP; the child starts clean.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  ::posix_spawnattr_setsigdefault(&setup.attr, &all);
  ::posix_spawnattr_setsigmask(&setup.attr, &none);
  int flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  if (options.own_process_group) {
    ::posix_spawnattr_setpgroup(&setup.attr, 0);
    flags |= POSIX_SPAWN_SETPGROUP;
  }
  ::posix_spawnattr_setflags(&setup.attr, static_cast<short>(flags));
  pid_t pid = -1;
  const int rc = options.search_path
                     ? ::posix_spawnp(&pid, launch.argv[0], &setup.actions, &setup.attr,
                                      launch.argv.data(), launch.envp.data())
                     : ::posix_spawn(&pid, launch.argv[0], &setup.actions, &setup.attr,
                                     launch.argv.data(), launch.envp.data());
  if (rc != 0)
    fail(options, "", rc);
  return pid;
}

/// execvp's lookup, done before the fork (getenv and allocation are not safe after it).
std::string find_in_path(const SpawnOptions& options) {
  const std::string& name = options.argv[0];
  if (name.find('/') != std::string::npos)
    return name;
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/bin:/usr/bin";
  for (;;) {
    const auto colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (colon == std::string_view::npos)
      break;
    dirs.remove_prefix(colon + 1);
  }
  fail(options, "", ENOENT);
}

/// What a forked child tells its spawner before it execs (or instead).
struct Report {
  enum Kind : int { daemon_pid = 1, failed };
  enum Step : int { exec = 0, setsid, setpgid, prctl, dup2, fork };
  int kind;
  int value;  ///< the daemon's pid, or errno
  int step;
};

constexpr std::string_view kStepNames[] = {"", "setsid", "setpgid", "prctl", "dup2", "fork"};

/// The forked child's part: everything it reads was prepared by the parent.
struct ForkPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const int* child_fd;
  int report_fd;
  pid_t parent;
  bool detach;
  bool own_group;
  int death_signal;
  int max_fd;  // for the close-on-exec sweep where close_range cannot do it
};

void report(int fd, Report::Kind kind, int value, Report::Step step) {
  const Report r{kind, value, step};
  [[maybe_unused]] const auto n = ::write(fd, &r, sizeof r);  // < PIPE_BUF: atomic
}

[[noreturn]] void child_failed(const ForkPlan& plan, Report::Step step) {
  report(plan.report_fd, Report::failed, errno, step);
  ::_exit(127);
}

/// Runs in the forked child: async-signal-safe calls only (another thread of the
/// parent may have held any lock at the fork). All signals are blocked on entry.
[[noreturn]] void exec_child(const ForkPlan& plan) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for SIGKILL, SIGSTOP, glibc's own
  if (plan.detach) {
    if (::setsid() < 0)
      child_failed(plan, Report::setsid);
  } else if (plan.own_group && ::setpgid(0, 0) != 0) {
    child_failed(plan, Report::setpgid);
  }
  if (plan.death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, plan.death_signal) != 0)
      child_failed(plan, Report::prctl);
    if (::getppid() != plan.parent)
      ::_exit(128 + plan.death_signal);  // the spawner died before the signal was armed
  }
  for (int stream = 0; stream < 3; ++stream) {
    if (plan.child_fd[stream] >= 0 && ::dup2(plan.child_fd[stream], stream) < 0)
      child_failed(plan, Report::dup2);
  }
  // Nothing of ours but the streams goes along; the report pipe stays open until exec.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < plan.max_fd; ++fd)
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (plan.detach) {
    // The double fork: this middle process exits at once, the daemon is reparented.
    const pid_t grandchild = ::fork();
    if (grandchild < 0)
      child_failed(plan, Report::fork);
    if (grandchild > 0) {
      report(plan.report_fd, Report::daemon_pid, grandchild, Report::exec);
      ::_exit(0);
    }
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(plan.path, plan.argv, plan.envp);
  child_failed(plan, Report::exec);
}

void reap(pid_t pid, int* status = nullptr) {
  int ignored = 0;
  while (::waitpid(pid, status != nullptr ? status : &ignored, 0) < 0 && errno == EINTR) {
  }
}

/// fork + exec_child; returns the child's pid (detach: the daemon's) once it has
/// executed, or throws what the child reported.
pid_t spawn_with_fork(const SpawnOptions& options, Launch& launch, bool detach) {
  const std::string path = options.search_path ? find_in_path(options) : options.argv[0];
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0)
    fail(options, "pipe", errno);
  UniqueFd report_read(ends[0]);
  UniqueFd report_write = above_stdio(UniqueFd(ends[1]), options);
  rlimit files{};
  const int max_fd = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 65536
                         ? static_cast<int>(files.rlim_cur)
                         : 65536;
  const ForkPlan plan{path.c_str(),    launch.argv.data(),        launch.envp.data(),
                      launch.child_fd, report_write.get(),        ::getpid(),
                      detach,          options.own_process_group, options.parent_death_signal,
                      max_fd};

  // No handler of ours may run in the child before it resets them all.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  if (pid == 0)
    exec_child(plan);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  report_write.reset();
  if (pid < 0)
    fail(options, "fork", fork_errno);

  // EOF once every writer has executed or exited.
  pid_t started = -1;
  std::optional<Report> failure;
  for (;;) {
    Report r{};
    const ssize_t n = ::read(report_read.get(), &r, sizeof r);
    if (n < 0 && errno == EINTR)
      continue;
    if (n != static_cast<ssize_t>(sizeof r))
      break;
    if (r.kind == Report::daemon_pid)
      started = r.value;
    else
      failure = r;
  }
  if (detach || failure)
    reap(pid);  // the middle process, or a child that could not exec
  if (failure)
    fail(options, kStepNames[failure->step], failure->value);
  if (detach && started <= 0)
    fail(options, "fork", ECHILD);
  return detach ? started : pid;
}

void pin(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  if (::sched_setaffinity(pid, sizeof set, &set) != 0)
    spdlog::debug("cannot pin pid={} to cpu={}: {}", pid, cpu, std::strerror(errno));
}

}  // namespace

Subprocess::Subprocess(const SpawnOptions& options) {
  Launch launch = prepare(options);
  const pid_t pid = options.parent_death_signal != 0 ? spawn_with_fork(options, launch, false)
                                                     : spawn_with_posix_spawn(options, launch);
  if (options.cpu >= 0)
    pin(pid, options.cpu);
  // glibc 2.36's <sys/pidfd.h> lacks extern "C": the system call itself. Close-on-exec.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int err = errno;
    ::kill(options.own_process_group ? -pid : pid, SIGKILL);
    reap(pid);
    fail(options, "pidfd_open", err);
  }
  pid_ = pid;
  pidfd_ = pidfd;
  group_ = options.own_process_group;
  stdin_ = launch.our_stdin.release();
  stdout_ = launch.our_stdout.release();
}

Subprocess::~Subprocess() {
  if (!status_ && pid_ > 0) {
    ::kill(group_ ? -pid_ : pid_, SIGKILL);
    reap(pid_);
  }
  for (int fd : {pidfd_, stdin_, stdout_}) {
    if (fd >= 0)
      ::close(fd);
  }
}

int Subprocess::take_stdin() {
  return std::exchange(stdin_, -1);
}

int Subprocess::take_stdout() {
  return std::exchange(stdout_, -1);
}

void Subprocess::signal(int sig) {
  if (!status_ && pid_ > 0)
    ::kill(group_ ? -pid_ : pid_, sig);
}

std::optional<int> Subprocess::try_wait() {
  if (status_)
    return status_;
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_)
    status_ = exit_code_of(status);
  else if (r < 0)
    status_ = -1;  // reaped by someone else (SIGCHLD ignored): gone, code unknown
  return status_;
}

std::optional<int> Subprocess::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto code = try_wait())
      return code;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    pollfd p{pidfd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), INT_MAX)));
  }
}

int Subprocess::stop(std::chrono::milliseconds grace) {
  if (auto code = try_wait())
    return *code;
  signal(SIGTERM);
  if (auto code = wait(grace))
    return *code;
  signal(SIGKILL);
  int status = 0;
  reap(pid_, &status);
  status_ = exit_code_of(status);
  return *status_;
}

int spawn_detached(const SpawnOptions& options) {
  DISTFLOW_ASSERT(options.in != Stdio::pipe && options.out != Stdio::pipe);
  Launch launch = prepare(options);
  const pid_t pid = spawn_with_fork(options, launch, true);
  if (options.cpu >= 0)
    pin(pid, options.cpu);
  return pid;
}

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

}  // namespace distflow
