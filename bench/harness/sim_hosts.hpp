#pragma once

// Simulated hosts for runs that cross machines (issue 12): the tests
// (tests/netns.hpp) and `distflow bench throughput --remote`. Each host is a
// network namespace `distflow-<pid>-<n>` with `lo` up and one interface `eth0` at
// 10.203.0.<i+1>/24, plugged into a bridge that lives in a namespace of its own
// (nothing is added to the host's own network: its interfaces, addresses and
// routes are untouched, and 10.203.0.0/24 exists only inside the namespaces).
// Processes run inside with `ip netns exec NS ...`, which execs: the PID of such a
// child is the process itself.
//
// Everything is removed by the destructor (what still runs inside is SIGKILLed by
// PID), also when an exception unwinds. A guardian process (its own process group,
// so Ctrl-C does not reach it) removes them too when this process ends any other
// way (a signal, SIGKILL, exit()), with the directories given to remove_on_exit().
// Namespaces left by a run that is gone (our prefix, a PID that no longer exists)
// are removed before new ones are made.
//
// Where namespaces cannot be made (not root, no `ip`, EPERM in a container) the
// hosts are 127.0.0.2, 127.0.0.3, ... on this host's loopback (no partitions).

#include <memory>
#include <string>
#include <vector>

namespace distflow {

class Subprocess;

class SimHosts {
 public:
  /// `count` hosts (1 to 200), in namespaces when `try_namespaces` and they can be
  /// made, else on the loopback fallback (unavailable_reason() says why). Throws
  /// distflow::Error when namespaces were made but do not check out (namespace,
  /// address on eth0, the address absent outside, both ends of the link up).
  SimHosts(int count, bool try_namespaces);
  ~SimHosts();  ///< SIGKILLs what still runs inside, removes every namespace made
  SimHosts(const SimHosts&) = delete;
  SimHosts& operator=(const SimHosts&) = delete;

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

  /// Checks again that every namespace exists with its address on eth0 (and nowhere
  /// outside); throws distflow::Error naming what is missing. No-op on the fallback.
  void verify() const;

  /// Has the guardian also remove directory `dir` (an absolute path whose last
  /// component starts with "distflow-") if this process dies without its cleanup.
  /// No-op on the fallback.
  void remove_on_exit(const std::string& dir) const;

  /// Cuts `host` off (its eth0 down), or reconnects it and waits until its route is
  /// back. Throws distflow::Error unless isolated().
  void partition(int host);
  void heal(int host);

  /// The `ip` binary, or empty when there is none.
  static std::string ip_binary();
  /// Our namespaces that exist now (names made by process `pid`).
  static std::vector<std::string> namespaces_of(int pid);

 private:
  bool create(int count);  // false: unavailable (reason_ set, nothing left behind)
  void guard();
  void remove_all();

  bool isolated_ = false;
  std::string reason_;
  std::string switch_;                   // the namespace with the bridge
  std::vector<std::string> namespaces_;  // per host
  std::vector<std::string> addresses_;
  std::unique_ptr<Subprocess> guardian_;
  int guardian_pipe_ = -1;  // its stdin: EOF (our exit, however it happens) is its cue
};

}  // namespace distflow
