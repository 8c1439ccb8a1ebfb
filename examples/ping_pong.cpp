// ping_pong: two processes exchanging messages through the C++ library API.
//
//   distflow pmd &                # or any PMD on $DISTFLOW_PMD_PORT (default 4369)
//   ./ping_pong pong &            # node 'pong': answers {"ping":n} with {"pong":n}
//   ./ping_pong ping 10000        # node 'ping': N round trips, one at a time
//
// Shows: NodeRuntime::start, send() by alias, replying to message.from() (the
// reply goes out on the replier's own connection), on_message() vs receive().

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "node_runtime.hpp"

namespace {

distflow::NodeOptions options(const char* alias) {
  distflow::NodeOptions o;
  o.alias = alias;
  if (const char* port = std::getenv("DISTFLOW_PMD_PORT")) {
    o.pmd.port = static_cast<std::uint16_t>(std::atoi(port));
  }
  // Auto-starting a PMD re-execs the distflow binary, so it is only used when named.
  if (const char* exe = std::getenv("DISTFLOW_BINARY")) {
    o.executable = exe;
  } else {
    o.auto_start_pmd = false;
  }
  return o;
}

int pong() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before start: every thread inherits it
  auto node = distflow::NodeRuntime::start(options("pong"));
  node->on_message([&](const distflow::Envelope& message) {
    auto ping = nlohmann::json::parse(message.payload());
    node->send(message.from(), nlohmann::json{{"pong", ping["ping"]}}.dump());
  });
  std::printf("pong ready (node %s)\n", node->node_id().c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop, &signal);
  return 0;  // the destructor unregisters and closes every connection
}

int ping(int count) {
  auto node = distflow::NodeRuntime::start(options("ping"));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    node->send("pong", nlohmann::json{{"ping", i}}.dump(),
               [](std::error_code, const std::string& why) {
                 std::fprintf(stderr, "ping: %s\n", why.c_str());
               });
    auto reply = node->receive(std::chrono::seconds(2));
    if (!reply) {
      std::fprintf(stderr, "ping: no answer to ping %d\n", i);
      return 1;
    }
    if (nlohmann::json::parse(reply->payload())["pong"] != i) {
      std::fprintf(stderr, "ping: unexpected reply %.*s\n",
                   static_cast<int>(reply->payload().size()), reply->payload().data());
      return 1;
    }
  }
  const auto elapsed =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start);
  std::printf("%d round trips, mean %.1f us\n", count, elapsed.count() / count);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "pong")
      return pong();
    if (mode == "ping")
      return ping(argc > 2 ? std::atoi(argv[2]) : 1000);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ping_pong: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: ping_pong pong | ping [N]\n");
  return 2;
}
