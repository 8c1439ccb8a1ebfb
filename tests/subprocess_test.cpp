// The one spawner: streams (pipes, /dev/null, a log file), descriptors not
// inherited, process groups, the parent-death signal, detached daemons, CPU
// pinning, stop() and clear errors, on both start paths (posix_spawn, and the
// fork path the parent-death signal and detach take).

#include "subprocess.hpp"

#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "support.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string read_until_eof(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return out;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      return out;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0)
      return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

/// Reads one '\n'-terminated line from `fd` (byte by byte: nothing after it is consumed).
std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char c = 0;
    if (::read(fd, &c, 1) != 1 || c == '\n')
      break;
    line += c;
  }
  return line;
}

SpawnOptions shell(const std::string& script, bool fork_path) {
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", script};
  options.out = Stdio::pipe;
  if (fork_path)
    options.parent_death_signal = SIGKILL;  // takes the fork path
  return options;
}

/// Kills `pid` if it is still there (a failed test must not leave it running).
void kill_if_alive(int pid) {
  if (pid > 0 && !test::process_gone(pid, 0ms))
    ::kill(pid, SIGKILL);
}

}  // namespace

TEST_CASE("subprocess: stdin from /dev/null, stdout and stderr appended to a log file",
          "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  const fs::path log =
      fs::temp_directory_path() / ("distflow-subprocess-" + std::to_string(::getpid()) + ".log");
  fs::remove(log);
  SpawnOptions options = shell("echo out; echo err >&2; cat", fork_path);
  options.in = Stdio::null;
  options.out = Stdio::log_file;
  options.err = Stdio::log_file;
  options.log_file = log.string();
  for (int run = 0; run < 2; ++run) {
    Subprocess child(options);
    CHECK(child.wait(5s) == 0);  // cat saw EOF at once
  }
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  CHECK(text.str() == "out\nerr\nout\nerr\n");
  CHECK((fs::status(log).permissions() & (fs::perms::group_all | fs::perms::others_all)) ==
        fs::perms::none);
  fs::remove(log);
}

TEST_CASE("subprocess: the child gets no descriptor of ours but its three streams",
          "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  const int leaked = ::open("/dev/null", O_RDONLY);  // not close-on-exec, as Asio's sockets
  REQUIRE(leaked > 2);
  Subprocess child(shell("ls /proc/self/fd", fork_path));
  ::close(leaked);
  const int out = child.take_stdout();
  const std::string fds = read_until_eof(out, 5s);
  ::close(out);
  CHECK(child.wait(5s) == 0);
  // 0, 1, 2, and the directory ls reads, at the lowest free number: 3 unless
  // something of ours came along.
  std::istringstream lines(fds);
  std::vector<int> listed;
  for (int fd = 0; lines >> fd;)
    listed.push_back(fd);
  CHECK(listed == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("subprocess: with its own process group, signal() reaches the child's children",
          "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  SpawnOptions options = shell("sleep 300 & echo $!; wait", fork_path);
  options.own_process_group = true;
  Subprocess child(options);
  const int out = child.take_stdout();
  const int grandchild = std::stoi("0" + read_line(out, 5s));
  ::close(out);
  REQUIRE(grandchild > 0);
  CHECK(::getpgid(child.pid()) == child.pid());
  CHECK(::getpgid(grandchild) == child.pid());
  child.signal(SIGTERM);
  CHECK(child.wait(5s) == 128 + SIGTERM);
  CHECK(test::process_gone(grandchild, 5s));
  kill_if_alive(grandchild);
}

TEST_CASE("subprocess: the parent-death signal fires when the spawning thread ends",
          "[subprocess]") {
  // The caveat the node obeys by spawning from its main thread: PR_SET_PDEATHSIG
  // follows the thread that forked, not the process.
  std::unique_ptr<Subprocess> child;
  std::thread spawner([&] {
    SpawnOptions options;
    options.argv = {"sleep", "300"};
    options.search_path = true;
    options.parent_death_signal = SIGKILL;
    child = std::make_unique<Subprocess>(options);
  });
  spawner.join();
  REQUIRE(child);
  CHECK(child->wait(5s) == 128 + SIGKILL);
}

TEST_CASE("subprocess: a detached daemon has its own session and is not our child",
          "[subprocess]") {
  SpawnOptions options;
  options.argv = {"/bin/sleep", "300"};
  options.in = Stdio::null;
  options.out = Stdio::null;
  options.err = Stdio::null;
  const int pid = spawn_detached(options);
  REQUIRE(pid > 0);
  int status = 0;
  CHECK(::waitpid(pid, &status, WNOHANG) == -1);
  CHECK(errno == ECHILD);
  CHECK(::getsid(pid) != ::getsid(0));  // a session of its own (led by the middle process)
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string name, state;
  int pid_field = 0, ppid = 0;
  stat >> pid_field >> name >> state >> ppid;
  CHECK(ppid != ::getpid());
  ::kill(pid, SIGKILL);
  CHECK(test::process_gone(pid, 5s));
}

TEST_CASE("subprocess: a CPU pin is in place when the constructor returns", "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  SpawnOptions options = shell("exec sleep 300", fork_path);
  options.out = Stdio::inherit;
  options.cpu = 0;
  Subprocess child(options);
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(::sched_getaffinity(child.pid(), sizeof set, &set) == 0);
  CHECK(CPU_COUNT(&set) == 1);
  CHECK(CPU_ISSET(0, &set));
  CHECK(child.stop(2s) == 128 + SIGTERM);
}

TEST_CASE("subprocess: stop() kills a child that ignores SIGTERM once the grace is over",
          "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  Subprocess child(shell("trap '' TERM; echo ready; while :; do sleep 1; done", fork_path));
  const int out = child.take_stdout();
  REQUIRE(read_line(out, 5s) == "ready");
  ::close(out);
  CHECK(child.stop(200ms) == 128 + SIGKILL);
  CHECK(child.stop(200ms) == 128 + SIGKILL);  // idempotent
  child.signal(SIGKILL);                      // a no-op once reaped
}

TEST_CASE("subprocess: a command that cannot run is a clear error on both paths", "[subprocess]") {
  const bool fork_path = GENERATE(false, true);
  const bool search = GENERATE(false, true);
  SpawnOptions options;
  options.argv = {search ? "distflow-no-such-command" : "/nonexistent/distflow-no-such-command"};
  options.search_path = search;
  if (fork_path)
    options.parent_death_signal = SIGKILL;
  CHECK_THROWS_WITH(Subprocess(options),
                    "cannot run '" + options.argv[0] + "': No such file or directory");
  CHECK_THROWS_WITH(spawn_detached(options),
                    "cannot run '" + options.argv[0] + "': No such file or directory");
}

TEST_CASE("subprocess: a caller with its stdin closed still wires the pipes", "[subprocess]") {
  // pipe2() then returns 0 for the child's end of its stdin: a dup2 onto 0 would be a
  // no-op that leaves it close-on-exec, and the child would start without a stdin.
  const bool fork_path = GENERATE(false, true);
  const int saved_in = ::dup(0);
  ::close(0);
  std::unique_ptr<Subprocess> child;
  try {
    SpawnOptions options = shell("read -r line; echo \"got $line\"", fork_path);
    options.in = Stdio::pipe;
    child = std::make_unique<Subprocess>(options);
  } catch (...) {
  }
  ::dup2(saved_in, 0);
  ::close(saved_in);
  REQUIRE(child);
  const int in = child->take_stdin();
  const int out = child->take_stdout();
  CHECK(in > 2);
  CHECK(out > 2);
  CHECK(::write(in, "x\n", 2) == 2);
  ::close(in);
  CHECK(read_until_eof(out, 5s) == "got x\n");
  ::close(out);
  CHECK(child->wait(5s) == 0);
}

TEST_CASE("subprocess: exit codes as a shell reports them", "[subprocess]") {
  CHECK(exit_code_of(3 << 8) == 3);  // WIFEXITED with 3
  CHECK(exit_code_of(SIGKILL) == 128 + SIGKILL);
  CHECK(self_executable().find("distflow_tests") != std::string::npos);
}

}  // namespace distflow
