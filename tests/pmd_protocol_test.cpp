// The PMD's JSON messages as both sides see them (src/pmd_protocol.hpp).

#include "pmd_protocol.hpp"

#include <catch2/catch.hpp>

namespace distflow {

TEST_CASE("pmd_protocol: NodeInfo omits absent optional keys", "[pmd_protocol]") {
  NodeInfo node;
  node.node_id = "n1";
  node.host = "127.0.0.1";
  node.port = 5000;
  node.last_heartbeat = 17;
  std::string out;
  append_node_info(out, node);
  CHECK(out == R"({"nodeId":"n1","host":"127.0.0.1","port":5000,"lastHeartbeat":17})");

  node.alias = "a\"b";
  node.registered_at = 3;
  node.pid = 99;
  out.clear();
  append_node_info(out, node);
  CHECK(
      out ==
      R"({"nodeId":"n1","alias":"a\"b","host":"127.0.0.1","port":5000,"lastHeartbeat":17,"registeredAt":3,"pid":99})");
}

TEST_CASE("pmd_protocol: requests as the client sends them", "[pmd_protocol]") {
  CHECK(encode_request("list", "{}", 7) == R"({"type":"list","payload":{},"requestId":7})");
  CHECK(encode_request("list", "", 8) == R"({"type":"list","payload":{},"requestId":8})");
  NodeInfo node;
  node.node_id = "n1";
  node.host = "h";
  node.port = 1;
  CHECK(register_payload(node) == R"({"nodeId":"n1","host":"h","port":1})");
  node.alias = "a";
  node.pid = 42;
  CHECK(register_payload(node) == R"({"nodeId":"n1","alias":"a","host":"h","port":1,"pid":42})");
}

TEST_CASE("pmd_protocol: parse_reply reads responses and events", "[pmd_protocol]") {
  auto ok = parse_reply(R"({"type":"response","requestId":3,"payload":{"success":true}})");
  REQUIRE(ok);
  CHECK_FALSE(ok->is_event);
  CHECK(ok->success);
  CHECK(ok->request_id == std::optional<std::uint64_t>(3));

  auto err = parse_reply(
      R"({"type":"response","requestId":"req_1","payload":{"error":"Node not found"}})");
  REQUIRE(err);
  CHECK(err->error == "Node not found");
  CHECK_FALSE(err->request_id);  // not numeric: not ours

  auto node = parse_reply(
      R"({"type":"response","payload":{"node":{"nodeId":"n","alias":"a","host":"h","port":9,"lastHeartbeat":5,"extra":[1]}}})");
  REQUIRE(node);
  REQUIRE(node->node);
  CHECK(node->node->alias == "a");
  CHECK(node->node->port == 9);
  CHECK(node->node->last_heartbeat == 5);

  auto nodes = parse_reply(
      R"({"type":"response","payload":{"nodes":[{"nodeId":"a","host":"h","port":1,"lastHeartbeat":1},{"nodeId":"b","host":"h","port":2,"lastHeartbeat":2,"pid":7}]}})");
  REQUIRE(nodes);
  REQUIRE(nodes->nodes);
  REQUIRE(nodes->nodes->size() == 2);
  CHECK((*nodes->nodes)[1].pid == 7);

  auto leave = parse_reply(
      R"({"type":"event","payload":{"event":"peer:leave","peer":{"nodeId":"n","host":"h","port":1,"lastHeartbeat":1},"reason":"socket_closed"}})");
  REQUIRE(leave);
  CHECK(leave->is_event);
  CHECK(leave->event == "peer:leave");
  CHECK(leave->reason == "socket_closed");
  REQUIRE(leave->peer);
  CHECK(leave->peer->node_id == "n");

  // The original PMD's join: no reason, no extensions.
  auto join = parse_reply(
      R"({"type":"event","payload":{"event":"peer:join","peer":{"nodeId":"n","host":"h","port":1,"lastHeartbeat":1}}})");
  REQUIRE(join);
  CHECK(join->reason.empty());
}

TEST_CASE("pmd_protocol: parse_reply rejects what is not the PMD protocol", "[pmd_protocol]") {
  for (const char* body : {"", "x", "[]", R"({"payload":{}})", R"({"type":"other","payload":{}})",
                           R"({"type":"response"})", R"({"type":"event","payload":{}})"}) {
    INFO(body);
    std::string why;
    CHECK_FALSE(parse_reply(body, &why));
    CHECK_FALSE(why.empty());
  }
}

}  // namespace distflow
