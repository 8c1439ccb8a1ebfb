// The json module (src/json.hpp): one-pass validation, the object walker, array
// elements, string escapes both ways; checked against nlohmann::json (the oracle
// in tests/json_oracle.hpp) where the two must agree.

#include "json.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "json_oracle.hpp"

using distflow::errc;

TEST_CASE("json: JsonValidator accepts values and rejects the rest", "[json]") {
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

TEST_CASE("json: JsonValidator agrees with the nlohmann-based oracle", "[json]") {
  const char* texts[] = {
      "{}",
      "[]",
      "0",
      "-0",
      "1.5e10",
      "-12.25E-3",
      "\"\"",
      "\"\\u0000\"",
      "true",
      " null ",
      "[1,[2,[3,{\"a\":{}}]]]",
      "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
      "\"\\ud83d\\ude00\"",
      "\"\\ud83d\"",
      "123456789012345678901234567890",
      "1e400",
      "1e-400",
      "",
      " ",
      "{",
      "}",
      "[1,]",
      "[,1]",
      "{\"a\"}",
      "{\"a\":}",
      "{1:2}",
      "01",
      "1.",
      ".5",
      "+1",
      "1e",
      "1e+",
      "tru",
      "truex",
      "nul",
      "\"\\q\"",
      "\"\x1f\"",
      "\"\xc0\xaf\"",
      "\"\xf5\x80\x80\x80\"",
      "[] []",
      "{}x",
      "\"unterminated",
  };
  distflow::JsonValidator validator;
  distflow::JsonObjectWalker walker;
  for (const char* text : texts) {
    CAPTURE(text);
    const std::string_view view(text);
    const auto verdict = distflow_test::oracle_parse(view);
    REQUIRE(!validator.validate(view) == verdict.valid);
    REQUIRE(!validator.validate_object(view) == verdict.object);
    REQUIRE(!walker.walk(view, false) == verdict.object);
  }
}

// Where the scanner's acceptance was chosen (documented in messages.hpp): as
// JSON.parse for numbers, stricter than JSON.parse for lone surrogates (no UTF-8
// form) and for nesting (kJsonMaxDepth), as simdjson was before.
TEST_CASE("json: edge cases of acceptance", "[json]") {
  distflow::JsonValidator validator;
  struct Row {
    std::string text;
    bool valid;
  };
  const std::string deepest =
      std::string(distflow::kJsonMaxDepth, '[') + std::string(distflow::kJsonMaxDepth, ']');
  const Row rows[] = {
      {"1e400", true},  // JSON.parse: Infinity; forwarded as its text
      {"-1e400", true},
      {"1e-400", true},
      {"[123456789012345678901234567890e999999999]", true},
      {"\"\\ud83d\\ude00\"", true},  // a surrogate pair: one code point
      {"\"\\ud83d\"", false},        // lone high surrogate (JSON.parse accepts)
      {"\"\\ude00\"", false},        // lone low surrogate (JSON.parse accepts)
      {"\"\\ud83d\\u0041\"", false},
      {"\"\xed\xa0\xbd\"", false},  // an encoded surrogate is not UTF-8
      {deepest, true},
      {"[" + deepest + "]", false},
      {"\xef\xbb\xbf{}", false},  // a byte order mark is not whitespace
  };
  for (const Row& row : rows) {
    CAPTURE(row.text);
    REQUIRE(!validator.validate(row.text) == row.valid);
    REQUIRE(distflow_test::oracle_parse(row.text).valid == row.valid);
  }
}

TEST_CASE("json: errors name the reason and the byte", "[json]") {
  distflow::JsonValidator validator;
  struct Row {
    std::string text;
    std::string why;
  };
  const Row rows[] = {
      {"", "unexpected end of input at byte 0"},
      {"[1,]", "unexpected character at byte 3"},
      {"[1 2]", "expected ',' or ']' in an array at byte 3"},
      {"{\"a\" 1}", "expected ':' after a key at byte 5"},
      {"{1:2}", "expected a string key at byte 1"},
      {"{\"a\":1,}", "expected a string key at byte 7"},
      {"{\"a\":1 x", "expected ',' or '}' in an object at byte 7"},
      {"\"abc", "unterminated string at byte 4"},
      {"\"\\q\"", "invalid escape in a string at byte 1"},
      {"\"\\u12\"", "invalid \\u escape at byte 1"},
      {"\"\\udc00\"", "lone low surrogate in a \\u escape at byte 1"},
      {"\"\\ud800x\"", "high surrogate in a \\u escape without a low one at byte 1"},
      {"\"\x01\"", "unescaped control character in a string at byte 1"},
      {"\"\xc3\x28\"", "invalid UTF-8 in a string at byte 1"},
      {"-x", "invalid number at byte 0"},
      {"1.e5", "invalid number at byte 0"},
      {"tru", "invalid literal at byte 0"},
      {"{} {}", "trailing content after the JSON value at byte 3"},
      {std::string(1025, '['), "nesting deeper than 1024 levels at byte 1024"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.text);
    std::string why;
    REQUIRE(validator.validate(row.text, &why) == errc::bad_json);
    REQUIRE(why == row.why);
  }
}

TEST_CASE("json: JsonObjectWalker lists top-level members", "[json]") {
  distflow::JsonObjectWalker walker;
  const std::string text =
      R"( { "a" : 1 , "b\u00e9\n" : {"x":[1,2]} , "a":"s" , "\ud83d\ude00":null } )";
  REQUIRE_FALSE(walker.walk(text, false));
  const auto& m = walker.members();
  REQUIRE(m.size() == 4);
  CHECK(m[0].key == "a");
  CHECK(m[0].value == "1");
  CHECK_FALSE(m[0].key_escaped);
  CHECK(m[1].key == "b\xc3\xa9\n");
  CHECK(m[1].key_escaped);
  CHECK(m[1].value == R"({"x":[1,2]})");
  CHECK(m[2].key == "a");
  CHECK(m[2].value == R"("s")");
  CHECK(m[3].key == "\xf0\x9f\x98\x80");
  CHECK(m[3].value == "null");
  REQUIRE_FALSE(walker.walk("{}", false));
  CHECK(walker.members().empty());
  std::string why;
  REQUIRE(walker.walk("[1]", false, &why) == errc::not_an_object);
  CHECK(why == "not a JSON object");
  REQUIRE(walker.walk("[1", false, &why) == errc::bad_json);
  CHECK(why == "unexpected end of input at byte 2");
  REQUIRE(walker.walk(R"({"a":1,"b":[}])", false, &why) == errc::bad_json);
  CHECK(why == "unexpected character at byte 12");
  CHECK(walker.members().empty());
  std::string storage;
  CHECK(distflow::json_string_text(R"("plain")", storage) == "plain");
  CHECK(distflow::json_string_text(R"("a\/b\"\\\t\u0000")", storage) ==
        std::string("a/b\"\\\t\0", 7));
}

TEST_CASE("json: append_json_string escapes", "[json]") {
  std::string out;
  distflow::append_json_string(out, "a\"b\\c\n\x01");
  REQUIRE(out == R"("a\"b\\c\n\u0001")");
}

namespace {

std::string ours_quoted(std::string_view text) {
  std::string out;
  distflow::append_json_string(out, text);
  return out;
}

/// nlohmann's dump (replace), with DEL and C1 escaped as append_json_string does.
std::string escape_controls_as_json(std::string dumped) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < dumped.size(); ++i) {
    const auto c = static_cast<unsigned char>(dumped[i]);
    const auto next = i + 1 < dumped.size() ? static_cast<unsigned char>(dumped[i + 1]) : 0;
    if (c == 0x7f) {
      out += "\\u007f";
    } else if (c == 0xc2 && next >= 0x80 && next < 0xa0) {
      out += "\\u00";
      out += kHex[next >> 4];
      out += kHex[next & 0xf];
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string nlohmann_quoted(std::string_view text) {
  return escape_controls_as_json(
      nlohmann::json(std::string(text))
          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace

TEST_CASE("json: append_json_string writes what nlohmann's dump (replace) writes, C1 escaped",
          "[json]") {
  const std::string rows[] = {
      "",
      "plain",
      "\x7f"
      " del stays",
      "tab\there\r\n\b\f",
      std::string("nul\0inside", 11),
      "\x1b[2J",
      "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80",  // é € 😀
      "\xC2\x85",                              // C1 NEL: escaped
      "\xC2\x9b"
      "31m\xC2\xa0",  // C1 CSI, then a no-break space (kept)
      "\xff",         // never valid
      "a\x80"
      "b",                     // a lone continuation byte
      "\xC3",                  // truncated at the end
      "\xE2\x82",              // truncated at the end
      "\xE2\x82x",             // truncated, then ASCII
      "\xE0\x80\x80",          // overlong
      "\xC0\xAF",              // overlong
      "\xED\xA0\x80",          // an encoded surrogate
      "\xF4\x90\x80\x80",      // above U+10FFFF
      "\xF0\x9F\x98",          // truncated 4-byte sequence
      "\xF0\x9F\x98\xC3\xA9",  // truncated, then a valid sequence
      "\xF8\x88\x80\x80\x80",  // five-byte form
  };
  for (const std::string& text : rows) {
    CAPTURE(text);
    CHECK(ours_quoted(text) == nlohmann_quoted(text));
  }
  // Every string of one and two bytes.
  for (int a = 0; a < 256; ++a) {
    const std::string one(1, static_cast<char>(a));
    REQUIRE(ours_quoted(one) == nlohmann_quoted(one));
    for (int b = 0; b < 256; ++b) {
      const std::string two{static_cast<char>(a), static_cast<char>(b)};
      REQUIRE(ours_quoted(two) == nlohmann_quoted(two));
    }
  }
  // Every lead byte with every second byte, before a third and a fourth.
  for (int a = 0xc0; a < 256; ++a) {
    for (int b = 0x70; b < 0xd0; ++b) {
      for (const char* rest : {"\x80", "\xbf\x80", "\xbfx", "\x80\x80\x80"}) {
        const std::string text = std::string{static_cast<char>(a), static_cast<char>(b)} + rest;
        REQUIRE(ours_quoted(text) == nlohmann_quoted(text));
      }
    }
  }
}

TEST_CASE("json: append_json_string output is a valid string that reads back", "[json]") {
  distflow::JsonValidator validator;
  for (const std::string text : {"a\"b\\c\n\x01\x1f\x7f", "\xC3\xA9\xF0\x9F\x98\x80/"}) {
    CAPTURE(text);
    const std::string token = ours_quoted(text);
    REQUIRE_FALSE(validator.validate(token));
    std::string storage;
    CHECK(distflow::json_string_text(token, storage) == text);
  }
  std::string storage;
  CHECK(distflow::json_string_text(ours_quoted("\xff"), storage) == "\xEF\xBF\xBD");
}

TEST_CASE("json: json_array_elements lists an array's elements as exact text", "[json]") {
  std::vector<std::string_view> out;
  REQUIRE(distflow::json_array_elements(R"( [1, "a\"b" ,{"x":[2]}, [], null,-0.5e3 ] )", out));
  CHECK(out ==
        std::vector<std::string_view>{"1", R"("a\"b")", R"({"x":[2]})", "[]", "null", "-0.5e3"});
  REQUIRE(distflow::json_array_elements("[]", out));
  CHECK(out.empty());
  REQUIRE(distflow::json_array_elements(" [ ] ", out));
  CHECK(out.empty());
  for (const char* bad :
       {"", "{}", "1", "[", "[1", "[1,]", "[,]", "[1 2]", "[1]]", "[1] x", "[\"\xff\"]"}) {
    CAPTURE(bad);
    CHECK_FALSE(distflow::json_array_elements(bad, out));
    CHECK(out.empty());
  }
}

TEST_CASE("json: json_int64 reads integer tokens within int64 only", "[json]") {
  std::int64_t value = 7;
  CHECK(distflow::json_int64("0", value));
  CHECK(value == 0);
  CHECK(distflow::json_int64("-0", value));
  CHECK(value == 0);
  CHECK(distflow::json_int64("9223372036854775807", value));
  CHECK(value == INT64_MAX);
  CHECK(distflow::json_int64("-9223372036854775808", value));
  CHECK(value == INT64_MIN);
  for (const char* no : {"", "9223372036854775808", "-9223372036854775809", "1.0", "1e2", "1E2",
                         "\"1\"", "true", "null", "[1]"}) {
    CAPTURE(no);
    CHECK_FALSE(distflow::json_int64(no, value));
  }
}

TEST_CASE("json: append_json_compact drops insignificant space only when a line break is there",
          "[json]") {
  std::string out;
  distflow::append_json_compact(out, R"({ "a" : [1, 2] })");
  CHECK(out == R"({ "a" : [1, 2] })");
  out.clear();
  distflow::append_json_compact(out, "{\n \"a b\" :\t[1,\r\n \"x\\\" \\n y\"]\n}");
  CHECK(out == R"({"a b":[1,"x\" \n y"]})");
}
