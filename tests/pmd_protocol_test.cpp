// The PMD's JSON messages as both sides see them (src/pmd_protocol.hpp).

#include "pmd_protocol.hpp"

#include <string>

#include <catch2/catch.hpp>

#include "framing.hpp"

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

// ---- the daemon's fast request reader -----------------------------------------

namespace {

/// Parses `body` unpadded, then from a padded copy (as FrameDecoder hands bodies
/// over); the two must agree. `out` views into the parser and into `body`'s copy.
struct FastReader {
  PmdRequestParser parser;
  std::string padded;

  bool parse(const std::string& body, PmdRequestView& out) {
    PmdRequestView unpadded_view;
    const bool unpadded = parser.parse(body, false, unpadded_view);
    const std::string unpadded_id(unpadded_view.request_id.value_or("<none>"));
    padded = body;
    padded.resize(body.size() + kFramePadding, '\0');
    const bool ok = parser.parse(std::string_view(padded.data(), body.size()), true, out);
    CHECK(ok == unpadded);
    if (ok)
      CHECK(std::string(out.request_id.value_or("<none>")) == unpadded_id);
    return ok;
  }
};

}  // namespace

TEST_CASE("pmd_protocol: the fast reader takes the common request shape", "[pmd_protocol]") {
  FastReader reader;
  PmdRequestView r;
  REQUIRE(reader.parse(R"({"type":"resolve","payload":{"alias":"a1"},"requestId":7})", r));
  CHECK(r.type == "resolve");
  CHECK(r.payload);
  CHECK(r.alias == std::optional<std::string_view>("a1"));
  CHECK_FALSE(r.node_id);
  CHECK(r.request_id == std::optional<std::string_view>("7"));

  // Keys in any order, whitespace anywhere, every payload field.
  REQUIRE(
      reader.parse(" \n{ \"requestId\" : \"r\" ,\t\"payload\" : { \"pid\" : -3 , \"port\" : 80 ,"
                   " \"host\" : \"h\", \"alias\" : \"al\", \"nodeId\" : \"n\", \"snapshot\" : "
                   "true, \"force\" : false } , \"type\" : \"register\" }\r\n",
                   r));
  CHECK(r.type == "register");
  CHECK(r.request_id == std::optional<std::string_view>(R"("r")"));
  CHECK(r.node_id == std::optional<std::string_view>("n"));
  CHECK(r.alias == std::optional<std::string_view>("al"));
  CHECK(r.host == std::optional<std::string_view>("h"));
  CHECK(r.port == std::optional<std::int64_t>(80));
  CHECK(r.pid == std::optional<std::int64_t>(-3));
  CHECK(r.snapshot == std::optional<bool>(true));
  CHECK(r.force == std::optional<bool>(false));

  // No payload, a null payload, an empty one; a null alias is no alias.
  REQUIRE(reader.parse(R"({"type":"list"})", r));
  CHECK_FALSE(r.payload);
  CHECK_FALSE(r.request_id);
  REQUIRE(reader.parse(R"({"payload":null,"type":"list"})", r));
  CHECK_FALSE(r.payload);
  REQUIRE(reader.parse(R"({"type":"list","payload":{}})", r));
  CHECK(r.payload);
  REQUIRE(reader.parse(R"({"type":"resolve","payload":{"alias":null,"nodeId":"n"}})", r));
  CHECK_FALSE(r.alias);
  CHECK(r.node_id == std::optional<std::string_view>("n"));

  // Escaped strings are unescaped (keys must not be escaped, values may).
  REQUIRE(reader.parse(R"({"type":"resolve","payload":{"alias":"a\"b\\c\u00e9\n"}})", r));
  CHECK(r.alias == std::optional<std::string_view>("a\"b\\c\xC3\xA9\n"));
  REQUIRE(reader.parse(R"({"type":"resolv\u0065","payload":{"alias":"\ud83d\ude00"}})", r));
  CHECK(r.type == "resolve");
  CHECK(r.alias == std::optional<std::string_view>("\xF0\x9F\x98\x80"));
  REQUIRE(reader.parse("{\"type\":\"resolve\",\"payload\":{\"alias\":\"\xC3\xA9t\xC3\xA9\"}}", r));
  CHECK(r.alias == std::optional<std::string_view>("\xC3\xA9t\xC3\xA9"));
  // Unknown types are still the fast shape (the registry answers them).
  REQUIRE(reader.parse(R"({"type":"frobnicate"})", r));
  CHECK(r.type == "frobnicate");
}

TEST_CASE("pmd_protocol: the fast reader copies a scalar requestId verbatim", "[pmd_protocol]") {
  FastReader reader;
  PmdRequestView r;
  for (const char* id : {R"("req_1")", R"("")", R"("a \"quoted\" \\ id")", R"("\u00e9")",
                         "\"\xC3\xA9\"", "0", "42", "-7", "1.50", "-0", "1e3", "2.5E-3",
                         "18446744073709551615", "-9223372036854775808", "true", "false", "null"}) {
    INFO(id);
    for (const std::string& body :
         {R"({"type":"list","requestId":)" + std::string(id) + "}",
          R"({"requestId":)" + std::string(id) + R"(,"type":"list"})",
          R"({"requestId" :  )" + std::string(id) + " \n\t ,\"type\":\"list\"}",
          R"({"type":"list","requestId":)" + std::string(id) + " \r\n}"}) {
      INFO(body);
      REQUIRE(reader.parse(body, r));
      CHECK(r.request_id == std::optional<std::string_view>(id));
    }
  }
}

TEST_CASE("pmd_protocol: the fast reader leaves anything unusual to the full parser",
          "[pmd_protocol]") {
  FastReader reader;
  PmdRequestView r;
  const std::string refused[] = {
      // malformed JSON, trailing bytes, not an object
      "",
      "x",
      "{",
      "}",
      "[1,2]",
      "\"str\"",
      "42",
      "null",
      R"({"type":"list"} trailing)",
      R"({"type":"list"}})",
      R"({"type":"list",})",
      R"({"type" "list"})",
      R"({"type":"list" "a":1})",
      "{\"type\":\"\xff\"}",
      "{\"type\":\"li\x01st\"}",
      R"({"type":"list","requestId":tru})",
      R"({"type":"list","requestId":nul})",
      R"({"type":"list","requestId":01})",
      R"({"type":"list","requestId":1.})",
      R"({"type":"list","requestId":-})",
      R"({"type":"list","requestId":"\x"})",
      R"({"type":"resolve","payload":{"alias":"\ud800"}})",
      R"({"type":"resolve","payload":{"alias":"\udc00"}})",
      std::string("{\"type\":\"list\"}\0", 16),
      "\xEF\xBB\xBF{\"type\":\"list\"}",
      // an id the fast path does not copy: objects, arrays, numbers beyond 64 bits
      R"({"type":"list","requestId":{"a":[1,2]}})",
      R"({"type":"list","requestId":[1]})",
      R"({"type":"list","requestId":18446744073709551616})",
      R"({"type":"list","requestId":1e400})",
      // no type, or not a string
      "{}",
      R"({"payload":{}})",
      R"({"type":5})",
      R"({"type":null})",
      R"({"type":["list"]})",
      // other keys, duplicates, escaped keys
      R"({"type":"list","extra":1})",
      R"({"type":"list","meta":{}})",
      R"({"type":"list","type":"watch"})",
      R"({"type":"list","requestId":1,"requestId":2})",
      R"({"type":"list","payload":{},"payload":{}})",
      R"({"type":"list","payload":null,"payload":{}})",
      R"({"typ\u0065":"list"})",
      R"({"type":"list","request\u0049d":1})",
      // payload: not an object, other keys, duplicates, escaped keys, wrong types
      R"({"type":"list","payload":"ignored"})",
      R"({"type":"register","payload":[1]})",
      R"({"type":"list","payload":5})",
      R"({"type":"list","payload":true})",
      R"({"type":"resolve","payload":{"alias":"a","meta":{}}})",
      R"({"type":"resolve","payload":{"alias":"a","alias":"b"}})",
      R"({"type":"resolve","payload":{"alias":null,"alias":"b"}})",
      R"({"type":"resolve","payload":{"alias":"a","alias":null}})",
      R"({"type":"resolve","payload":{"nodeId":"a","nodeId":"b"}})",
      R"({"type":"resolve","payload":{"\u0061lias":"a"}})",
      R"({"type":"resolve","payload":{"alias":5}})",
      R"({"type":"resolve","payload":{"alias":{}}})",
      R"({"type":"resolve","payload":{"nodeId":null}})",
      R"({"type":"register","payload":{"nodeId":"n","host":null,"port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":"80"}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":80.0}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":8e1}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":9223372036854775808}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"pid":"7"}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"port":2}})",
      R"({"type":"watch","payload":{"snapshot":1}})",
      R"({"type":"shutdown","payload":{"force":"y"}})",
      R"({"type":"watch","payload":{"snapshot":true,"snapshot":false}})",
      // too long for the fast path
      R"({"type":"resolve","payload":{"alias":")" + std::string(5000, 'a') + R"("}})",
  };
  for (const auto& body : refused) {
    INFO(body);
    CHECK_FALSE(reader.parse(body, r));
  }
  // The parser is reusable after a refusal.
  REQUIRE(reader.parse(R"({"type":"list","requestId":3})", r));
  CHECK(r.request_id == std::optional<std::string_view>("3"));
}

TEST_CASE("pmd_protocol: NodeInfo strings are escaped as JSON", "[pmd_protocol]") {
  NodeInfo node;
  node.node_id = "n\x01";
  node.alias = "\xC3\xA9\\";
  node.host = "h\xff";  // invalid UTF-8 is replaced, never thrown on
  node.port = 1;
  std::string out;
  append_node_info(out, node);
  CHECK(out ==
        "{\"nodeId\":\"n\\u0001\",\"alias\":\"\xC3\xA9\\\\\",\"host\":\"h\xEF\xBF\xBD\","
        "\"port\":1,\"lastHeartbeat\":0}");
}

}  // namespace distflow
