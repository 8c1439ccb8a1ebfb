// The node's outbound line parser: {"to":...,"payload":...} located without a DOM,
// the payload kept as its exact text, every kind of bad line named.

#include "node_bridge.hpp"

#include <string>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "ndjson.hpp"

namespace distflow {
namespace {

struct Parsed {
  std::error_code ec;
  std::string to, payload, why, reply_to;
  bool is_reply = false;
};

Parsed parse(const std::string& line) {
  static OutboundParser parser;
  std::string padded = line + std::string(kLinePadding, ' ');
  OutboundLine out;
  Parsed result;
  result.ec = parser.parse(std::string_view(padded.data(), line.size()), out, &result.why);
  result.to = out.to;
  result.payload = out.payload;
  result.reply_to = out.reply_to;
  result.is_reply = out.reply_to.data() != nullptr;
  return result;
}

}  // namespace

TEST_CASE("node_bridge: outbound lines keep the payload text exactly", "[node_bridge]") {
  struct Case {
    std::string line, to, payload;
  };
  const std::vector<Case> cases{
      {R"({"to":"w","payload":{"n":1}})", "w", R"({"n":1})"},
      {R"({"payload": [1, 2 ,3] , "to":"w"})", "w", "[1, 2 ,3]"},
      {R"({"to":"w","payload":"text"})", "w", R"("text")"},
      {R"({"to":"w","payload":12.5e3,"extra":{"x":[]}})", "w", "12.5e3"},
      {R"({"to":"w","payload":null})", "w", "null"},
      {R"({"to":"w\u00e9","payload":{"a":{"b":"\u00e9"}}})", "w\xc3\xa9",
       R"({"a":{"b":"\u00e9"}})"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    const auto r = parse(c.line);
    CHECK_FALSE(r.ec);
    CHECK(r.to == c.to);
    CHECK(r.payload == c.payload);
  }
}

TEST_CASE("node_bridge: bad outbound lines are named", "[node_bridge]") {
  struct Case {
    std::string line;
    errc code;
    std::string why;
  };
  const std::vector<Case> cases{
      {"not json", errc::bad_json, "invalid JSON"},
      {R"({"to":"w","payload":{"n":tru}})", errc::bad_json, "invalid JSON"},
      {R"({"to":"w","payload":1} trailing)", errc::bad_json, "invalid JSON"},
      {"[1,2]", errc::not_an_object, "expected an object"},
      {R"({"payload":1})", errc::missing_field, "missing 'to'"},
      {R"({"to":"w"})", errc::missing_field, "missing 'payload'"},
      {R"({"to":5,"payload":1})", errc::wrong_type, "'to' is not a string"},
      {R"({"to":"","payload":1})", errc::wrong_type, "'to' is empty"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    const auto r = parse(c.line);
    CHECK(r.ec == c.code);
    CHECK(r.why.find(c.why) != std::string::npos);
  }
}

TEST_CASE("node_bridge: replyTo lines answer a request; 'to' is then optional",
          "[node_bridge][call]") {
  auto r = parse(R"({"replyTo":"k3.17","payload":{"v":1}})");
  CHECK_FALSE(r.ec);
  CHECK(r.is_reply);
  CHECK(r.reply_to == "k3.17");
  CHECK(r.to.empty());
  CHECK(r.payload == R"({"v":1})");

  r = parse(R"({"payload":2,"to":"call-1","replyTo":"r\u00e9"})");
  CHECK_FALSE(r.ec);
  CHECK(r.reply_to == "r\xc3\xa9");
  CHECK(r.to == "call-1");

  CHECK_FALSE(parse(R"({"to":"w","payload":1})").is_reply);
  r = parse(R"({"replyTo":17,"payload":1})");
  CHECK(r.ec == errc::wrong_type);
  CHECK(r.why.find("'replyTo' is not a string") != std::string::npos);
  r = parse(R"({"replyTo":"k3.1"})");
  CHECK(r.ec == errc::missing_field);
}

}  // namespace distflow
