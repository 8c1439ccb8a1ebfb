// kv_store: the noex tutorial's distributed key-value store, the distflow way. One node,
// alias 'kv', owns the map. Reads are calls (get, has, keys, size: the client waits for
// the reply); writes are casts (set, delete: fire-and-forget, in order per client).
// PMD: $DISTFLOW_PMD_PORT (default 4369). The protocol is examples/shell/kv.sh's, so
// either server answers either client, and `distflow call kv '{"type":"keys"}'` too.
//   ./kv_store server                 # the 'kv' node (Ctrl-C to stop)
//   ./kv_store set greeting '"hi"'    # the value is JSON: '"text"', 42, [1,2]
//   ./kv_store get greeting           # prints {"value":"hi"}; also: has KEY, keys, size,
//                                     # delete KEY
// Shows request/reply: on_message() + reply() on the server, call() on the client.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "node_runtime.hpp"

using nlohmann::json;

namespace {

distflow::NodeOptions options(const std::string& alias) {
  distflow::NodeOptions o;
  o.alias = alias;  // empty for clients: a generated node id is enough to be answered
  if (const char* port = std::getenv("DISTFLOW_PMD_PORT"))
    o.pmd.port = static_cast<std::uint16_t>(std::atoi(port));
  o.auto_start_pmd = false;
  return o;
}

// A cast changes the map; a call reads it. Runs on the dispatcher thread only.
struct Store {
  std::map<std::string, json> data;

  void cast(const json& request) {
    const std::string type = request.value("type", ""), key = request.value("key", "");
    if (type == "set")
      data[key] = request.value("value", json());
    if (type == "delete")
      data.erase(key);
  }

  json call(const json& request) const {
    const std::string type = request.value("type", ""), key = request.value("key", "");
    if (type == "get") {
      auto it = data.find(key);
      return {{"value", it == data.end() ? json() : it->second}};
    }
    if (type == "has")
      return {{"has", data.count(key) > 0}};
    if (type == "size")
      return {{"size", data.size()}};
    if (type == "keys") {
      json keys = json::array();
      for (const auto& entry : data)
        keys.push_back(entry.first);
      return {{"keys", keys}};
    }
    return {{"error", "unknown request type " + json(type).dump()}};
  }
};

int server() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before start: every thread inherits it
  auto node = distflow::NodeRuntime::start(options("kv"));
  Store store;
  node->on_message([&](const distflow::Envelope& message) {
    const json request = json::parse(message.payload());  // a throw is logged and counted
    if (message.is_request()) {
      store.cast(request);  // a set or delete sent as a call is answered {"ok":true}
      const bool write =
          request.value("type", "") == "set" || request.value("type", "") == "delete";
      node->reply(message, write ? json{{"ok", true}}.dump() : store.call(request).dump());
    } else {
      store.cast(request);
    }
  });
  std::fprintf(stderr, "kv ready (node %s)\n", node->node_id().c_str());
  int signal = 0;
  sigwait(&stop, &signal);
  return 0;  // the destructor unregisters and closes every connection
}

int client(int argc, char** argv) {
  auto node = distflow::NodeRuntime::start(options(""));
  const std::string type = argv[1];
  json request = {{"type", type}};
  if (argc > 2)
    request["key"] = argv[2];
  if (argc > 3)
    request["value"] = json::parse(argv[3]);
  if (type == "set" || type == "delete") {
    node->send_sync("kv", request.dump());  // a cast: written, not answered
    return 0;
  }
  // Throws "call to 'kv': no reply within 5000 ms", or "unknown target 'kv'...".
  const auto reply = node->call("kv", request.dump(), std::chrono::seconds(5)).get();
  std::printf("%.*s\n", static_cast<int>(reply.payload().size()), reply.payload().data());
  return json::parse(reply.payload()).contains("error") ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (!mode.empty())
      return mode == "server" ? server() : client(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kv_store: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: kv_store server | set KEY JSON | delete KEY | get KEY | has KEY | keys | "
               "size\n");
  return 2;
}
