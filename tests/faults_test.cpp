// End-to-end fault tests (issue 6): real `distflow` processes on loopback. A PMD
// SIGKILLed and restarted under 100 registered nodes; 1000 nodes churning; a
// million messages; the overflow policies' counters; raw peers sending bad
// bytes to the PMD and to a node. Every wait has a deadline; every process is
// stopped by its PID (ChildProcess's destructor SIGKILLs what is left).
//
// Tests named "faults: load: ..." (tag [slow]) start hundreds of processes or
// move a million messages: the asan test preset skips them (ASan's per-process cost and quarantine
// would make them minutes long and their RSS figures meaningless).

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "process.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kSlowdown = 5;  // sanitizer builds: deadlines scale, never the assertions
#else
constexpr int kSlowdown = 1;
#endif

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

long rss_kib_of(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  }
  return -1;
}

/// Sends without SIGPIPE; false once the peer has closed or reset the connection.
bool send_nosignal(int fd, const std::string& bytes) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    at += static_cast<std::size_t>(n);
  }
  return true;
}

std::string frame_of(const std::string& body) {
  const auto n = static_cast<std::uint32_t>(body.size());
  std::string out{static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                  static_cast<char>(n)};
  return out + body;
}

/// A PMD on a given port (0: any), quiet (nothing drains its stderr during load).
std::unique_ptr<ChildProcess> start_pmd(std::uint16_t port, std::uint16_t& bound,
                                        const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{distflow_binary(),    "pmd",         "--port",
                                std::to_string(port), "--log-level", "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto pmd = std::make_unique<ChildProcess>(argv);
  auto line = pmd->read_line(10s * kSlowdown);
  if (!line)
    FAIL("pmd did not start: " << pmd->stderr_text());
  bound = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(':') + 1)));
  return pmd;
}

/// id -> alias of every registered node, via `list` on a fresh connection.
std::map<std::string, std::string> registered(std::uint16_t port) {
  std::map<std::string, std::string> out;
  try {
    RawClient client("127.0.0.1", port);
    auto reply = client.request(R"({"type":"list","payload":{},"requestId":1})", 5s * kSlowdown);
    if (!reply)
      return out;
    const json doc = json::parse(*reply);
    for (const auto& node : doc.at("payload").at("nodes"))
      out[node.at("nodeId").get<std::string>()] = node.value("alias", "");
  } catch (const std::exception&) {
    // Not listening (yet): an empty view; callers poll with a deadline.
  }
  return out;
}

/// Polls `list` until `done(view)` or the deadline; returns the last view.
template <class Pred>
std::map<std::string, std::string> wait_registered(std::uint16_t port,
                                                   std::chrono::milliseconds timeout, Pred done) {
  const auto deadline = Clock::now() + timeout;
  auto view = registered(port);
  while (!done(view) && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);  // polling interval, bounded by the deadline
    view = registered(port);
  }
  return view;
}

/// `distflow node` with its stdin held open (it runs until stdin closes or a signal).
std::unique_ptr<ChildProcess> start_node(std::uint16_t pmd_port, const std::string& alias,
                                         const std::string& node_id,
                                         const std::vector<std::string>& extra = {},
                                         const std::string& log_level = "warn") {
  std::vector<std::string> argv{
      distflow_binary(), "node",        "--port",    std::to_string(pmd_port),
      "--alias",         alias,         "--node-id", node_id,
      "--no-auto-pmd",   "--log-level", log_level};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<ChildProcess>(argv);
}

/// A resolve by a fresh client is answered within the deadline.
bool pmd_serves(std::uint16_t port, std::chrono::milliseconds timeout = 2s * kSlowdown) {
  try {
    RawClient probe("127.0.0.1", port);
    auto reply = probe.request(R"({"type":"resolve","payload":{"alias":"nobody"},"requestId":"p"})",
                               timeout);
    return reply == R"({"type":"response","requestId":"p","payload":{"error":"Node not found"}})";
  } catch (const std::exception&) {
    return false;
  }
}

std::uint16_t node_port(std::uint16_t pmd_port, const std::string& alias) {
  RawClient client("127.0.0.1", pmd_port);
  auto reply =
      client.request(R"({"type":"resolve","payload":{"alias":")" + alias + R"("},"requestId":1})");
  REQUIRE(reply);
  return static_cast<std::uint16_t>(
      json::parse(*reply).at("payload").at("node").at("port").get<int>());
}

/// Parses `node stopped received=R dropped=D sent=S ...` from a node's log.
std::map<std::string, std::uint64_t> final_stats(const std::string& log) {
  std::map<std::string, std::uint64_t> out;
  const auto at = log.find("node stopped ");
  if (at == std::string::npos)
    return out;
  const std::string line = log.substr(at, log.find('\n', at) - at);
  std::size_t pos = 0;
  while ((pos = line.find('=', pos)) != std::string::npos) {
    const auto key_start = line.rfind(' ', pos) + 1;
    const std::string key = line.substr(key_start, pos - key_start);
    out[key] = std::stoull(line.substr(pos + 1));
    ++pos;
  }
  return out;
}

/// A temp dir for `--exec` scripts and the pid files they write, removed at the end.
struct ScriptDir {
  std::filesystem::path path;
  ScriptDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("distflow-faults-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~ScriptDir() { std::filesystem::remove_all(path); }
  ScriptDir(const ScriptDir&) = delete;
  ScriptDir& operator=(const ScriptDir&) = delete;

  std::string file(const std::string& name) const { return (path / name).string(); }
  /// A /bin/sh script; `$DIR` in it is this directory.
  std::string script(const std::string& name, const std::string& body) const {
    std::ofstream(path / name) << "#!/bin/sh\nDIR='" << path.string() << "'\n" << body;
    std::filesystem::permissions(path / name, std::filesystem::perms::owner_all);
    return file(name);
  }
  /// The number a script wrote to `name` (with `echo N > name.tmp; mv name.tmp name`),
  /// or -1 if none within `timeout`.
  int read_number(const std::string& name, std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      std::ifstream in(path / name);
      int value = 0;
      if (in >> value && value > 0)
        return value;
      if (Clock::now() >= deadline)
        return -1;
      std::this_thread::sleep_for(10ms);  // polling for the file, bounded by the deadline
    }
  }
};

/// Shell lines that write `value` to $DIR/name atomically.
std::string write_file(const std::string& name, const std::string& value) {
  return "echo " + value + " > \"$DIR/" + name + ".tmp\"; mv \"$DIR/" + name + ".tmp\" \"$DIR/" +
         name + "\"\n";
}

/// SIGKILLs, by PID, what a failed check left running.
struct Survivors {
  std::vector<int> pids;
  ~Survivors() {
    for (int pid : pids) {
      if (pid > 0 && !process_gone(pid, 0ms))
        ::kill(pid, SIGKILL);
    }
  }
};

}  // namespace

TEST_CASE(
    "faults: load: PMD SIGKILLed and restarted under 100 nodes: all re-register, same id and alias",
    "[faults][slow]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  constexpr int kNodes = 100;
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  std::map<std::string, std::string> expected;
  for (int i = 0; i < kNodes; ++i) {
    const std::string alias = "r" + std::to_string(i);
    nodes.push_back(start_node(port, alias, "id-" + alias));
    expected["id-" + alias] = alias;
  }
  auto all = [&](const auto& view) { return view == expected; };
  REQUIRE(wait_registered(port, 60s * kSlowdown, all) == expected);

  pmd->signal(SIGKILL);
  REQUIRE(pmd->wait(5s) == 128 + SIGKILL);
  // The outage itself (not a synchronisation): 3 s with nothing on the port, so
  // every node is deep in its reconnect backoff when the PMD comes back.
  std::this_thread::sleep_for(3s);
  std::uint16_t again = 0;
  pmd = start_pmd(port, again);
  REQUIRE(again == port);
  const auto restarted = Clock::now();
  // The product's promise: every node is back within 2 s of the PMD's return.
  const auto view = wait_registered(port, 2s * kSlowdown, all);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted);
  INFO("re-registration took " << took.count() << " ms");
  CHECK(view.size() == expected.size());
  CHECK(view == expected);
  WARN("100 nodes re-registered " << took.count() << " ms after the PMD restart");

  // No alias stuck: killed nodes free theirs at once, and a newcomer can take one.
  for (int i = 0; i < 10; ++i) {
    nodes[static_cast<std::size_t>(i)]->signal(SIGKILL);
    nodes[static_cast<std::size_t>(i)]->wait(5s);
    expected.erase("id-r" + std::to_string(i));
  }
  CHECK(wait_registered(port, 10s * kSlowdown, all) == expected);
  RawClient newcomer("127.0.0.1", port);
  CHECK(
      newcomer.request(
          R"({"type":"register","payload":{"nodeId":"fresh","alias":"r3","host":"127.0.0.1","port":9},"requestId":1})") ==
      R"({"type":"response","requestId":1,"payload":{"success":true}})");
  CHECK(
      newcomer.request(
          R"({"type":"register","payload":{"nodeId":"thief","alias":"r50","host":"127.0.0.1","port":9},"requestId":2})") ==
      R"({"type":"response","requestId":2,"payload":{"error":"Alias 'r50' already in use"}})");
  for (auto& node : nodes)
    node->signal(SIGTERM);
  for (auto& node : nodes)
    CHECK(node->wait(10s * kSlowdown).has_value());
}

TEST_CASE("faults: load: 1000 nodes churn: registry exact, PMD RSS back near baseline",
          "[faults][slow]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  const long idle = rss_kib_of(pmd->pid());
  // Residents live through the whole churn (watchers of every join and leave).
  std::map<std::string, std::string> live;
  std::vector<std::unique_ptr<ChildProcess>> residents;
  for (int i = 0; i < 10; ++i) {
    residents.push_back(
        start_node(port, "resident" + std::to_string(i), "id-res" + std::to_string(i)));
    live["id-res" + std::to_string(i)] = "resident" + std::to_string(i);
  }
  auto now_live = [&](const auto& view) { return view == live; };
  REQUIRE(wait_registered(port, 30s * kSlowdown, now_live) == live);

  // 20 waves of 50: each registers, sends, and is SIGKILLed.
  constexpr int kWaves = 20;
  constexpr int kPerWave = 50;
  long baseline = -1, halfway = -1;
  int delivered = 0;
  for (int wave = 0; wave < kWaves; ++wave) {
    std::vector<std::unique_ptr<ChildProcess>> batch;
    std::vector<std::string> aliases;
    for (int i = 0; i < kPerWave; ++i) {
      const std::string alias = "c" + std::to_string(wave) + "_" + std::to_string(i);
      batch.push_back(start_node(port, alias, "id-" + alias));
      aliases.push_back(alias);
      live["id-" + alias] = alias;
    }
    REQUIRE(wait_registered(port, 30s * kSlowdown, now_live) == live);
    // Each node sends one message to the next one of its wave.
    for (int i = 0; i < kPerWave; ++i) {
      const std::string to = aliases[static_cast<std::size_t>((i + 1) % kPerWave)];
      batch[static_cast<std::size_t>(i)]->write(R"({"to":")" + to + R"(","payload":{"w":)" +
                                                std::to_string(wave) + "}}\n");
    }
    for (auto& node : batch) {
      auto line = node->read_line(10s * kSlowdown);
      if (line && contains(*line, R"("payload":{"w":)" + std::to_string(wave) + "}"))
        ++delivered;
    }
    for (auto& node : batch)
      node->signal(SIGKILL);
    for (auto& node : batch)
      node->wait(5s);
    for (const auto& alias : aliases)
      live.erase("id-" + alias);
    if (wave == 0 || wave + 1 == kWaves / 2) {
      // Measured with the same live set each time: the residents only.
      REQUIRE(wait_registered(port, 10s * kSlowdown, now_live) == live);
      (wave == 0 ? baseline : halfway) = rss_kib_of(pmd->pid());
    }
  }
  CHECK(delivered == kWaves * kPerWave);
  // Exact: the residents, none of the 1000 killed nodes.
  const auto view = wait_registered(port, 10s * kSlowdown, now_live);
  CHECK(view.size() == residents.size());
  CHECK(view == live);
  CHECK(pmd_serves(port));
  const long after = rss_kib_of(pmd->pid());
  INFO("PMD RSS baseline " << baseline << " KiB, after churn " << after << " KiB");
  CHECK(after <= baseline + std::max(2048L, baseline / 2));
  WARN("PMD RSS (KiB): idle " << idle << "; 10 residents after the first wave " << baseline
                              << ", after 500 churned " << halfway << ", after 1000 " << after);
}

TEST_CASE("faults: load: one sender, one receiver, 1 000 000 messages: none lost, none reordered",
          "[faults][slow]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  const std::string bin = distflow_binary();
  const std::string p = std::to_string(port);
  ChildProcess rx({bin, "bench", "worker", "--role", "rx", "--pmd-port", p, "--alias", "rx",
                   "--msgs", "1000000", "--timeout", "170"});
  REQUIRE(rx.wait_for_line("ready", 20s * kSlowdown));
  ChildProcess tx({bin, "bench", "worker", "--role", "tx", "--pmd-port", p, "--alias", "tx",
                   "--target", "rx", "--msgs", "1000000", "--size", "64", "--id", "1", "--timeout",
                   "170"});
  auto result = rx.read_line(170s);
  REQUIRE(result);
  INFO(*result);
  const json doc = json::parse(*result);
  CHECK(doc.at("received") == 1000000);
  CHECK(doc.at("lost") == 0);
  CHECK(doc.at("reordered") == 0);
  CHECK(doc.at("mailbox_dropped") == 0);
  CHECK(doc.at("bad_frames") == 0);
  CHECK(tx.wait(30s) == 0);
  CHECK(rx.wait(10s) == 0);
}

namespace {

/// A receiver node with a tiny mailbox whose output nobody reads at first, and
/// one `send -` flooding it over one connection; then markers, one at a time,
/// until one comes out: everything before it (FIFO) has been delivered or dropped.
void check_drop_counters(const std::string& policy) {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  auto receiver =
      start_node(port, "slow", "id-slow", {"--mailbox-size", "10", "--overflow", policy}, "info");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-slow") == 1;
          }).count("id-slow") == 1);
  ChildProcess sender({distflow_binary(), "send", "--port", std::to_string(port), "slow", "-"});
  constexpr int kMessages = 20000;
  std::string flood;
  for (int i = 0; i < kMessages; ++i)
    flood += "{\"n\":" + std::to_string(i) + "}\n";
  sender.write(flood);

  std::vector<long> data;
  int markers_sent = 0, markers_seen = 0;
  bool done = false;
  const auto deadline = Clock::now() + 60s * kSlowdown;
  while (!done && Clock::now() < deadline) {
    const int marker = markers_sent++;
    sender.write("{\"m\":" + std::to_string(marker) + "}\n");
    for (;;) {
      auto line = receiver->read_line(300ms);
      receiver->stderr_text();  // keep its log pipe drained
      if (!line)
        break;  // this marker was dropped (or is late): send the next one
      const auto n = line.value().find("\"payload\":{\"n\":");
      if (n != std::string::npos) {
        data.push_back(std::stol(line->substr(n + 15)));
        continue;
      }
      if (contains(*line, "\"payload\":{\"m\":")) {
        ++markers_seen;
        if (contains(*line, "\"payload\":{\"m\":" + std::to_string(marker) + "}")) {
          done = true;
          break;
        }
      }
    }
  }
  REQUIRE(done);
  sender.close_stdin();
  CHECK(sender.wait(10s * kSlowdown) == 0);
  receiver->close_stdin();
  REQUIRE(receiver->wait(10s * kSlowdown) == 0);
  const auto stats = final_stats(receiver->stderr_text());
  REQUIRE(stats.count("received") == 1);
  REQUIRE(stats.count("dropped") == 1);
  const std::uint64_t sent = kMessages + static_cast<std::uint64_t>(markers_sent);
  const std::uint64_t delivered = data.size() + static_cast<std::uint64_t>(markers_seen);
  INFO(policy << ": sent " << sent << ", delivered " << delivered << ", counters received="
              << stats.at("received") << " dropped=" << stats.at("dropped"));
  CHECK(stats.at("received") == sent);
  CHECK(delivered + stats.at("dropped") == sent);
  CHECK(stats.at("dropped") > 0);
  CHECK(std::is_sorted(data.begin(), data.end()));
  CHECK(std::adjacent_find(data.begin(), data.end()) == data.end());
  if (policy == "drop-newest") {
    CHECK((!data.empty() && data.front() == 0));  // the first ones got in, later ones dropped
  } else {
    CHECK((!data.empty() && data.back() == kMessages - 1));  // the newest survive
  }
}

}  // namespace

TEST_CASE("faults: drop-newest with a slow consumer: delivered + dropped == sent, exactly",
          "[faults]") {
  check_drop_counters("drop-newest");
}

TEST_CASE("faults: drop-oldest with a slow consumer: delivered + dropped == sent, exactly",
          "[faults]") {
  check_drop_counters("drop-oldest");
}

TEST_CASE("faults: block: nothing dropped, the sender is held back, a third node gets through",
          "[faults]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  // A short stall timeout: while the mailbox is full the node stops reading the
  // sender's connection, often inside a frame; that is not the peer stalling.
  auto receiver = start_node(
      port, "sink", "id-sink",
      {"--mailbox-size", "100", "--overflow", "block", "--stall-timeout", "300ms"}, "info");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-sink") == 1;
          }).count("id-sink") == 1);
  // 40 MB of payloads: far more than the mailbox, the pipes and the socket buffers hold.
  constexpr int kMessages = 40000;
  const std::string pad(1000, 'x');
  std::string flood;
  for (int i = 0; i < kMessages; ++i)
    flood += "{\"n\":" + std::to_string(i) + ",\"pad\":\"" + pad + "\"}\n";
  ChildProcess sender({distflow_binary(), "send", "--port", std::to_string(port), "sink", "-"});
  std::atomic<bool> written{false};
  std::string feed_error;  // read after join()
  std::thread feeder([&] {
    try {
      sender.write(flood);  // blocks while the sender is held back
      written = true;
    } catch (const std::exception& e) {
      feed_error = e.what();  // the sender exited early: reported below
    }
    sender.close_stdin();
  });
  // A failed REQUIRE below unwinds past the feeder: kill the sender so its
  // blocked write ends (EPIPE), then join, instead of std::terminate.
  struct JoinFeeder {
    ChildProcess& sender;
    std::thread& feeder;
    ~JoinFeeder() {
      if (feeder.joinable()) {
        sender.signal(SIGKILL);
        feeder.join();
      }
    }
  } join_feeder{sender, feeder};
  // The receiver reads nothing out: the sender cannot finish.
  CHECK_FALSE(sender.wait(2s).has_value());
  // A third node's messages are queued behind nobody: they arrive before the flood ends.
  const auto third =
      run({distflow_binary(), "send", "--port", std::to_string(port), "sink", R"({"third":1})"});
  CHECK(third.code == 0);
  INFO(third.err);

  long next = 0;
  long third_at = -1;
  const auto deadline = Clock::now() + 120s * kSlowdown;
  while (next < kMessages && Clock::now() < deadline) {
    auto line = receiver->read_line(20s * kSlowdown);
    receiver->stderr_text();
    if (!line)
      break;
    if (contains(*line, R"("payload":{"third":1})")) {
      third_at = next;
      continue;
    }
    const auto n = line->find("\"payload\":{\"n\":");
    REQUIRE(n != std::string::npos);
    REQUIRE(std::stol(line->substr(n + 15)) == next);  // in order, none missing
    ++next;
  }
  feeder.join();
  INFO(feed_error);
  CHECK(written);
  CHECK(next == kMessages);
  INFO("the third node's message came out after " << third_at << " flood messages");
  CHECK(third_at >= 0);
  CHECK(third_at < kMessages);
  CHECK(sender.wait(20s * kSlowdown) == 0);
  receiver->close_stdin();
  REQUIRE(receiver->wait(10s * kSlowdown) == 0);
  const std::string log = receiver->stderr_text();
  INFO(log);
  CHECK_FALSE(contains(log, "stalled"));
  const auto stats = final_stats(log);
  REQUIRE(stats.count("dropped") == 1);
  CHECK(stats.at("dropped") == 0);
  CHECK(stats.at("received") == kMessages + 1);
}

TEST_CASE("faults: PMD: half-frame stalls, a 4 GiB length, a peer that never reads its replies",
          "[faults]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port, {"--max-write-queue", "65536", "--stall-timeout", "500ms"});
  RawClient owner("127.0.0.1", port);
  const std::string host(600, 'h');
  REQUIRE(owner.request(R"({"type":"register","payload":{"nodeId":"big","alias":"big","host":")" +
                        host + R"(","port":1},"requestId":1})") ==
          R"({"type":"response","requestId":1,"payload":{"success":true}})");
  const long rss_start = rss_kib_of(pmd->pid());

  SECTION("half a frame, then silence, from many peers: bounded, then disconnected") {
    std::vector<std::unique_ptr<RawClient>> stalled;
    const std::string half = std::string("\x00\x0f\xff\xff", 4) + std::string(512 * 1024, ' ');
    for (int i = 0; i < 20; ++i) {
      stalled.push_back(std::make_unique<RawClient>("127.0.0.1", port));
      REQUIRE(send_nosignal(stalled.back()->fd(), half));
    }
    CHECK(pmd_serves(port));
    const long rss_stalled = rss_kib_of(pmd->pid());
    INFO("rss " << rss_start << " KiB, with 20 stalled half frames " << rss_stalled << " KiB");
    CHECK(rss_stalled - rss_start < 20 * 1024 + 8 * 1024);  // <= one max frame each, plus slack
    // No progress for --stall-timeout: each is closed; the registry is untouched by them.
    for (auto& peer : stalled)
      CHECK(peer->wait_closed(5s * kSlowdown));
    stalled.clear();
    CHECK(registered(port).size() == 1);
  }

  SECTION("a 4 GiB length is refused before any allocation; others still served") {
    RawClient huge("127.0.0.1", port);
    REQUIRE(send_nosignal(huge.fd(), std::string("\xff\xff\xff\xff", 4) + "{\"type\":"));
    auto reply = huge.read_frame();
    REQUIRE(reply);
    CHECK(contains(*reply, "frame length 4294967295 exceeds limit"));
    CHECK(huge.wait_closed());
    CHECK(pmd_serves(port));
    CHECK(rss_kib_of(pmd->pid()) - rss_start < 4 * 1024);
  }

  SECTION("pipelined requests from a peer that never reads: disconnected, bounded") {
    RawClient lazy("127.0.0.1", port);
    std::string burst;
    for (int i = 0; i < 2000; ++i)
      burst += frame_of(R"({"type":"list","requestId":)" + std::to_string(i) + "}");
    // ~1.5 MB of replies per burst; the write queue holds 64 KiB: the PMD hangs up.
    std::atomic<bool> refused{false};
    std::thread flood([&] {
      for (int i = 0; i < 400 && !refused; ++i)
        refused = !send_nosignal(lazy.fd(), burst);
    });
    flood.join();
    CHECK(refused);
    CHECK(pmd_serves(port));
    const long rss_after = rss_kib_of(pmd->pid());
    INFO("rss " << rss_start << " KiB, after the flood " << rss_after << " KiB");
    CHECK(rss_after - rss_start < 16 * 1024);
    CHECK(registered(port).size() == 1);
  }
  pmd->signal(SIGTERM);
  CHECK(pmd->wait(5s * kSlowdown) == 0);
}

TEST_CASE("faults: node: bad bytes on its port cost one connection, it keeps receiving",
          "[faults]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  auto node = start_node(port, "target", "id-target", {"--stall-timeout", "300ms"}, "info");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-target") == 1;
          }).count("id-target") == 1);
  const std::uint16_t listen = node_port(port, "target");
  int expected = 0;
  auto delivered = [&](const std::string& tag) {
    const auto result = run({distflow_binary(), "send", "--port", std::to_string(port), "target",
                             R"({"tag":")" + tag + "\"}"});
    if (result.code != 0)
      return false;
    ++expected;
    auto line = node->wait_for_line(R"({"tag":")" + tag + "\"}", 10s * kSlowdown);
    node->stderr_text();
    return line.has_value();
  };

  // A 4 GiB length: refused before allocation, that connection closed.
  RawClient huge("127.0.0.1", listen);
  REQUIRE(send_nosignal(huge.fd(), std::string("\xff\xff\xff\xff", 4)));
  CHECK(huge.wait_closed(5s * kSlowdown));
  CHECK(delivered("after-huge"));

  // Zero length: a protocol error, closed.
  RawClient zero("127.0.0.1", listen);
  REQUIRE(send_nosignal(zero.fd(), std::string(4, '\0')));
  CHECK(zero.wait_closed(5s * kSlowdown));

  // Half a frame, then silence: the others are not held up, and the stalled peer
  // is closed after --stall-timeout.
  RawClient stalled("127.0.0.1", listen);
  REQUIRE(send_nosignal(stalled.fd(), std::string("\x00\x00\x10\x00{\"from\":", 12)));
  CHECK(delivered("while-stalled"));
  CHECK(stalled.wait_closed(10s * kSlowdown));
  CHECK(delivered("after-stall"));

  // Not JSON, then a good frame on the same connection: counted, connection kept.
  RawClient sloppy("127.0.0.1", listen);
  REQUIRE(send_nosignal(sloppy.fd(), frame_of("not json") + frame_of("[1,2]") +
                                         frame_of(R"({"from":"raw","to":"id-target","payload":)"
                                                  R"({"tag":"raw"},"timestamp":1})")));
  CHECK(node->wait_for_line(R"({"tag":"raw"})", 10s * kSlowdown));
  CHECK(delivered("after-garbage"));

  node->close_stdin();
  REQUIRE(node->wait(10s * kSlowdown) == 0);
  const std::string log = node->stderr_text();
  INFO(log);
  CHECK(contains(log, "frame length 4294967295 exceeds limit"));
  CHECK(contains(log, "stalled 300 ms inside a frame (buffered=12 queued=0); closed"));
  const auto stats = final_stats(log);
  REQUIRE(stats.count("received") == 1);
  CHECK(stats.at("received") == static_cast<std::uint64_t>(expected) + 1);
}

TEST_CASE("faults: node: connections beyond --max-connections are closed on accept", "[faults]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  auto node = start_node(port, "capped", "id-capped", {"--max-connections", "3"}, "info");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-capped") == 1;
          }).count("id-capped") == 1);
  const std::uint16_t listen = node_port(port, "capped");
  // Three peers that stall inside a frame hold every slot...
  std::vector<std::unique_ptr<RawClient>> stalled;
  for (int i = 0; i < 3; ++i) {
    stalled.push_back(std::make_unique<RawClient>("127.0.0.1", listen));
    REQUIRE(send_nosignal(stalled.back()->fd(), std::string("\x00\x00\x10\x00{", 5)));
  }
  // ...so a fourth is closed at once (accepts are in connection order).
  const std::string hello = frame_of(R"({"from":"raw","to":"id-capped","payload":{"slot":1},)"
                                     R"("timestamp":1})");
  RawClient fourth("127.0.0.1", listen);
  CHECK(fourth.wait_closed(5s * kSlowdown));
  // Freed slots are served again.
  stalled.clear();
  bool served = false;
  const auto deadline = Clock::now() + 10s * kSlowdown;
  while (!served && Clock::now() < deadline) {
    RawClient again("127.0.0.1", listen);
    if (!send_nosignal(again.fd(), hello))
      continue;
    served = node->wait_for_line(R"({"slot":1})", 1s).has_value();
  }
  CHECK(served);
  node->close_stdin();
  REQUIRE(node->wait(10s * kSlowdown) == 0);
  CHECK(contains(node->stderr_text(), "refusing inbound connection"));
}

// ---- node --exec: children never outlive the node (issue 17 #10) and the attacker's pass

TEST_CASE("faults: node --exec: SIGTERM reaches the child's own children, all are gone",
          "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  ScriptDir dir;
  const std::string script =
      dir.script("tree.sh", "sleep 300 &\n" + write_file("grandchild", "$!") +
                                write_file("child", "$$") + "wait\n");
  auto node = start_node(port, "tree", "id-tree", {"--exec", script});
  Survivors survivors;
  const int child = dir.read_number("child", 10s * kSlowdown);
  const int grandchild = dir.read_number("grandchild", 1s);
  survivors.pids = {child, grandchild};
  REQUIRE(child > 0);
  REQUIRE(grandchild > 0);
  node->signal(SIGTERM);
  CHECK(node->wait(10s * kSlowdown) == 0);
  CHECK(process_gone(child, 5s * kSlowdown));
  CHECK(process_gone(grandchild, 5s * kSlowdown));
}

TEST_CASE("faults: node --exec: a SIGKILLed node takes its child along", "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  ScriptDir dir;
  // Not reading stdin: the child does not end on its own when the node's pipe closes.
  const std::string script =
      dir.script("orphan.sh", write_file("child", "$$") + "exec sleep 300\n");
  auto node = start_node(port, "orphan", "id-orphan", {"--exec", script});
  Survivors survivors;
  const int child = dir.read_number("child", 10s * kSlowdown);
  survivors.pids = {child};
  REQUIRE(child > 0);
  node->signal(SIGKILL);
  CHECK(node->wait(10s * kSlowdown) == 128 + SIGKILL);
  CHECK(process_gone(child, 5s * kSlowdown));
}

TEST_CASE("faults: node: SIGHUP is handled like SIGTERM, forwarded to an --exec child",
          "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  ScriptDir dir;
  const std::string script =
      dir.script("hup.sh", "trap '" + write_file("got", "1") + "exit 0' HUP\n" +
                               write_file("child", "$$") + "while :; do sleep 1; done\n");
  auto node = start_node(port, "hup", "id-hup", {"--exec", script}, "info");
  Survivors survivors;
  const int child = dir.read_number("child", 10s * kSlowdown);
  survivors.pids = {child};
  REQUIRE(child > 0);
  node->signal(SIGHUP);
  CHECK(node->wait(10s * kSlowdown) == 0);
  CHECK(dir.read_number("got", 5s * kSlowdown) == 1);  // the child's trap ran
  CHECK(process_gone(child, 5s * kSlowdown));
  CHECK(contains(node->stderr_text(), "forwarding signal=" + std::to_string(SIGHUP)));
  CHECK(wait_registered(port, 5s * kSlowdown, [](const auto& view) {
          return view.count("id-hup") == 0;
        }).count("id-hup") == 0);

  // Without --exec: unregister and exit 0 as well.
  auto plain = start_node(port, "plain", "id-plain", {}, "info");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-plain") == 1;
          }).count("id-plain") == 1);
  plain->signal(SIGHUP);
  CHECK(plain->wait(10s * kSlowdown) == 0);
  CHECK(contains(plain->stderr_text(), "node stopping signal=" + std::to_string(SIGHUP)));
}

TEST_CASE("faults: node --exec: a child that exits at once gives the node its code",
          "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  struct Case {
    std::vector<std::string> flags;
    int code;
    int starts;
  };
  const std::vector<Case> cases{
      {{"--exec", "sh", "-c", "exit 0"}, 0, 1},
      {{"--exec", "sh", "-c", "exit 3"}, 3, 1},
      {{"--restart", "on-failure", "--exec", "sh", "-c", "exit 0"}, 0, 1},
      {{"--restart", "on-failure", "--restart-limit", "2", "--exec", "sh", "-c", "exit 3"}, 3, 3},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string id = "id-quick-" + std::to_string(n++);
    INFO(id);
    auto node = start_node(port, id.substr(3), id, c.flags, "info");
    CHECK(node->wait(10s * kSlowdown) == c.code);
    const std::string log = node->stderr_text();
    INFO(log);
    std::size_t starts = 0;
    for (auto at = log.find("child started"); at != std::string::npos;
         at = log.find("child started", at + 1)) {
      ++starts;
    }
    CHECK(starts == static_cast<std::size_t>(c.starts));
    CHECK(contains(log, "node stopped"));
    CHECK(wait_registered(port, 5s * kSlowdown, [&](const auto& view) {
            return view.count(id) == 0;
          }).count(id) == 0);
  }
}

TEST_CASE("faults: node --exec: a child that ignores SIGTERM is killed after --stop-timeout",
          "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  ScriptDir dir;
  const std::string script = dir.script(
      "stubborn.sh", "trap '' TERM\n" + write_file("child", "$$") + "while :; do sleep 1; done\n");
  auto node = start_node(port, "stubborn", "id-stubborn",
                         {"--stop-timeout", "0.5", "--exec", script}, "info");
  Survivors survivors;
  const int child = dir.read_number("child", 10s * kSlowdown);
  survivors.pids = {child};
  REQUIRE(child > 0);
  node->signal(SIGTERM);
  CHECK(node->wait(10s * kSlowdown) == 0);
  CHECK(process_gone(child, 5s * kSlowdown));
  CHECK(contains(node->stderr_text(), "still running 500 ms after the signal: killing it"));
}

TEST_CASE("faults: node --exec: garbage lines from the child are named, the node carries on",
          "[faults][exec]") {
  std::uint16_t port = 0;
  auto pmd = start_pmd(0, port);
  auto sink = start_node(port, "sink", "id-sink");
  REQUIRE(wait_registered(port, 10s * kSlowdown, [](const auto& view) {
            return view.count("id-sink") == 1;
          }).count("id-sink") == 1);
  ScriptDir dir;
  const std::string script = dir.script("garbage.sh", R"(echo 'not json'
echo '{"to":1,"payload":{}}'
echo '{"payload":{}}'
echo '[1,2]'
printf '\001\002\377\n'
echo '{"to":"sink","payload":{"ok":true}}'
exec cat > /dev/null
)");
  auto node = start_node(port, "garbage", "id-garbage", {"--exec", script}, "info");
  CHECK(sink->wait_for_line(R"("payload":{"ok":true})", 10s * kSlowdown));
  CHECK_FALSE(node->wait(0ms));  // still running
  node->signal(SIGTERM);
  CHECK(node->wait(10s * kSlowdown) == 0);
  const std::string log = node->stderr_text();
  INFO(log);
  CHECK(contains(log, "child output line 1: invalid JSON"));
  CHECK(contains(log, "child output line 2: 'to' is not a string"));
  CHECK(contains(log, "child output line 3: missing 'to'"));
  CHECK(contains(log, "child output line 4: expected an object"));
  CHECK(contains(log, "child output line 5: invalid JSON"));
  CHECK_FALSE(contains(log, "child output line 6"));
  const auto stats = final_stats(log);
  CHECK(stats.at("lines") == 6);
  CHECK(stats.at("bad_lines") == 5);
  CHECK(stats.at("sent") == 1);
}

TEST_CASE("faults: 20 nodes auto-starting a PMD on one fresh port: one PMD, all registered",
          "[faults]") {
  const std::uint16_t port = free_port();
  REQUIRE(auto_started_daemons(port).empty());
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (int i = 0; i < 20; ++i) {
    const std::string n = std::to_string(i);
    nodes.push_back(std::make_unique<ChildProcess>(std::vector<std::string>{
        distflow_binary(), "node", "--port", std::to_string(port), "--alias", "race-" + n,
        "--node-id", "id-race-" + n, "--log-level", "warn"}));
  }
  const auto view = wait_registered(port, 30s * kSlowdown,
                                    [](const auto& nodes_seen) { return nodes_seen.size() == 20; });
  CHECK(view.size() == 20);
  // The losers fail to bind and exit: exactly one daemon is left serving the port.
  std::vector<int> daemons = auto_started_daemons(port);
  const auto deadline = Clock::now() + 10s * kSlowdown;
  while (daemons.size() > 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);  // polling, bounded by the deadline
    daemons = auto_started_daemons(port);
  }
  CHECK(daemons.size() == 1);
  CHECK(pmd_serves(port));
  for (auto& node : nodes) {
    INFO(node->stderr_text());
    CHECK_FALSE(node->wait(0ms));  // none gave up
    node->signal(SIGTERM);
  }
  for (auto& node : nodes)
    CHECK(node->wait(10s * kSlowdown) == 0);
  for (int pid : daemons) {
    ::kill(pid, SIGTERM);
    if (!process_gone(pid, 5s * kSlowdown))
      ::kill(pid, SIGKILL);
  }
  std::filesystem::remove(pmd_log_path(port));
}

}  // namespace distflow::test
