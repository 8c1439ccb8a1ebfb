#include "messages.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "framing.hpp"

using distflow::Envelope;
using distflow::EnvelopeParser;
using distflow::errc;

namespace {

// The parser's precondition: kFramePadding readable bytes after the body.
std::error_code parse(EnvelopeParser& parser, std::string_view body, Envelope& out,
                      std::string* why = nullptr) {
  std::string padded(body);
  padded.append(distflow::kFramePadding, ' ');
  return parser.parse(std::string_view(padded).substr(0, body.size()), out, why);
}

}  // namespace

TEST_CASE("messages: payload keeps its exact JSON text for every type", "[messages]") {
  struct Row {
    const char* payload;
  };
  const Row rows[] = {
      {R"({"a":1,"b":[true,null,"x"],"c":{"d":-1.5e3}})"},
      {R"({ "spaced" : [ 1 , 2 ] })"},
      {R"({})"},
      {R"([1,"two",{"three":3}])"},
      {R"([])"},
      {R"("a string with \"quotes\" and \u00e9")"},
      {R"(42)"},
      {R"(-0.5e-7)"},
      {R"(true)"},
      {R"(false)"},
      {R"(null)"},
  };
  EnvelopeParser parser;
  for (const Row& row : rows) {
    CAPTURE(row.payload);
    for (const char* layout : {"{\"from\":\"n1\",\"to\":\"n2\",\"payload\":%,\"timestamp\":7}",
                               "{\"payload\":%,\"from\":\"n1\"}", "{\"from\":\"n1\",\"payload\":%}",
                               "{ \"from\" : \"n1\" , \"payload\" : % \n}"}) {
      std::string body = layout;
      body.replace(body.find('%'), 1, row.payload);
      CAPTURE(body);
      Envelope message;
      std::string why;
      REQUIRE_FALSE(parse(parser, body, message, &why));
      REQUIRE(message.payload() == row.payload);
      REQUIRE(message.from() == "n1");
      REQUIRE(message.body() == body);
    }
  }
}

TEST_CASE("messages: envelope fields, alias optional, timestamp", "[messages]") {
  EnvelopeParser parser;
  Envelope message;
  REQUIRE_FALSE(parse(parser,
                      R"({"from":"n1","to":"n2","alias":"worker","payload":{"x":1},)"
                      R"("timestamp":1732300000123,"seq":5,"ref":"r"})",
                      message));
  REQUIRE(message.from() == "n1");
  REQUIRE(message.to() == "n2");
  REQUIRE(message.has_alias());
  REQUIRE(message.alias() == "worker");
  REQUIRE(message.alias_json() == "\"worker\"");
  REQUIRE(message.timestamp() == 1732300000123);

  // Reusing the envelope clears what the previous message had.
  REQUIRE_FALSE(parse(parser, R"({"from":"n3","payload":1})", message));
  REQUIRE_FALSE(message.has_alias());
  REQUIRE(message.alias().empty());
  REQUIRE(message.to().empty());
  REQUIRE(message.to_json().empty());
  REQUIRE(message.timestamp() == 0);
}

TEST_CASE("messages: escaped from and to are unescaped, raw tokens kept", "[messages]") {
  EnvelopeParser parser;
  Envelope message;
  REQUIRE_FALSE(parse(parser, R"({"from":"a\"b\\c\u00e9","to":"t\n","payload":[]})", message));
  REQUIRE(message.from() == "a\"b\\c\xc3\xa9");
  REQUIRE(message.from_json() == R"("a\"b\\c\u00e9")");
  REQUIRE(message.to() == "t\n");
  REQUIRE(message.to_json() == R"("t\n")");
  REQUIRE(message.payload() == "[]");
}

TEST_CASE("messages: malformed envelopes give the right error", "[messages]") {
  struct Row {
    std::string body;
    errc error;
    std::string why;  // exact when not empty
  };
  const Row rows[] = {
      {"[1,2]", errc::not_an_object, "not a JSON object"},
      {"\"text\"", errc::not_an_object, "not a JSON object"},
      {"42", errc::not_an_object, "not a JSON object"},
      {"{\"from\":\"a\",\"payload\":", errc::bad_json, ""},
      {"{\"from\":\"a\" \"payload\":1}", errc::bad_json, ""},
      {"not json", errc::bad_json, ""},
      {"{\"from\":\"a\",\"payload\":{\"x\":tru}}", errc::bad_json, ""},
      {"{\"from\":\"a\",\"payload\":[1,,2]}", errc::bad_json, ""},
      {"{\"from\":\"a\",\"payload\":1} trailing", errc::bad_json, ""},
      {"{\"from\":\"\xff\xfe\",\"payload\":1}", errc::bad_json, ""},
      {"{\"from\":\"a\",\"payload\":\"\xc3\x28\"}", errc::bad_json, ""},
      {"{\"from\":1,\"payload\":1}", errc::wrong_type, "'from' has the wrong type"},
      {"{\"from\":\"a\",\"to\":[],\"payload\":1}", errc::wrong_type, "'to' has the wrong type"},
      {"{\"from\":\"a\",\"payload\":1,\"timestamp\":\"x\"}", errc::wrong_type,
       "'timestamp' is not a number"},
      {"{\"payload\":1}", errc::missing_field, "missing 'from'"},
      {"{\"from\":\"a\"}", errc::missing_field, "missing 'payload'"},
      {"{}", errc::missing_field, "missing 'from'"},
  };
  EnvelopeParser parser;
  for (const Row& row : rows) {
    CAPTURE(row.body);
    Envelope message;
    std::string why;
    REQUIRE(parse(parser, row.body, message, &why) == row.error);
    if (!row.why.empty())
      REQUIRE(why == row.why);
    REQUIRE_FALSE(why.empty());
  }
  // The parser is still usable after errors.
  Envelope message;
  REQUIRE_FALSE(parse(parser, R"({"from":"a","payload":1})", message));
}

TEST_CASE("messages: JsonValidator accepts values and rejects the rest", "[messages]") {
  distflow::JsonValidator validator;
  struct Row {
    std::string text;
    bool valid, object;
  };
  const Row rows[] = {
      {"{}", true, true},
      {R"({"a":[1,2,{"b":null}]})", true, true},
      {" {\"a\":1} \n", true, true},
      {"[1,2]", true, false},
      {"\"s\"", true, false},
      {"3.5", true, false},
      {"null", true, false},
      {"", false, false},
      {"{", false, false},
      {"{\"a\":1}}", false, false},
      {"{\"a\":tru}", false, false},
      {"\"\xff\"", false, false},
      {"{} {}", false, false},
  };
  for (const Row& row : rows) {
    CAPTURE(row.text);
    std::string why;
    const auto ec = validator.validate(row.text, &why);
    REQUIRE(!ec == row.valid);
    if (!row.valid) {
      REQUIRE(ec == errc::bad_json);
      REQUIRE_FALSE(why.empty());
    }
    const auto object_ec = validator.validate_object(row.text);
    if (row.object)
      REQUIRE_FALSE(object_ec);
    if (row.valid && !row.object)
      REQUIRE(object_ec == errc::not_an_object);
    if (!row.valid)
      REQUIRE(object_ec == errc::bad_json);
  }
}

TEST_CASE("messages: encoder output round-trips through the decoder and parser", "[messages]") {
  struct Row {
    std::string from, to, alias, payload;
    std::int64_t timestamp;
  };
  const Row rows[] = {
      {"n1", "n2", "", R"({"hello":"world"})", 1732300000123},
      {"n1", "n2", "worker", R"([1,2,3])", 0},
      {"quo\"te", "tab\t", "al\\ias", R"("text")", -5},
      {"n1", "n2", "", "null", 1},
  };
  std::string stream;
  for (const Row& row : rows) {
    distflow::MessageEncoder(row.from, row.to, row.alias)
        .append(stream, row.payload, row.timestamp);
  }
  distflow::FrameDecoder decoder(distflow::kDefaultNodeFrameLimit);
  decoder.feed(stream);
  EnvelopeParser parser;
  std::error_code ec;
  for (const Row& row : rows) {
    CAPTURE(row.from, row.payload);
    const auto body = decoder.next(ec);
    REQUIRE(body.has_value());
    Envelope message;
    REQUIRE_FALSE(parser.parse(*body, message));
    REQUIRE(message.from() == row.from);
    REQUIRE(message.to() == row.to);
    REQUIRE(message.has_alias() == !row.alias.empty());
    REQUIRE(message.alias() == row.alias);
    REQUIRE(message.payload() == row.payload);
    REQUIRE(message.timestamp() == row.timestamp);
  }
  REQUIRE_FALSE(decoder.next(ec).has_value());
  REQUIRE_FALSE(ec);
}

TEST_CASE("messages: encoder writes the wire format of PROTOCOL.md", "[messages]") {
  std::string out;
  distflow::MessageEncoder("n1", "n2", "w").append(out, R"({"a":1})", 17);
  const std::string body =
      R"({"from":"n1","to":"n2","alias":"w","timestamp":17,"payload":{"a":1}})";
  REQUIRE(out.substr(4) == body);
  REQUIRE(static_cast<unsigned char>(out[3]) == body.size());
}

TEST_CASE("messages: append_ndjson_line emits one line with the exact payload", "[messages]") {
  EnvelopeParser parser;
  Envelope message;
  REQUIRE_FALSE(parse(parser,
                      R"({"payload": {"k" : [1, 2]}, "to":"n2","from":"n\"1","alias":"w",)"
                      R"("timestamp":12})",
                      message));
  std::string out = "previous\n";
  distflow::append_ndjson_line(out, message);
  REQUIRE(out ==
          "previous\n"
          R"({"from":"n\"1","alias":"w","to":"n2","timestamp":12,"payload":{"k" : [1, 2]}})"
          "\n");

  REQUIRE_FALSE(parse(parser, R"({"from":"a","payload":null})", message));
  out.clear();
  distflow::append_ndjson_line(out, message);
  REQUIRE(out == "{\"from\":\"a\",\"timestamp\":0,\"payload\":null}\n");
}

TEST_CASE("messages: append_json_string escapes", "[messages]") {
  std::string out;
  distflow::append_json_string(out, "a\"b\\c\n\x01");
  REQUIRE(out == R"("a\"b\\c\n\u0001")");
}

TEST_CASE("messages: now_ms is milliseconds since the epoch", "[messages]") {
  const std::int64_t now = distflow::now_ms();
  REQUIRE(now > 1600000000000);  // after 2020
  REQUIRE(now < 5000000000000);
}
