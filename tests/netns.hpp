#pragma once

// Simulated hosts for tests that cross machines (issue 12): SimHosts
// (bench/harness/sim_hosts.hpp: network namespaces on 10.203.0.0/24, removed on
// every exit path) with the tests' own way to run processes inside them.
// DISTFLOW_TEST_NETNS=0 asks for the loopback fallback (127.0.0.2, 127.0.0.3, ...),
// which is announced once on stderr when namespaces cannot be made.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sim_hosts.hpp"
#include "support.hpp"

namespace distflow::test {

class TestHosts {
 public:
  enum class Mode { automatic, loopback };
  /// `count` hosts (1 to 200). `loopback`: the fallback even where namespaces work.
  /// Throws std::runtime_error when namespaces were made but do not check out.
  explicit TestHosts(int count, Mode mode = Mode::automatic);
  ~TestHosts() = default;  ///< SIGKILLs what still runs inside, removes every namespace made
  TestHosts(const TestHosts&) = delete;
  TestHosts& operator=(const TestHosts&) = delete;

  /// True with namespaces (partitions work); false on the loopback fallback.
  bool isolated() const { return hosts_.isolated(); }
  /// Why there are no namespaces (empty when isolated()).
  const std::string& unavailable_reason() const { return hosts_.unavailable_reason(); }
  int count() const { return hosts_.count(); }
  /// 10.203.0.<host+1>, or 127.0.0.<host+2> on the fallback.
  const std::string& address(int host) const { return hosts_.address(host); }
  /// The namespace's name; empty on the fallback.
  std::string namespace_name(int host) const { return hosts_.namespace_name(host); }

  /// `argv` as run on `host`: behind `ip netns exec NS` when isolated.
  std::vector<std::string> command(int host, const std::vector<std::string>& argv) const {
    return hosts_.command(host, argv);
  }
  std::unique_ptr<ChildProcess> start(int host, const std::vector<std::string>& argv,
                                      const std::map<std::string, std::string>& env = {}) const;
  RunResult run(int host, const std::vector<std::string>& argv,
                const std::map<std::string, std::string>& env = {},
                std::chrono::milliseconds timeout = 20s) const;

  /// Cuts `host` off (its eth0 down), or reconnects it and waits until its route is
  /// back. Preconditions: isolated().
  void partition(int host) { hosts_.partition(host); }
  void heal(int host) { hosts_.heal(host); }

  /// The `ip` binary, or empty when there is none.
  static std::string ip_binary() { return SimHosts::ip_binary(); }
  /// Our namespaces that exist now (for tests of the cleanup).
  static std::vector<std::string> namespaces_of(int pid) { return SimHosts::namespaces_of(pid); }

 private:
  SimHosts hosts_;
};

}  // namespace distflow::test
