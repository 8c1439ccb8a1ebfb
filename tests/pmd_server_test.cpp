// The daemon in-process (src/pmd_server.hpp) on loopback, driven by raw framed
// clients and by PmdClient (src/pmd_client.hpp): sessions, events, limits, stop.

#include "pmd_server.hpp"

#include <atomic>
#include <csignal>
#include <future>
#include <sys/socket.h>
#include <thread>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "pmd_client.hpp"
#include "support.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using test::RawClient;

/// run_pmd() on its own thread; stopped by a forced `shutdown` if still running.
class InProcessPmd {
 public:
  explicit InProcessPmd(PmdConfig config) {
    config.port = 0;
    std::promise<std::uint16_t> listening;
    auto port = listening.get_future();
    thread_ = std::thread([config, &listening, this] {
      bool told = false;
      try {
        run_pmd(config, [&](std::uint16_t p) {
          told = true;
          listening.set_value(p);
        });
      } catch (...) {
        if (!told)
          listening.set_exception(std::current_exception());
      }
      done_ = true;
    });
    REQUIRE(port.wait_for(5s) == std::future_status::ready);
    port_ = port.get();
  }
  ~InProcessPmd() {
    // Retried: a just-closed session may still count against --max-connections.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done_ && std::chrono::steady_clock::now() < deadline) {
      try {
        RawClient client("127.0.0.1", port_);
        if (client.request(R"({"type":"shutdown","payload":{"force":true}})", 1s)) {
          wait_done(5s);
        }
      } catch (...) {
      }
    }
    if (!done_)
      std::raise(SIGTERM);  // last resort: run_pmd's signal handler stops it
    thread_.join();
  }
  InProcessPmd(const InProcessPmd&) = delete;
  InProcessPmd& operator=(const InProcessPmd&) = delete;

  std::uint16_t port() const { return port_; }
  PmdEndpoint endpoint() const { return PmdEndpoint{"127.0.0.1", port_}; }
  bool wait_done(std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done_ && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);  // polling a flag, bounded by the deadline
    }
    return done_;
  }

 private:
  std::thread thread_;
  std::uint16_t port_ = 0;
  std::atomic<bool> done_{false};
};

std::string reg(std::string_view id, std::string_view alias, int port) {
  std::string out = R"({"type":"register","payload":{"nodeId":")" + std::string(id) + "\"";
  if (!alias.empty())
    out += R"(,"alias":")" + std::string(alias) + "\"";
  return out + R"(,"host":"127.0.0.1","port":)" + std::to_string(port) + "}}";
}

const std::string kSuccess = R"({"type":"response","payload":{"success":true}})";

}  // namespace

TEST_CASE("pmd_server: PmdClient registers, lists, resolves and watches", "[pmd_server]") {
  InProcessPmd pmd(PmdConfig{});
  auto watcher = PmdClient::connect(pmd.endpoint());
  CHECK(watcher->watch().empty());

  auto owner = PmdClient::connect(pmd.endpoint());
  NodeInfo node;
  node.node_id = "n1";
  node.alias = "alpha";
  node.host = "127.0.0.1";
  node.port = 4000;
  node.pid = 1234;
  auto reply = owner->request("register", register_payload(node));
  CHECK(reply.success);
  node.node_id = "n2";
  node.alias.clear();
  CHECK(owner->request("register", register_payload(node)).success);

  auto join = watcher->next_event(5s);
  REQUIRE(join);
  CHECK(join->event == "peer:join");
  CHECK(join->peer->node_id == "n1");
  CHECK(join->peer->pid == 1234);
  REQUIRE(watcher->next_event(5s));

  auto client = PmdClient::connect(pmd.endpoint());
  auto nodes = client->list();
  REQUIRE(nodes.size() == 2);
  CHECK(nodes[0].alias == "alpha");
  CHECK(client->resolve("alpha")->node_id == "n1");
  CHECK(client->resolve("n2")->port == 4000);
  CHECK_FALSE(client->resolve("nobody"));
  CHECK(client->watch().size() == 2);  // snapshot

  owner.reset();  // the owning connection closes: both nodes leave at once
  for (const char* id : {"n1", "n2"}) {
    auto leave = watcher->next_event(5s);
    REQUIRE(leave);
    CHECK(leave->event == "peer:leave");
    CHECK(leave->reason == "socket_closed");
    CHECK(leave->peer->node_id == id);
  }
  CHECK(client->list().empty());
}

TEST_CASE("pmd_server: frames above the limit or empty get an error, then close", "[pmd_server]") {
  PmdConfig config;
  config.max_frame_bytes = 1024;
  InProcessPmd pmd(config);

  RawClient big("127.0.0.1", pmd.port());
  big.send_raw(std::string("\x7f\x00\x00\x0a", 4));
  CHECK(big.read_frame() ==
        R"({"type":"response","payload":{"error":"frame length 2130706442 exceeds limit 1024"}})");
  CHECK(big.wait_closed());

  RawClient zero("127.0.0.1", pmd.port());
  zero.send_raw(std::string(4, '\0'));
  auto error = zero.read_frame();
  REQUIRE(error);
  CHECK(error->find("frame length 0") != std::string::npos);
  CHECK(error->find("1024") != std::string::npos);
  CHECK(zero.wait_closed());

  // Malformed JSON keeps the connection; a truncated frame costs only its buffer.
  RawClient bad("127.0.0.1", pmd.port());
  auto malformed = bad.request("{nope");
  REQUIRE(malformed);
  CHECK(malformed->rfind(R"({"type":"response","payload":{"error":"malformed JSON: )", 0) == 0);
  CHECK(bad.request(R"({"type":"list","requestId":"req_1"})") ==
        R"({"type":"response","requestId":"req_1","payload":{"nodes":[]}})");
  bad.send_raw(std::string("\x00\x00\x00\x20{\"type\"", 11));
  bad.shutdown_write();
  CHECK(bad.wait_closed());

  RawClient still("127.0.0.1", pmd.port());
  CHECK(still.request(R"({"type":"list"})") == R"({"type":"response","payload":{"nodes":[]}})");
}

TEST_CASE("pmd_server: a watcher that never reads is dropped; the daemon stays responsive",
          "[pmd_server]") {
  PmdConfig config;
  config.max_write_queue_bytes = 64 * 1024;
  InProcessPmd pmd(config);
  RawClient lazy("127.0.0.1", pmd.port());
  int rcvbuf = 4096;
  ::setsockopt(lazy.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  REQUIRE(lazy.request(R"({"type":"watch"})") ==
          R"({"type":"response","payload":{"success":true}})");

  RawClient owner("127.0.0.1", pmd.port());
  // 10 000 events: 5 000 joins and 5 000 leaves, pipelined.
  // Long host names make each event ~700 bytes, well past what the kernel buffers hold.
  const std::string host(600, 'h');
  std::string burst;
  for (int i = 0; i < 5000; ++i) {
    append_frame(burst, R"({"type":"register","payload":{"nodeId":"n)" + std::to_string(i) +
                            R"(","host":")" + host + R"(","port":1}})");
    append_frame(burst,
                 R"({"type":"unregister","payload":{"nodeId":"n)" + std::to_string(i) + "\"}}");
  }
  std::thread writer([&] { owner.send_raw(burst); });
  int answered = 0;
  while (answered < 10000) {
    auto frame = owner.read_frame(10s);
    REQUIRE(frame);
    ++answered;
  }
  writer.join();

  RawClient probe("127.0.0.1", pmd.port());
  CHECK(probe.request(R"({"type":"list"})", 2s) == R"({"type":"response","payload":{"nodes":[]}})");
  // The lazy watcher was disconnected once its queue passed the limit.
  CHECK(lazy.wait_closed(10s));
}

TEST_CASE("pmd_server: a client pipelining faster than it reads is throttled, not dropped",
          "[pmd_server]") {
  PmdConfig config;
  config.max_write_queue_bytes = 64 * 1024;
  InProcessPmd pmd(config);
  RawClient owner("127.0.0.1", pmd.port());
  // A long host makes each resolve answer ~700 bytes: 5 000 of them are ~3.5 MB,
  // far past the write queue limit, for ~0.4 MB of requests; one 8 KiB read of
  // requests already makes more replies than the limit.
  const std::string host(600, 'h');
  REQUIRE(owner.request(R"({"type":"register","payload":{"nodeId":"big","alias":"b","host":")" +
                        host + R"(","port":1}})") == kSuccess);
  RawClient client("127.0.0.1", pmd.port());
  std::string burst;
  constexpr int kRequests = 5000;
  for (int i = 0; i < kRequests; ++i) {
    append_frame(burst, R"({"type":"resolve","payload":{"alias":"b"},"requestId":)" +
                            std::to_string(i) + "}");
  }
  std::thread writer([&] { client.send_raw(burst); });
  int answered = 0;
  bool in_order = true;
  while (answered < kRequests) {
    auto frame = client.read_frame(10s);
    if (!frame)
      break;
    in_order = in_order &&
               frame->find("\"requestId\":" + std::to_string(answered) + ",") != std::string::npos;
    ++answered;
  }
  writer.join();
  CHECK(answered == kRequests);
  CHECK(in_order);
  CHECK(client.request(R"({"type":"list","requestId":"after"})").value_or("").find("\"after\"") !=
        std::string::npos);
}

TEST_CASE("pmd_server: shutdown closes every connection and returns", "[pmd_server]") {
  InProcessPmd pmd(PmdConfig{});
  RawClient idle("127.0.0.1", pmd.port());
  RawClient owner("127.0.0.1", pmd.port());
  REQUIRE(owner.request(reg("n1", "a", 1)) == kSuccess);
  RawClient admin("127.0.0.1", pmd.port());
  CHECK(
      admin.request(R"({"type":"shutdown","requestId":"req_9"})") ==
      R"({"type":"response","requestId":"req_9","payload":{"error":"1 nodes are registered; use force"}})");
  CHECK(admin.request(R"({"type":"shutdown","payload":{"force":true},"requestId":"req_10"})") ==
        R"({"type":"response","requestId":"req_10","payload":{"success":true}})");
  CHECK(idle.wait_closed(3s));
  CHECK(owner.wait_closed(3s));
  CHECK(admin.wait_closed(3s));
  CHECK(pmd.wait_done(3s));
}

TEST_CASE("pmd_server: TTL expires a node that heartbeated, then went silent", "[pmd_server]") {
  PmdConfig config;
  config.ttl = 200ms;
  InProcessPmd pmd(config);
  auto watcher = PmdClient::connect(pmd.endpoint());
  watcher->watch();
  RawClient owner("127.0.0.1", pmd.port());
  REQUIRE(owner.request(reg("quiet", "", 1)) == kSuccess);
  REQUIRE(owner.request(reg("beat", "", 2)) == kSuccess);
  REQUIRE(owner.request(R"({"type":"heartbeat","payload":{"nodeId":"beat"}})") == kSuccess);
  REQUIRE(watcher->next_event(2s));
  REQUIRE(watcher->next_event(2s));
  auto leave = watcher->next_event(5s);
  REQUIRE(leave);
  CHECK(leave->event == "peer:leave");
  CHECK(leave->reason == "ttl_expired");
  CHECK(leave->peer->node_id == "beat");
  CHECK_FALSE(watcher->next_event(500ms));  // "quiet" never heartbeated: kept
  CHECK(watcher->list().size() == 1);
}

TEST_CASE("pmd_server: auto-shutdown when no node is registered", "[pmd_server]") {
  PmdConfig config;
  config.auto_shutdown = 300ms;
  InProcessPmd pmd(config);
  RawClient owner("127.0.0.1", pmd.port());
  REQUIRE(owner.request(reg("n1", "", 1)) == kSuccess);
  CHECK_FALSE(pmd.wait_done(600ms));  // occupied: stays
  REQUIRE(owner.request(R"({"type":"unregister","payload":{"nodeId":"n1"}})") == kSuccess);
  CHECK(pmd.wait_done(3s));
}

TEST_CASE("pmd_server: a taken port throws, or returns quietly when asked", "[pmd_server]") {
  InProcessPmd pmd(PmdConfig{});
  PmdConfig config;
  config.port = pmd.port();
  bool listened = false;
  CHECK_THROWS_AS(run_pmd(config, [&](std::uint16_t) { listened = true; }), Error);
  config.quiet_if_port_in_use = true;
  CHECK_NOTHROW(run_pmd(config, [&](std::uint16_t) { listened = true; }));
  CHECK_FALSE(listened);
  config.bind = "not-an-ip";
  CHECK_THROWS_AS(run_pmd(config, {}), Error);
}

TEST_CASE("pmd_server: connections beyond the limit are closed", "[pmd_server]") {
  PmdConfig config;
  config.max_connections = 2;
  InProcessPmd pmd(config);
  RawClient a("127.0.0.1", pmd.port());
  RawClient b("127.0.0.1", pmd.port());
  REQUIRE(a.request(R"({"type":"list"})"));
  REQUIRE(b.request(R"({"type":"list"})"));
  RawClient c("127.0.0.1", pmd.port());
  CHECK(c.wait_closed(3s));
  CHECK(a.request(R"({"type":"list"})"));
}

TEST_CASE("pmd_client: refused, and a port held by something else", "[pmd_server]") {
  const std::uint16_t port = test::free_port();
  std::string why;
  CHECK(probe_pmd(PmdEndpoint{"127.0.0.1", port}, 1s, &why) == PmdProbe::refused);
  CHECK(why == "no distflow PMD on 127.0.0.1:" + std::to_string(port) + ": connection refused");
  CHECK_THROWS_WITH(
      PmdClient::connect(PmdEndpoint{"127.0.0.1", port}),
      "no distflow PMD on 127.0.0.1:" + std::to_string(port) + ": connection refused");
  CHECK_FALSE(pmd_answers(PmdEndpoint{"127.0.0.1", port}, 1s));
}

}  // namespace distflow
