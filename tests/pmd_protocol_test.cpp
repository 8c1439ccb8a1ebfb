// The PMD's JSON messages as both sides see them (src/pmd_protocol.hpp).

#include "pmd_protocol.hpp"

#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "framing.hpp"
#include "pmd_oracle.hpp"

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
  // The extensions: the node's frame limit (at most 2^30) and heartbeat interval
  // (at least 100 ms; none past 10 minutes).
  node.pid = 0;
  node.max_frame = 16u << 20;
  CHECK(
      register_payload(node, 2000) ==
      R"({"nodeId":"n1","alias":"a","host":"h","port":1,"maxFrame":16777216,"heartbeatMs":2000})");
  node.max_frame = 0xffffffffu;
  CHECK(
      register_payload(node, 20) ==
      R"({"nodeId":"n1","alias":"a","host":"h","port":1,"maxFrame":1073741824,"heartbeatMs":100})");
  node.max_frame = 15;
  CHECK(register_payload(node, 600001) == R"({"nodeId":"n1","alias":"a","host":"h","port":1})");
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

  // maxFrame: read when within 16..2^30, else unknown (0).
  for (const auto& [text, expected] :
       std::vector<std::pair<std::string, std::uint32_t>>{{"65536", 65536},
                                                          {"16", 16},
                                                          {"1073741824", 1u << 30},
                                                          {"15", 0},
                                                          {"1073741825", 0},
                                                          {"1e3", 0},
                                                          {"\"5\"", 0}}) {
    INFO(text);
    auto reply = parse_reply(
        R"({"type":"response","payload":{"node":{"nodeId":"n","host":"h","port":1,"lastHeartbeat":1,"maxFrame":)" +
        text + "}}}");
    REQUIRE(reply);
    REQUIRE(reply->node);
    CHECK(reply->node->max_frame == expected);
  }

  // The original PMD's join: no reason, no extensions.
  auto join = parse_reply(
      R"({"type":"event","payload":{"event":"peer:join","peer":{"nodeId":"n","host":"h","port":1,"lastHeartbeat":1}}})");
  REQUIRE(join);
  CHECK(join->reason.empty());
}

TEST_CASE("pmd_protocol: parse_reply reads odd replies as JSON.parse would", "[pmd_protocol]") {
  // The last of a duplicated key counts; escaped keys are keys.
  auto dup = parse_reply(
      R"({"type":"event","typ\u0065":"response","requestId":1,"request\u0049d":2,"payload":{"error":"a","error":"Node not found"}})");
  REQUIRE(dup);
  CHECK_FALSE(dup->is_event);
  CHECK(dup->request_id == std::optional<std::uint64_t>(2));
  CHECK(dup->error == "Node not found");
  // ids that are not ours: negative, fractional, huge, not numbers; -0 is 0
  for (const auto& [id, expected] :
       std::vector<std::pair<std::string, std::optional<std::uint64_t>>>{
           {"-1", std::nullopt},
           {"1.5", std::nullopt},
           {"1e2", std::nullopt},
           {"18446744073709551616", std::nullopt},
           {"null", std::nullopt},
           {"18446744073709551615", UINT64_MAX},
           {"-0", 0},
           {"0", 0}}) {
    INFO(id);
    auto reply = parse_reply(R"({"type":"response","requestId":)" + id + R"(,"payload":{}})");
    REQUIRE(reply);
    CHECK(reply->request_id == expected);
  }
  // An error that is not a string is shown as its JSON text; an empty one as "error".
  CHECK(parse_reply(R"({"type":"response","payload":{"error":{"code":5}}})")->error ==
        R"({"code":5})");
  CHECK(parse_reply(R"({"type":"response","payload":{"error":""}})")->error == "error");
  // Node entries without a string nodeId are skipped; numbers are read leniently.
  auto list = parse_reply(
      R"({"type":"response","payload":{"success":true,"nodes":[{"nodeId":5},7,{"nodeId":"n\u00e9","alias":3,"host":"h","port":70000,"lastHeartbeat":1.9e3,"registeredAt":-5,"pid":1e400}]}})");
  REQUIRE(list);
  CHECK(list->success);
  REQUIRE(list->nodes);
  REQUIRE(list->nodes->size() == 1);
  const NodeInfo& n = list->nodes->front();
  CHECK(n.node_id == "n\xC3\xA9");
  CHECK(n.alias.empty());
  CHECK(n.port == 0);
  CHECK(n.last_heartbeat == 1900);
  CHECK(n.registered_at == -5);
  CHECK(n.pid == static_cast<std::int64_t>(9.2e18));
  CHECK_FALSE(list->node);
  // "nodes" that is not an array is no list.
  CHECK_FALSE(parse_reply(R"({"type":"response","payload":{"nodes":{}}})")->nodes);
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

// ---- the daemon's request reader ---------------------------------------------

namespace {

/// Parses `body` unpadded, then from a padded copy (as FrameDecoder hands bodies
/// over); the two must agree, and agree with the DOM reading (tests/pmd_oracle.hpp).
/// `out` views into the parser and into `body`'s copy.
struct Reader {
  PmdRequestParser parser;
  PmdRequestParser unpadded_parser;
  std::string padded;
  distflow_test::OracleRequest oracle;

  std::error_code parse(const std::string& body, PmdRequest& out, std::string* why = nullptr) {
    PmdRequest unpadded;
    const auto unpadded_ec = unpadded_parser.parse(body, false, unpadded);
    padded = body;
    padded.resize(body.size() + kFramePadding, '\0');
    const auto ec = parser.parse(std::string_view(padded.data(), body.size()), true, out, why);
    CHECK(ec == unpadded_ec);
    distflow_test::oracle_read(body, oracle);
    using Verdict = distflow_test::OracleRequest::Verdict;
    CHECK(ec == (oracle.verdict == Verdict::bad_json        ? make_error_code(errc::bad_json)
                 : oracle.verdict == Verdict::not_an_object ? make_error_code(errc::not_an_object)
                                                            : std::error_code()));
    if (!ec) {
      CHECK(out == unpadded);
      CHECK(out == oracle.request);
    }
    return ec;
  }
};

using Kind = PmdField::Kind;

}  // namespace

TEST_CASE("pmd_protocol: the request reader reads every field", "[pmd_protocol]") {
  Reader reader;
  PmdRequest r;
  REQUIRE_FALSE(reader.parse(R"({"type":"resolve","payload":{"alias":"a1"},"requestId":7})", r));
  CHECK(r.type == "resolve");
  CHECK(r.payload == PmdRequest::Payload::object);
  CHECK(r.alias.kind == Kind::string);
  CHECK(r.alias.text == "a1");
  CHECK(r.node_id.kind == Kind::absent);
  CHECK(r.request_id == std::optional<std::string_view>("7"));

  // Keys in any order, whitespace anywhere, every payload field.
  REQUIRE_FALSE(reader.parse(
      " \n{ \"requestId\" : \"r\" ,\t\"payload\" : { \"pid\" : -3 , \"port\" : 80 ,"
      " \"host\" : \"h\", \"alias\" : \"al\", \"nodeId\" : \"n\", \"snapshot\" : "
      "true, \"force\" : false, \"heartbeatMs\": 500, \"maxFrame\" : 1e3 } , \"type\" : "
      "\"register\" }\r\n",
      r));
  CHECK(r.type == "register");
  CHECK(r.request_id == std::optional<std::string_view>(R"("r")"));
  CHECK(r.node_id.text == "n");
  CHECK(r.alias.text == "al");
  CHECK(r.host.text == "h");
  CHECK((r.port.kind == Kind::integer && r.port.number == 80));
  CHECK((r.pid.kind == Kind::integer && r.pid.number == -3));
  CHECK((r.snapshot.kind == Kind::boolean && r.snapshot.number == 1));
  CHECK((r.force.kind == Kind::boolean && r.force.number == 0));
  CHECK((r.heartbeat_ms.kind == Kind::integer && r.heartbeat_ms.number == 500));
  CHECK(r.max_frame.kind == Kind::other);  // not an integer token

  // No payload, a null payload, an empty one, another type; a null alias.
  REQUIRE_FALSE(reader.parse(R"({"type":"list"})", r));
  CHECK(r.payload == PmdRequest::Payload::absent);
  CHECK_FALSE(r.request_id);
  REQUIRE_FALSE(reader.parse(R"({"payload":null,"type":"list"})", r));
  CHECK(r.payload == PmdRequest::Payload::absent);
  REQUIRE_FALSE(reader.parse(R"({"type":"list","payload":{}})", r));
  CHECK(r.payload == PmdRequest::Payload::object);
  REQUIRE_FALSE(reader.parse(R"({"type":"list","payload":[{"alias":"a"}]})", r));
  CHECK(r.payload == PmdRequest::Payload::other);
  CHECK(r.alias.kind == Kind::absent);
  REQUIRE_FALSE(reader.parse(R"({"type":"resolve","payload":{"alias":null,"nodeId":"n"}})", r));
  CHECK(r.alias.kind == Kind::null);

  // Escaped strings and keys are unescaped; a key given twice counts with its last value.
  REQUIRE_FALSE(reader.parse(R"({"type":"resolve","payload":{"alias":"a\"b\\c\u00e9\n"}})", r));
  CHECK(r.alias.text == "a\"b\\c\xC3\xA9\n");
  REQUIRE_FALSE(reader.parse(R"({"type":"resolv\u0065","payload":{"alias":"\ud83d\ude00"}})", r));
  CHECK(r.type == "resolve");
  CHECK(r.alias.text == "\xF0\x9F\x98\x80");
  REQUIRE_FALSE(
      reader.parse(R"({"typ\u0065":"list","type":"watch","payload":{"\u0061lias":"x"}})", r));
  CHECK(r.type == "watch");
  CHECK(r.alias.text == "x");
  REQUIRE_FALSE(reader.parse(
      R"({"type":"resolve","payload":{"alias":"a","alias":5},"payload":{"nodeId":"b"}})", r));
  CHECK(r.alias.kind == Kind::absent);  // the first payload is gone altogether
  CHECK(r.node_id.text == "b");
  REQUIRE_FALSE(reader.parse(R"({"type":5})", r));
  CHECK(r.type.empty());
  REQUIRE_FALSE(reader.parse(R"({"type":"frobnicate"})", r));
  CHECK(r.type == "frobnicate");
  // Integers are those within int64.
  for (const auto& [token, kind] :
       std::vector<std::pair<std::string, Kind>>{{"9223372036854775807", Kind::integer},
                                                 {"-9223372036854775808", Kind::integer},
                                                 {"9223372036854775808", Kind::other},
                                                 {"18446744073709551615", Kind::other},
                                                 {"-0", Kind::integer},
                                                 {"1.0", Kind::other},
                                                 {"1e400", Kind::other},
                                                 {"[1]", Kind::other},
                                                 {"{}", Kind::other},
                                                 {"\"1\"", Kind::string}}) {
    INFO(token);
    REQUIRE_FALSE(reader.parse(R"({"type":"register","payload":{"port":)" + token + "}}", r));
    CHECK(r.port.kind == kind);
  }
}

TEST_CASE("pmd_protocol: the request reader copies any requestId verbatim", "[pmd_protocol]") {
  Reader reader;
  PmdRequest r;
  for (const char* id : {R"("req_1")",
                         R"("")",
                         R"("a \"quoted\" \\ id")",
                         R"("\u00e9")",
                         "\"\xC3\xA9\"",
                         "0",
                         "42",
                         "-7",
                         "1.50",
                         "-0",
                         "1e3",
                         "2.5E-3",
                         "1e400",
                         "18446744073709551615",
                         "18446744073709551616",
                         "-9223372036854775808",
                         "true",
                         "false",
                         "null",
                         R"({"a": [1, 2], "b":"x\"y"})",
                         "[ ]"}) {
    INFO(id);
    for (const std::string& body :
         {R"({"type":"list","requestId":)" + std::string(id) + "}",
          R"({"requestId":)" + std::string(id) + R"(,"type":"list"})",
          R"({"requestId" :  )" + std::string(id) + " \n\t ,\"type\":\"list\"}",
          R"({"type":"list","requestId":)" + std::string(id) + " \r\n}",
          R"({"type":"list","requestId":"first","request\u0049d":)" + std::string(id) + "}"}) {
      INFO(body);
      REQUIRE_FALSE(reader.parse(body, r));
      CHECK(r.request_id == std::optional<std::string_view>(id));
    }
  }
}

TEST_CASE("pmd_protocol: the request reader refuses what is not one JSON object",
          "[pmd_protocol]") {
  Reader reader;
  PmdRequest r;
  const std::string bad_json[] = {
      "",
      "x",
      "{",
      "}",
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
      R"({"type":"list","requestId":)" + std::string(1024, '[') + std::string(1024, ']') + "}",
  };
  for (const auto& body : bad_json) {
    INFO(body);
    std::string why;
    CHECK(reader.parse(body, r, &why) == errc::bad_json);
    CHECK_FALSE(why.empty());
  }
  for (const std::string body : {"[1,2]", "\"str\"", "42", "null", " [] "}) {
    INFO(body);
    CHECK(reader.parse(body, r) == errc::not_an_object);
  }
  std::string why;
  CHECK(reader.parse(R"({"type":"list",)", r, &why) == errc::bad_json);
  CHECK(why == "unexpected end of input at byte 15");
  // The parser is reusable after a refusal, and after a huge body.
  REQUIRE_FALSE(reader.parse(
      R"({"type":"resolve","payload":{"alias":")" + std::string(100000, 'a') + R"("}})", r));
  CHECK(r.alias.text.size() == 100000);
  REQUIRE_FALSE(reader.parse(R"({"type":"list","requestId":3})", r));
  CHECK(r.request_id == std::optional<std::string_view>("3"));
}

TEST_CASE("pmd_protocol: printable escapes what would act on a terminal", "[pmd_protocol]") {
  CHECK(printable("node-1 alpha_2.x:80") == "node-1 alpha_2.x:80");
  CHECK(printable("\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80") == "\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80");
  CHECK(printable("\x1b[2J\x1b[H") == "\\x1b[2J\\x1b[H");
  CHECK(printable("a\nforged row\r\t") == "a\\x0aforged row\\x0d\\x09");
  CHECK(printable(std::string("nul\0", 4)) == "nul\\x00");
  CHECK(printable("del\x7f") == "del\\x7f");
  CHECK(printable("c1\xC2\x9b"
                  "31m") == "c1\\u009b31m");
  CHECK(printable("rtl\xE2\x80\xAEgnp.exe") == "rtl\\u202egnp.exe");
  CHECK(printable("zw\xE2\x80\x8B") == "zw\\u200b");
  CHECK(printable("bad\xff\xC3") == "bad\\xff\\xc3");
  CHECK(printable("\xED\xA0\x80") == "\\xed\\xa0\\x80");  // an encoded surrogate
  CHECK(printable("back\\slash") == "back\\\\slash");
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
