// End-to-end runs of examples/: the C++ programs over the library API and the shell
// demo, each against a private PMD on a free port. Only built with the examples.

#include <csignal>
#include <string>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "support.hpp"

namespace distflow::test {
namespace {

std::string example(const std::string& name) {
  return std::string(DISTFLOW_EXAMPLES_DIR) + "/" + name;
}

}  // namespace

TEST_CASE("examples: ping_pong exchanges round trips through the library API", "[examples]") {
  PmdProcess pmd;
  const std::map<std::string, std::string> env{{"DISTFLOW_PMD_PORT", pmd.port_str()}};
  ChildProcess pong({example("ping_pong"), "pong"}, env);
  REQUIRE(pong.wait_for_line("pong ready"));
  const auto ping = run({example("ping_pong"), "ping", "200"}, env);
  CHECK(ping.code == 0);
  CHECK(ping.out.find("200 round trips") != std::string::npos);
  pong.signal(SIGTERM);
  CHECK(pong.wait() == 0);
}

TEST_CASE("examples: multi_node instances discover each other and broadcast", "[examples]") {
  PmdProcess pmd;
  const std::map<std::string, std::string> env{{"DISTFLOW_PMD_PORT", pmd.port_str()}};
  ChildProcess a({example("multi_node"), "a", "3"}, env);
  ChildProcess b({example("multi_node"), "b", "3"}, env);
  ChildProcess c({example("multi_node"), "c", "3"}, env);
  for (auto* node : {&a, &b, &c}) {
    const std::string out = node->read_all(15s);
    const auto code = node->wait(5s);
    INFO(out << node->stderr_text());
    CHECK(code == 0);
    int heard = 0;
    for (const char* peer : {"a", "b", "c"}) {
      heard += out.find(std::string("got hello from ") + peer) != std::string::npos;
    }
    CHECK(heard == 2);  // from both others, never from itself
  }
}

TEST_CASE("examples: kv_store: casts write, calls read; distflow call asks it too", "[examples]") {
  PmdProcess pmd;
  const std::map<std::string, std::string> env{{"DISTFLOW_PMD_PORT", pmd.port_str()}};
  const auto kv = [&](std::vector<std::string> args) {
    args.insert(args.begin(), example("kv_store"));
    return run(args, env);
  };
  CHECK(kv({"get", "greeting"}).code == 1);  // no server: a clear error
  ChildProcess server({example("kv_store"), "server"}, env);
  // The server says it is ready on stderr; the first client retries until it is.
  for (int attempt = 0; attempt < 200 && kv({"keys"}).code != 0; ++attempt) {
  }
  // Casts from separate processes: each is written before its process exits; the
  // server applies them as it reads them, so a read may need a moment to see one.
  const auto eventually = [&](std::vector<std::string> args, const std::string& expected) {
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (kv(args).out == expected)
        return true;
    }
    return false;
  };
  CHECK(kv({"set", "greeting", R"("hi")"}).code == 0);
  CHECK(eventually({"get", "greeting"}, "{\"value\":\"hi\"}\n"));
  CHECK(kv({"set", "n", "42"}).code == 0);
  CHECK(eventually({"keys"}, "{\"keys\":[\"greeting\",\"n\"]}\n"));
  CHECK(kv({"has", "n"}).out == "{\"has\":true}\n");
  CHECK(kv({"size"}).out == "{\"size\":2}\n");
  CHECK(kv({"delete", "n"}).code == 0);
  CHECK(eventually({"has", "n"}, "{\"has\":false}\n"));
  CHECK(kv({"get", "n"}).out == "{\"value\":null}\n");
  // The shell's call speaks the same protocol.
  const auto shell = run(
      {distflow_binary(), "call", "-p", pmd.port_str(), "kv", R"({"type":"get","key":"greeting"})"},
      env);
  CHECK(shell.out == "{\"value\":\"hi\"}\n");
  CHECK(kv({"bogus"}).code == 1);
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
}

TEST_CASE("examples: demo.sh drives a shell node with a send pipeline", "[examples]") {
  const auto demo = run({std::string(DISTFLOW_SOURCE_DIR) + "/examples/demo.sh", "3"},
                        {{"DISTFLOW", distflow_binary()}}, 30s);
  INFO(demo.err);
  CHECK(demo.code == 0);
  for (const char* reply : {"HELLO 1", "HELLO 2", "HELLO 3"}) {
    CHECK(demo.out.find(reply) != std::string::npos);
  }
}

TEST_CASE("examples: multihost.sh sends alias@host both ways between namespace hosts",
          "[examples][multihost]") {
  // Its PMDs listen inside the namespaces only; a high port all the same.
  const auto demo = run({std::string(DISTFLOW_SOURCE_DIR) + "/examples/multihost.sh"},
                        {{"DISTFLOW", distflow_binary()},
                         {"DISTFLOW_PMD_PORT", std::to_string(20000 + ::getpid() % 20000)}},
                        60s);
  if (demo.code == 77) {
    WARN("examples/multihost.sh skipped: " << demo.err);
    return;
  }
  INFO(demo.out << demo.err);
  CHECK(demo.code == 0);
  CHECK(demo.out.find(R"("payload":{"hello":"from alpha"})") != std::string::npos);
  CHECK(demo.out.find(R"("payload":{"reply":"from beta"})") != std::string::npos);
  CHECK(demo.out.find("@10.203.0.1\"") != std::string::npos);
  CHECK(demo.out.find("== refused: cookie mismatch") != std::string::npos);
  // The kv store on host b answered a call from host a.
  CHECK(demo.out.find("{\"value\":\"hi\"}\n") != std::string::npos);
}

}  // namespace distflow::test
