#include "node_runtime.hpp"

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "framing.hpp"
#include "support.hpp"

// One NodeRuntime per process: every test case starts its own node and ends it
// before the next. The other nodes are "original TypeScript" peers played by
// raw sockets: they register with host `localhost`, send {from,to,payload,timestamp}
// (no alias) and reply on a connection of their own.

namespace distflow {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using test::PmdProcess;
using test::RawClient;
using Clock = std::chrono::steady_clock;

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (predicate())
      return true;
    std::this_thread::sleep_for(2ms);
  }
  return predicate();
}

NodeOptions options_for(const PmdProcess& pmd, std::string alias) {
  NodeOptions options;
  options.alias = std::move(alias);
  options.pmd.host = "127.0.0.1";
  options.pmd.port = pmd.port;
  options.auto_start_pmd = false;
  options.heartbeat_interval = 200ms;
  return options;
}

// An accepted connection: frames in, with deadlines.
class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  ~Connection() { ::close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  std::optional<std::string> read_frame(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      std::error_code ec;
      if (auto body = decoder_.next(ec))
        return std::string(*body);
      if (ec || !fill(deadline))
        return std::nullopt;
    }
  }
  bool wait_closed(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (!fill(deadline) && eof_)
        return true;
    }
    return eof_;
  }

 private:
  int fd_;
  FrameDecoder decoder_{kDefaultNodeFrameLimit};
  bool eof_ = false;

  bool fill(Clock::time_point deadline) {
    pollfd p{fd_, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) <= 0)
      return false;
    auto room = decoder_.prepare(64 * 1024);
    const ssize_t n = ::read(fd_, room.data(), room.size());
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    decoder_.commit(static_cast<std::size_t>(n));
    return true;
  }
};

// The original TypeScript node, as seen on the wire.
class TsPeer {
 public:
  TsPeer(std::uint16_t pmd_port, std::string node_id, std::string alias, bool listen = true)
      : node_id_(std::move(node_id)), alias_(std::move(alias)) {
    if (listen) {
      listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
      REQUIRE(::listen(listen_fd_, 16) == 0);
      socklen_t len = sizeof addr;
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
      port_ = ntohs(addr.sin_port);
    } else {
      port_ = test::free_port();  // registered, but nobody listens there
    }
    pmd_ = std::make_unique<RawClient>("127.0.0.1", pmd_port);
    register_with_pmd();
  }
  ~TsPeer() {
    if (listen_fd_ >= 0)
      ::close(listen_fd_);
  }

  void register_with_pmd() {
    const json request = {
        {"type", "register"},
        {"payload",
         {{"nodeId", node_id_}, {"alias", alias_}, {"host", "localhost"}, {"port", port_}}},
        {"requestId", "r1"}};
    auto reply = pmd_->request(request.dump());
    REQUIRE(reply);
    REQUIRE(json::parse(*reply)["payload"]["success"] == true);
  }
  void leave_pmd() { pmd_.reset(); }

  std::unique_ptr<Connection> accept(std::chrono::milliseconds timeout = 5s) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return nullptr;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    return fd < 0 ? nullptr : std::make_unique<Connection>(fd);
  }

  std::string frame_to(const std::string& to, const json& payload) const {
    return json{{"from", node_id_}, {"to", to}, {"payload", payload}, {"timestamp", 1700000000123}}
        .dump();
  }

  const std::string& node_id() const { return node_id_; }
  std::uint16_t port() const { return port_; }

 private:
  std::string node_id_, alias_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::unique_ptr<RawClient> pmd_;
};

std::string framed(const std::string& body) {
  std::string out;
  append_frame(out, body);
  return out;
}

json pmd_list(std::uint16_t pmd_port) {
  RawClient client("127.0.0.1", pmd_port);
  auto reply = client.request(R"({"type":"list","payload":{},"requestId":7})");
  REQUIRE(reply);
  return json::parse(*reply)["payload"]["nodes"];
}

bool listed(std::uint16_t pmd_port, const std::string& node_id) {
  for (const auto& node : pmd_list(pmd_port)) {
    if (node["nodeId"] == node_id)
      return true;
  }
  return false;
}

struct PeerEvents {
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> events;  // (event, nodeId)
  void add(std::string event, const NodeInfo& peer) {
    std::lock_guard lock(mutex);
    events.emplace_back(std::move(event), peer.node_id);
  }
  bool has(const std::string& event, const std::string& node_id) {
    std::lock_guard lock(mutex);
    return std::find(events.begin(), events.end(), std::make_pair(event, node_id)) != events.end();
  }
};

}  // namespace

TEST_CASE("node_runtime: registers, discovers peers, sees join and leave", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer early(pmd.port, "ts-early", "early");
  auto node = NodeRuntime::start(options_for(pmd, "rt-main"));
  CHECK(node->alias() == "rt-main");
  CHECK(node->port() != 0);

  bool found = false;
  for (const auto& entry : pmd_list(pmd.port)) {
    if (entry["nodeId"] != node->node_id())
      continue;
    found = true;
    CHECK(entry["alias"] == "rt-main");
    CHECK(entry["host"] == "127.0.0.1");
    CHECK(entry["port"] == node->port());
    if (entry.contains("pid"))  // extension: a PMD may leave it out
      CHECK(entry["pid"] == ::getpid());
  }
  CHECK(found);

  auto peers = node->discover();
  REQUIRE(peers.size() == 1);  // self excluded
  CHECK(peers[0].node_id == "ts-early");
  CHECK(peers[0].alias == "early");

  PeerEvents events;
  node->on_peer_join([&](const NodeInfo& p, std::string_view) { events.add("join", p); });
  node->on_peer_leave([&](const NodeInfo& p, std::string_view) { events.add("leave", p); });
  // The handlers are installed on the I/O thread: a round trip through it orders them.
  node->flush();
  auto late = std::make_unique<TsPeer>(pmd.port, "ts-late", "late");
  CHECK(eventually([&] { return events.has("join", "ts-late"); }));
  CHECK(eventually([&] { return node->discover().size() == 2; }));
  late->leave_pmd();  // the registration socket closes: the PMD says peer:leave
  CHECK(eventually([&] { return events.has("leave", "ts-late"); }));
  CHECK(eventually([&] { return node->discover().size() == 1; }));

  SECTION("a second node in the same process is a clear error") {
    CHECK_THROWS_WITH(NodeRuntime::start(options_for(pmd, "rt-second")),
                      Catch::Contains("already running"));
  }
  SECTION("shutdown unregisters") {
    node->shutdown();
    CHECK_FALSE(listed(pmd.port, node->node_id()));
  }
}

TEST_CASE("node_runtime: an alias in use fails start with the PMD's error", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer taken(pmd.port, "ts-taken", "taken");
  CHECK_THROWS_WITH(NodeRuntime::start(options_for(pmd, "taken")),
                    Catch::Contains("Alias 'taken' already in use"));
  // The failed start left no node behind: a new one may start.
  auto node = NodeRuntime::start(options_for(pmd, "free"));
  CHECK(node->alias() == "free");
}

TEST_CASE("node_runtime: no PMD and no auto-start is a clear error", "[node_runtime]") {
  NodeOptions options;
  options.pmd.host = "127.0.0.1";
  options.pmd.port = test::free_port();
  options.auto_start_pmd = false;
  CHECK_THROWS_WITH(NodeRuntime::start(options), Catch::Contains("cannot register"));
}

TEST_CASE("node_runtime: receives an original peer's messages in order", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-1", "ts");
  auto options = options_for(pmd, "rt-recv");
  options.mailbox_size = 10000;
  auto node = NodeRuntime::start(options);

  constexpr int kCount = 5000;
  RawClient out("127.0.0.1", node->port());
  std::string bytes;
  for (int i = 0; i < kCount; ++i)
    bytes += framed(ts.frame_to(node->node_id(), {{"n", i}}));
  out.send_raw(bytes);  // many frames per write, frames split across reads

  for (int i = 0; i < kCount; ++i) {
    auto message = node->receive(5s);
    REQUIRE(message);
    REQUIRE(message->payload() == R"({"n":)" + std::to_string(i) + "}");
    if (i == 0) {
      CHECK(message->from() == "ts-1");
      CHECK(message->to() == node->node_id());
      CHECK_FALSE(message->has_alias());
      CHECK(message->timestamp() == 1700000000123);
    }
  }
  CHECK(node->stats().received == kCount);
  CHECK(node->stats().mailbox.dropped == 0);

  // Malformed bodies are counted and skipped; the connection stays usable.
  out.send_raw(framed("not json") + framed(R"({"to":"x"})") +
               framed(ts.frame_to(node->node_id(), "after")));
  auto after = node->receive(5s);
  REQUIRE(after);
  CHECK(after->payload() == R"("after")");
  CHECK(node->stats().bad_frames == 2);

  // An oversized length is a protocol error: that connection (only) is closed.
  out.send_raw(std::string("\x7f\x00\x00\x0a", 4));
  CHECK(out.wait_closed(5s));
  CHECK(node->stats().bad_frames == 3);
}

TEST_CASE("node_runtime: on_message handler keeps delivering after a throw", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-h", "tsh");
  auto node = NodeRuntime::start(options_for(pmd, "rt-handler"));
  std::atomic<int> seen{0};
  node->on_message([&](const Envelope& message) {
    ++seen;
    if (message.payload() == "1")
      throw std::runtime_error("handler failure");
  });
  CHECK_THROWS_WITH(node->on_message([](const Envelope&) {}), Catch::Contains("already set"));
  CHECK_THROWS_WITH(node->receive(1ms), Catch::Contains("on_message"));
  RawClient out("127.0.0.1", node->port());
  for (int i = 0; i < 3; ++i)
    out.send_frame(ts.frame_to(node->node_id(), i));
  CHECK(eventually([&] { return seen.load() == 3; }));
  CHECK(node->stats().handler_errors == 1);
}

TEST_CASE("node_runtime: inline handler: in order, replies from inside, exceptions counted",
          "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-i", "tsi");
  auto node = NodeRuntime::start(options_for(pmd, "rt-inline"));
  RawClient out("127.0.0.1", node->port());
  // Received before the handler is installed: handed to it first, in order.
  for (int i = 0; i < 3; ++i)
    out.send_frame(ts.frame_to(node->node_id(), i));
  REQUIRE(eventually([&] { return node->stats().received == 3; }));

  constexpr int kCount = 3000;
  std::mutex mutex;
  std::vector<std::string> seen;
  NodeRuntime* self = node.get();
  node->on_message_inline([&](const Envelope& message) {
    {
      std::lock_guard lock(mutex);
      seen.emplace_back(message.payload());
    }
    if (message.payload() == "13")
      throw std::runtime_error("inline handler failure");
    self->send("tsi", R"({"echo":)" + std::string(message.payload()) + "}");
  });
  CHECK_THROWS_WITH(node->on_message_inline([](const Envelope&) {}),
                    Catch::Contains("already set"));
  CHECK_THROWS_WITH(node->on_message([](const Envelope&) {}), Catch::Contains("already set"));
  CHECK_THROWS_WITH(node->receive(1ms), Catch::Contains("on_message"));

  std::string bytes;
  for (int i = 3; i < kCount; ++i)
    bytes += framed(ts.frame_to(node->node_id(), i));
  out.send_raw(bytes);  // many frames per read: one batch of replies per read
  CHECK(eventually([&] {
    std::lock_guard lock(mutex);
    return seen.size() == kCount;
  }));
  {
    std::lock_guard lock(mutex);
    REQUIRE(seen.size() == kCount);
    for (int i = 0; i < kCount; ++i)
      REQUIRE(seen[static_cast<std::size_t>(i)] == std::to_string(i));
  }
  CHECK(node->stats().handler_errors == 1);
  CHECK(node->stats().mailbox.accepted == 3);  // only those went through the mailbox

  // Every reply sent from inside the handler arrives, in order, on one connection.
  auto inbound = ts.accept();
  REQUIRE(inbound);
  for (int i = 0; i < kCount; ++i) {
    if (i == 13)
      continue;
    auto frame = inbound->read_frame();
    REQUIRE(frame);
    REQUIRE(json::parse(*frame)["payload"]["echo"] == i);
  }
  node->flush();
  CHECK(node->stats().sent == kCount - 1);
  CHECK(ts.accept(100ms) == nullptr);
}

TEST_CASE("node_runtime: shutdown while inline handlers run", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-j", "tsj");
  auto node = NodeRuntime::start(options_for(pmd, "rt-inline-stop"));
  std::atomic<int> seen{0};
  NodeRuntime* self = node.get();
  node->on_message_inline([&](const Envelope& message) {
    ++seen;
    self->send("tsj", message.payload());
  });
  RawClient out("127.0.0.1", node->port());
  std::string bytes;
  for (int i = 0; i < 20000; ++i)
    bytes += framed(ts.frame_to(node->node_id(), i));
  out.send_raw(bytes);
  REQUIRE(eventually([&] { return seen.load() > 100; }));
  node->shutdown();
  const int after = seen.load();
  CHECK(out.wait_closed(5s));
  CHECK(seen.load() == after);  // nothing runs once shutdown() returned
  node->shutdown();             // idempotent
  CHECK_THROWS_WITH(node->send_sync("tsj", "2"), Catch::Contains("shut down"));
  node.reset();
}

TEST_CASE("node_runtime: sends to an original peer, which replies on its own connection",
          "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-2", "ts2");
  auto node = NodeRuntime::start(options_for(pmd, "rt-send"));

  node->send_sync("ts2", R"({"hello":"world"})");
  auto inbound = ts.accept();
  REQUIRE(inbound);
  auto frame = inbound->read_frame();
  REQUIRE(frame);
  auto message = json::parse(*frame);
  CHECK(message["from"] == node->node_id());
  CHECK(message["to"] == "ts-2");
  CHECK(message["alias"] == "rt-send");
  CHECK(message["payload"] == json{{"hello", "world"}});
  CHECK(message["timestamp"].is_number_integer());

  // The reply travels on a connection the peer opens (as the original does).
  RawClient reply("127.0.0.1", node->port());
  reply.send_frame(ts.frame_to(node->node_id(), {{"re", "hello"}}));
  auto got = node->receive(5s);
  REQUIRE(got);
  CHECK(got->payload() == R"({"re":"hello"})");
  CHECK(got->from() == "ts-2");

  // By node id too, over the same single connection; the payload is sent verbatim.
  node->send("ts-2", R"( [1, 2.50, "x"] )");
  node->flush();
  frame = inbound->read_frame();
  REQUIRE(frame);
  CHECK(frame->find(R"("payload": [1, 2.50, "x"] })") != std::string::npos);
  CHECK(ts.accept(200ms) == nullptr);
  CHECK(node->stats().sent == 2);
}

TEST_CASE("node_runtime: racing senders share one connection, FIFO per sender", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-3", "ts3");
  auto node = NodeRuntime::start(options_for(pmd, "rt-race"));

  constexpr int kThreads = 4;
  constexpr int kPerThread = 25000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        node->send("ts3", "[" + std::to_string(t) + "," + std::to_string(i) + "]");
      }
    });
  }
  auto inbound = ts.accept();
  REQUIRE(inbound);
  std::vector<int> next(kThreads, 0);
  for (int received = 0; received < kThreads * kPerThread; ++received) {
    auto frame = inbound->read_frame();
    REQUIRE(frame);
    auto payload = json::parse(*frame)["payload"];
    const int t = payload[0], i = payload[1];
    REQUIRE(i == next[static_cast<std::size_t>(t)]);
    ++next[static_cast<std::size_t>(t)];
  }
  for (auto& thread : threads)
    thread.join();
  node->flush();
  CHECK(ts.accept(200ms) == nullptr);  // exactly one connection
  CHECK(node->stats().sent == kThreads * kPerThread);
  CHECK(node->stats().send_failures == 0);
}

TEST_CASE("node_runtime: one thread sending to six destinations in turn reaches each in order",
          "[node_runtime]") {
  // More destinations than a thread caches routes for: every send misses the cache,
  // and entries are replaced under a sender that keeps coming back to them.
  PmdProcess pmd;
  constexpr int kPeers = 6;
  constexpr int kPerPeer = 2000;
  std::vector<std::unique_ptr<TsPeer>> peers;
  for (int p = 0; p < kPeers; ++p)
    peers.push_back(std::make_unique<TsPeer>(pmd.port, "ts-fan-" + std::to_string(p),
                                             "tsfan" + std::to_string(p)));
  auto node = NodeRuntime::start(options_for(pmd, "rt-fan"));
  for (int i = 0; i < kPerPeer; ++i) {
    for (int p = 0; p < kPeers; ++p)
      node->send("tsfan" + std::to_string(p),
                 "[" + std::to_string(p) + "," + std::to_string(i) + "]");
  }
  for (int p = 0; p < kPeers; ++p) {
    auto inbound = peers[static_cast<std::size_t>(p)]->accept();
    REQUIRE(inbound);
    for (int i = 0; i < kPerPeer; ++i) {
      auto frame = inbound->read_frame();
      REQUIRE(frame);
      const auto payload = json::parse(*frame)["payload"];
      REQUIRE(payload[0] == p);
      REQUIRE(payload[1] == i);
    }
  }
  node->flush();
  CHECK(node->stats().sent == kPeers * kPerPeer);
  CHECK(node->stats().send_failures == 0);
}

TEST_CASE("node_runtime: a burst sent before its target resolves passes the outbox bound",
          "[node_runtime]") {
  // The messages that wait for the name to resolve were bounded there (their payload
  // bytes); framed, they are several times the per-destination bound, and must not
  // fail when they all move into the new link at once.
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-10", "ts10");
  NodeOptions options = options_for(pmd, "rt-burst");
  options.max_outbox_bytes = 64u << 10;
  auto node = NodeRuntime::start(options);
  constexpr int kMessages = 5000;  // ~50 KB of payloads, ~700 KB of frames
  for (int i = 0; i < kMessages; ++i)
    node->send("ts10", "[" + std::to_string(i) + "]");
  auto inbound = ts.accept();
  REQUIRE(inbound);
  for (int i = 0; i < kMessages; ++i) {
    auto frame = inbound->read_frame();
    REQUIRE(frame);
    REQUIRE(json::parse(*frame)["payload"][0] == i);
  }
  node->flush();
  CHECK(node->stats().send_failures == 0);
}

TEST_CASE("node_runtime: frames around and above the outbox chunk size arrive whole, in order",
          "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-9", "ts9");
  NodeOptions options = options_for(pmd, "rt-chunks");
  options.max_outbox_bytes = 64u << 20;  // all of it queued before the peer reads
  auto node = NodeRuntime::start(options);

  // The outbox is a queue of 1 MiB chunks: small frames fill several, a payload just
  // under a chunk cannot share one, a 1.5 MiB payload gets a chunk of its own, and the
  // small frames after it go on in order. All sent before the first is read.
  auto big = [](std::size_t bytes, char fill) { return '"' + std::string(bytes - 2, fill) + '"'; };
  std::vector<std::string> payloads;
  for (int i = 0; i < 30000; ++i)
    payloads.push_back("[" + std::to_string(i) + ",\"" + std::string(40, 'x') + "\"]");
  payloads.push_back(big((1u << 20) - 200, 'a'));
  payloads.push_back("[-1]");
  payloads.push_back(big(3u << 19, 'b'));
  for (int i = 0; i < 30000; ++i)
    payloads.push_back("[" + std::to_string(i) + "]");
  for (const auto& payload : payloads)
    node->send("ts9", payload);

  auto inbound = ts.accept();
  REQUIRE(inbound);
  for (const auto& expected : payloads) {
    auto frame = inbound->read_frame();
    REQUIRE(frame);
    const auto at = frame->find(R"("payload":)");
    REQUIRE(at != std::string::npos);
    const std::string_view payload = std::string_view(*frame).substr(at + 10);
    REQUIRE(payload.size() == expected.size() + 1);  // and the envelope's closing brace
    REQUIRE(payload.substr(0, expected.size()) == expected);
  }
  node->flush();
  CHECK(node->stats().sent == payloads.size());
  CHECK(node->stats().send_failures == 0);
}

TEST_CASE("node_runtime: send failures are reported, never silent", "[node_runtime]") {
  PmdProcess pmd;
  auto node = NodeRuntime::start(options_for(pmd, "rt-fail"));

  SECTION("unknown target") {
    std::promise<std::string> error;
    node->send("nobody", "{}", [&](std::error_code ec, const std::string& message) {
      CHECK(ec == errc::unknown_node);
      error.set_value(message);
    });
    auto future = error.get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    CHECK(future.get() == "unknown target 'nobody': Node not found");
    CHECK_THROWS_WITH(node->send_sync("nobody", "{}"), "unknown target 'nobody': Node not found");
    CHECK(node->stats().send_failures == 2);
  }
  SECTION("invalid JSON payload") {
    CHECK_THROWS_WITH(node->send_sync("anyone", "{\"a\":"),
                      Catch::Contains("cannot send to 'anyone': invalid JSON payload"));
    CHECK(node->stats().send_failures == 1);
  }
  SECTION("connection refused, then re-dialled once the peer listens") {
    TsPeer dead(pmd.port, "ts-dead", "dead", /*listen=*/false);
    CHECK_THROWS_WITH(node->send_sync("dead", "1"), Catch::Contains("cannot connect to 'dead'"));
    CHECK(node->stats().send_failures == 1);
    TsPeer alive(pmd.port, "ts-alive", "alive");
    node->send_sync("alive", "2");
    auto inbound = alive.accept();
    REQUIRE(inbound);
    auto frame = inbound->read_frame();
    REQUIRE(frame);
    // The connection breaks: reported, and the next send dials again.
    inbound.reset();
    CHECK(eventually([&] {
      try {
        node->send_sync("alive", "3", 1s);
      } catch (const Error&) {
      }
      inbound = alive.accept(20ms);
      return inbound != nullptr;
    }));
    frame = inbound->read_frame();
    REQUIRE(frame);
    CHECK(json::parse(*frame)["payload"] == 3);
  }
}

TEST_CASE("node_runtime: mailbox overflow policies are observable in stats", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-4", "ts4");
  const auto policy =
      GENERATE(OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest, OverflowPolicy::block);
  CAPTURE(to_string(policy));
  auto options = options_for(pmd, "rt-mailbox");
  options.mailbox_size = 10;
  options.overflow = policy;
  auto node = NodeRuntime::start(options);
  RawClient out("127.0.0.1", node->port());
  std::string bytes;
  for (int i = 0; i < 100; ++i)
    bytes += framed(ts.frame_to(node->node_id(), i));
  out.send_raw(bytes);

  if (policy == OverflowPolicy::block) {
    // The reader stops at a full mailbox; nothing is dropped, order is kept.
    CHECK(eventually([&] { return node->stats().mailbox.size == 10; }));
    for (int i = 0; i < 100; ++i) {
      auto message = node->receive(5s);
      REQUIRE(message);
      REQUIRE(message->payload() == std::to_string(i));
    }
    CHECK(node->stats().mailbox.dropped == 0);
    CHECK(node->stats().received == 100);
    return;
  }
  CHECK(eventually([&] { return node->stats().received == 100; }));
  const auto stats = node->stats();
  CHECK(stats.mailbox.dropped == 90);
  CHECK(stats.mailbox.size == 10);
  const int first = policy == OverflowPolicy::drop_newest ? 0 : 90;
  for (int i = first; i < first + 10; ++i) {
    auto message = node->receive(1s);
    REQUIRE(message);
    CHECK(message->payload() == std::to_string(i));
  }
  CHECK_FALSE(node->receive(10ms));
}

TEST_CASE("node_runtime: shutdown is prompt while peers hold connections open", "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-5", "ts5");
  auto node = NodeRuntime::start(options_for(pmd, "rt-stop"));
  RawClient idle("127.0.0.1", node->port());  // connected, silent, never closes
  node->send_sync("ts5", "1");
  auto inbound = ts.accept();
  REQUIRE(inbound);
  const std::string id = node->node_id();

  const auto started = Clock::now();
  node->shutdown();
  CHECK(Clock::now() - started < 1500ms);
  CHECK(idle.wait_closed(2s));      // inbound connections are closed too
  CHECK(inbound->wait_closed(2s));  // and outbound ones
  CHECK_FALSE(listed(pmd.port, id));
  node->shutdown();  // idempotent
  CHECK_THROWS_WITH(node->send_sync("ts5", "2"), Catch::Contains("shut down"));
  node.reset();
}

TEST_CASE("node_runtime: PMD killed and restarted: re-registers and keeps sending",
          "[node_runtime]") {
  auto pmd = std::make_unique<PmdProcess>();
  const std::uint16_t port = pmd->port;
  TsPeer ts(port, "ts-6", "ts6");
  auto node = NodeRuntime::start(options_for(*pmd, "rt-pmd"));
  node->send_sync("ts6", "1");
  auto inbound = ts.accept();
  REQUIRE(inbound);
  REQUIRE(inbound->read_frame());

  pmd->process->signal(SIGKILL);
  REQUIRE(pmd->process->wait(5s));
  pmd.reset();
  // The established connection needs no PMD.
  node->send_sync("ts6", "2");
  auto frame = inbound->read_frame();
  REQUIRE(frame);
  CHECK(json::parse(*frame)["payload"] == 2);

  test::ChildProcess restarted({test::distflow_binary(), "pmd", "--port", std::to_string(port)});
  REQUIRE(restarted.read_line(10s));
  CHECK(eventually([&] { return listed(port, node->node_id()); }, 10s));
  // New names resolve through the new PMD.
  TsPeer fresh(port, "ts-7", "ts7");
  node->send_sync("ts7", "3");
  auto second = fresh.accept();
  REQUIRE(second);
  frame = second->read_frame();
  REQUIRE(frame);
  CHECK(json::parse(*frame)["payload"] == 3);
  node->shutdown();
  restarted.signal(SIGTERM);
  CHECK(restarted.wait(5s));
}

}  // namespace distflow

namespace distflow {

TEST_CASE("node_runtime: a handler busy for 5 s does not get its node expired",
          "[node_runtime][liveness]") {
  PmdProcess pmd;  // the default TTL
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","payload":{},"requestId":1})"));
  TsPeer ts(pmd.port, "ts-busy", "tsbusy");
  auto options = options_for(pmd, "rt-busy");
  options.heartbeat_interval = NodeOptions{}.heartbeat_interval;  // the default
  auto node = NodeRuntime::start(options);
  std::atomic<bool> entered{false};
  node->on_message([&](const Envelope&) {
    entered = true;
    std::this_thread::sleep_for(5s);  // the scenario: a handler that takes its time
  });
  RawClient out("127.0.0.1", node->port());
  out.send_frame(ts.frame_to(node->node_id(), 1));
  REQUIRE(eventually([&] { return entered.load(); }));
  // Whatever the PMD says meanwhile, it is not that this node left.
  const auto until = Clock::now() + 6s;
  while (Clock::now() < until) {
    auto frame = watcher.read_frame(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::max(until - Clock::now(), Clock::duration(1ms))));
    if (frame)
      CHECK(frame->find("peer:leave") == std::string::npos);
  }
  CHECK(listed(pmd.port, node->node_id()));
}

TEST_CASE("node_runtime: receive_batch takes runs in order; count_dropped shows in stats",
          "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-batch", "tsbatch");
  auto node = NodeRuntime::start(options_for(pmd, "rt-batch"));
  RawClient out("127.0.0.1", node->port());
  std::string bytes;
  for (int i = 0; i < 100; ++i)
    bytes += framed(ts.frame_to(node->node_id(), i));
  out.send_raw(bytes);
  std::vector<Envelope> batch;
  while (batch.size() < 100 && node->receive_batch(batch, 30, 5s) > 0) {
  }
  REQUIRE(batch.size() == 100);
  for (int i = 0; i < 100; ++i)
    CHECK(batch[static_cast<std::size_t>(i)].payload() == std::to_string(i));
  node->count_dropped(3, "output closed");
  node->count_dropped(2, "output closed");
  const NodeStats stats = node->stats();
  CHECK(stats.dropped == 5);
  REQUIRE(stats.drops.size() == 1);
  CHECK(stats.drops[0] == std::pair<std::string, std::uint64_t>{"output closed", 5});
}

}  // namespace distflow

namespace distflow {

TEST_CASE("node_runtime: a stuck destination holds up only its own senders (issue 17 #6)",
          "[node_runtime]") {
  PmdProcess pmd;
  // Accepts, then reads nothing: its socket buffers fill, then its link's queue.
  auto stuck = std::make_unique<TsPeer>(pmd.port, "ts-stuck", "stuck");
  TsPeer alive(pmd.port, "ts-alive2", "alive2");
  auto options = options_for(pmd, "rt-backpressure");
  options.max_outbox_bytes = 256u << 10;
  auto node = NodeRuntime::start(options);
  // The route is resolved and the link up first: the steady state.
  node->send_sync("stuck", "0");
  std::atomic<int> failed{0};
  std::atomic<bool> blocked_done{false};
  std::thread flooder([&] {
    const std::string big(16u << 10, 'x');
    const std::string payload = "\"" + big + "\"";
    // Until the queue is full and the wait gives up, or the destination leaves.
    for (int i = 0; i < 2000 && failed.load() == 0; ++i) {
      node->send("stuck", payload,
                 [&](std::error_code, const std::string&) { failed.fetch_add(1); });
    }
    blocked_done = true;
  });
  auto held = stuck->accept();
  REQUIRE(held);
  // Meanwhile another destination gets its messages at once.
  for (int i = 0; i < 100; ++i)
    node->send("alive2", std::to_string(i));
  auto inbound = alive.accept();
  REQUIRE(inbound);
  for (int i = 0; i < 100; ++i) {
    auto frame = inbound->read_frame(5s);
    REQUIRE(frame);
    CHECK(json::parse(*frame)["payload"] == i);
  }
  CHECK_FALSE(blocked_done.load());  // the flooder is held back, not failing
  // The stuck destination leaves: its queue fails at once, its sender wakes.
  const auto left_at = Clock::now();
  stuck->leave_pmd();
  REQUIRE(eventually([&] { return blocked_done.load(); }, 10s));
  flooder.join();
  CHECK(Clock::now() - left_at < 3s);
  CHECK(failed.load() >= 1);
}

TEST_CASE("node_runtime: NodeOptions::metrics serves the node's counters from its I/O thread",
          "[node_runtime]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-metrics", "tsmetrics");
  {
    auto plain = NodeRuntime::start(options_for(pmd, "rt-plain"));
    CHECK(plain->metrics_port() == 0);
  }
  NodeOptions options = options_for(pmd, "rt-metrics");
  options.metrics = MetricsEndpoint{"127.0.0.1", 0};
  auto node = NodeRuntime::start(options);
  REQUIRE(node->metrics_port() != 0);
  const std::string before = test::scrape_metrics(node->metrics_port());
  CHECK(test::metric_value(before, "distflow_node_messages_received_total") == 0);
  CHECK(test::metric_value(before, R"(distflow_node_links{direction="inbound"})") == 0);

  RawClient in("127.0.0.1", node->port());
  std::string bytes;
  for (int i = 0; i < 20; ++i)
    bytes += framed(ts.frame_to(node->node_id(), i));
  in.send_raw(bytes);
  std::vector<Envelope> batch;
  while (batch.size() < 20 && node->receive_batch(batch, 8, 5s) > 0) {
  }
  REQUIRE(batch.size() == 20);
  const NodeStats stats = node->stats();
  CHECK(stats.received == 20);
  CHECK(stats.inbound_links == 1);
  CHECK(stats.mailbox.capacity == 1000);
  CHECK(stats.mailbox.high_water >= 8);
  CHECK(stats.mailbox.high_water <= 20);
  CHECK(stats.uptime > std::chrono::microseconds(0));
  const std::string after = test::scrape_metrics(node->metrics_port());
  CHECK(test::metric_value(after, "distflow_node_messages_received_total") == 20);
  CHECK(test::metric_value(after, "distflow_node_mailbox_delivered_total") == 20);
  CHECK(test::metric_value(after, R"(distflow_node_links{direction="inbound"})") == 1);
  CHECK(test::metric_value(after, "distflow_node_mailbox_high_water") ==
        static_cast<double>(stats.mailbox.high_water));

  const std::uint16_t port = node->metrics_port();
  node->shutdown();
  CHECK_THROWS(RawClient("127.0.0.1", port));  // closed with the node

  options.alias = "rt-exposed";
  options.metrics = MetricsEndpoint{"0.0.0.0", 0};
  node.reset();
  CHECK_THROWS_WITH(NodeRuntime::start(options),
                    Catch::Contains("refusing to listen on 0.0.0.0 (--metrics)"));
}

// ---- request/reply (issue 14) ---------------------------------------------------

namespace {

// The body of a reply from `peer` to `to`, answering `ref`.
std::string reply_frame(const TsPeer& peer, const std::string& to, const json& ref,
                        const json& payload) {
  return json{{"from", peer.node_id()},
              {"to", to},
              {"inReplyTo", ref},
              {"payload", payload},
              {"timestamp", 1700000000123}}
      .dump();
}

}  // namespace

TEST_CASE("node_runtime: call() to a TypeScript-style peer: it sees a plain message with a ref",
          "[node_runtime][calls]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-kv", "kv");
  auto node = NodeRuntime::start(options_for(pmd, "caller"));

  auto reply = node->call("kv", R"({"type":"GET","key":"a"})", 5s);
  auto inbound = ts.accept();
  REQUIRE(inbound);
  auto frame = inbound->read_frame();
  REQUIRE(frame);
  // An implementation that does not know `ref` reads the message as ever.
  const json request = json::parse(*frame);
  CHECK(request["payload"] == json{{"type", "GET"}, {"key", "a"}});
  CHECK(request["from"] == node->node_id());
  REQUIRE(request["ref"].is_string());

  RawClient back("127.0.0.1", node->port());
  // A plain message first: it goes to the application, not to the call.
  back.send_frame(ts.frame_to(node->node_id(), {{"type", "NEWS"}}));
  back.send_frame(reply_frame(ts, node->node_id(), request["ref"], {{"value", 42}}));
  REQUIRE(reply.wait_for(5s) == std::future_status::ready);
  const Envelope answer = reply.get();
  CHECK(answer.payload() == R"({"value":42})");
  CHECK(answer.from() == "ts-kv");
  CHECK(answer.is_reply());
  auto news = node->receive(5s);
  REQUIRE(news);
  CHECK(news->payload() == R"({"type":"NEWS"})");
  CHECK_FALSE(node->receive(100ms));  // the reply was not delivered twice
}

TEST_CASE("node_runtime: call() times out naming the target; the late reply is counted",
          "[node_runtime][calls]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-slow", "slow");
  auto node = NodeRuntime::start(options_for(pmd, "caller"));

  const auto started = Clock::now();
  auto reply = node->call("slow", "1", 300ms);
  auto inbound = ts.accept();
  REQUIRE(inbound);
  auto frame = inbound->read_frame();
  REQUIRE(frame);
  REQUIRE(reply.wait_for(5s) == std::future_status::ready);
  CHECK(Clock::now() - started >= 300ms);
  try {
    reply.get();
    FAIL("a call without a reply succeeded");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "call to 'slow': no reply within 300 ms");
  }
  CHECK(node->stats().call_timeouts == 1);

  RawClient back("127.0.0.1", node->port());
  back.send_frame(reply_frame(ts, node->node_id(), json::parse(*frame)["ref"], "late"));
  CHECK(eventually([&] { return node->stats().late_replies == 1; }));
  CHECK_FALSE(node->receive(100ms));
  CHECK(node->stats().calls_in_flight == 0);
}

TEST_CASE("node_runtime: a call fails at once when its target leaves or is unknown",
          "[node_runtime][calls]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-gone", "gone");
  auto node = NodeRuntime::start(options_for(pmd, "caller"));

  auto unknown = node->call("nobody", "1", 10s);
  REQUIRE(unknown.wait_for(5s) == std::future_status::ready);
  CHECK_THROWS_WITH(unknown.get(), Catch::Contains("nobody") && Catch::Contains("Node not found"));

  auto reply = node->call("gone", "1", 30s);
  auto inbound = ts.accept();
  REQUIRE(inbound);
  REQUIRE(inbound->read_frame());
  const auto left_at = Clock::now();
  ts.leave_pmd();  // its registration socket closes: the PMD says it left
  REQUIRE(reply.wait_for(5s) == std::future_status::ready);
  CHECK(Clock::now() - left_at < 5s);
  CHECK_THROWS_WITH(reply.get(),
                    Catch::Contains("call to 'gone' failed") && Catch::Contains("left"));
}

TEST_CASE("node_runtime: 10 000 pipelined calls are all answered and matched",
          "[node_runtime][calls]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-echo", "echo");
  auto node = NodeRuntime::start(options_for(pmd, "caller"));

  constexpr int kCalls = 10000;
  // The peer answers each request with its own payload, on its own connection.
  std::thread echo([&] {
    auto inbound = ts.accept();
    REQUIRE(inbound);
    RawClient back("127.0.0.1", node->port());
    std::string batch;
    for (int i = 0; i < kCalls; ++i) {
      auto frame = inbound->read_frame();
      if (!frame)
        break;
      const json request = json::parse(*frame);
      append_frame(batch, reply_frame(ts, request["from"], request["ref"], request["payload"]));
      if (batch.size() > 32768 || i + 1 == kCalls) {
        back.send_raw(batch);
        batch.clear();
      }
    }
  });
  std::vector<std::future<Envelope>> replies;
  replies.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i)
    replies.push_back(node->call("echo", std::to_string(i), 30s));
  int matched = 0;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    REQUIRE(replies[i].wait_for(30s) == std::future_status::ready);
    matched += replies[i].get().payload() == std::to_string(i) ? 1 : 0;
  }
  echo.join();
  CHECK(matched == kCalls);
  CHECK(node->stats().late_replies == 0);
  CHECK(node->stats().calls_in_flight == 0);
}

TEST_CASE("node_runtime: reply() answers a request with its ref; monitors fire once",
          "[node_runtime][calls]") {
  PmdProcess pmd;
  TsPeer ts(pmd.port, "ts-asker", "asker");
  auto node = NodeRuntime::start(options_for(pmd, "server"));

  std::promise<std::string> gone_reason;
  auto gone = gone_reason.get_future();
  int fired = 0;
  node->monitor("asker", [&](std::string_view why) {
    ++fired;
    gone_reason.set_value(std::string(why));
  });
  std::promise<std::string> absent_reason;
  auto absent = absent_reason.get_future();
  node->monitor("nobody", [&](std::string_view why) { absent_reason.set_value(std::string(why)); });
  REQUIRE(absent.wait_for(5s) == std::future_status::ready);
  CHECK(absent.get() == "not registered");

  RawClient asker("127.0.0.1", node->port());
  json request = json::parse(ts.frame_to(node->node_id(), {{"q", 1}}));
  request["ref"] = "r-7";
  asker.send_frame(request.dump());
  auto got = node->receive(5s);
  REQUIRE(got);
  CHECK(got->is_request());
  CHECK(got->ref() == "r-7");
  CHECK_THROWS_WITH(node->reply(Envelope(), "1"), Catch::Contains("not a request"));
  node->reply(*got, R"({"a":1})");
  auto inbound = ts.accept();
  REQUIRE(inbound);
  auto frame = inbound->read_frame();
  REQUIRE(frame);
  const json answer = json::parse(*frame);
  CHECK(answer["inReplyTo"] == "r-7");
  CHECK(answer["payload"] == json{{"a", 1}});
  CHECK(answer["to"] == "ts-asker");

  ts.leave_pmd();
  REQUIRE(gone.wait_for(5s) == std::future_status::ready);
  CHECK(gone.get().find("left") != std::string::npos);
  CHECK(fired == 1);
}

TEST_CASE("node_runtime: monitor(alias@host) watches that host's PMD", "[node_runtime][calls]") {
  PmdProcess home;
  PmdProcess far_pmd({"--metrics", "127.0.0.1:0"});
  std::string far_log;
  const std::uint16_t far_metrics = test::metrics_port_from_log(*far_pmd.process, far_log);
  const auto far_watchers = [&] {
    return test::metric_value(test::scrape_metrics(far_metrics), "distflow_pmd_watchers")
        .value_or(-1);
  };
  TsPeer far(far_pmd.port, "ts-far", "far");
  auto node = NodeRuntime::start(options_for(home, "watcher"));
  const std::string at = "@127.0.0.1:" + far_pmd.port_str();

  std::promise<std::string> ghost;
  node->monitor("ghost" + at, [&](std::string_view why) { ghost.set_value(std::string(why)); });
  auto ghost_why = ghost.get_future();
  REQUIRE(ghost_why.wait_for(5s) == std::future_status::ready);
  CHECK(ghost_why.get() == "not registered");

  std::promise<std::string> left;
  int fired = 0;
  node->monitor("far" + at, [&](std::string_view why) {
    ++fired;
    left.set_value(std::string(why));
  });
  // A demonitored watch never fires.
  const auto quiet = node->monitor("far" + at, [&](std::string_view) { ++fired; });
  node->demonitor(quiet);
  // The watch is in place once the far PMD counts it.
  CHECK(eventually([&] { return far_watchers() == 1; }));
  auto left_why = left.get_future();
  far.leave_pmd();
  REQUIRE(left_why.wait_for(5s) == std::future_status::ready);
  CHECK(left_why.get() == "'far" + at + "' left (socket_closed)");
  CHECK(fired == 1);
}

}  // namespace distflow
