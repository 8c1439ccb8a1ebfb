// End-to-end tests of `distflow node`, `send` and `watch` with the real binary:
// a test PMD on an ephemeral port, nodes with their stdin/stdout on pipes,
// `--exec` scripts written to a temp dir. Every wait has a deadline; every
// process is stopped by its PID (ChildProcess's destructor).

#include <filesystem>
#include <fstream>
#include <memory>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "node_cluster.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

namespace fs = std::filesystem;

void expect_numbered(ChildProcess& receiver, int count) {
  CHECK(read_numbered(receiver, count).empty());
}

}  // namespace

TEST_CASE("modes: node ping-pong and broadcast among 3 processes", "[modes][node]") {
  Cluster cluster;
  auto a = cluster.node("a");
  auto b = cluster.node("b");
  auto c = cluster.node("c");

  a->write(R"({"to":"b","payload":{"ping":1}})"
           "\n");
  auto at_b = b->read_line();
  REQUIRE(at_b);
  CHECK(payload_of(*at_b) == R"({"ping":1})");
  CHECK(at_b->find(R"("alias":"a")") != std::string::npos);
  b->write(R"({"to":"a","payload":{"pong":1}})"
           "\n");
  auto at_a = a->read_line();
  REQUIRE(at_a);
  CHECK(payload_of(*at_a) == R"({"pong":1})");

  // c broadcasts to the other two, by alias.
  c->write(R"({"to":"a","payload":"all"})"
           "\n"
           R"({"to":"b","payload":"all"})"
           "\n");
  for (auto* receiver : {a.get(), b.get()}) {
    auto line = receiver->read_line();
    REQUIRE(line);
    CHECK(payload_of(*line) == R"("all")");
    CHECK(line->find(R"("alias":"c")") != std::string::npos);
  }

  // stdin EOF: each node flushes, unregisters and exits 0.
  for (auto* node : {a.get(), b.get(), c.get()}) {
    node->close_stdin();
    CHECK(node->wait(10s) == 0);
  }
  CHECK(cluster.wait_event("peer:leave", "c"));
}

TEST_CASE("modes: node delivers 100 000 messages from one sender node in order", "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("r", {"--overflow", "block"});
  auto sender = cluster.node("s");
  // The receiver's stdout is read while the lines go in: under `block` it paces the
  // sender, whose outbound queue holds only --max-outbox (4 MiB) of the 12 MB.
  std::thread writer([&] {
    sender->write(numbered_lines(100000, R"({"to":"r","payload":{"n":)", "}}"));
    sender->close_stdin();
  });
  expect_numbered(*receiver, 100000);
  writer.join();
  CHECK(sender->wait(10s) == 0);
}

TEST_CASE("modes: node reports a bad input line with its number and keeps running",
          "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("r");
  auto sender = cluster.node("s");
  sender->write(
      "not json\n{\"payload\":1}\n{\"to\":\"nobody\",\"payload\":1}\n"
      R"({"to":"r","payload":{"n":0}})"
      "\n");
  expect_numbered(*receiver, 1);
  sender->close_stdin();
  CHECK(sender->wait(10s) == 0);
  const std::string err = sender->stderr_text();
  CHECK(err.find("line 1: invalid JSON") != std::string::npos);
  CHECK(err.find("line 2: missing 'to'") != std::string::npos);
  CHECK(err.find("line 3:") != std::string::npos);
  CHECK(err.find("nobody") != std::string::npos);
}

TEST_CASE("modes: send - delivers 100 000 stdin lines in order over one connection",
          "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("worker", {"--overflow", "block"});
  // The receiver's stdout is read while send runs: under `block` it paces the sender.
  RunResult r;
  std::thread sender([&] {
    r = cluster.send({"worker", "-"}, numbered_lines(100000, R"({"n":)", "}"));
  });
  const std::string problem = read_numbered(*receiver, 100000);
  sender.join();
  CHECK(problem.empty());
  INFO(r.err);
  CHECK(r.code == 0);
}

TEST_CASE("modes: send with one body, --count, and no body reading stdin", "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("worker", {"--mailbox-size", "100"});
  CHECK(cluster.send({"worker", R"({"n":0})"}).code == 0);
  expect_numbered(*receiver, 1);
  CHECK(cluster.send({"worker", "[1,2]", "--count", "3"}).code == 0);
  for (int i = 0; i < 3; ++i) {
    auto line = receiver->read_line();
    REQUIRE(line);
    CHECK(payload_of(*line) == "[1,2]");
  }
  CHECK(cluster.send({"worker"}, "\"from stdin\"\r\n").code == 0);
  auto line = receiver->read_line();
  REQUIRE(line);
  CHECK(payload_of(*line) == R"("from stdin")");
}

TEST_CASE("modes: send names an invalid line, sends the valid ones and exits 1", "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("worker");
  const auto r = cluster.send({"worker", "-"}, "{\"n\":0}\n\n{bad\n{\"n\":1}\n");
  CHECK(r.code == 1);
  CHECK(r.err.find("line 3: invalid JSON") != std::string::npos);
  expect_numbered(*receiver, 2);

  const auto body = cluster.send({"worker", "{bad"});
  CHECK(body.code == 1);
  CHECK(body.err.find("invalid JSON body") != std::string::npos);
}

TEST_CASE("modes: send to an unknown target exits 1 with a clear error", "[modes][node]") {
  Cluster cluster;
  const auto r = cluster.send({"nobody", "{}"});
  CHECK(r.code == 1);
  CHECK(r.err.find("unknown target 'nobody'") != std::string::npos);
}

TEST_CASE("modes: send with no PMD exits 1 with a clear error and starts none", "[modes][node]") {
  const std::string port = std::to_string(free_port());
  const auto r =
      run({distflow_binary(), "send", "--port", port, "x", "{}"}, {{"DISTFLOW_PMD_PORT", port}});
  CHECK(r.code == 1);
  CHECK(r.err.find("distflow send: error:") != std::string::npos);
  CHECK(r.err.find("127.0.0.1:" + port) != std::string::npos);
  // Still nobody there: send never starts a PMD.
  const auto again =
      run({distflow_binary(), "send", "--port", port, "x", "{}"}, {{"DISTFLOW_PMD_PORT", port}});
  CHECK(again.code == 1);
}

TEST_CASE("modes: node --exec runs a script that answers, with its environment", "[modes][node]") {
  Cluster cluster;
  TempDir dir;
  const std::string script = dir.script("echo.sh", R"(
while read -r line; do
  printf '{"to":"client","payload":{"by":"%s","port":%s,"got":%s}}\n' \
    "$DISTFLOW_ALIAS" "$DISTFLOW_PMD_PORT" "$line"
done
)");
  auto echo = cluster.node("echo", {"--exec", script});
  auto client = cluster.node("client");
  client->write(R"({"to":"echo","payload":{"x":1}})"
                "\n");
  auto reply = client->read_line();
  REQUIRE(reply);
  CHECK(reply->find(R"("by":"echo")") != std::string::npos);
  CHECK(reply->find("\"port\":" + cluster.pmd.port_str()) != std::string::npos);
  CHECK(reply->find(R"("payload":{"x":1})") != std::string::npos);
  CHECK(reply->find(R"("alias":"client")") != std::string::npos);

  // SIGTERM goes to the child; the node then unregisters and exits 0.
  echo->signal(SIGTERM);
  CHECK(echo->wait(10s) == 0);
  CHECK(cluster.wait_event("peer:leave", "echo"));
}

TEST_CASE("modes: node --exec propagates the child's exit code", "[modes][node]") {
  Cluster cluster;
  auto node = std::make_unique<ChildProcess>(
      cluster.args({"node", "--alias", "three", "--exec", "sh", "-c", "exit 3"}), cluster.env);
  CHECK(node->wait(10s) == 3);
  // Restarts exhausted: the last exit code is the node's.
  auto limited = std::make_unique<ChildProcess>(
      cluster.args({"node", "--alias", "four", "--restart", "always", "--restart-limit", "2",
                    "--exec", "sh", "-c", "exit 4"}),
      cluster.env);
  CHECK(limited->wait(10s) == 4);
  CHECK(limited->stderr_text().find("restart limit reached") != std::string::npos);
}

TEST_CASE("modes: node --restart on-failure restarts a failing child", "[modes][node]") {
  Cluster cluster;
  TempDir dir;
  const std::string runs = (dir.path / "runs").string();
  const std::string script = dir.script("flaky.sh", "n=$(cat '" + runs +
                                                        "' 2>/dev/null || echo 0)\n"
                                                        "n=$((n + 1)); echo $n > '" +
                                                        runs +
                                                        "'\n"
                                                        "[ $n -ge 3 ] && exit 0\nexit 1\n");
  auto node = std::make_unique<ChildProcess>(
      cluster.args({"node", "--alias", "flaky", "--restart", "on-failure", "--exec", script}),
      cluster.env);
  CHECK(node->wait(10s) == 0);
  std::ifstream in(runs);
  int count = 0;
  in >> count;
  CHECK(count == 3);  // failed, failed, succeeded: not restarted after success
}

TEST_CASE("modes: watch --json sees a node join and leave when SIGKILLed", "[modes][node]") {
  Cluster cluster;
  auto first = cluster.node("first");
  ChildProcess watch(cluster.args({"watch", "--json"}), cluster.env);
  auto present = watch.read_line();
  REQUIRE(present);
  CHECK(present->find(R"("event":"peer:present")") != std::string::npos);
  CHECK(present->find(R"("alias":"first")") != std::string::npos);

  auto second = cluster.node("second");
  auto join = watch.wait_for_line("peer:join");
  REQUIRE(join);
  CHECK(join->find(R"("alias":"second")") != std::string::npos);

  second->signal(SIGKILL);
  auto leave = watch.wait_for_line("peer:leave");
  REQUIRE(leave);
  CHECK(leave->find(R"("alias":"second")") != std::string::npos);
  CHECK(leave->find(R"("reason":"socket_closed")") != std::string::npos);
}

TEST_CASE("modes: watch NODE --until-leave exits 0 when the node leaves", "[modes][node]") {
  Cluster cluster;
  auto node = cluster.node("doomed");
  auto other = cluster.node("other");
  ChildProcess watch(cluster.args({"watch", "doomed", "--until-leave"}), cluster.env);
  auto present = watch.read_line();
  REQUIRE(present);
  CHECK(present->find("doomed") != std::string::npos);
  other->signal(SIGKILL);  // not followed: ignored
  node->signal(SIGKILL);
  CHECK(watch.wait(10s) == 0);
  const std::string rest = watch.read_all(2s);
  CHECK(rest.find("leave") != std::string::npos);
  CHECK(rest.find("other") == std::string::npos);

  CHECK(run(cluster.args({"watch", "--until-leave"}), cluster.env).code == 2);
}

}  // namespace distflow::test

namespace distflow::test {

TEST_CASE("modes: pretty-printed bodies reach a node's NDJSON as one line each (issue 17 #3)",
          "[modes][node]") {
  Cluster cluster;
  auto receiver = cluster.node("inj");
  const std::string forged =
      "[\n{\"from\":\"bank\",\"to\":\"inj\",\"timestamp\":1,\"payload\":{\"pay\":1}}\n]";
  CHECK(cluster.send({"inj", forged}).code == 0);
  // A raw peer (the TypeScript node's frames) with a pretty-printed payload.
  RawClient pmd("127.0.0.1", cluster.pmd.port);
  const auto node = pmd.request(R"({"type":"resolve","payload":{"alias":"inj"},"requestId":7})");
  REQUIRE(node);
  const auto at = node->find("\"port\":");
  REQUIRE(at != std::string::npos);
  RawClient raw("127.0.0.1", static_cast<std::uint16_t>(std::stoi(node->substr(at + 7))));
  raw.send_frame(
      "{\"from\":\"ts\",\"to\":\"x\",\"timestamp\":2,\"payload\":{\r\n  \"k\": \"v w\"\n}}");
  for (const std::string want :
       {R"([{"from":"bank","to":"inj","timestamp":1,"payload":{"pay":1}}])", R"({"k":"v w"})"}) {
    auto line = receiver->read_line();
    REQUIRE(line);
    CHECK(payload_of(*line) == want);
  }
}

}  // namespace distflow::test
