// Simulated hosts (tests/netns.hpp): a PMD bound on host A is listed from host B;
// while A's link is down the list fails, and after it is up it works again. The
// helper's own promises: the PID of a process run inside is the process, nothing is
// left behind (also when a test fails, or after a crashed run), and the loopback
// fallback runs the same cross-host test.

#include "netns.hpp"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace distflow::test {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

std::string net_namespace_of(const std::string& pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + pid + "/ns/net", ec).string();
}

/// A PMD on host 0 (`pmd --bind <its address> --port 0 --insecure`), and its port.
struct RemotePmd {
  std::unique_ptr<ChildProcess> process;
  std::string port;
  explicit RemotePmd(const TestHosts& hosts) {
    process = hosts.start(
        0, {distflow_binary(), "pmd", "--bind", hosts.address(0), "--port", "0", "--insecure"});
    const auto line = process->read_line(10s);
    INFO(process->stderr_text());
    REQUIRE(line);
    REQUIRE(line->starts_with(hosts.address(0) + ":"));
    port = line->substr(line->rfind(':') + 1);
  }
};

RunResult list_from(const TestHosts& hosts, int host, const RemotePmd& pmd) {
  return hosts.run(
      host, {distflow_binary(), "pmd", "list", "--host", hosts.address(0), "--port", pmd.port});
}

}  // namespace

TEST_CASE("netns: a PMD on host A is listed from host B", "[netns]") {
  TestHosts hosts(2);
  RemotePmd pmd(hosts);
  const RunResult list = list_from(hosts, 1, pmd);
  INFO(list.err);
  CHECK(list.code == 0);
  CHECK(contains(list.out, "Registered nodes: 0"));
  if (hosts.isolated()) {
    // Beyond loopback without a cookie: it starts (--insecure), warned.
    CHECK(contains(
        pmd.process->stderr_text(),
        "listening on " + hosts.address(0) + " (--bind) without a cookie or TLS (--insecure)"));
  }
}

TEST_CASE("netns: the loopback fallback runs the same test on 127.0.0.2 and 127.0.0.3", "[netns]") {
  TestHosts hosts(2, TestHosts::Mode::loopback);
  CHECK_FALSE(hosts.isolated());
  CHECK(hosts.address(0) == "127.0.0.2");
  CHECK(hosts.address(1) == "127.0.0.3");
  CHECK(hosts.command(1, {"x"}) == std::vector<std::string>{"x"});
  RemotePmd pmd(hosts);
  const RunResult list = list_from(hosts, 1, pmd);
  INFO(list.err);
  CHECK(list.code == 0);
  CHECK(contains(list.out, "Registered nodes: 0"));
  CHECK_THROWS_AS(hosts.partition(0), std::runtime_error);
}

TEST_CASE("netns: a partitioned host is unreachable until healed", "[netns]") {
  TestHosts hosts(2);
  if (!hosts.isolated()) {
    WARN("no network namespaces (" << hosts.unavailable_reason() << "): partition test skipped");
    return;
  }
  RemotePmd pmd(hosts);
  REQUIRE(list_from(hosts, 1, pmd).code == 0);
  hosts.partition(0);
  const RunResult cut = list_from(hosts, 1, pmd);
  CHECK(cut.code == 1);
  CHECK(contains(cut.err, "no distflow PMD on " + hosts.address(0) + ":" + pmd.port));
  hosts.heal(0);
  const RunResult healed = list_from(hosts, 1, pmd);
  INFO(healed.err);
  CHECK(healed.code == 0);
  CHECK(contains(healed.out, "Registered nodes: 0"));
  CHECK_FALSE(pmd.process->wait(0ms));  // the same PMD all along
}

TEST_CASE("netns: a process run inside is the ChildProcess's PID, in the host's namespace",
          "[netns]") {
  TestHosts hosts(1);
  if (!hosts.isolated()) {
    WARN("no network namespaces (" << hosts.unavailable_reason() << ")");
    return;
  }
  const std::string ns_file = "/run/netns/" + hosts.namespace_name(0);
  REQUIRE(std::filesystem::exists(ns_file));
  auto child = hosts.start(0, {"/bin/sh", "-c", "echo $$; exec cat"});
  const auto line = child->read_line(10s);
  REQUIRE(line);
  CHECK(*line == std::to_string(child->pid()));  // `ip netns exec` execs: no wrapper
  const std::string inside = net_namespace_of(*line);
  CHECK_FALSE(inside.empty());
  CHECK(inside != net_namespace_of("self"));
  CHECK(inside == net_namespace_of(std::to_string(child->pid())));
  child->close_stdin();
  CHECK(child->wait(10s) == 0);
  // Only lo and eth0 (with its one address) inside.
  const RunResult links = hosts.run(0, {TestHosts::ip_binary(), "-o", "link", "show"});
  CHECK(contains(links.out, "lo:"));
  CHECK(contains(links.out, "eth0@"));
  CHECK(std::count(links.out.begin(), links.out.end(), '\n') == 2);
}

TEST_CASE("netns: nothing is left behind, after a failure or a crashed run", "[netns]") {
  if (TestHosts::ip_binary().empty() || ::geteuid() != 0) {
    WARN("no network namespaces here: nothing to clean");
    return;
  }
  const int self = ::getpid();
  std::unique_ptr<ChildProcess> survivor;
  int survivor_pid = 0;
  try {
    TestHosts hosts(3);
    if (!hosts.isolated()) {
      WARN("no network namespaces (" << hosts.unavailable_reason() << ")");
      return;
    }
    CHECK(TestHosts::namespaces_of(self).size() == 4);  // three hosts and the switch
    // A process the test forgot: killed by PID with its namespace.
    survivor = hosts.start(2, {"/bin/sleep", "300"});
    survivor_pid = survivor->pid();
    throw std::runtime_error("a failing test");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "a failing test");
  }
  CHECK(TestHosts::namespaces_of(self).empty());
  CHECK(survivor->wait(10s) == 128 + SIGKILL);
  CHECK(survivor_pid > 0);

  // A namespace left by a run that crashed (its PID is gone) is removed by the next.
  const pid_t dead = ::fork();
  if (dead == 0)
    ::_exit(0);
  REQUIRE(dead > 0);
  ::waitpid(dead, nullptr, 0);
  const std::string stale = "distflow-" + std::to_string(dead) + "-0";
  REQUIRE(run({TestHosts::ip_binary(), "netns", "add", stale}).code == 0);
  REQUIRE(TestHosts::namespaces_of(dead).size() == 1);
  // (Only the first TestHosts of a process looks for stale namespaces: a fresh process.)
  const RunResult fresh = run({"/proc/self/exe", "netns: the stale namespace check"}, {}, 60s);
  INFO(fresh.out << fresh.err);
  CHECK(fresh.code == 0);
  CHECK(TestHosts::namespaces_of(dead).empty());
  if (!TestHosts::namespaces_of(dead).empty())
    run({TestHosts::ip_binary(), "netns", "del", stale});
}

TEST_CASE("netns: the stale namespace check", "[.netns_helper]") {
  // Run by the test above in a fresh process: making hosts removes stale namespaces.
  TestHosts hosts(1);
  CHECK(hosts.isolated());
}

}  // namespace distflow::test
