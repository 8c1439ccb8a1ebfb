#include "sim_hosts.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "bench_child.hpp"
#include "errors.hpp"
#include "subprocess.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kMaxHosts = 200;

using IpResult = CommandResult;

/// Runs `ip ARGS` to completion (10 s at most: then it is killed).
IpResult ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{SimHosts::ip_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, 10s);
}

std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& arg : args)
    out += (out.empty() ? "" : " ") + arg;
  return out;
}

void ip_or_throw(const std::vector<std::string>& args) {
  const IpResult r = ip(args);
  if (r.code != 0)
    throw Error("ip " + joined(args) + " failed (" + std::to_string(r.code) + "): " + r.output);
}

/// The names `ip netns list` shows (its lines are "NAME" or "NAME (id: N)").
std::vector<std::string> all_namespaces() {
  std::vector<std::string> names;
  std::istringstream lines(ip({"netns", "list"}).output);
  for (std::string line; std::getline(lines, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (!name.empty())
      names.push_back(name);
  }
  return names;
}

/// The PID in "distflow-<pid>-<n>", or 0 for any other name.
int owner_pid(const std::string& name) {
  constexpr std::string_view kPrefix = "distflow-";
  if (!name.starts_with(kPrefix))
    return 0;
  const std::size_t dash = name.find('-', kPrefix.size());
  const std::string digits = name.substr(kPrefix.size(), dash - kPrefix.size());
  if (dash == std::string::npos || digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return 0;
  }
  return std::stoi(digits);
}

/// SIGKILLs, by PID, every process inside our namespace `name`, then removes it.
void remove_namespace(const std::string& name) {
  std::istringstream pids(ip({"netns", "pids", name}).output);
  for (std::string pid; std::getline(pids, pid);) {
    if (!pid.empty() && pid.size() < 10 && pid.find_first_not_of("0123456789") == std::string::npos)
      ::kill(std::stoi(pid), SIGKILL);
  }
  ip({"netns", "del", name});
}

/// Namespaces of an earlier run that is gone: our prefix, and a PID that no longer exists.
void remove_stale_namespaces() {
  static bool done = false;
  if (done)
    return;
  done = true;
  for (const std::string& name : all_namespaces()) {
    const int pid = owner_pid(name);
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH)
      remove_namespace(name);
  }
}

bool is_local_address(const std::string& address) {
  in_addr wanted{};
  ::inet_pton(AF_INET, address.c_str(), &wanted);
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    return false;
  bool found = false;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET)
      continue;
    sockaddr_in in{};
    std::memcpy(&in, a->ifa_addr, sizeof in);
    found = found || in.sin_addr.s_addr == wanted.s_addr;
  }
  ::freeifaddrs(list);
  return found;
}

/// Polls `ready` until it holds or `timeout` passes.
template <class Predicate>
bool wait_until(Predicate ready, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = Clock::now() + timeout;
  while (!ready()) {
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// The guardian: reads lines (directories to remove) until EOF on stdin (our end
// closes when we exit, however we exit), then kills what runs inside each
// namespace named in its arguments, removes it, and removes the directories (only
// absolute paths with "/distflow-" in them). Signals aimed at our process group
// do not reach it.
constexpr const char* kGuardianScript = R"(trap '' INT TERM HUP QUIT PIPE
dirs=
while IFS= read -r line; do dirs="$dirs$line
"; done
for ns in "$@"; do
  for pid in $("$DISTFLOW_IP" netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  "$DISTFLOW_IP" netns del "$ns" 2>/dev/null
done
printf '%s' "$dirs" | while IFS= read -r dir; do
  case "$dir" in /*/distflow-*) rm -rf -- "$dir" ;; esac
done
exit 0)";

}  // namespace

std::string SimHosts::ip_binary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0)
      return path;
  }
  return {};
}

std::vector<std::string> SimHosts::namespaces_of(int pid) {
  std::vector<std::string> ours;
  for (const std::string& name : all_namespaces()) {
    if (owner_pid(name) == pid)
      ours.push_back(name);
  }
  return ours;
}

SimHosts::SimHosts(int count, bool try_namespaces) {
  if (count < 1 || count > kMaxHosts)
    throw Error("simulated hosts: 1 to 200 hosts");
  if (!try_namespaces) {
    reason_ = "the loopback fallback was asked for";
  } else if (create(count)) {
    isolated_ = true;
    try {
      verify();
    } catch (...) {
      remove_all();
      throw;
    }
    return;
  }
  for (int i = 0; i < count; ++i)
    addresses_.push_back("127.0.0." + std::to_string(i + 2));
}

SimHosts::~SimHosts() {
  remove_all();
}

void SimHosts::guard() {
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", kGuardianScript, "distflow-netns-guardian"};
  options.argv.insert(options.argv.end(), namespaces_.begin(), namespaces_.end());
  options.argv.push_back(switch_);
  options.env = {{"DISTFLOW_IP", ip_binary()}};
  options.in = Stdio::pipe;
  options.out = Stdio::null;
  options.err = Stdio::null;
  options.own_process_group = true;
  guardian_ = std::make_unique<Subprocess>(options);
  guardian_pipe_ = guardian_->take_stdin();
}

bool SimHosts::create(int count) {
  if (ip_binary().empty()) {
    reason_ = "no 'ip' command: install iproute2";
    return false;
  }
  remove_stale_namespaces();
  static int next = 0;
  const std::string prefix = "distflow-" + std::to_string(::getpid()) + "-";
  // Named first, so the guardian knows every one before the first exists.
  switch_ = prefix + std::to_string(next++);
  for (int i = 0; i < count; ++i)
    namespaces_.push_back(prefix + std::to_string(next++));
  try {
    guard();
  } catch (const Error& e) {
    reason_ = e.what();
    namespaces_.clear();
    switch_.clear();
    return false;
  }
  if (const IpResult r = ip({"netns", "add", switch_}); r.code != 0) {
    reason_ = "ip netns add: " + r.output.substr(0, r.output.find('\n'));
    remove_all();
    return false;
  }
  try {
    ip_or_throw({"-n", switch_, "link", "add", "br0", "type", "bridge"});
    ip_or_throw({"-n", switch_, "link", "set", "br0", "up"});
    for (int i = 0; i < count; ++i) {
      const std::string& ns = namespaces_[static_cast<std::size_t>(i)];
      const std::string port = "h" + std::to_string(i);
      const std::string address = "10.203.0." + std::to_string(i + 1);
      ip_or_throw({"netns", "add", ns});
      ip_or_throw({"-n", ns, "link", "set", "lo", "up"});
      ip_or_throw({"-n", switch_, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                   "netns", ns});
      ip_or_throw({"-n", switch_, "link", "set", port, "master", "br0"});
      ip_or_throw({"-n", switch_, "link", "set", port, "up"});
      ip_or_throw({"-n", ns, "addr", "add", address + "/24", "dev", "eth0"});
      ip_or_throw({"-n", ns, "link", "set", "eth0", "up"});
      addresses_.push_back(address);
    }
  } catch (const Error& e) {
    reason_ = e.what();
    remove_all();
    addresses_.clear();
    return false;
  }
  return true;
}

void SimHosts::verify() const {
  if (!isolated_)
    return;
  const auto existing = all_namespaces();
  for (int i = 0; i < count(); ++i) {
    const std::string& ns = namespaces_[static_cast<std::size_t>(i)];
    const std::string& address = addresses_[static_cast<std::size_t>(i)];
    if (std::find(existing.begin(), existing.end(), ns) == existing.end())
      throw Error("netns: namespace '" + ns + "' does not exist");
    const IpResult addr = ip({"-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"});
    if (!contains(addr.output, "inet " + address + "/24"))
      throw Error("netns: " + address + " is not on eth0 in '" + ns + "': " + addr.output);
    if (is_local_address(address))
      throw Error("netns: " + address + " also exists outside the namespaces");
    // Carrier on both ends of the veth pair, and the bridge forwarding on its port.
    const bool up = wait_until([&] {
      return contains(ip({"-n", ns, "link", "show", "eth0"}).output, "state UP") &&
             contains(ip({"-n", switch_, "-d", "link", "show", "h" + std::to_string(i)}).output,
                      "state forwarding");
    });
    if (!up)
      throw Error("netns: eth0 in '" + ns + "' did not come up");
  }
}

void SimHosts::remove_all() {
  for (const std::string& ns : namespaces_)
    remove_namespace(ns);
  namespaces_.clear();
  if (!switch_.empty())
    remove_namespace(switch_);
  switch_.clear();
  if (guardian_) {
    // Its cue: it finds nothing left to remove and exits.
    ::close(guardian_pipe_);
    guardian_pipe_ = -1;
    guardian_->stop(5s);
    guardian_.reset();
  }
}

void SimHosts::remove_on_exit(const std::string& dir) const {
  if (guardian_pipe_ < 0)
    return;
  const std::string line = dir + "\n";
  // A few dozen bytes into an empty pipe: written whole, or not at all (then the
  // caller's own cleanup is all there is).
  [[maybe_unused]] const ssize_t n = ::write(guardian_pipe_, line.data(), line.size());
}

const std::string& SimHosts::address(int host) const {
  return addresses_.at(static_cast<std::size_t>(host));
}

std::string SimHosts::namespace_name(int host) const {
  return isolated_ ? namespaces_.at(static_cast<std::size_t>(host)) : std::string();
}

std::vector<std::string> SimHosts::command(int host, const std::vector<std::string>& argv) const {
  if (!isolated_)
    return argv;
  std::vector<std::string> out{ip_binary(), "netns", "exec", namespace_name(host)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void SimHosts::partition(int host) {
  if (!isolated_)
    throw Error("netns: partition needs namespaces (" + reason_ + ")");
  ip_or_throw({"-n", namespace_name(host), "link", "set", "eth0", "down"});
}

void SimHosts::heal(int host) {
  if (!isolated_)
    throw Error("netns: heal needs namespaces (" + reason_ + ")");
  const std::string ns = namespace_name(host);
  ip_or_throw({"-n", ns, "link", "set", "eth0", "up"});
  const bool back = wait_until([&] {
    return contains(ip({"-n", ns, "link", "show", "eth0"}).output, "state UP") &&
           contains(ip({"-n", ns, "-4", "route", "show", "dev", "eth0"}).output, "10.203.0.0/24");
  });
  if (!back)
    throw Error("netns: eth0 in '" + ns + "' did not come back up");
}

}  // namespace distflow
