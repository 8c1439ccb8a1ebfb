// Issue 17 end to end: what an attacker's or a careless user's pass found, each
// with the behaviour it must have now. Real binaries, a test PMD on port 0.

#include <regex>
#include <signal.h>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "node_cluster.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

/// The port a node `alias` listens on, from the PMD.
std::uint16_t node_port(Cluster& cluster, const std::string& alias) {
  RawClient pmd("127.0.0.1", cluster.pmd.port);
  auto reply = pmd.request(R"({"type":"resolve","payload":{"alias":")" + alias + R"("}})");
  REQUIRE(reply);
  const auto at = reply->find("\"port\":");
  REQUIRE(at != std::string::npos);
  return static_cast<std::uint16_t>(std::stoi(reply->substr(at + 7)));
}

}  // namespace

TEST_CASE("attack: send - to a frozen node fails after --timeout, naming it (17 #7)",
          "[modes][attack]") {
  Cluster cluster;
  auto frozen = cluster.node("frozen", {"--overflow", "block"});
  frozen->signal(SIGSTOP);
  // Far more than the socket buffers hold, so the writes stop making progress.
  const auto started = std::chrono::steady_clock::now();
  const auto r = cluster.send({"frozen", "-", "--timeout", "1s"},
                              numbered_lines(300000, R"({"pad":"xxxxxxxxxxxxxxxxxxxx","n":)", "}"));
  const auto took = std::chrono::steady_clock::now() - started;
  frozen->signal(SIGKILL);
  CHECK(r.code == 1);
  CHECK(r.err.find("'frozen'") != std::string::npos);
  CHECK(r.err.find("stalled 1000 ms writing") != std::string::npos);
  CHECK(took < 15s);
}

TEST_CASE("attack: a body over the receiver's --max-frame fails at the sender (17 #9)",
          "[modes][attack]") {
  Cluster cluster;
  auto small = cluster.node("small", {"--max-frame", "1024"});
  const std::string big = "\"" + std::string(2000, 'x') + "\"";
  const auto one = cluster.send({"small", big});
  CHECK(one.code == 1);
  CHECK(one.err.find("exceeds the limit of 'small'") != std::string::npos);
  CHECK(one.err.find("1024 bytes, its --max-frame") != std::string::npos);
  // In a stream: that line is named and skipped, the others arrive, the count is exact.
  const auto stream = cluster.send({"small", "-"}, "{\"n\":0}\n" + big + "\n{\"n\":1}\n");
  CHECK(stream.code == 1);
  CHECK(stream.err.find("line 2: message of") != std::string::npos);
  CHECK(stream.err.find("1 invalid line(s) skipped, 2 message(s) sent") != std::string::npos);
  CHECK(read_numbered(*small, 2).empty());
}

TEST_CASE("attack: a connection refused at the node's limit is an error, in words (17 #5)",
          "[modes][attack]") {
  Cluster cluster;
  auto full = cluster.node("full", {"--max-connections", "1"});
  RawClient holder("127.0.0.1", node_port(cluster, "full"));
  holder.send_frame(R"({"from":"x","to":"y","payload":0,"timestamp":1})");  // a valid peer
  REQUIRE(full->read_line());
  const auto r = cluster.send({"full", "{}"});
  CHECK(r.code == 1);
  CHECK(r.err.find("refused the connection: too many connections: 1 open") != std::string::npos);
}

TEST_CASE("attack: the PMD refuses past --max-connections in words (17 #5)", "[modes][attack]") {
  PmdProcess pmd({"--max-connections", "1"});
  RawClient holder("127.0.0.1", pmd.port);
  REQUIRE(holder.request(R"({"type":"list","requestId":1})"));
  const auto r = run({distflow_binary(), "pmd", "list", "--port", pmd.port_str()});
  CHECK(r.code == 1);
  CHECK(r.err.find("refused the connection: too many connections: 1 open") != std::string::npos);
}

TEST_CASE("attack: idle connections do not hold slots for ever (17 #5)", "[modes][attack]") {
  Cluster cluster;
  auto node = cluster.node("idle-target", {"--max-connections", "2"});
  // Two sockets that never say anything: closed after the hello window (10 s).
  RawClient first("127.0.0.1", node_port(cluster, "idle-target"));
  RawClient second("127.0.0.1", node_port(cluster, "idle-target"));
  CHECK(first.wait_closed(15s));
  CHECK(second.wait_closed(1s));
  // The slots are free again.
  CHECK(cluster.send({"idle-target", "{\"n\":0}"}).code == 0);
  CHECK(read_numbered(*node, 1).empty());
}

TEST_CASE("attack: a node sending to a frozen peer stops promptly on SIGTERM (17 #6)",
          "[modes][attack]") {
  Cluster cluster;
  auto frozen = cluster.node("ice", {"--overflow", "block"});
  auto sender = cluster.node("busy-sender", {"--max-outbox", "64KiB"});
  frozen->signal(SIGSTOP);
  // More than the socket buffers and the 64 KiB queue: the sender blocks in send()
  // and stops reading its stdin, so the feeding runs on its own thread.
  std::thread feeder([&] {
    try {
      sender->write(
          numbered_lines(200000, R"({"to":"ice","payload":{"pad":"xxxxxxxxxxxxxxxx","n":)", "}}"));
    } catch (const std::exception&) {
      // The node stopped reading: expected once it is told to stop.
    }
  });
  // Held back: the feeder cannot finish while the node is stuck on "ice".
  CHECK_FALSE(cluster.wait_event("peer:leave", "busy-sender", 1s));
  const auto stopped_at = std::chrono::steady_clock::now();
  sender->signal(SIGTERM);
  const auto code = sender->wait(15s);
  const auto took = std::chrono::steady_clock::now() - stopped_at;
  sender->signal(SIGKILL);  // only if it did not stop: unblocks the feeder
  feeder.join();
  frozen->signal(SIGKILL);
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(took < 8s);  // the flush and the stop time-outs, not a wait per line
}

TEST_CASE("attack: an --exec child that closes its stdin but runs on has failed (17 #8)",
          "[modes][attack]") {
  Cluster cluster;
  TempDir dir;
  // Reads one line, closes stdin, then sleeps: the node must not lose silently.
  const std::string script = dir.script("deaf.sh", "read -r line; exec 0<&-; sleep 300\n");
  auto deaf = std::make_unique<ChildProcess>(
      cluster.args({"node", "--alias", "deaf", "--stop-timeout", "1", "--exec", script}),
      cluster.env);
  REQUIRE(cluster.wait_event("peer:join", "deaf"));
  cluster.send({"deaf", "-"}, numbered_lines(20000, R"({"n":)", "}"));
  const auto code = deaf->wait(20s);
  REQUIRE(code);
  CHECK(*code != 0);
  const std::string err = deaf->stderr_text();
  INFO(err);
  CHECK(err.find("child's stdin closed (Broken pipe)") != std::string::npos);
  CHECK(err.find("has failed: stopping it") != std::string::npos);
  std::smatch dropped;
  REQUIRE(std::regex_search(err, dropped, std::regex(R"(dropped=(\d+))")));
  CHECK(std::stoull(dropped[1]) > 0);
}

}  // namespace distflow::test
