#pragma once

// Simulated hosts for tests that cross machines (issue 12). Each host is a network
// namespace `distflow-<pid>-<n>` with `lo` up and one interface `eth0` at
// 10.203.0.<i+1>/24, plugged into a bridge that lives in a namespace of its own
// (nothing is added to the host's own network: its interfaces, addresses and
// routes are untouched, and 10.203.0.0/24 exists only inside the namespaces).
// Processes run inside with `ip netns exec NS ...`, which execs: the PID a
// ChildProcess holds is the process itself. Everything is removed by the
// destructor, also when a test fails; namespaces left by a crashed run (our
// prefix, a PID that is gone) are removed before new ones are made.
//
// Where namespaces cannot be made (not root, no `ip`, EPERM in a container), it
// says so once on stderr and falls back to 127.0.0.2, 127.0.0.3, ... on this
// host's loopback: the same tests run, except partitions.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support.hpp"

namespace distflow::test {

class TestHosts {
 public:
  enum class Mode { automatic, loopback };
  /// `count` hosts (1 to 200). `loopback`: the fallback even where namespaces work.
  /// Throws std::runtime_error when namespaces were made but do not check out.
  explicit TestHosts(int count, Mode mode = Mode::automatic);
  ~TestHosts();  ///< SIGKILLs what still runs inside, removes every namespace made
  TestHosts(const TestHosts&) = delete;
  TestHosts& operator=(const TestHosts&) = delete;

  /// True with namespaces (partitions work); false on the loopback fallback.
  bool isolated() const { return isolated_; }
  /// Why there are no namespaces (empty when isolated()).
  const std::string& unavailable_reason() const { return reason_; }
  int count() const { return static_cast<int>(addresses_.size()); }
  /// 10.203.0.<host+1>, or 127.0.0.<host+2> on the fallback.
  const std::string& address(int host) const;
  /// The namespace's name; empty on the fallback.
  std::string namespace_name(int host) const;

  /// `argv` as run on `host`: behind `ip netns exec NS` when isolated.
  std::vector<std::string> command(int host, const std::vector<std::string>& argv) const;
  std::unique_ptr<ChildProcess> start(int host, const std::vector<std::string>& argv,
                                      const std::map<std::string, std::string>& env = {}) const;
  RunResult run(int host, const std::vector<std::string>& argv,
                const std::map<std::string, std::string>& env = {},
                std::chrono::milliseconds timeout = 20s) const;

  /// Cuts `host` off (its eth0 down), or reconnects it and waits until its route is
  /// back. Preconditions: isolated().
  void partition(int host);
  void heal(int host);

  /// The `ip` binary, or empty when there is none.
  static std::string ip_binary();
  /// Our namespaces that exist now (for tests of the cleanup).
  static std::vector<std::string> namespaces_of(int pid);

 private:
  bool create(int count);  // false: unavailable (reason_ set, nothing left behind)
  void verify() const;
  void remove_all();

  bool isolated_ = false;
  std::string reason_;
  std::string switch_;                   // the namespace with the bridge
  std::vector<std::string> namespaces_;  // per host
  std::vector<std::string> addresses_;
};

}  // namespace distflow::test
