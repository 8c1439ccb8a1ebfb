// The PMD's pure state machine (src/registry.hpp): every rule of PROTOCOL.md
// §2.1-2.3, byte for byte, without sockets or clocks.

#include "registry.hpp"

#include <cstdio>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "framing.hpp"
#include "pmd_oracle.hpp"

namespace distflow {
namespace {

constexpr std::int64_t kT0 = 1'700'000'000'000;

std::string reg(std::string_view id, std::string_view alias, int port, std::string_view rid = "") {
  std::string payload = R"({"nodeId":")" + std::string(id) + "\"";
  if (!alias.empty())
    payload += R"(,"alias":")" + std::string(alias) + "\"";
  payload += R"(,"host":"127.0.0.1","port":)" + std::to_string(port) + "}";
  std::string out = R"({"type":"register","payload":)" + payload;
  if (!rid.empty())
    out += R"(,"requestId":)" + std::string(rid);
  return out + "}";
}

std::string node_json(std::string_view id, std::string_view alias, int port, std::int64_t hb,
                      std::int64_t at = kT0) {
  std::string out = R"({"nodeId":")" + std::string(id) + "\"";
  if (!alias.empty())
    out += R"(,"alias":")" + std::string(alias) + "\"";
  out += R"(,"host":"127.0.0.1","port":)" + std::to_string(port) + R"(,"lastHeartbeat":)" +
         std::to_string(hb) + R"(,"registeredAt":)" + std::to_string(at) + "}";
  return out;
}

}  // namespace

TEST_CASE("registry: register answers success and emits peer:join once", "[registry]") {
  Registry registry;
  auto out = registry.handle(1, reg("n1", "alpha", 5000, "\"req_1\""), kT0, true);
  CHECK(out.reply == R"({"type":"response","requestId":"req_1","payload":{"success":true}})");
  REQUIRE(out.events.size() == 1);
  CHECK(out.events[0] == R"({"type":"event","payload":{"event":"peer:join","peer":)" +
                             node_json("n1", "alpha", 5000, kT0) + "}}");
  CHECK_FALSE(out.close);
  CHECK(registry.size() == 1);

  // Re-register of the same nodeId: replaced, no event.
  auto again = registry.handle(1, reg("n1", "alpha", 5001, "7"), kT0 + 5, true);
  CHECK(again.reply == R"({"type":"response","requestId":7,"payload":{"success":true}})");
  CHECK(again.events.empty());
  CHECK(registry.nodes().at(0).port == 5001);
}

TEST_CASE("registry: requestId is copied verbatim, and omitted when absent", "[registry]") {
  Registry registry;
  const std::pair<std::string, std::string> cases[] = {
      {R"("req_1")", R"("req_1")"},
      {"42", "42"},
      {"1.50", "1.50"},
      {"-0", "-0"},
      {"null", "null"},
      {"true", "true"},
      {R"({"a": [1, 2], "b":"x\"y"})", R"({"a": [1, 2], "b":"x\"y"})"},
      {R"("\u00e9")", R"("\u00e9")"},
  };
  for (const auto& [in, expected] : cases) {
    INFO(in);
    auto out =
        registry.handle(1, R"({"type":"list","payload":{},"requestId":)" + in + "}", kT0, true);
    CHECK(out.reply ==
          R"({"type":"response","requestId":)" + expected + R"(,"payload":{"nodes":[]}})");
  }
  // requestId first, whitespace around it.
  auto first = registry.handle(1, " { \"requestId\" : \"r\" , \"type\":\"list\"}", kT0, true);
  CHECK(first.reply == R"({"type":"response","requestId":"r","payload":{"nodes":[]}})");
  auto none = registry.handle(1, R"({"type":"list"})", kT0, true);
  CHECK(none.reply == R"({"type":"response","payload":{"nodes":[]}})");
}

TEST_CASE("registry: register validation errors are exact", "[registry]") {
  Registry registry;
  const std::pair<std::string, std::string> cases[] = {
      {R"({"type":"register"})", "invalid register payload: missing payload"},
      {R"({"type":"register","payload":null})", "invalid register payload: missing payload"},
      {R"({"type":"register","payload":[1]})",
       "invalid register payload: payload must be an object"},
      {R"({"type":"register","payload":{"host":"h","port":1}})",
       "invalid register payload: 'nodeId' must be a non-empty string"},
      {R"({"type":"register","payload":{"nodeId":"","host":"h","port":1}})",
       "invalid register payload: 'nodeId' must be a non-empty string"},
      {R"({"type":"register","payload":{"nodeId":")" + std::string(129, 'x') +
           R"(","host":"h","port":1}})",
       "invalid register payload: 'nodeId' exceeds 128 bytes"},
      {R"({"type":"register","payload":{"nodeId":"n","alias":"","host":"h","port":1}})",
       "invalid register payload: 'alias' must be a non-empty string"},
      {R"({"type":"register","payload":{"nodeId":"n","alias":5,"host":"h","port":1}})",
       "invalid register payload: 'alias' must be a non-empty string"},
      {R"({"type":"register","payload":{"nodeId":"n","alias":"a\nb","host":"h","port":1}})",
       "invalid register payload: 'alias' contains control characters"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"","port":1}})",
       "invalid register payload: 'host' must be a non-empty string"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h"}})",
       "invalid register payload: 'port' must be an integer 1-65535"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":0}})",
       "invalid register payload: 'port' must be an integer 1-65535"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":65536}})",
       "invalid register payload: 'port' must be an integer 1-65535"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":"80"}})",
       "invalid register payload: 'port' must be an integer 1-65535"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":80.5}})",
       "invalid register payload: 'port' must be an integer 1-65535"},
      // Control characters (C0, DEL, C1) in any name, escaped or not: they would act
      // on a terminal that shows them.
      {R"({"type":"register","payload":{"nodeId":"n\u001b[2J","host":"h","port":1}})",
       "invalid register payload: 'nodeId' contains control characters"},
      {"{\"type\":\"register\",\"payload\":{\"nodeId\":\"n\x7f\",\"host\":\"h\",\"port\":1}}",
       "invalid register payload: 'nodeId' contains control characters"},
      {R"({"type":"register","payload":{"nodeId":"n\u0085","host":"h","port":1}})",
       "invalid register payload: 'nodeId' contains control characters"},
      {R"({"type":"register","payload":{"nodeId":"n","alias":"a\u009b","host":"h","port":1}})",
       "invalid register payload: 'alias' contains control characters"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h\r\nforged","port":1}})",
       "invalid register payload: 'host' contains control characters"},
      {"{\"type\":\"register\",\"payload\":{\"nodeId\":\"n\",\"host\":\"\xc2\x9b\",\"port\":1}}",
       "invalid register payload: 'host' contains control characters"},
      // The extensions: the node's heartbeat interval, its frame limit.
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"heartbeatMs":99}})",
       "invalid register payload: 'heartbeatMs' must be an integer 100-600000"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"heartbeatMs":600001}})",
       "invalid register payload: 'heartbeatMs' must be an integer 100-600000"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"heartbeatMs":"1s"}})",
       "invalid register payload: 'heartbeatMs' must be an integer 100-600000"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"heartbeatMs":500.5}})",
       "invalid register payload: 'heartbeatMs' must be an integer 100-600000"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"maxFrame":15}})",
       "invalid register payload: 'maxFrame' must be an integer 16-1073741824"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"maxFrame":1073741825}})",
       "invalid register payload: 'maxFrame' must be an integer 16-1073741824"},
      {R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1,"maxFrame":true}})",
       "invalid register payload: 'maxFrame' must be an integer 16-1073741824"},
  };
  for (const auto& [in, error] : cases) {
    INFO(in);
    auto out = registry.handle(1, in, kT0, true);
    CHECK(out.reply == R"({"type":"response","payload":{"error":")" + error + "\"}}");
    CHECK(out.events.empty());
  }
  CHECK(registry.size() == 0);
}

TEST_CASE("registry: an alias belongs to one node; re-register releases the old alias",
          "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "alpha", 5000), kT0, true);
  auto clash = registry.handle(2, reg("n2", "alpha", 5001, "\"r\""), kT0, true);
  CHECK(
      clash.reply ==
      R"({"type":"response","requestId":"r","payload":{"error":"Alias 'alpha' already in use"}})");
  CHECK(clash.events.empty());

  registry.handle(1, reg("n1", "beta", 5000), kT0, true);  // alpha released
  auto take = registry.handle(2, reg("n2", "alpha", 5001), kT0, true);
  CHECK(take.reply == R"({"type":"response","payload":{"success":true}})");
  auto old = registry.handle(3, R"({"type":"resolve","payload":{"alias":"beta"}})", kT0, true);
  CHECK(old.reply.find(R"("nodeId":"n1")") != std::string::npos);

  // Dropping the alias altogether also releases it.
  registry.handle(1, reg("n1", "", 5000), kT0, true);
  auto free_beta = registry.handle(2, reg("n3", "beta", 5002), kT0, true);
  CHECK(free_beta.reply == R"({"type":"response","payload":{"success":true}})");
}

TEST_CASE("registry: resolve by alias, else nodeId; list in registration order", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n2", "", 5002), kT0, true);
  registry.handle(1, reg("n1", "one", 5001), kT0, true);
  auto by_alias = registry.handle(
      9, R"({"type":"resolve","payload":{"alias":"one"},"requestId":1})", kT0, false);
  CHECK(by_alias.reply == R"({"type":"response","requestId":1,"payload":{"node":)" +
                              node_json("n1", "one", 5001, kT0) + "}}");
  auto by_id = registry.handle(9, R"({"type":"resolve","payload":{"alias":"n2"}})", kT0, false);
  CHECK(by_id.reply ==
        R"({"type":"response","payload":{"node":)" + node_json("n2", "", 5002, kT0) + "}}");
  for (const char* missing : {R"({"type":"resolve","payload":{"alias":"zz"}})",
                              R"({"type":"resolve","payload":{}})", R"({"type":"resolve"})"}) {
    INFO(missing);
    CHECK(registry.handle(9, missing, kT0, false).reply ==
          R"({"type":"response","payload":{"error":"Node not found"}})");
  }
  auto list = registry.handle(9, R"({"type":"list","payload":"ignored"})", kT0, false);
  CHECK(list.reply == R"({"type":"response","payload":{"nodes":[)" +
                          node_json("n2", "", 5002, kT0) + "," + node_json("n1", "one", 5001, kT0) +
                          "]}}");
}

TEST_CASE("registry: only the owning connection may unregister", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "a", 5000), kT0, true);
  registry.handle(3, R"({"type":"watch"})", kT0, true);
  auto other = registry.handle(2, R"({"type":"unregister","payload":{"nodeId":"n1"}})", kT0, true);
  CHECK(
      other.reply ==
      R"({"type":"response","payload":{"error":"Node 'n1' is registered by another connection"}})");
  CHECK(other.events.empty());
  // Nothing changed: the node, its alias, its owner, its entry.
  CHECK(registry.size() == 1);
  CHECK(registry.owned_by(1) == 1);
  CHECK(registry.owned_by(2) == 0);
  CHECK(registry.handle(3, R"({"type":"resolve","payload":{"alias":"a"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"node":)" + node_json("n1", "a", 5000, kT0) + "}}");
  CHECK(registry.handle(2, reg("n2", "a", 5001), kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Alias 'a' already in use"}})");
  CHECK(registry.connection_closed(2).empty());
  CHECK(registry.size() == 1);
  auto missing =
      registry.handle(1, R"({"type":"unregister","payload":{"nodeId":"zz"}})", kT0, true);
  CHECK(missing.reply == R"({"type":"response","payload":{"error":"Node not found"}})");
  auto own = registry.handle(1, R"({"type":"unregister","payload":{"nodeId":"n1"},"requestId":2})",
                             kT0, true);
  CHECK(own.reply == R"({"type":"response","requestId":2,"payload":{"success":true}})");
  REQUIRE(own.events.size() == 1);
  CHECK(own.events[0] == R"({"type":"event","payload":{"event":"peer:leave","peer":)" +
                             node_json("n1", "a", 5000, kT0) + R"(,"reason":"unregister"}})");
  CHECK(registry.size() == 0);
  // The alias is free again.
  CHECK(registry.handle(2, reg("n2", "a", 5001), kT0, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
}

TEST_CASE("registry: closing a connection removes all its nodes (socket_closed)", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "a", 5001), kT0, true);
  registry.handle(1, reg("n2", "b", 5002), kT0, true);
  registry.handle(2, reg("n3", "c", 5003), kT0, true);
  registry.handle(3, R"({"type":"watch"})", kT0, true);
  CHECK(registry.owned_by(1) == 2);
  CHECK(registry.watchers().count(3) == 1);
  auto events = registry.connection_closed(1);
  REQUIRE(events.size() == 2);
  CHECK(events[0] == R"({"type":"event","payload":{"event":"peer:leave","peer":)" +
                         node_json("n1", "a", 5001, kT0) + R"(,"reason":"socket_closed"}})");
  CHECK(events[1].find(R"("nodeId":"n2")") != std::string::npos);
  CHECK(registry.size() == 1);
  CHECK(registry.owned_by(1) == 0);
  CHECK(registry.connection_closed(3).empty());
  CHECK(registry.watchers().empty());
}

TEST_CASE("registry: heartbeat, and TTL only for nodes that heartbeated", "[registry]") {
  Registry registry(std::chrono::milliseconds(1000));
  registry.handle(1, reg("quiet", "", 5001), kT0, true);
  registry.handle(1, reg("beat", "", 5002), kT0, true);
  auto hb = registry.handle(
      2, R"({"type":"heartbeat","payload":{"nodeId":"beat"},"requestId":"h"})", kT0 + 100, true);
  CHECK(hb.reply == R"({"type":"response","requestId":"h","payload":{"success":true}})");
  CHECK(registry.handle(2, R"({"type":"heartbeat","payload":{"nodeId":"zz"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Node not found"}})");
  CHECK(registry.nodes().at(1).last_heartbeat == kT0 + 100);
  CHECK(registry.expire(kT0 + 1100).empty());
  auto expired = registry.expire(kT0 + 1101);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0] == R"({"type":"event","payload":{"event":"peer:leave","peer":)" +
                          node_json("beat", "", 5002, kT0 + 100) + R"(,"reason":"ttl_expired"}})");
  CHECK(registry.expire(kT0 + 10'000'000).empty());  // "quiet" never heartbeated
  CHECK(registry.size() == 1);

  Registry no_ttl(std::chrono::milliseconds(0));
  no_ttl.handle(1, reg("beat", "", 5002), kT0, true);
  no_ttl.handle(1, R"({"type":"heartbeat","payload":{"nodeId":"beat"}})", kT0, true);
  CHECK(no_ttl.expire(kT0 + 10'000'000).empty());
}

TEST_CASE("registry: watch subscribes, with an atomic snapshot on request", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "", 5001), kT0, true);
  auto plain = registry.handle(2, R"({"type":"watch","requestId":"w"})", kT0, true);
  CHECK(plain.reply == R"({"type":"response","requestId":"w","payload":{"success":true}})");
  auto snap = registry.handle(3, R"({"type":"watch","payload":{"snapshot":true}})", kT0, true);
  CHECK(snap.reply == R"({"type":"response","payload":{"success":true,"nodes":[)" +
                          node_json("n1", "", 5001, kT0) + "]}}");
  CHECK(registry.watchers() == std::set<ConnectionId>{2, 3});
}

TEST_CASE("registry: shutdown rules", "[registry]") {
  Registry registry;
  auto remote = registry.handle(1, R"({"type":"shutdown"})", kT0, false);
  CHECK_FALSE(remote.shutdown);
  CHECK(remote.reply.find(R"("error":)") != std::string::npos);

  auto empty = registry.handle(1, R"({"type":"shutdown","requestId":1})", kT0, true);
  CHECK(empty.shutdown);
  CHECK(empty.reply == R"({"type":"response","requestId":1,"payload":{"success":true}})");

  registry.handle(1, reg("n1", "", 5001), kT0, true);
  registry.handle(1, reg("n2", "", 5002), kT0, true);
  auto refused = registry.handle(1, R"({"type":"shutdown","payload":{}})", kT0, true);
  CHECK_FALSE(refused.shutdown);
  CHECK(refused.reply ==
        R"({"type":"response","payload":{"error":"2 nodes are registered; use force"}})");
  auto forced = registry.handle(1, R"({"type":"shutdown","payload":{"force":true}})", kT0, true);
  CHECK(forced.shutdown);
  CHECK(forced.reply == R"({"type":"response","payload":{"success":true}})");
}

TEST_CASE("registry: unknown types and malformed JSON keep the connection", "[registry]") {
  Registry registry;
  const std::string unknown = R"({"type":"response","payload":{"error":"Unknown message type"}})";
  for (const char* in : {R"({"type":"frobnicate","payload":{}})", R"({"payload":{}})",
                         R"({"type":5})", R"({"type":null})", "{}"}) {
    INFO(in);
    auto out = registry.handle(1, in, kT0, true);
    CHECK(out.reply == unknown);
    CHECK_FALSE(out.close);
  }
  CHECK(registry.handle(1, R"({"type":"nope","requestId":"q"})", kT0, true).reply ==
        R"({"type":"response","requestId":"q","payload":{"error":"Unknown message type"}})");
  for (const char* in : {"x", "{", "[1,2]", "\"str\"", "42", "{\"type\":\"list\"} trailing",
                         "{\"type\":\"\xff\"}"}) {
    INFO(in);
    auto out = registry.handle(1, in, kT0, true);
    CHECK(out.reply.rfind(R"({"type":"response","payload":{"error":"malformed JSON: )", 0) == 0);
    CHECK_FALSE(out.close);
    CHECK(out.events.empty());
  }
  CHECK(registry.handle(1, "[1]", kT0, true).reply ==
        R"({"type":"response","payload":{"error":"malformed JSON: not an object"}})");
}

TEST_CASE("registry: next_outcome runs bytes through framing and the registry", "[registry]") {
  Registry registry;
  FrameDecoder decoder(64);
  std::string bytes;
  append_frame(bytes, R"({"type":"list"})");
  append_frame(bytes, R"({"type":"list","requestId":2})");
  decoder.feed(std::string_view(bytes).substr(0, 7));
  CHECK_FALSE(next_outcome(registry, 1, decoder, kT0, true));
  decoder.feed(std::string_view(bytes).substr(7));
  auto a = next_outcome(registry, 1, decoder, kT0, true);
  auto b = next_outcome(registry, 1, decoder, kT0, true);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->reply == R"({"type":"response","payload":{"nodes":[]}})");
  CHECK(b->reply == R"({"type":"response","requestId":2,"payload":{"nodes":[]}})");
  CHECK_FALSE(next_outcome(registry, 1, decoder, kT0, true));

  FrameDecoder big(64);
  big.feed(std::string("\x00\x00\x00\x41", 4));
  auto too_large = next_outcome(registry, 1, big, kT0, true);
  REQUIRE(too_large);
  CHECK(too_large->close);
  CHECK(too_large->reply ==
        R"({"type":"response","payload":{"error":"frame length 65 exceeds limit 64"}})");

  FrameDecoder zero(64);
  zero.feed(std::string("\x00\x00\x00\x00", 4));
  auto empty = next_outcome(registry, 1, zero, kT0, true);
  REQUIRE(empty);
  CHECK(empty->close);
  CHECK(empty->reply.find("frame length 0") != std::string::npos);
  CHECK(empty->reply.find("64") != std::string::npos);
}

TEST_CASE("registry: pmd_response shape", "[registry]") {
  CHECK(pmd_response(std::nullopt, R"({"success":true})") ==
        R"({"type":"response","payload":{"success":true}})");
  CHECK(pmd_response(std::string("\"r\""), "{}") ==
        R"({"type":"response","requestId":"r","payload":{}})");
}

namespace {

/// Runs the same requests through the registry (its PmdRequestParser) and, on a
/// second registry, through the DOM reading of tests/pmd_oracle.hpp: every reply,
/// event and flag must be the same, byte for byte. For a body that is not JSON the
/// reason after "malformed JSON: " is the scanner's own (nlohmann words it otherwise).
struct Differential {
  Registry real;
  Registry reference;
  PmdRequestParser parser;
  distflow_test::OracleRequest oracle;
  std::size_t mismatches = 0;

  void check(ConnectionId conn, const std::string& body, std::int64_t now, bool loopback = true) {
    const PmdOutcome a = real.handle(conn, body, now, loopback);
    PmdOutcome b;
    distflow_test::oracle_read(body, oracle);
    PmdRequest request;
    const auto ec = parser.parse(body, false, request);
    bool same = true;
    switch (oracle.verdict) {
      case distflow_test::OracleRequest::Verdict::ok:
        reference.handle_request(conn, oracle.request, now, loopback, b.reply, b);
        same = !ec && request == oracle.request && a.reply == b.reply;
        break;
      case distflow_test::OracleRequest::Verdict::bad_json:
        same = ec == errc::bad_json &&
               a.reply.rfind(R"({"type":"response","payload":{"error":"malformed JSON: )", 0) == 0;
        break;
      case distflow_test::OracleRequest::Verdict::not_an_object:
        same =
            ec == errc::not_an_object &&
            a.reply == R"({"type":"response","payload":{"error":"malformed JSON: not an object"}})";
        break;
    }
    same = same && a.events == b.events && a.close == b.close && a.shutdown == b.shutdown;
    if (!same && mismatches++ < 5) {
      INFO("conn " << conn << ": " << body);
      CHECK(a.reply == b.reply);
      CHECK(a.events == b.events);
      CHECK(ec.message() == "");
      CHECK(a.shutdown == b.shutdown);
      CHECK(request == oracle.request);
    }
  }
};

/// Register, resolve, ... bodies with every kind of value in every field, each
/// field also spelt with an escaped key and given twice.
std::vector<std::string> generated_requests() {
  const std::string values[] = {
      R"("n1")",
      R"("alpha")",
      R"("")",
      R"("h")",
      R"("n\u0031")",
      R"("a\"b")",
      R"("\u00e9")",
      R"("x\u0000y")",
      R"("x\u001bz")",
      R"("\ud83d\ude00")",
      "\"" + std::string(129, 'x') + "\"",
      "null",
      "true",
      "false",
      "0",
      "-0",
      "1",
      "80",
      "99",
      "100",
      "500",
      "16",
      "15",
      "65535",
      "65536",
      "600000",
      "600001",
      "1073741824",
      "1073741825",
      "-1",
      "1.0",
      "1e2",
      "80.5",
      "-0.0",
      "9223372036854775807",
      "9223372036854775808",
      "-9223372036854775808",
      "-9223372036854775809",
      "18446744073709551616",
      "1e400",
      "-1e400",
      "[]",
      "{}",
      "[1]",
      R"({"a":1})",
  };
  const std::string keys[] = {"nodeId",   "alias", "host",        "port",    "pid",
                              "snapshot", "force", "heartbeatMs", "maxFrame"};
  const std::string types[] = {"register", "unregister", "resolve",  "heartbeat",
                               "list",     "watch",      "shutdown", "nope"};
  const std::string base = R"("nodeId":"g1","alias":"ga","host":"h","port":7)";
  std::vector<std::string> out;
  for (const auto& type : types) {
    for (const auto& key : keys) {
      // The key's escaped spelling: its first letter as \u00XX.
      char escaped_first[8];
      std::snprintf(escaped_first, sizeof escaped_first, "\\u%04x", key[0]);
      const std::string escaped = escaped_first + key.substr(1);
      for (const auto& value : values) {
        const std::string t = R"({"type":")" + type + R"(","payload":{)";
        out.push_back(t + base + ",\"" + key + "\":" + value + "}}");
        out.push_back(t + "\"" + key + "\":" + value + "," + base + "}}");
        out.push_back(t + base + ",\"" + escaped + "\":" + value + "}}");
        out.push_back(t + "\"" + key + "\":\"first\"," + base + ",\"" + escaped + "\":" + value +
                      "}}");
        out.push_back(t + "\"" + key + "\":" + value + ",\"" + key + "\":null}}");
      }
    }
  }
  // The request's own members: type, payload and requestId in every form.
  for (const auto& value : values) {
    out.push_back(R"({"type":"list","requestId":)" + value + "}");
    out.push_back(R"({"type":"list","requestId":1,"requestId":)" + value + "}");
    out.push_back(R"({"type":"list","request\u0049d":)" + value + "}");
    out.push_back(R"({"request\u0049d":)" + value + R"(,"type":"list","requestId":7})");
    out.push_back(R"({"type":"list","requestId":)" + value + R"(,"request\u0049d":"z"})");
    out.push_back(R"({"type":)" + value + "}");
    out.push_back(R"({"type":"resolve","type":)" + value + "}");
    out.push_back(R"({"type":"register","payload":)" + value + "}");
    out.push_back(R"({"type":"watch","payload":{"snapshot":true},"payload":)" + value + "}");
    out.push_back(R"({"typ\u0065":"resolve","payload":{"alias":"ga"},"payload":)" + value + "}");
  }
  return out;
}

}  // namespace

TEST_CASE("registry: the request reader answers exactly as the DOM reading", "[registry]") {
  Differential d;
  const std::string long_name(129, 'x');
  const std::string requests[] = {
      // register: good, with every id type, key order, escapes, nulls, extras
      R"({"type":"register","payload":{"nodeId":"n1","alias":"alpha","host":"127.0.0.1","port":5001},"requestId":"r1"})",
      R"({"requestId":2,"payload":{"port":5002,"host":"h","nodeId":"n2"},"type":"register"})",
      R"({"type":"register","payload":{"nodeId":"n3","alias":null,"host":"h","port":5003,"pid":77},"requestId":null})",
      R"({"type":"register","payload":{"nodeId":"n\"4\u00e9","alias":"a\\l\"ias","host":"h","port":5004}})",
      R"({"type":"register","payload":{"nodeId":"n5","alias":"five","host":"h","port":5005,"meta":{"k":1}}})",
      R"({"type":"register","payload":{"nodeId":"n6","host":"h","port":5006,"pid":"7"}})",
      R"({"type":"register","payload":{"nodeId":"n7","host":"h","port":5007},"extra":[1,2]})",
      R"({"type":"register","payload":{"nodeId":"n8","nodeId":"n9","host":"h","port":5008}})",
      R"({"type":"register","payload":{"nodeId":"n10","host":"h","port":5010,"pid":18446744073709551615}})",
      R"({"type":"register","payload":{"nodeId":"n11","host":"h","port":5011,"heartbeatMs":500,"maxFrame":65536}})",
      // register: every validation error
      R"({"type":"register"})",
      R"({"type":"register","payload":null,"requestId":1.5})",
      R"({"type":"register","payload":[1]})",
      R"({"type":"register","payload":"x"})",
      R"({"type":"register","payload":{"host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":")" + long_name + R"(","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","alias":"","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","alias":")" + long_name +
          R"(","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","alias":"a\nb","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","alias":"a\u007fb","host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h"}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":0}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":-1}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":65536}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":"80"}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":80.0}})",
      R"({"type":"register","payload":{"nodeId":"n","host":"h","port":1e2}})",
      R"({"type":"register","payload":{"nodeId":5,"host":"h","port":1}})",
      R"({"type":"register","payload":{"nodeId":"n12","alias":"alpha","host":"h","port":1}})",
      // resolve: alias, nodeId, escapes, unicode, missing, wrong types, extras
      R"({"type":"resolve","payload":{"alias":"alpha"},"requestId":"q"})",
      R"({"payload":{"alias":"alpha"},"requestId":{"a": [1, 2], "b":"x\"y"},"type":"resolve"})",
      R"({"type":"resolve","payload":{"alias":"n2"},"requestId":[true]})",
      R"({"type":"resolve","payload":{"nodeId":"n3"}})",
      R"({"type":"resolve","payload":{"alias":"","nodeId":"n3"}})",
      R"({"type":"resolve","payload":{"alias":null,"nodeId":"n3"}})",
      R"({"type":"resolve","payload":{"alias":"a\\l\"ias"}})",
      R"({"type":"resolve","payload":{"alias":"a\u005cl\u0022ias"}})",
      R"({"type":"resolve","payload":{"nodeId":"n\"4\u00e9"}})",
      "{\"type\":\"resolve\",\"payload\":{\"nodeId\":\"n\\\"4\xC3\xA9\"}}",
      R"({"type":"resolve","payload":{"alias":"five"}})",
      R"({"type":"resolve","payload":{"alias":"zz"}})",
      R"({"type":"resolve","payload":{}})",
      R"({"type":"resolve"})",
      R"({"type":"resolve","payload":null})",
      R"({"type":"resolve","payload":"alpha"})",
      R"({"type":"resolve","payload":{"alias":5}})",
      R"({"type":"resolve","payload":{"alias":"alpha","alias":"n2"}})",
      R"({"type":"resolve","payload":{"alias":"alpha","extra":1}})",
      R"({"type":"resolve","payload":{"\u0061lias":"alpha"}})",
      R"({"type":"resolve","type":"list"})",
      R"({"typ\u0065":"resolve","payload":{"alias":"alpha"}})",
      R"({"type":"resolv\u0065","payload":{"alias":"alpha"}})",
      R"({"type":"resolve","payload":{"alias":")" + std::string(5000, 'a') + R"("}})",
      // list, watch, heartbeat, unknown, malformed
      R"({"type":"list","payload":{},"requestId":-0})",
      R"({"type":"list","payload":"ignored"})",
      R"({"type":"watch","requestId":"w"})",
      R"({"type":"watch","payload":{"snapshot":true}})",
      R"({"type":"watch","payload":{"snapshot":"yes"}})",
      R"({"type":"heartbeat","payload":{"nodeId":"n2"},"requestId":true})",
      R"({"type":"heartbeat","payload":{"nodeId":"zz"}})",
      R"({"type":"heartbeat"})",
      R"({"type":"frobnicate","payload":{}})",
      R"({"payload":{}})",
      R"({"type":5})",
      R"({"type":null})",
      "{}",
      "x",
      "{",
      "[1,2]",
      "\"str\"",
      "42",
      "{\"type\":\"list\"} trailing",
      "{\"type\":\"\xff\"}",
      "\xEF\xBB\xBF{\"type\":\"list\",\"requestId\":1}",
      std::string("{\"type\":\"list\"}\0", 16),
      R"({"type":"list","requestId":1e400})",
      R"({"type":"list","requestId":18446744073709551616})",
      R"({"type":"resolve","payload":{"alias":"\ud800"}})",
      "[1]",
      std::string(1025, '[') + std::string(1025, ']'),
      R"({"type":"list","requestId":)" + std::string(1024, '[') + std::string(1024, ']') + "}",
      // unregister: other owner, missing, own
      R"({"type":"unregister","payload":{"nodeId":"n1"}})",
      R"({"type":"unregister","payload":{"nodeId":"zz"},"requestId":"u"})",
      // shutdown: refused, then forced
      R"({"type":"shutdown","payload":{}})",
      R"({"type":"shutdown","payload":{"force":"yes"}})",
  };
  std::int64_t now = kT0;
  for (const auto& body : requests)
    d.check(1, body, now++);
  d.check(2, R"({"type":"unregister","payload":{"nodeId":"n1"}})", now);
  d.check(1, R"({"type":"unregister","payload":{"nodeId":"n1"},"requestId":9})", now);
  d.check(1, R"({"type":"shutdown"})", now, false);
  d.check(3, R"({"type":"register","payload":{"nodeId":"n2","alias":"two","host":"h","port":9}})",
          now);  // refused: n2 belongs to connection 1
  CHECK(d.real.connection_closed(1) == d.reference.connection_closed(1));
  CHECK(d.real.expire(now + 100'000) == d.reference.expire(now + 100'000));
  d.check(3, R"({"type":"list"})", now);

  // Thousands more: every value in every field of every request type, from three
  // connections (so that registrations clash, replace and are refused).
  const auto generated = generated_requests();
  ConnectionId conn = 0;
  for (const auto& body : generated)
    d.check(4 + conn++ % 3, body, now++);
  d.check(3, R"({"type":"list"})", now);
  d.check(3, R"({"type":"shutdown","payload":{"force":true}})", now);
  CHECK(d.real.nodes().size() == d.reference.nodes().size());
  CHECK(d.real.stats() == d.reference.stats());
  CHECK(d.mismatches == 0);
  CHECK(generated.size() > 3000);
}

TEST_CASE("registry: a nodeId belongs to the connection that registered it", "[registry]") {
  Registry registry;
  registry.handle(3, R"({"type":"watch"})", kT0, true);
  REQUIRE(registry.handle(1, reg("n1", "a", 5000), kT0, true).events.size() == 1);
  // Another live connection cannot take it over (nor its alias, nor its port).
  auto taken = registry.handle(2, reg("n1", "b", 6000, "\"t\""), kT0 + 1, true);
  CHECK(
      taken.reply ==
      R"({"type":"response","requestId":"t","payload":{"error":"nodeId 'n1' is registered by another connection"}})");
  CHECK(taken.events.empty());
  CHECK(registry.owned_by(2) == 0);
  CHECK(registry.nodes().at(0).port == 5000);
  CHECK(registry.handle(9, R"({"type":"resolve","payload":{"alias":"a"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"node":)" + node_json("n1", "a", 5000, kT0) + "}}");
  CHECK(registry.handle(9, R"({"type":"resolve","payload":{"alias":"b"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Node not found"}})");
  // The owner may: replaced in place, no event, the old alias released.
  auto again = registry.handle(1, reg("n1", "b", 6000), kT0 + 2, true);
  CHECK(again.reply == R"({"type":"response","payload":{"success":true}})");
  CHECK(again.events.empty());
  CHECK(registry.nodes().at(0).port == 6000);
  CHECK(registry.handle(2, reg("n2", "a", 6001), kT0 + 3, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
  // Once the owner's connection is gone, the nodeId is free for anyone.
  CHECK(registry.connection_closed(1).size() == 1);
  CHECK(registry.handle(2, reg("n1", "", 7000), kT0 + 4, true).events.size() == 1);
  CHECK(registry.owned_by(2) == 2);
}

TEST_CASE("registry: an alias is never another node's nodeId, nor the reverse", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "alpha", 5001), kT0, true);
  // alias taken (the original's text, exactly)
  CHECK(registry.handle(2, reg("n2", "alpha", 5002), kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Alias 'alpha' already in use"}})");
  // alias = another node's nodeId: resolve "n1" would find two nodes
  CHECK(registry.handle(2, reg("n2", "n1", 5002), kT0, true).reply ==
        R"({"type":"response","payload":{"error":"alias 'n1' is the nodeId of another node"}})");
  // nodeId = another node's alias
  CHECK(registry.handle(2, reg("alpha", "", 5002), kT0, true).reply ==
        R"({"type":"response","payload":{"error":"nodeId 'alpha' is the alias of another node"}})");
  CHECK(registry.handle(2, reg("alpha", "zeta", 5002), kT0, true).reply ==
        R"({"type":"response","payload":{"error":"nodeId 'alpha' is the alias of another node"}})");
  CHECK(registry.size() == 1);
  // A node's own names may coincide: alias = its own nodeId; re-register keeps it.
  CHECK(registry.handle(2, reg("n3", "n3", 5003), kT0, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
  CHECK(registry.handle(2, reg("n3", "n3", 5004), kT0, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
  // Once n1 drops the alias 'alpha', the name is free, also as a nodeId.
  CHECK(registry.handle(1, reg("n1", "beta", 5001), kT0, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
  CHECK(registry.handle(2, reg("alpha", "", 5005), kT0, true).reply ==
        R"({"type":"response","payload":{"success":true}})");
  CHECK(registry.size() == 3);
}

TEST_CASE("registry: a node that announced heartbeatMs is expired from its registration on",
          "[registry]") {
  Registry registry(std::chrono::milliseconds(15000), 4);
  const auto announced = [](std::string_view id, int heartbeat_ms) {
    return R"({"type":"register","payload":{"nodeId":")" + std::string(id) +
           R"(","host":"127.0.0.1","port":1,"heartbeatMs":)" + std::to_string(heartbeat_ms) + "}}";
  };
  REQUIRE(registry.handle(1, announced("fast", 500), kT0, true).events.size() == 1);
  REQUIRE(registry.handle(1, announced("slow", 1000), kT0, true).events.size() == 1);
  REQUIRE(registry.handle(1, reg("old", "", 1), kT0, true).events.size() == 1);
  // Frozen from the start (never a heartbeat): the registration counts as the first.
  CHECK(registry.expire(kT0 + 2000).empty());
  auto expired = registry.expire(kT0 + 2001);  // TTL 4 x 500, whatever --ttl says
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].find(R"("nodeId":"fast")") != std::string::npos);
  CHECK(expired[0].find(R"("reason":"ttl_expired")") != std::string::npos);
  // 4 x 1000: a heartbeat restarts the count.
  registry.handle(1, R"({"type":"heartbeat","payload":{"nodeId":"slow"}})", kT0 + 2500, true);
  CHECK(registry.expire(kT0 + 6500).empty());
  CHECK(registry.expire(kT0 + 6501).size() == 1);
  // Not announced, never heartbeated (the original's nodes): never expired.
  CHECK(registry.expire(kT0 + 100'000'000).empty());
  CHECK(registry.size() == 1);
  // Re-registering without the extension goes back to the old rule...
  REQUIRE(registry.handle(2, announced("again", 500), kT0, true).events.size() == 1);
  registry.handle(2, reg("again", "", 1), kT0 + 10, true);
  CHECK(registry.expire(kT0 + 100'000).empty());
  // ...where --ttl applies once it heartbeats (the original's nodes, every 5 s).
  registry.handle(2, R"({"type":"heartbeat","payload":{"nodeId":"again"}})", kT0 + 100'000, true);
  CHECK(registry.expire(kT0 + 115'000).empty());
  CHECK(registry.expire(kT0 + 115'001).size() == 1);
  // --ttl 0: nothing ever expires.
  Registry never(std::chrono::milliseconds(0));
  never.handle(1, announced("n", 100), kT0, true);
  CHECK(never.expire(kT0 + 100'000'000).empty());
  CHECK(registry.stats().ttl_expired == 3);
}

TEST_CASE("registry: maxFrame is kept and shown in NodeInfo", "[registry]") {
  Registry registry;
  registry.handle(
      1, R"({"type":"register","payload":{"nodeId":"n1","host":"h","port":1,"maxFrame":16777216}})",
      kT0, true);
  registry.handle(1, reg("n2", "", 2), kT0, true);
  const auto nodes = registry.nodes();
  CHECK(nodes.at(0).max_frame == 16777216);
  CHECK(nodes.at(1).max_frame == 0);
  CHECK(
      registry.handle(9, R"({"type":"resolve","payload":{"nodeId":"n1"}})", kT0, true).reply ==
      R"({"type":"response","payload":{"node":{"nodeId":"n1","host":"h","port":1,"lastHeartbeat":)" +
          std::to_string(kT0) + R"(,"registeredAt":)" + std::to_string(kT0) +
          R"(,"maxFrame":16777216}}})");
}

TEST_CASE("registry: stats count joins and leaves by reason", "[registry]") {
  Registry registry(std::chrono::milliseconds(100));
  registry.handle(1, reg("a", "", 1), kT0, true);
  registry.handle(1, reg("a", "x", 1), kT0, true);  // a replacement is no join
  registry.handle(1, reg("b", "", 1), kT0, true);
  registry.handle(2, reg("c", "", 1), kT0, true);
  registry.handle(1, R"({"type":"unregister","payload":{"nodeId":"a"}})", kT0, true);
  registry.handle(2, R"({"type":"heartbeat","payload":{"nodeId":"c"}})", kT0, true);
  registry.expire(kT0 + 101);
  registry.connection_closed(1);
  // 3 joins; 3 leaves: one each ttl_expired, unregister, socket_closed.
  CHECK(registry.stats() == RegistryStats{3, 3, 1, 1, 1});
}

TEST_CASE("registry: the expiry sweep runs every min(ttl, 2 s)/8, at least every 10 ms",
          "[registry]") {
  using std::chrono::milliseconds;
  CHECK(expiry_sweep_period(milliseconds(15000)) == milliseconds(250));
  CHECK(expiry_sweep_period(milliseconds(2000)) == milliseconds(250));
  CHECK(expiry_sweep_period(milliseconds(800)) == milliseconds(100));
  CHECK(expiry_sweep_period(milliseconds(40)) == milliseconds(10));
  CHECK(expiry_sweep_period(milliseconds(0)) == milliseconds(1000));
}

TEST_CASE("registry: resolve answers in place, with every requestId type", "[registry]") {
  Registry registry;
  registry.handle(1, reg("n1", "one", 5001), kT0, true);
  const std::string node = node_json("n1", "one", 5001, kT0);
  for (const char* id : {R"("req_1")", "42", "1.50", "-0", "null", "true", "false",
                         R"({"a": [1, 2], "b":"x\"y"})", R"("\u00e9")", "[1, \"a\"]"}) {
    INFO(id);
    const std::string expected = R"({"type":"response","requestId":)" + std::string(id) +
                                 R"(,"payload":{"node":)" + node + "}}";
    CHECK(registry
              .handle(9,
                      R"({"type":"resolve","payload":{"alias":"one"},"requestId":)" +
                          std::string(id) + "}",
                      kT0, true)
              .reply == expected);
    CHECK(registry
              .handle(9,
                      R"({ "requestId" : )" + std::string(id) +
                          R"( , "payload" : { "nodeId" : "n1" } , "type" : "resolve" })",
                      kT0, true)
              .reply == expected);
  }
  // A heartbeat re-renders the cached NodeInfo; a resolve then shows it.
  registry.handle(1, R"({"type":"heartbeat","payload":{"nodeId":"n1"}})", kT0 + 42, true);
  CHECK(registry.handle(9, R"({"type":"resolve","payload":{"alias":"one"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"node":)" + node_json("n1", "one", 5001, kT0 + 42, kT0) +
            "}}");
  // Re-registering re-renders it too (new port, alias dropped: old alias no longer resolves).
  registry.handle(1, reg("n1", "", 6001), kT0 + 50, true);
  CHECK(registry.handle(9, R"({"type":"resolve","payload":{"nodeId":"n1"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"node":)" + node_json("n1", "", 6001, kT0 + 50, kT0 + 50) +
            "}}");
  CHECK(registry.handle(9, R"({"type":"resolve","payload":{"alias":"one"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Node not found"}})");
}

TEST_CASE("registry: next_outcome_into appends framed replies in place", "[registry]") {
  Registry registry;
  FrameDecoder decoder(64);
  std::string in;
  append_frame(in, R"({"type":"list"})");
  append_frame(in, R"({"type":"list","requestId":2})");
  decoder.feed(in);
  std::string frames = "prefix";
  PmdOutcome a, b, c;
  REQUIRE(next_outcome_into(registry, 1, decoder, kT0, true, frames, a));
  REQUIRE(next_outcome_into(registry, 1, decoder, kT0, true, frames, b));
  CHECK_FALSE(next_outcome_into(registry, 1, decoder, kT0, true, frames, c));
  CHECK(a.reply.empty());
  std::string expected = "prefix";
  append_frame(expected, R"({"type":"response","payload":{"nodes":[]}})");
  append_frame(expected, R"({"type":"response","requestId":2,"payload":{"nodes":[]}})");
  CHECK(frames == expected);

  FrameDecoder big(64);
  big.feed(std::string("\x00\x00\x00\x41", 4));
  std::string out;
  PmdOutcome error;
  REQUIRE(next_outcome_into(registry, 1, big, kT0, true, out, error));
  CHECK(error.close);
  std::string framed_error;
  append_frame(framed_error,
               R"({"type":"response","payload":{"error":"frame length 65 exceeds limit 64"}})");
  CHECK(out == framed_error);
}

TEST_CASE(
    "registry: clustered: a register waits for the verdict, remote entries answer after local",
    "[registry][pmd_cluster]") {
  Registry r;
  r.set_cluster("10.0.0.5:4369", [](std::string& out) { out += R"({"state":"current"})"; });
  // An aliased registration is held: no reply, no event, invisible.
  auto held = r.handle(1, reg("w-1", "w", 4000, "3"), kT0, true);
  REQUIRE(held.held);
  CHECK(held.reply.empty());
  CHECK(held.events.empty());
  CHECK(held.held->alias == "w");
  CHECK(held.held->request_id == "3");
  CHECK(held.held->info.find(R"("pmd":"10.0.0.5:4369")") != std::string::npos);
  CHECK(r.handle(2, R"({"type":"resolve","payload":{"alias":"w"}})", kT0, true).reply ==
        R"({"type":"response","payload":{"error":"Node not found"}})");
  // A local duplicate meanwhile: the original's error.
  CHECK(r.handle(2, reg("w-2", "w", 4001), kT0, true).reply.find("Alias 'w' already in use") !=
        std::string::npos);
  std::string payload;
  std::vector<std::string> events;
  REQUIRE(r.finish_register(1, "w-1", "", payload, events));
  CHECK(payload == R"({"success":true})");
  REQUIRE(events.size() == 1);
  CHECK(events[0].find("peer:join") != std::string::npos);
  CHECK(r.take_cluster_ops().empty());

  // Refused by the cluster: an error reply, nothing left, no event.
  REQUIRE(r.handle(3, reg("x-1", "x", 4002), kT0, true).held);
  payload.clear();
  events.clear();
  REQUIRE(r.finish_register(3, "x-1", "Alias 'x' already in use", payload, events));
  CHECK(payload == R"({"error":"Alias 'x' already in use"})");
  CHECK(events.empty());
  CHECK(r.take_cluster_ops().empty());
  // A held one whose connection closed: withdrawn, no leave.
  REQUIRE(r.handle(4, reg("y-1", "y", 4003), kT0, true).held);
  CHECK(r.connection_closed(4).empty());
  const auto ops = r.take_cluster_ops();
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].alias == "y");
  CHECK(ops[0].info.empty());

  // Remote entries: joins and leaves marked, resolve after local, list with or without.
  NodeInfo remote;
  remote.node_id = "far-1";
  remote.alias = "far";
  remote.host = "10.0.0.7";
  remote.port = 5000;
  remote.pmd = "10.0.0.7:4369";
  const auto join = r.remote_join(remote);
  REQUIRE(join.size() == 1);
  CHECK(join[0].find(R"("remote":true)") != std::string::npos);
  CHECK(
      r.handle(2, reg("far-2", "far", 4004), kT0, true).reply.find("Alias 'far' already in use") !=
      std::string::npos);
  CHECK(r.handle(2, R"({"type":"resolve","payload":{"alias":"far-1"}})", kT0, true)
            .reply.find(R"("host":"10.0.0.7")") != std::string::npos);
  const auto all = r.handle(2, R"({"type":"list"})", kT0, true).reply;
  CHECK(all.find(R"("alias":"far")") != std::string::npos);
  CHECK(all.find(R"("cluster":{"state":"current"})") != std::string::npos);
  const auto local = r.handle(2, R"({"type":"list","payload":{"cluster":false}})", kT0, true).reply;
  CHECK(local.find(R"("alias":"far")") == std::string::npos);
  CHECK(local.find(R"("cluster")") == std::string::npos);
  r.handle(5, R"({"type":"watch","payload":{"cluster":false}})", kT0, true);
  CHECK_FALSE(r.wants_cluster(5));
  CHECK(r.wants_cluster(2));
  const auto leave = r.remote_leave("far");
  REQUIRE(leave.size() == 1);
  CHECK(leave[0].find(R"("reason":"cluster")") != std::string::npos);
  CHECK(r.remote_leave("far").empty());
  // A published node that leaves: withdrawn.
  r.connection_closed(1);
  const auto gone = r.take_cluster_ops();
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].alias == "w");
}

}  // namespace distflow
