#pragma once

// The one way distflow starts a process: the auto-started PMD (spawn_detached),
// the `node --exec` child and the bench workers (Subprocess). posix_spawn with
// the options as file actions and attributes; the exit is watched through a
// pidfd, so no SIGCHLD handler exists anywhere. The child starts with default
// signal dispositions, an empty signal mask, and no descriptor of ours but the
// three standard streams.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace distflow {

/// Where one of the child's standard streams goes.
enum class Stdio {
  inherit,   ///< ours
  null,      ///< /dev/null
  pipe,      ///< a pipe whose other end the Subprocess holds (in and out only)
  log_file,  ///< appended to SpawnOptions::log_file (out and err only)
};

struct SpawnOptions {
  std::vector<std::string> argv;  ///< argv[0]: a path, or a name to look up in PATH
  bool search_path = false;       ///< look argv[0] up in PATH (posix_spawnp)
  /// Added to the inherited environment; an entry replaces one of the same name.
  std::vector<std::pair<std::string, std::string>> env;
  Stdio in = Stdio::inherit;
  Stdio out = Stdio::inherit;
  Stdio err = Stdio::inherit;
  /// Created 0600 if missing; /dev/null instead (with a warning) when it cannot be opened.
  std::string log_file;
  /// The child leads a new process group: Subprocess::signal() reaches its own children too.
  bool own_process_group = false;
  /// Sent to the child when the *thread* that spawned it ends (PR_SET_PDEATHSIG), also
  /// when the whole process is SIGKILLed. Spawn from a thread that lives as long as the
  /// child may (the main thread). Not inherited by the child's own children. 0: none.
  int parent_death_signal = 0;
  int cpu = -1;  ///< >= 0: pinned to this CPU before it is used (sched_setaffinity)
};

/// A started child: its pid, a pidfd for its exit, our ends of its pipes.
class Subprocess {
 public:
  /// Starts the child. Throws distflow::Error ("cannot run 'x': why") when it cannot be run.
  explicit Subprocess(const SpawnOptions& options);
  /// A child still running gets SIGKILL (its group, with own_process_group) and is reaped.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  int pid() const { return pid_; }
  /// Readable once the child has exited (a pidfd); owned by the Subprocess.
  int exit_fd() const { return pidfd_; }
  /// Our end of the child's stdin pipe (non-blocking, close-on-exec); the caller owns it.
  int take_stdin();
  /// Our end of the child's stdout pipe (blocking, close-on-exec); the caller owns it.
  int take_stdout();

  /// Sends `sig` to the child (to its process group with own_process_group); a no-op
  /// once it has been reaped.
  void signal(int sig);
  /// Reaps without waiting: the exit code (128 + signal when killed), or nullopt.
  std::optional<int> try_wait();
  /// Waits up to `timeout` for the exit: the exit code, or nullopt if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  /// SIGTERM, up to `grace` for the exit, then SIGKILL; reaps. The exit code. Idempotent.
  int stop(std::chrono::milliseconds grace);

 private:
  int pid_ = -1;
  int pidfd_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  bool group_ = false;
  std::optional<int> status_;
};

/// Starts a daemon that is not our child: a new session, reparented to init (or to
/// the nearest subreaper), so it never becomes our zombie. Pipes are not allowed.
/// Returns once it has executed (its pid), or throws distflow::Error.
int spawn_detached(const SpawnOptions& options);

/// A waitpid() status as a shell reports it: the exit code, or 128 + the signal.
/// Anything else (stopped, continued) is 1.
int exit_code_of(int wait_status);

/// Absolute path of the running executable (/proc/self/exe).
std::string self_executable();

}  // namespace distflow
