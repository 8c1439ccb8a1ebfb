// End-to-end tests of request/reply from the shell (issue 14): `distflow call`
// against `node --exec` scripts that answer with {"replyTo": ref, ...}, and
// against a plain node's stdout reader. Real binary, test PMD on an ephemeral
// port, every wait bounded, every process stopped by its PID.

#include <fstream>
#include <iterator>
#include <signal.h>
#include <string>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "node_cluster.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

std::string kv_script() {
  return std::string(DISTFLOW_SOURCE_DIR) + "/examples/shell/kv.sh";
}

// A script that answers every request with its own payload.
constexpr const char* kEcho = "exec jq -c --unbuffered '{replyTo: .ref, payload: .payload}'\n";

RunResult call(Cluster& cluster, const std::vector<std::string>& rest,
               const std::string& stdin_data = {}) {
  std::vector<std::string> argv = cluster.args({"call"});
  argv.insert(argv.end(), rest.begin(), rest.end());
  return run(argv, cluster.env, 30s, stdin_data);
}

}  // namespace

TEST_CASE("modes: call asks the shell key-value store (a jq --exec script)", "[modes][call]") {
  Cluster cluster;
  auto kv = cluster.node("kv", {"--exec", kv_script()});

  // A cast (no answer wanted), then calls.
  REQUIRE(cluster.send({"kv", R"({"type":"set","key":"a","value":1})"}).code == 0);
  auto set = call(cluster, {"kv", R"({"type":"set","key":"b","value":[2,3]})"});
  CHECK(set.code == 0);
  CHECK(set.out == "{\"ok\":true}\n");
  auto get = call(cluster, {"kv", R"({"type":"get","key":"a"})"});
  CHECK(get.code == 0);
  CHECK(get.out == "{\"value\":1}\n");
  CHECK(call(cluster, {"kv", R"({"type":"keys"})"}).out == "{\"keys\":[\"a\",\"b\"]}\n");
  CHECK(call(cluster, {"kv", R"({"type":"has","key":"z"})"}).out == "{\"has\":false}\n");
  CHECK(call(cluster, {"kv", R"({"type":"size"})"}).out == "{\"size\":2}\n");
}

TEST_CASE("modes: call fails with the reason: unknown target, timeout, target killed",
          "[modes][call]") {
  Cluster cluster;
  TempDir dir;
  auto unknown = call(cluster, {"nobody", "1"});
  CHECK(unknown.code == 1);
  CHECK(unknown.err.find("unknown target 'nobody'") != std::string::npos);
  CHECK(unknown.out.empty());

  // A script that keeps every request (in a file) and never answers.
  const std::string seen = (dir.path / "seen").string();
  auto mute =
      cluster.node("mute", {"--exec", dir.script("mute.sh", "exec tee " + seen + " >/dev/null\n")});
  auto late = call(cluster, {"mute", "1", "--timeout", "300ms"});
  CHECK(late.code == 1);
  CHECK(late.err.find("call to 'mute': no reply within 300 ms") != std::string::npos);

  // Killed while a call waits for it: the call ends at once, not at its timeout.
  std::vector<std::string> argv = cluster.args({"call", "mute", "2", "--timeout", "60s"});
  ChildProcess waiting(argv, cluster.env);
  const auto arrived = [&] {
    std::ifstream in(seen);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("\"payload\":2") != std::string::npos;
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!arrived() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  REQUIRE(arrived());
  mute->signal(SIGKILL);
  const auto exit = waiting.wait(10s);
  REQUIRE(exit);
  CHECK(*exit == 1);
  const std::string err = waiting.stderr_text();
  INFO(err);
  CHECK(err.find("call to 'mute' failed") != std::string::npos);
  // The PMD's leave or the lost link, whichever the caller hears first.
  CHECK((err.find("'mute' left") != std::string::npos ||
         err.find("connection lost to 'mute'") != std::string::npos));
}

TEST_CASE("modes: call - keeps many requests in flight and prints replies in order",
          "[modes][call]") {
  Cluster cluster;
  TempDir dir;
  auto echo = cluster.node("echo", {"--exec", dir.script("echo.sh", kEcho)});
  const std::string lines = numbered_lines(3000, R"({"n":)", "}") + "not json\n";
  auto result = call(cluster, {"echo", "-", "--inflight", "128"}, lines);
  CHECK(result.code == 1);  // the bad line
  CHECK(result.err.find("line 3001: invalid JSON") != std::string::npos);
  std::string expected;
  for (int i = 0; i < 3000; ++i)
    expected += "{\"n\":" + std::to_string(i) + "}\n";
  CHECK(result.out == expected);
}

TEST_CASE("modes: a node's stdout shows the ref; a replyTo line on its stdin answers",
          "[modes][call]") {
  Cluster cluster;
  auto server = cluster.node("server");
  std::vector<std::string> argv = cluster.args({"call", "server", R"({"q":"ping"})"});
  ChildProcess caller(argv, cluster.env);
  auto request = server->read_line(10s);
  REQUIRE(request);
  const auto at = request->find("\"ref\":\"");
  REQUIRE(at != std::string::npos);
  const std::string ref = request->substr(at + 7, request->find('"', at + 7) - at - 7);
  CHECK(payload_of(*request) == R"({"q":"ping"})");
  // An unknown ref is a bad line, reported with its number; the node goes on.
  server->write(R"({"replyTo":"nope","payload":1})"
                "\n");
  server->write(R"({"replyTo":")" + ref + R"(","payload":{"a":"pong"}})" + "\n");
  CHECK(caller.wait(10s) == 0);
  CHECK(caller.read_all(1s) == "{\"a\":\"pong\"}\n");
  server->close_stdin();
  CHECK(server->wait(10s) == 0);
  CHECK(server->stderr_text().find("line 1: no request with ref 'nope'") != std::string::npos);
}

TEST_CASE("modes: stats asks a running node over its link; the application never sees it",
          "[modes][call][stats]") {
  Cluster cluster;
  auto sink = cluster.node("sink");
  REQUIRE(cluster.send({"sink", "-"}, numbered_lines(500, R"({"n":)", "}")).code == 0);
  REQUIRE(read_numbered(*sink, 500).empty());

  std::vector<std::string> argv = cluster.args({"stats", "sink", "--json"});
  const auto answer = run(argv, cluster.env);
  INFO(answer.err);
  REQUIRE(answer.code == 0);
  const auto stats = nlohmann::json::parse(answer.out);
  CHECK(stats["alias"] == "sink");
  CHECK(stats["received"] == 500);
  CHECK(stats["mailbox"]["accepted"] == 500);
  CHECK(stats["mailbox"]["delivered"] == 500);
  CHECK(stats["mailbox"]["capacity"] == 1000);
  CHECK(stats["dropped"] == 0);
  CHECK(stats["bytesReceived"].get<std::uint64_t>() > 500 * 10);
  CHECK(stats["uptimeMs"].get<std::uint64_t>() > 0);

  // The text form, and --watch until the reader goes.
  argv = cluster.args({"stats", "sink"});
  const auto text = run(argv, cluster.env);
  CHECK(text.code == 0);
  CHECK(text.out.find("received: 500\n") != std::string::npos);
  CHECK(text.out.find("mailbox: depth=0 highWater=") != std::string::npos);

  // Nothing of it reached the node's stdout: the next line is the next message.
  REQUIRE(cluster.send({"sink", R"({"after":1})"}).code == 0);
  auto next = sink->read_line(10s);
  REQUIRE(next);
  CHECK(payload_of(*next) == R"({"after":1})");

  const auto unknown = run(cluster.args({"stats", "nobody"}), cluster.env);
  CHECK(unknown.code == 1);
  CHECK(unknown.err.find("unknown target 'nobody'") != std::string::npos);
}

}  // namespace distflow::test
