// The --exec child: how it is spawned (pipes, environment, PATH, its own process
// group, a parent-death signal), exit codes and signals through Subprocess, and
// the restart limiter (pure, with a given clock).

#include "supervisor.hpp"

#include <chrono>
#include <poll.h>
#include <signal.h>
#include <string>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "errors.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;

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

void write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    REQUIRE(n > 0);
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace

TEST_CASE("supervisor: parses restart policies", "[supervisor]") {
  CHECK(parse_restart_policy("never") == RestartPolicy::never);
  CHECK(parse_restart_policy("on-failure") == RestartPolicy::on_failure);
  CHECK(parse_restart_policy("always") == RestartPolicy::always);
  CHECK_FALSE(parse_restart_policy("sometimes"));
  CHECK(to_string(RestartPolicy::on_failure) == "on-failure");
}

TEST_CASE("supervisor: restart limiter applies the policy and the window", "[supervisor]") {
  const auto t0 = RestartLimiter::Clock::time_point{} + 1h;
  RestartLimiter never(RestartPolicy::never, 5, 10s);
  CHECK_FALSE(never.allow(1, t0));
  CHECK_FALSE(never.limit_reached());

  RestartLimiter on_failure(RestartPolicy::on_failure, 2, 10s);
  CHECK_FALSE(on_failure.allow(0, t0));
  CHECK(on_failure.allow(1, t0));
  CHECK(on_failure.allow(3, t0 + 1s));
  CHECK_FALSE(on_failure.allow(3, t0 + 2s));
  CHECK(on_failure.limit_reached());
  CHECK(on_failure.allow(3, t0 + 10s));  // the first restart left the window
  CHECK_FALSE(on_failure.allow(3, t0 + 10500ms));

  RestartLimiter always(RestartPolicy::always, 1, 1s);
  CHECK(always.allow(0, t0));
  CHECK_FALSE(always.allow(0, t0));
  CHECK(always.allow(0, t0 + 1s));
}

TEST_CASE("supervisor: child echoes through its pipes and sees the added environment",
          "[supervisor]") {
  Subprocess child(exec_child_options(
      {"sh", "-c", "echo \"id=$DISTFLOW_NODE_ID\"; while read -r l; do echo \"got $l\"; done"},
      {{"DISTFLOW_NODE_ID", "n-42"}}));
  const int in = child.take_stdin();
  const int out = child.take_stdout();
  write_all(in, "a\nb\n");
  ::close(in);
  CHECK(read_until_eof(out, 5s) == "id=n-42\ngot a\ngot b\n");
  ::close(out);
  CHECK(child.wait(5s) == 0);
}

TEST_CASE("supervisor: the --exec child leads its own process group and dies with the node",
          "[supervisor]") {
  const SpawnOptions options = exec_child_options({"sleep", "30"}, {});
  CHECK(options.search_path);
  CHECK(options.own_process_group);
  CHECK(options.parent_death_signal == SIGKILL);
  Subprocess child(options);
  CHECK(::getpgid(child.pid()) == child.pid());
  CHECK(::getpgid(child.pid()) != ::getpgid(0));
  child.signal(SIGTERM);
  CHECK(child.wait(5s) == 128 + SIGTERM);
}

TEST_CASE("supervisor: exit codes and signals come back as codes", "[supervisor]") {
  {
    Subprocess child(exec_child_options({"sh", "-c", "exit 3"}, {}));
    pollfd p{child.exit_fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);  // the pidfd says it exited
    CHECK(child.try_wait() == 3);
  }
  {
    Subprocess child(exec_child_options({"sleep", "30"}, {}));
    CHECK_FALSE(child.try_wait());
    child.signal(SIGTERM);
    CHECK(child.wait(5s) == 128 + SIGTERM);
  }
}

TEST_CASE("supervisor: the child starts with default signal handling", "[supervisor]") {
  // The node ignores SIGPIPE; a child must not inherit that.
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old);
  Subprocess child(exec_child_options({"sh", "-c", "grep SigIgn /proc/self/status"}, {}));
  ::sigaction(SIGPIPE, &old, nullptr);
  ::close(child.take_stdin());
  const int out = child.take_stdout();
  const std::string status = read_until_eof(out, 5s);
  ::close(out);
  CHECK(child.wait(5s) == 0);
  // SIGPIPE is signal 13: bit 12 of the mask, in the last hex digits "...1000".
  const auto mask = std::stoull(status.substr(status.find(':') + 1), nullptr, 16);
  CHECK((mask & (1ull << (SIGPIPE - 1))) == 0);
}

TEST_CASE("supervisor: a command that cannot run is a clear error", "[supervisor]") {
  try {
    Subprocess child(exec_child_options({"/nonexistent/distflow-test-command"}, {}));
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("cannot run '/nonexistent/distflow-test-command'") !=
          std::string::npos);
  }
}

}  // namespace distflow
