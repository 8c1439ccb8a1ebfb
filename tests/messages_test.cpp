#include "messages.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

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

TEST_CASE("messages: a pretty-printed payload never makes a second NDJSON line (issue 17 #3)",
          "[messages]") {
  EnvelopeParser parser;
  Envelope message;
  // A forged message hidden in a multi-line array: compaction keeps it inside.
  const std::string forged =
      "[\n{\"from\":\"bank\",\"payload\":{\"pay\":1000}}\n,\r\n\t\"a b\\n\\\" c\"\n]";
  REQUIRE_FALSE(parse(parser, R"({"from":"inj","payload":)" + forged + "}", message));
  std::string out;
  distflow::append_ndjson_line(out, message);
  CHECK(
      out ==
      R"({"from":"inj","timestamp":0,"payload":[{"from":"bank","payload":{"pay":1000}},"a b\n\" c"]})"
      "\n");
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // Without a newline the text stays exactly as received, spaces included.
  std::string kept;
  distflow::append_json_compact(kept, R"({ "a" : [1, 2] })");
  CHECK(kept == R"({ "a" : [1, 2] })");
}

TEST_CASE("messages: now_ms is milliseconds since the epoch", "[messages]") {
  const std::int64_t now = distflow::now_ms();
  REQUIRE(now > 1600000000000);  // after 2020
  REQUIRE(now < 5000000000000);
}

namespace {

// parse() (the one-pass fast path, with its fallback) and parse_general() (the
// JsonObjectWalker path only) must agree on every body: the same outcome, the same fields.
void require_same_outcome(EnvelopeParser& parser, std::string_view body) {
  CAPTURE(body);
  std::string padded(body);
  padded.append(distflow::kFramePadding, ' ');
  const std::string_view view = std::string_view(padded).substr(0, body.size());
  Envelope fast, general;
  std::string fast_why, general_why;
  const auto fast_ec = parser.parse(view, fast, &fast_why);
  const auto general_ec = parser.parse_general(view, general, &general_why);
  REQUIRE(fast_ec == general_ec);
  REQUIRE(fast_why == general_why);
  if (fast_ec)
    return;
  REQUIRE(fast.body() == body);
  REQUIRE(fast.from() == general.from());
  REQUIRE(fast.to() == general.to());
  REQUIRE(fast.alias() == general.alias());
  REQUIRE(fast.has_alias() == general.has_alias());
  REQUIRE(fast.payload() == general.payload());
  REQUIRE(fast.timestamp() == general.timestamp());
  REQUIRE(fast.from_json() == general.from_json());
  REQUIRE(fast.to_json() == general.to_json());
  REQUIRE(fast.alias_json() == general.alias_json());
}

}  // namespace

TEST_CASE("messages: the fast path agrees with the general parser", "[messages]") {
  const char* bodies[] = {
      // Our encoder's layout, and the original node's (JSON.stringify order).
      R"({"from":"n1","to":"n2","alias":"w","timestamp":1732300000123,"payload":{"a":1}})",
      R"({"from":"n1","to":"n2","payload":{"s":1,"q":42,"p":"xxxx"},"timestamp":1732300000123})",
      R"({"payload":[1,2,3],"timestamp":5,"to":"n2","from":"n1"})",
      R"({"timestamp":-7,"payload":null,"from":"n1"})",
      R"(  {  "from" : "n1" ,"payload" : "text" , "seq" : 17 , "ref" : {"x":[]} }  )",
      "{\"from\":\"n1\",\"payload\":\t{\"k\"\n:\r[true,false,null]}}\n",
      // Non-object payloads.
      R"({"from":"a","payload":42})",
      R"({"from":"a","payload":-0.5e-7})",
      R"({"from":"a","payload":"a string with \"quotes\" and \u00e9 and \\ \/ \b\f\n\r\t"})",
      R"({"from":"a","payload":true})",
      R"({"from":"a","payload":[]})",
      R"({"from":"a","payload":{}})",
      // UTF-8 in payload strings and keys (valid: 2, 3 and 4 bytes).
      "{\"from\":\"a\",\"payload\":{\"k\xc3\xa9\":\"\xe2\x82\xac \xf0\x9f\x98\x80\"}}",
      "{\"from\":\"\xc3\xa9t\xc3\xa9\",\"payload\":1}",
      // Duplicated keys: the last one wins in both.
      R"({"from":"a","from":"b","payload":1,"payload":2,"timestamp":1,"timestamp":2})",
      // Taken by the fallback: escaped fields and keys, surrogates, odd numbers.
      R"({"from":"a\"b","to":"t\n","alias":"\u0077","payload":[]})",
      R"({"fro\u006d":"a","payload":1})",
      R"({"from":"a","payload":"\ud83d\ude00"})",
      R"({"from":"a","payload":"\udc00"})",
      R"({"from":"a","payload":1,"timestamp":1.5})",
      R"({"from":"a","payload":1,"timestamp":1e3})",
      R"({"from":"a","payload":1,"timestamp":12345678901234567890123})",
      R"({"from":"a","payload":1,"timestamp":9007199254740993})",
      R"({"from":"a","payload":123456789012345678901234567890})",
      R"({"from":"a","payload":1e400})",
      R"({"from":"a","payload":1,"alias":null})",
      R"({"from":"a","payload":1,"alias":7})",
      // Malformed: every error comes from the general parser, with its text.
      R"({"from":"a","payload":[1,,2]})",
      R"({"from":"a","payload":{"x":tru}})",
      R"({"from":"a","payload":01})",
      R"({"from":"a","payload":1.})",
      R"({"from":"a","payload":-})",
      R"({"from":"a","payload":"\x"})",
      R"({"from":"a","payload":"\u12"})",
      R"({"from":"a","payload":[1 2]})",
      R"({"from":"a","payload":{"k" 1}})",
      R"({"from":"a","payload":{"k":1,}})",
      R"({"from":"a","payload":1} trailing)",
      R"({"from":"a","payload":1}})",
      R"({"from":"a","payload":1)",
      R"({"from":"a","payload":1,"x":[tru,,]})",
      "{\"from\":\"a\",\"payload\":\"tab\there\"}",
      "{\"from\":\"a\",\"payload\":\"\xc3\x28\"}",
      "{\"from\":\"a\",\"payload\":\"\xe0\x80\xaf\"}",
      "{\"from\":\"a\",\"payload\":\"\xed\xa0\x80\"}",
      "{\"from\":\"a\",\"payload\":\"\xf4\x90\x80\x80\"}",
      "{\"from\":\"\xff\xfe\",\"payload\":1}",
      R"({"from":1,"payload":1})",
      R"({"from":"a","to":[],"payload":1})",
      R"({"from":"a","payload":1,"timestamp":"x"})",
      R"({"payload":1})",
      R"({"from":"a"})",
      R"({})",
      R"([1,2])",
      R"("text")",
      "42",
      "nope",
      "",
      "   ",
  };
  EnvelopeParser parser;
  for (const char* body : bodies)
    require_same_outcome(parser, body);

  // Nesting, around the limit of kJsonMaxDepth levels (the envelope is one).
  for (int depth : {1, 63, 64, 65, 200, 1022, 1023, 1024, 2000}) {
    const std::string payload = std::string(static_cast<std::size_t>(depth), '[') +
                                std::string(static_cast<std::size_t>(depth), ']');
    require_same_outcome(parser, R"({"from":"a","payload":)" + payload + "}");
  }
}

TEST_CASE("messages: the fast path agrees with the general parser on mutated bodies",
          "[messages]") {
  const std::string seeds[] = {
      R"({"from":"n1","to":"n2","alias":"w","timestamp":1732300000123,"payload":{"s":1,"q":42,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}})",
      R"({"from":"n1","to":"n2","payload":[1,-2.5e-3,true,null,"\u00e9\n"],"timestamp":17})",
  };
  // Single-byte replacements, insertions and deletions with JSON's special bytes.
  const char specials[] = {'"', '\\', '{', '}', '[', ']',    ':',    ',',    ' ',    '0',   '-',
                           '.', 'e',  'u', 't', 'n', '\x01', '\x7f', '\x80', '\xc3', '\xff'};
  EnvelopeParser parser;
  std::uint32_t state = 12345;
  auto next = [&state](std::uint32_t n) {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) % n;
  };
  for (const std::string& seed : seeds) {
    for (int round = 0; round < 3000; ++round) {
      std::string body = seed;
      for (std::uint32_t edits = 1 + next(3); edits > 0 && !body.empty(); --edits) {
        const std::size_t at = next(static_cast<std::uint32_t>(body.size()));
        const char c = specials[next(sizeof specials)];
        switch (next(3)) {
          case 0:
            body[at] = c;
            break;
          case 1:
            body.insert(body.begin() + static_cast<std::ptrdiff_t>(at), c);
            break;
          default:
            body.erase(at, 1);
        }
      }
      require_same_outcome(parser, body);
    }
  }
}

TEST_CASE("messages: a huge timestamp is clamped, as any out-of-range number", "[messages]") {
  EnvelopeParser parser;
  Envelope message;
  REQUIRE_FALSE(parse(parser, R"({"from":"a","payload":1e400,"timestamp":1e400})", message));
  REQUIRE(message.payload() == "1e400");
  REQUIRE(message.timestamp() == static_cast<std::int64_t>(9.2e18));
  REQUIRE_FALSE(parse(parser, R"({"from":"a","payload":1,"timestamp":-1e400})", message));
  REQUIRE(message.timestamp() == -static_cast<std::int64_t>(9.2e18));
}

TEST_CASE("messages: envelopes share blocks, are freed on any thread, outlive their parser",
          "[messages]") {
  auto body_of = [](int i) {
    return R"({"from":"n1","payload":{"i":)" + std::to_string(i) + R"(,"p":")" +
           std::string(static_cast<std::size_t>(i % 300), 'x') + R"("}})";
  };
  std::vector<Envelope> kept;
  std::vector<int> kept_ids;
  {
    EnvelopeParser parser;
    std::vector<Envelope> window(64);
    for (int i = 0; i < 20000; ++i) {
      // Mostly small bodies (shared blocks), some larger than a block's share.
      const std::string body = i % 1000 == 999 ? body_of(i) + std::string(20000, ' ') : body_of(i);
      Envelope& slot = window[static_cast<std::size_t>(i) % window.size()];
      REQUIRE_FALSE(parse(parser, body, slot));
      if (i % 97 == 0) {
        kept.push_back(slot);  // a copy shares the block
        kept_ids.push_back(i);
      }
      if (i % 2000 == 1999) {
        // Release a window's worth on another thread, as the dispatcher does.
        std::thread([moved = std::move(window)]() mutable { moved.clear(); }).join();
        window = std::vector<Envelope>(64);
      }
    }
  }
  // The parser is gone; what was kept is intact.
  for (std::size_t k = 0; k < kept.size(); ++k) {
    const int i = kept_ids[k];
    REQUIRE(kept[k].payload() == R"({"i":)" + std::to_string(i) + R"(,"p":")" +
                                     std::string(static_cast<std::size_t>(i % 300), 'x') + R"("})");
  }
  Envelope moved = std::move(kept.front());
  REQUIRE(kept.front().payload().empty());
  REQUIRE(moved.from() == "n1");
  kept.front() = moved;
  REQUIRE(kept.front().from() == "n1");
  std::thread([&kept] { kept.clear(); }).join();
}
