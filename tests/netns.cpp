#include "netns.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ifaddrs.h>
#include <iostream>
#include <netinet/in.h>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace distflow::test {
namespace {

constexpr int kMaxHosts = 200;

RunResult ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{TestHosts::ip_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, {}, 10s);
}

std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& arg : args)
    out += (out.empty() ? "" : " ") + arg;
  return out;
}

void ip_or_throw(const std::vector<std::string>& args) {
  const RunResult r = ip(args);
  if (r.code != 0)
    throw std::runtime_error("ip " + joined(args) + " failed (" + std::to_string(r.code) +
                             "): " + r.err);
}

/// The names `ip netns list` shows (its lines are "NAME" or "NAME (id: N)").
std::vector<std::string> all_namespaces() {
  std::vector<std::string> names;
  std::istringstream lines(ip({"netns", "list"}).out);
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
  if (dash == std::string::npos || digits.empty() ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return 0;
  }
  return std::stoi(digits);
}

/// SIGKILLs, by PID, every process inside our namespace `name`, then removes it.
void remove_namespace(const std::string& name) {
  std::istringstream pids(ip({"netns", "pids", name}).out);
  for (std::string pid; std::getline(pids, pid);) {
    if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos)
      ::kill(std::stoi(pid), SIGKILL);
  }
  ip({"netns", "del", name});
}

/// Namespaces of an earlier run that crashed: our prefix, and a PID that is gone.
void remove_stale_namespaces() {
  static bool done = false;
  if (done)
    return;
  done = true;
  for (const std::string& name : all_namespaces()) {
    const int pid = owner_pid(name);
    if (pid <= 0 || pid == ::getpid())
      continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      std::cerr << "netns: removing '" << name << "', left by a run that is gone\n";
      remove_namespace(name);
    }
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
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

std::string TestHosts::ip_binary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0)
      return path;
  }
  return {};
}

std::vector<std::string> TestHosts::namespaces_of(int pid) {
  std::vector<std::string> ours;
  for (const std::string& name : all_namespaces()) {
    if (owner_pid(name) == pid)
      ours.push_back(name);
  }
  return ours;
}

TestHosts::TestHosts(int count, Mode mode) {
  if (count < 1 || count > kMaxHosts)
    throw std::runtime_error("TestHosts: 1 to 200 hosts");
  const char* env = std::getenv("DISTFLOW_TEST_NETNS");
  if (mode == Mode::loopback) {
    reason_ = "the loopback fallback was asked for";
  } else if (env != nullptr && std::string_view(env) == "0") {
    reason_ = "DISTFLOW_TEST_NETNS=0";
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
  if (mode == Mode::automatic) {
    static bool said = false;
    if (!said) {
      said = true;
      std::cerr << "netns: network namespaces unavailable (" << reason_
                << "): simulated hosts are 127.0.0.2, 127.0.0.3, ...; partition tests skipped\n";
    }
  }
  for (int i = 0; i < count; ++i)
    addresses_.push_back("127.0.0." + std::to_string(i + 2));
}

TestHosts::~TestHosts() {
  remove_all();
}

bool TestHosts::create(int count) {
  if (ip_binary().empty()) {
    reason_ = "no 'ip' command: install iproute2";
    return false;
  }
  remove_stale_namespaces();
  static int next = 0;
  const std::string prefix = "distflow-" + std::to_string(::getpid()) + "-";
  const std::string sw = prefix + std::to_string(next++);
  if (const RunResult r = ip({"netns", "add", sw}); r.code != 0) {
    reason_ = "ip netns add: " + r.err.substr(0, r.err.find('\n'));
    return false;
  }
  switch_ = sw;
  try {
    ip_or_throw({"-n", switch_, "link", "add", "br0", "type", "bridge"});
    ip_or_throw({"-n", switch_, "link", "set", "br0", "up"});
    for (int i = 0; i < count; ++i) {
      const std::string ns = prefix + std::to_string(next++);
      const std::string port = "h" + std::to_string(i);
      const std::string address = "10.203.0." + std::to_string(i + 1);
      ip_or_throw({"netns", "add", ns});
      namespaces_.push_back(ns);
      ip_or_throw({"-n", ns, "link", "set", "lo", "up"});
      ip_or_throw({"-n", switch_, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                   "netns", ns});
      ip_or_throw({"-n", switch_, "link", "set", port, "master", "br0"});
      ip_or_throw({"-n", switch_, "link", "set", port, "up"});
      ip_or_throw({"-n", ns, "addr", "add", address + "/24", "dev", "eth0"});
      ip_or_throw({"-n", ns, "link", "set", "eth0", "up"});
      addresses_.push_back(address);
    }
  } catch (const std::runtime_error& e) {
    reason_ = e.what();
    remove_all();
    addresses_.clear();
    return false;
  }
  return true;
}

void TestHosts::verify() const {
  const auto existing = all_namespaces();
  for (int i = 0; i < count(); ++i) {
    const std::string& ns = namespaces_[static_cast<std::size_t>(i)];
    const std::string& address = addresses_[static_cast<std::size_t>(i)];
    if (std::find(existing.begin(), existing.end(), ns) == existing.end())
      throw std::runtime_error("netns: namespace '" + ns + "' does not exist");
    const RunResult addr = ip({"-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"});
    if (!contains(addr.out, "inet " + address + "/24"))
      throw std::runtime_error("netns: " + address + " is not on eth0 in '" + ns +
                               "': " + addr.out);
    if (is_local_address(address))
      throw std::runtime_error("netns: " + address + " also exists outside the namespaces");
    // Carrier on both ends of the veth pair, and the bridge forwarding on its port.
    const bool up = wait_until([&] {
      return contains(ip({"-n", ns, "link", "show", "eth0"}).out, "state UP") &&
             contains(ip({"-n", switch_, "-d", "link", "show", "h" + std::to_string(i)}).out,
                      "state forwarding");
    });
    if (!up)
      throw std::runtime_error("netns: eth0 in '" + ns + "' did not come up");
  }
}

void TestHosts::remove_all() {
  for (const std::string& ns : namespaces_)
    remove_namespace(ns);
  namespaces_.clear();
  if (!switch_.empty())
    remove_namespace(switch_);
  switch_.clear();
}

const std::string& TestHosts::address(int host) const {
  return addresses_.at(static_cast<std::size_t>(host));
}

std::string TestHosts::namespace_name(int host) const {
  return isolated_ ? namespaces_.at(static_cast<std::size_t>(host)) : std::string();
}

std::vector<std::string> TestHosts::command(int host, const std::vector<std::string>& argv) const {
  if (!isolated_)
    return argv;
  std::vector<std::string> out{ip_binary(), "netns", "exec", namespace_name(host)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::unique_ptr<ChildProcess> TestHosts::start(
    int host, const std::vector<std::string>& argv,
    const std::map<std::string, std::string>& env) const {
  return std::make_unique<ChildProcess>(command(host, argv), env);
}

RunResult TestHosts::run(int host, const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env,
                         std::chrono::milliseconds timeout) const {
  return test::run(command(host, argv), env, timeout);
}

void TestHosts::partition(int host) {
  if (!isolated_)
    throw std::runtime_error("netns: partition needs namespaces (" + reason_ + ")");
  ip_or_throw({"-n", namespace_name(host), "link", "set", "eth0", "down"});
}

void TestHosts::heal(int host) {
  if (!isolated_)
    throw std::runtime_error("netns: heal needs namespaces (" + reason_ + ")");
  const std::string ns = namespace_name(host);
  ip_or_throw({"-n", ns, "link", "set", "eth0", "up"});
  const bool back = wait_until([&] {
    return contains(ip({"-n", ns, "link", "show", "eth0"}).out, "state UP") &&
           contains(ip({"-n", ns, "-4", "route", "show", "dev", "eth0"}).out, "10.203.0.0/24");
  });
  if (!back)
    throw std::runtime_error("netns: eth0 in '" + ns + "' did not come back up");
}

}  // namespace distflow::test
