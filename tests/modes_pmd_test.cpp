// End-to-end tests of `distflow pmd` (the daemon, its admin subcommands) and of
// the auto-start in src/process.cpp, with the real binary on loopback. Requests
// are sent as the original TypeScript client sends them ("req_N" ids).

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "framing.hpp"
#include "process.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string reg(std::string_view id, std::string_view alias, int port, std::string_view rid) {
  std::string out = R"({"type":"register","payload":{"nodeId":")" + std::string(id) + "\"";
  if (!alias.empty())
    out += R"(,"alias":")" + std::string(alias) + "\"";
  out += R"(,"host":"127.0.0.1","port":)" + std::to_string(port) + "}";
  if (!rid.empty())
    out += R"(,"requestId":")" + std::string(rid) + "\"";
  return out + "}";
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

/// A forked client that registers `node_id` (and, with `heartbeat`, heartbeats
/// every 50 ms) on the PMD, then holds its connection until killed.
class OwnerProcess {
 public:
  OwnerProcess(std::uint16_t port, const std::vector<std::string>& node_ids, bool heartbeat) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    std::fflush(nullptr);  // no buffered output duplicated into the child
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(ready[0]);
      try {
        RawClient client("127.0.0.1", port);
        for (const auto& id : node_ids) {
          if (!client.request(reg(id, "", 1000, "")))
            ::_exit(1);
        }
        (void)!::write(ready[1], "k", 1);
        for (;;) {
          if (heartbeat) {
            client.request(R"({"type":"heartbeat","payload":{"nodeId":")" + node_ids.at(0) +
                           "\"}}");
          }
          ::poll(nullptr, 0, 50);
        }
      } catch (...) {
      }
      ::_exit(1);
    }
    ::close(ready[1]);
    pollfd p{ready[0], POLLIN, 0};
    char byte = 0;
    const bool ok = ::poll(&p, 1, 10000) == 1 && ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    REQUIRE(ok);
  }
  ~OwnerProcess() {
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  OwnerProcess(const OwnerProcess&) = delete;
  OwnerProcess& operator=(const OwnerProcess&) = delete;
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
};

long rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  }
  return -1;
}

/// A TCP listener that is not a PMD: answers every connection with `reply`, then closes.
class ImpostorServer {
 public:
  explicit ImpostorServer(std::string reply) : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::listen(fd_, 8) == 0);
    thread_ = std::thread([this] {
      for (;;) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) {
          if (stop_)
            return;
          continue;
        }
        const int conn = ::accept(fd_, nullptr, nullptr);
        if (conn < 0)
          return;
        char buf[256];
        pollfd c{conn, POLLIN, 0};
        if (::poll(&c, 1, 2000) == 1)
          (void)!::recv(conn, buf, sizeof buf, 0);
        if (!reply_.empty())
          (void)!::send(conn, reply_.data(), reply_.size(), MSG_NOSIGNAL);
        ::close(conn);
      }
    });
  }
  ~ImpostorServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  ImpostorServer(const ImpostorServer&) = delete;
  ImpostorServer& operator=(const ImpostorServer&) = delete;
  std::string port_str() const { return std::to_string(port_); }

 private:
  std::string reply_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// A PMD that answers every request with names full of terminal control
/// sequences (as a hostile PMD, or an entry from before they were refused, would):
/// list, resolve and watch get one such node; a watch is followed by its leave.
class HostilePmd {
 public:
  static constexpr const char* kNode =
      R"({"nodeId":"evil\u001b[2J\u001b[H","alias":"al\nforged  row","host":"h\u0085\u202e\r","port":1,"lastHeartbeat":0})";

  HostilePmd() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::listen(fd_, 8) == 0);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0)
          continue;
        const int conn = ::accept(fd_, nullptr, nullptr);
        if (conn >= 0) {
          serve(conn);
          ::close(conn);
        }
      }
    });
  }
  ~HostilePmd() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  HostilePmd(const HostilePmd&) = delete;
  HostilePmd& operator=(const HostilePmd&) = delete;
  std::string port_str() const { return std::to_string(port_); }

 private:
  void serve(int conn) {
    std::string in;
    char buf[4096];
    while (!stop_) {
      pollfd c{conn, POLLIN, 0};
      if (::poll(&c, 1, 100) <= 0)
        continue;
      const ssize_t n = ::recv(conn, buf, sizeof buf, 0);
      if (n <= 0)
        return;
      in.append(buf, static_cast<std::size_t>(n));
      while (in.size() >= 4) {
        const std::size_t length = (std::size_t{static_cast<unsigned char>(in[0])} << 24) |
                                   (std::size_t{static_cast<unsigned char>(in[1])} << 16) |
                                   (std::size_t{static_cast<unsigned char>(in[2])} << 8) |
                                   static_cast<unsigned char>(in[3]);
        if (in.size() < 4 + length)
          break;
        const auto request = nlohmann::json::parse(in.substr(4, length));
        in.erase(0, 4 + length);
        const std::string type = request.value("type", "");
        const std::string head =
            R"({"type":"response","requestId":)" + request.at("requestId").dump() + ",";
        std::string out;
        if (type == "resolve") {
          append_frame(out, head + R"("payload":{"node":)" + kNode + "}}");
        } else if (type == "watch") {
          append_frame(out, head + R"("payload":{"success":true,"nodes":[)" + kNode + "]}}");
          append_frame(out,
                       std::string(R"({"type":"event","payload":{"event":"peer:leave","peer":)") +
                           kNode + R"(,"reason":"gone\u001b[31m"}})");
        } else if (type == "shutdown") {
          append_frame(out, head + R"("payload":{"error":"no\u001b[2J"}})");
        } else {
          append_frame(out, head + R"("payload":{"nodes":[)" + kNode + "]}}");
        }
        (void)!::send(conn, out.data(), out.size(), MSG_NOSIGNAL);
      }
    }
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// No control character in `text` (C0 but '\n', DEL, C1), and, unless `json`, no
/// bidirectional override either (JSON keeps that as text).
bool terminal_safe(const std::string& text, bool json = false) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n') || c == 0x7f)
      return false;
    if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0xa0)
      return false;
    if (!json && text.compare(i, 3, "\xE2\x80\xAE") == 0)
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("modes_pmd: every request and error string, byte for byte", "[modes_pmd]") {
  PmdProcess pmd;
  RawClient watcher("127.0.0.1", pmd.port);
  CHECK(watcher.request(R"({"type":"watch","payload":{},"requestId":"req_1"})") ==
        R"({"type":"response","requestId":"req_1","payload":{"success":true}})");

  RawClient c("127.0.0.1", pmd.port);
  CHECK(c.request(reg("n1", "alpha", 5001, "req_1")) ==
        R"({"type":"response","requestId":"req_1","payload":{"success":true}})");
  auto join = watcher.read_frame();
  REQUIRE(join);
  CHECK(
      join->rfind(
          R"({"type":"event","payload":{"event":"peer:join","peer":{"nodeId":"n1","alias":"alpha","host":"127.0.0.1","port":5001,"lastHeartbeat":)",
          0) == 0);
  CHECK(
      c.request(reg("n2", "alpha", 5002, "req_2")) ==
      R"({"type":"response","requestId":"req_2","payload":{"error":"Alias 'alpha' already in use"}})");
  CHECK(
      c.request(
          R"({"type":"register","payload":{"nodeId":"n2","host":"127.0.0.1","port":0},"requestId":"req_3"})") ==
      R"({"type":"response","requestId":"req_3","payload":{"error":"invalid register payload: 'port' must be an integer 1-65535"}})");
  CHECK(
      c.request(R"({"type":"register","requestId":"req_4"})") ==
      R"({"type":"response","requestId":"req_4","payload":{"error":"invalid register payload: missing payload"}})");

  auto resolved =
      c.request(R"({"type":"resolve","payload":{"alias":"alpha"},"requestId":"req_5"})");
  REQUIRE(resolved);
  CHECK(
      resolved->rfind(
          R"({"type":"response","requestId":"req_5","payload":{"node":{"nodeId":"n1","alias":"alpha","host":"127.0.0.1","port":5001,"lastHeartbeat":)",
          0) == 0);
  CHECK(c.request(R"({"type":"resolve","payload":{"alias":"nobody"},"requestId":"req_6"})") ==
        R"({"type":"response","requestId":"req_6","payload":{"error":"Node not found"}})");
  auto listed = c.request(R"({"type":"list","payload":{},"requestId":"req_7"})");
  REQUIRE(listed);
  CHECK(listed->rfind(
            R"({"type":"response","requestId":"req_7","payload":{"nodes":[{"nodeId":"n1",)", 0) ==
        0);
  CHECK(c.request(R"({"type":"heartbeat","payload":{"nodeId":"n1"},"requestId":"req_8"})") ==
        R"({"type":"response","requestId":"req_8","payload":{"success":true}})");
  CHECK(c.request(R"({"type":"heartbeat","payload":{"nodeId":"zz"},"requestId":"req_9"})") ==
        R"({"type":"response","requestId":"req_9","payload":{"error":"Node not found"}})");
  CHECK(c.request(R"({"type":"unregister","payload":{"nodeId":"zz"},"requestId":"req_10"})") ==
        R"({"type":"response","requestId":"req_10","payload":{"error":"Node not found"}})");
  CHECK(c.request(R"({"type":"frobnicate","payload":{},"requestId":"req_11"})") ==
        R"({"type":"response","requestId":"req_11","payload":{"error":"Unknown message type"}})");
  CHECK(c.request(R"({"type":"list"})")
            .value_or("")
            .rfind(R"({"type":"response","payload":{"nodes":[{"nodeId":"n1",)", 0) == 0);
  CHECK(
      c.request(R"({"type":"shutdown","payload":{},"requestId":"req_12"})") ==
      R"({"type":"response","requestId":"req_12","payload":{"error":"1 nodes are registered; use force"}})");
  CHECK(c.request(R"({"type":"unregister","payload":{"nodeId":"n1"},"requestId":"req_13"})") ==
        R"({"type":"response","requestId":"req_13","payload":{"success":true}})");
  auto leave = watcher.read_frame();
  REQUIRE(leave);
  CHECK(contains(*leave, R"("event":"peer:leave")"));
  CHECK(contains(*leave, R"("reason":"unregister")"));

  RawClient snap("127.0.0.1", pmd.port);
  CHECK(snap.request(R"({"type":"watch","payload":{"snapshot":true},"requestId":7})") ==
        R"({"type":"response","requestId":7,"payload":{"success":true,"nodes":[]}})");
  CHECK(c.request(R"({"type":"shutdown","requestId":"req_14"})") ==
        R"({"type":"response","requestId":"req_14","payload":{"success":true}})");
  CHECK(pmd.process->wait(5s) == 0);
  CHECK(watcher.wait_closed(5s));
}

TEST_CASE("modes_pmd: SIGKILL of the owner sends peer:leave socket_closed", "[modes_pmd]") {
  PmdProcess pmd;
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","requestId":"req_1"})"));
  auto owner =
      std::make_unique<OwnerProcess>(pmd.port, std::vector<std::string>{"k1", "k2"}, false);
  for (int i = 0; i < 2; ++i)
    REQUIRE(contains(watcher.read_frame().value_or(""), "peer:join"));
  ::kill(owner->pid(), SIGKILL);
  for (const char* id : {"k1", "k2"}) {
    auto leave = watcher.read_frame(5s);
    REQUIRE(leave);
    CHECK(contains(*leave, R"("event":"peer:leave","peer":{"nodeId":")" + std::string(id)));
    CHECK(contains(*leave, R"("reason":"socket_closed")"));
  }
  owner.reset();
}

TEST_CASE("modes_pmd: a SIGSTOPped heartbeating client expires after the TTL", "[modes_pmd]") {
  PmdProcess pmd({"--ttl", "300ms"});
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","requestId":"req_1"})"));
  OwnerProcess owner(pmd.port, {"frozen"}, true);
  REQUIRE(contains(watcher.read_frame().value_or(""), "peer:join"));
  CHECK_FALSE(watcher.read_frame(700ms));  // heartbeating: kept alive past the TTL
  ::kill(owner.pid(), SIGSTOP);
  auto leave = watcher.read_frame(5s);
  REQUIRE(leave);
  CHECK(contains(*leave, R"("nodeId":"frozen")"));
  CHECK(contains(*leave, R"("reason":"ttl_expired")"));
}

TEST_CASE("modes_pmd: a frozen node that announced its heartbeat leaves with the default TTL",
          "[modes_pmd]") {
  PmdProcess pmd;  // default --ttl (2s), sweep every 250 ms
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","requestId":"req_1"})"));
  RawClient frozen("127.0.0.1", pmd.port);
  const auto registered = Clock::now();
  REQUIRE(
      frozen.request(
          R"({"type":"register","payload":{"nodeId":"frozen","host":"127.0.0.1","port":1,"heartbeatMs":500},"requestId":"req_1"})") ==
      R"({"type":"response","requestId":"req_1","payload":{"success":true}})");
  REQUIRE(contains(watcher.read_frame().value_or(""), "peer:join"));
  // It never heartbeats and its socket stays open: only the TTL can tell.
  auto leave = watcher.read_frame(10s);
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - registered);
  REQUIRE(leave);
  INFO("left " << took.count() << " ms after registering");
  CHECK(contains(*leave, R"("nodeId":"frozen")"));
  CHECK(contains(*leave, R"("reason":"ttl_expired")"));
  CHECK(took >= 1990ms);  // not before the TTL
  CHECK(frozen.request(R"({"type":"heartbeat","payload":{"nodeId":"frozen"}})") ==
        R"({"type":"response","payload":{"error":"Node not found"}})");
}

TEST_CASE("modes_pmd: a nodeId belongs to its connection: register and unregister by another",
          "[modes_pmd]") {
  PmdProcess pmd;
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","requestId":"req_1"})"));
  RawClient owner("127.0.0.1", pmd.port);
  RawClient intruder("127.0.0.1", pmd.port);
  REQUIRE(owner.request(reg("n1", "alpha", 5001, "req_1")) ==
          R"({"type":"response","requestId":"req_1","payload":{"success":true}})");
  REQUIRE(contains(watcher.read_frame().value_or(""), "peer:join"));
  CHECK(
      intruder.request(reg("n1", "beta", 6666, "req_2")) ==
      R"({"type":"response","requestId":"req_2","payload":{"error":"nodeId 'n1' is registered by another connection"}})");
  CHECK(
      intruder.request(R"({"type":"unregister","payload":{"nodeId":"n1"},"requestId":"req_3"})") ==
      R"({"type":"response","requestId":"req_3","payload":{"error":"Node 'n1' is registered by another connection"}})");
  CHECK(
      intruder.request(reg("n2", "n1", 6666, "req_4")) ==
      R"({"type":"response","requestId":"req_4","payload":{"error":"alias 'n1' is the nodeId of another node"}})");
  CHECK(
      intruder.request(reg("alpha", "", 6666, "req_5")) ==
      R"({"type":"response","requestId":"req_5","payload":{"error":"nodeId 'alpha' is the alias of another node"}})");
  CHECK(
      intruder.request(
          R"({"type":"register","payload":{"nodeId":"n\u001b[2J","host":"h","port":1},"requestId":"req_6"})") ==
      R"({"type":"response","requestId":"req_6","payload":{"error":"invalid register payload: 'nodeId' contains control characters"}})");
  // Nothing changed: the owner's entry, as it registered it; no event went out.
  auto resolved = intruder.request(R"({"type":"resolve","payload":{"alias":"n1"}})");
  CHECK(contains(resolved.value_or(""), R"("alias":"alpha","host":"127.0.0.1","port":5001,)"));
  CHECK_FALSE(watcher.read_frame(200ms));
}

TEST_CASE("modes_pmd: text output escapes what a hostile PMD sends; JSON stays JSON",
          "[modes_pmd]") {
  HostilePmd pmd;
  const auto bin = distflow_binary();
  for (const char* sub : {"list", "status"}) {
    INFO(sub);
    auto text = run({bin, "pmd", sub, "--port", pmd.port_str()});
    CHECK(text.code == 0);
    CHECK(terminal_safe(text.out));
    CHECK(contains(text.out, "evil\\x1b[2J\\x1b[H"));
    CHECK(contains(text.out, "al\\x0aforged  row"));
    CHECK(contains(text.out, "h\\u0085\\u202e\\x0d:1"));
    auto json = run({bin, "pmd", sub, "--json", "--port", pmd.port_str()});
    CHECK(json.code == 0);
    CHECK(terminal_safe(json.out, true));
    CHECK(contains(json.out, R"("nodeId":"evil\u001b[2J\u001b[H")"));
    CHECK(nlohmann::json::accept(json.out));
  }
  auto resolve = run({bin, "pmd", "resolve", "x", "--port", pmd.port_str()});
  CHECK(resolve.code == 0);
  CHECK(terminal_safe(resolve.out));
  CHECK(contains(resolve.out, "node id:        evil\\x1b[2J\\x1b[H\n"));
  auto kill = run({bin, "pmd", "kill", "--port", pmd.port_str()});
  CHECK(kill.code == 1);
  CHECK(terminal_safe(kill.err));
  CHECK(contains(kill.err, "refused to stop: no\\x1b[2J"));

  const std::string id = "evil\x1b[2J\x1b[H";
  auto watch = run({bin, "watch", id, "--until-leave", "--port", pmd.port_str()});
  CHECK(watch.code == 0);
  CHECK(terminal_safe(watch.out));
  CHECK(std::count(watch.out.begin(), watch.out.end(), '\n') == 2);  // present, leave
  CHECK(contains(watch.out, "id=evil\\x1b[2J\\x1b[H"));
  CHECK(contains(watch.out, "reason=gone\\x1b[31m"));
  auto watch_json = run({bin, "watch", id, "--until-leave", "--json", "--port", pmd.port_str()});
  CHECK(watch_json.code == 0);
  CHECK(terminal_safe(watch_json.out, true));
  CHECK(contains(watch_json.out, R"("reason":"gone\u001b[31m")"));
}

TEST_CASE("modes_pmd: bad frames: oversize, zero, truncated, malformed", "[modes_pmd]") {
  PmdProcess pmd({"--max-frame", "1024"});
  {
    RawClient big("127.0.0.1", pmd.port);
    big.send_raw(std::string("\x00\x00\x04\x01", 4));
    CHECK(big.read_frame() ==
          R"({"type":"response","payload":{"error":"frame length 1025 exceeds limit 1024"}})");
    CHECK(big.wait_closed());
  }
  {
    RawClient huge("127.0.0.1", pmd.port);
    huge.send_raw(std::string("\xff\xff\xff\xff", 4));
    CHECK(
        huge.read_frame() ==
        R"({"type":"response","payload":{"error":"frame length 4294967295 exceeds limit 1024"}})");
    CHECK(huge.wait_closed());
  }
  {
    RawClient zero("127.0.0.1", pmd.port);
    zero.send_raw(std::string(4, '\0'));
    auto error = zero.read_frame();
    REQUIRE(error);
    CHECK(contains(*error, "frame length 0"));
    CHECK(contains(*error, "1024"));
    CHECK(zero.wait_closed());
  }
  {
    RawClient truncated("127.0.0.1", pmd.port);
    truncated.send_raw(std::string("\x00\x00\x00\x40{\"type\":", 12));
    truncated.shutdown_write();
    CHECK(truncated.wait_closed());
  }
  RawClient c("127.0.0.1", pmd.port);
  for (const char* body : {"not json", "[1,2]", "{\"type\":", "\"x\""}) {
    INFO(body);
    auto reply = c.request(body);
    REQUIRE(reply);
    CHECK(reply->rfind(R"({"type":"response","payload":{"error":"malformed JSON: )", 0) == 0);
  }
  CHECK(c.request(R"({"type":"list","requestId":"req_2"})") ==
        R"({"type":"response","requestId":"req_2","payload":{"nodes":[]}})");
  pmd.process->signal(SIGTERM);
  CHECK(pmd.process->wait(5s) == 0);
}

// ASan keeps freed blocks in a quarantine (256 MiB by default), so under it RSS measures
// the quarantine, not the daemon; the bound is then only a sanity check.
#if defined(__SANITIZE_ADDRESS__)
constexpr long kRssGrowthLimitKib = 512 * 1024;
#else
constexpr long kRssGrowthLimitKib = 32 * 1024;
#endif

TEST_CASE("modes_pmd: a watcher that never reads 10 000 events: daemon responsive, bounded",
          "[modes_pmd]") {
  // Quiet logs: nothing drains the daemon's stderr pipe during the burst.
  PmdProcess pmd({"--max-write-queue", "65536", "--log-level", "warn"});
  const long rss_before = rss_kib(pmd.process->pid());
  RawClient lazy("127.0.0.1", pmd.port);
  REQUIRE(lazy.request(R"({"type":"watch","requestId":"req_1"})"));
  RawClient owner("127.0.0.1", pmd.port);
  const std::string host(600, 'h');
  std::string burst;
  for (int i = 0; i < 5000; ++i) {
    const std::string id = "w" + std::to_string(i);
    append_frame(burst, R"({"type":"register","payload":{"nodeId":")" + id + R"(","host":")" +
                            host + R"(","port":1},"requestId":"req_)" + std::to_string(i) + "\"}");
    append_frame(burst, R"({"type":"unregister","payload":{"nodeId":")" + id + "\"}}");
  }
  std::thread writer([&] { owner.send_raw(burst); });
  int answered = 0;
  while (answered < 10000 && owner.read_frame(10s))
    ++answered;
  writer.join();
  CHECK(answered == 10000);
  RawClient probe("127.0.0.1", pmd.port);
  CHECK(probe.request(R"({"type":"list","requestId":"req_x"})", 2s) ==
        R"({"type":"response","requestId":"req_x","payload":{"nodes":[]}})");
  CHECK(lazy.wait_closed(10s));
  const long rss_after = rss_kib(pmd.process->pid());
  INFO("rss before " << rss_before << " KiB, after " << rss_after << " KiB");
  CHECK(rss_after - rss_before < kRssGrowthLimitKib);
}

TEST_CASE("modes_pmd: daemon lifecycle: address line, signals, auto-shutdown, busy port",
          "[modes_pmd]") {
  {
    PmdProcess pmd;
    RawClient idle("127.0.0.1", pmd.port);
    REQUIRE(idle.request(R"({"type":"list"})"));
    pmd.process->signal(SIGINT);
    CHECK(pmd.process->wait(5s) == 0);
    CHECK(idle.wait_closed(2s));
  }
  {
    ChildProcess auto_pmd({distflow_binary(), "pmd", "--port", "0", "--auto-shutdown", "300ms"});
    auto line = auto_pmd.read_line();
    REQUIRE(line);
    CHECK(line->rfind("127.0.0.1:", 0) == 0);
    CHECK(auto_pmd.wait(5s) == 0);  // no node ever registered
  }
  PmdProcess holder;
  const auto busy = run({distflow_binary(), "pmd", "--port", holder.port_str()});
  CHECK(busy.code == 1);
  CHECK(contains(busy.err, "cannot listen on 127.0.0.1:" + holder.port_str()));
  CHECK(busy.out.empty());
  // An auto-started daemon that loses the race steps aside quietly.
  const auto loser =
      run({distflow_binary(), "pmd", "--port", holder.port_str(), "--auto-shutdown", "30s"});
  CHECK(loser.code == 0);
  CHECK(loser.out.empty());

  const auto help = run({distflow_binary(), "pmd", "--help"});
  CHECK(help.code == 0);
  for (const char* flag :
       {"--port", "--bind", "--ttl", "--auto-shutdown", "--max-frame", "--max-connections",
        "--max-write-queue", "status", "list", "resolve", "kill"}) {
    INFO(flag);
    CHECK(contains(help.out, flag));
  }
  CHECK(run({distflow_binary(), "pmd", "--ttl", "soon"}).code == 2);
  CHECK(run({distflow_binary(), "pmd", "--auto-shutdown", "5x"}).code == 2);
  CHECK(run({distflow_binary(), "pmd", "resolve", "--port", holder.port_str()}).code == 2);
}

TEST_CASE("modes_pmd: admin status, list, resolve, kill and --json", "[modes_pmd]") {
  PmdProcess pmd;
  const auto bin = distflow_binary();
  const std::string port = pmd.port_str();
  const std::string where = "127.0.0.1:" + port;

  auto empty = run({bin, "pmd", "status", "--port", port});
  CHECK(empty.code == 0);
  CHECK(contains(empty.out, "PMD Status:"));
  CHECK(contains(empty.out, "Registered nodes: 0"));

  RawClient owner("127.0.0.1", pmd.port);
  REQUIRE(owner.request(reg("node-one", "alpha", 5001, "req_1")));
  REQUIRE(owner.request(reg("node-two", "", 5002, "req_2")));

  auto status = run({bin, "pmd", "status", "--port", port});
  CHECK(status.code == 0);
  CHECK(contains(status.out, "PMD Status:"));
  CHECK(contains(status.out, where));
  CHECK(contains(status.out, "Registered nodes: 2"));
  CHECK(contains(status.out, "alpha"));
  CHECK(contains(status.out, "node-one"));
  CHECK(contains(status.out, "127.0.0.1:5001"));
  CHECK(status.err.empty());

  auto list = run({bin, "pmd", "list"}, {{"DISTFLOW_PMD_PORT", port}});
  CHECK(list.code == 0);
  CHECK(contains(list.out, "Registered nodes: 2"));
  CHECK(list.out.find("node-one") < list.out.find("node-two"));  // registration order
  CHECK(run({bin, "pmd", "--port", port, "list"}).out == list.out);

  auto json = run({bin, "pmd", "list", "--json", "--port", port});
  CHECK(json.code == 0);
  CHECK(json.out.rfind(R"([{"nodeId":"node-one","alias":"alpha","host":"127.0.0.1","port":5001,)",
                       0) == 0);
  CHECK(std::count(json.out.begin(), json.out.end(), '\n') == 1);
  auto status_json = run({bin, "pmd", "status", "--json", "--port", port});
  CHECK(status_json.out.rfind(R"({"pmd":")" + where + R"(","running":true,"nodes":[)", 0) == 0);

  auto resolve = run({bin, "pmd", "resolve", "alpha", "--port", port});
  CHECK(resolve.code == 0);
  CHECK(contains(resolve.out, "node-one"));
  CHECK(contains(resolve.out, "127.0.0.1:5001"));
  auto resolve_json = run({bin, "pmd", "resolve", "node-two", "--json", "--port", port});
  CHECK(resolve_json.out.rfind(R"({"nodeId":"node-two","host":"127.0.0.1","port":5002,)", 0) == 0);
  auto missing = run({bin, "pmd", "resolve", "ghost", "--port", port});
  CHECK(missing.code == 1);
  CHECK(missing.out.empty());
  CHECK(contains(missing.err, "'ghost' not found"));
  CHECK(std::count(missing.err.begin(), missing.err.end(), '\n') == 1);

  auto refused = run({bin, "pmd", "kill", "--port", port});
  CHECK(refused.code == 1);
  CHECK(contains(refused.err, "2 nodes are registered"));
  CHECK(contains(refused.err, "--force"));
  auto killed = run({bin, "pmd", "kill", "--force", "--json", "--port", port});
  CHECK(killed.code == 0);
  CHECK(killed.out == R"({"pmd":")" + where + R"(","stopped":true})" + "\n");
  CHECK(pmd.process->wait(5s) == 0);
  CHECK(owner.wait_closed(2s));

  auto gone = run({bin, "pmd", "status", "--port", port});
  CHECK(gone.code == 1);
  CHECK(gone.err == "distflow pmd: error: no distflow PMD on " + where + ": connection refused\n");
}

TEST_CASE("modes_pmd: admin against a port held by something else", "[modes_pmd]") {
  ImpostorServer http("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  auto r = run({distflow_binary(), "pmd", "list", "--port", http.port_str()});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "is not a distflow PMD"));
  CHECK(contains(r.err, "DISTFLOW_PMD_PORT"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);

  ImpostorServer epmd("");  // reads, then hangs up without a word (as epmd does)
  auto e = run({distflow_binary(), "pmd", "status", "--port", epmd.port_str()});
  CHECK(e.code == 1);
  CHECK(contains(e.err, "is not a distflow PMD"));
  CHECK(contains(e.err, "epmd"));
  CHECK(contains(e.err, "DISTFLOW_PMD_PORT"));
}

TEST_CASE("modes_pmd: five processes auto-starting on one port make one daemon", "[modes_pmd]") {
  const std::uint16_t port = free_port();
  const PmdEndpoint endpoint{"127.0.0.1", port};
  std::vector<int> starters;
  std::fflush(nullptr);
  for (int i = 0; i < 5; ++i) {
    const int pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        ensure_pmd(endpoint, std::chrono::milliseconds(10000), distflow_binary());
        ::_exit(pmd_answers(endpoint, std::chrono::milliseconds(2000)) ? 0 : 3);
      } catch (...) {
        ::_exit(1);
      }
    }
    starters.push_back(pid);
  }
  for (int pid : starters) {
    int status = -1;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  std::vector<int> daemons = auto_started_daemons(port);
  const auto deadline = Clock::now() + 5s;
  while (daemons.size() > 1 && Clock::now() < deadline) {  // losers are on their way out
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    daemons = auto_started_daemons(port);
  }
  CHECK(daemons.size() == 1);
  CHECK(pmd_answers(endpoint, std::chrono::milliseconds(2000)));
  ensure_pmd(endpoint, std::chrono::milliseconds(2000), distflow_binary());  // already there

  const auto stop = run({distflow_binary(), "pmd", "kill", "--port", std::to_string(port)});
  CHECK(stop.code == 0);
  for (int pid : daemons) {
    if (!process_gone(pid, 5s))
      ::kill(pid, SIGKILL);
  }
  // A starter's detached daemon may still be on its way to exec when the starter returns
  // (it lost the race only if the winner still held the port). One that binds the port
  // freed by the kill serves it as a new daemon: stop it by its PID, as a starter would
  // with `pmd kill`, and never see more than one at a time.
  const auto gone_by = Clock::now() + 5s;
  for (auto left = auto_started_daemons(port); !left.empty() && Clock::now() < gone_by;
       left = auto_started_daemons(port)) {
    CHECK(left.size() == 1);
    ::kill(left.front(), SIGTERM);
    process_gone(left.front(), 2s);
  }
  CHECK(auto_started_daemons(port).empty());
}

TEST_CASE("modes_pmd: ensure_pmd refuses to auto-start over a non-PMD", "[modes_pmd]") {
  ImpostorServer http("HTTP/1.1 400 Bad Request\r\n\r\n");
  const PmdEndpoint endpoint{"127.0.0.1", static_cast<std::uint16_t>(std::stoi(http.port_str()))};
  CHECK_THROWS_WITH(ensure_pmd(endpoint, std::chrono::milliseconds(2000), distflow_binary()),
                    Catch::Contains("is not a distflow PMD"));
}

}  // namespace distflow::test
