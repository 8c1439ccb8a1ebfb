// multi_node: several nodes discover each other through the PMD and broadcast.
//
//   distflow pmd &                      # or any PMD on $DISTFLOW_PMD_PORT
//   ./multi_node a 3 & ./multi_node b 3 & ./multi_node c 3
//
// Each instance registers under its alias, waits (discover() + on_peer_join)
// until it sees N-1 peers, sends one greeting to every peer, prints the
// greetings it receives, and exits once it has one from each peer.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "node_runtime.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: multi_node ALIAS NODES\n");
    return 2;
  }
  const std::string alias = argv[1];
  const std::size_t peers_wanted = static_cast<std::size_t>(std::atoi(argv[2])) - 1;
  distflow::NodeOptions options;
  options.alias = alias;
  if (const char* port = std::getenv("DISTFLOW_PMD_PORT")) {
    options.pmd.port = static_cast<std::uint16_t>(std::atoi(port));
  }
  options.auto_start_pmd = false;  // one PMD, started beforehand, for everyone
  try {
    auto node = distflow::NodeRuntime::start(options);

    // Peer events arrive on the I/O thread: hand them over under a mutex.
    std::mutex mutex;
    std::condition_variable changed;
    std::set<std::string> peers;
    node->on_peer_join([&](const distflow::NodeInfo& peer, std::string_view) {
      std::lock_guard lock(mutex);
      peers.insert(peer.node_id);
      changed.notify_all();
    });
    {
      std::unique_lock lock(mutex);
      for (const auto& peer : node->discover())
        peers.insert(peer.node_id);
      if (!changed.wait_for(lock, std::chrono::seconds(10),
                            [&] { return peers.size() >= peers_wanted; })) {
        std::fprintf(stderr, "%s: saw %zu peers, expected %zu\n", alias.c_str(), peers.size(),
                     peers_wanted);
        return 1;
      }
    }

    // Broadcast: one send per peer; each destination gets its own connection.
    const std::string greeting = nlohmann::json{{"hello", alias}}.dump();
    for (const auto& peer : node->discover())
      node->send(peer.node_id, greeting);

    std::set<std::string> heard;
    while (heard.size() < peers_wanted) {
      auto message = node->receive(std::chrono::seconds(10));
      if (!message) {
        std::fprintf(stderr, "%s: heard from %zu of %zu peers\n", alias.c_str(), heard.size(),
                     peers_wanted);
        return 1;
      }
      const auto payload = nlohmann::json::parse(message->payload());
      heard.insert(payload["hello"].get<std::string>());
      std::printf("%s got hello from %s\n", alias.c_str(),
                  payload["hello"].get<std::string>().c_str());
      std::fflush(stdout);
    }
    node->flush();  // our greetings are on the wire before we leave
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multi_node: error: %s\n", e.what());
    return 1;
  }
}
