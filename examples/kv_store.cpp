// kv_store: the noex tutorial's distributed key-value store, the distflow way. One node,
// alias 'kv', owns the map; a client sends a request naming where to answer ("replyTo":
// its node id, in the payload) and reads the reply. PMD: $DISTFLOW_PMD_PORT (default 4369).
//   ./kv_store server                 # the 'kv' node (Ctrl-C to stop)
//   ./kv_store set greeting '"hi"'    # the value is JSON: '"text"', 42, [1,2]
//   ./kv_store get greeting           # prints {"ok":true,"value":"hi"}; also: keys, delete KEY
// Shows request/reply over fire-and-forget messages: on_message() + send() on the
// server, send_sync() + receive(timeout) on the client.

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

// The store's behaviour: one request in, one reply out. Runs on the dispatcher thread only.
json handle(std::map<std::string, json>& data, const json& request) {
  const std::string op = request.value("op", ""), key = request.value("key", "");
  json reply = {{"ok", true}};
  if (op == "set") {
    data[key] = request.value("value", json());
  } else if (op == "delete") {
    reply["value"] = data.erase(key) > 0;
  } else if (op == "get" && data.count(key)) {
    reply["value"] = data[key];
  } else if (op == "keys") {
    reply["value"] = json::array();
    for (const auto& entry : data)
      reply["value"].push_back(entry.first);
  } else {
    reply = {{"ok", false},
             {"error", op == "get" ? "no such key '" + key + "'" : "unknown op '" + op + "'"}};
  }
  return reply;
}

int server() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before start: every thread inherits it
  auto node = distflow::NodeRuntime::start(options("kv"));
  std::map<std::string, json> data;
  node->on_message([&](const distflow::Envelope& message) {
    const json request = json::parse(message.payload());  // a throw is logged and counted
    node->send(request.value("replyTo", std::string(message.from())), handle(data, request).dump());
  });
  std::fprintf(stderr, "kv ready (node %s)\n", node->node_id().c_str());
  int signal = 0;
  sigwait(&stop, &signal);
  return 0;  // the destructor unregisters and closes every connection
}

int client(int argc, char** argv) {
  auto node = distflow::NodeRuntime::start(options(""));
  json request = {{"op", argv[1]}, {"replyTo", node->node_id()}};
  request["key"] = argc > 2 ? argv[2] : "";
  if (argc > 3)
    request["value"] = json::parse(argv[3]);
  node->send_sync("kv", request.dump());  // throws "unknown target 'kv': ..." without a server
  auto reply = node->receive(std::chrono::seconds(5));
  if (!reply)
    throw std::runtime_error("no reply from 'kv' within 5 s");
  std::printf("%.*s\n", static_cast<int>(reply->payload().size()), reply->payload().data());
  return json::parse(reply->payload()).value("ok", false) ? 0 : 1;
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
  std::fprintf(stderr, "usage: kv_store server | set KEY JSON | get KEY | keys | delete KEY\n");
  return 2;
}
