// Pure tests of the NDJSON line reader: every split point, CRLF, blank lines,
// the line limit, and a final line without '\n'.

#include "ndjson.hpp"

#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

namespace distflow {
namespace {

struct Got {
  std::string text;
  std::uint64_t number;
  bool too_long;
  bool operator==(const Got&) const = default;
};

std::vector<Got> drain(NdjsonReader& reader) {
  std::vector<Got> out;
  while (auto line = reader.next()) {
    out.push_back({std::string(line->text), line->number, line->too_long});
  }
  return out;
}

// Feeds `input` in pieces cut at `cuts` (sorted offsets), then finishes.
std::vector<Got> read_all(std::string_view input, const std::vector<std::size_t>& cuts,
                          std::size_t max_line = kDefaultMaxLineBytes) {
  NdjsonReader reader(max_line);
  std::vector<Got> out;
  std::size_t at = 0;
  auto feed_to = [&](std::size_t end) {
    reader.feed(input.substr(at, end - at));
    at = end;
    for (auto& g : drain(reader))
      out.push_back(std::move(g));
  };
  for (std::size_t cut : cuts)
    feed_to(cut);
  feed_to(input.size());
  if (auto last = reader.finish()) {
    out.push_back({std::string(last->text), last->number, last->too_long});
  }
  return out;
}

struct Case {
  const char* name;
  std::string input;
  std::vector<Got> expected;
  std::size_t max_line = kDefaultMaxLineBytes;
};

const std::vector<Case> kCases{
    {"empty input", "", {}},
    {"one line", "{\"a\":1}\n", {{"{\"a\":1}", 1, false}}},
    {"two lines", "1\n22\n", {{"1", 1, false}, {"22", 2, false}}},
    {"final line without newline", "1\n22", {{"1", 1, false}, {"22", 2, false}}},
    {"crlf", "1\r\n22\r\n", {{"1", 1, false}, {"22", 2, false}}},
    {"crlf final line without newline", "1\r\n22\r", {{"1", 1, false}, {"22", 2, false}}},
    {"blank lines skipped but counted",
     "\n\n1\n \t\n\r\n2\n\n",
     {{"1", 3, false}, {"2", 6, false}}},
    {"only blank lines", "\n \n\r\n  ", {}},
    {"inner carriage return kept", "a\rb\n", {{"a\rb", 1, false}}},
    {"line at the limit", "abcd\nabcd\r\n", {{"abcd", 1, false}, {"abcd", 2, false}}, 4},
    {"over-long line skipped, reader goes on",
     "ab\nabcdefgh\ncd\n",
     {{"ab", 1, false}, {"", 2, true}, {"cd", 3, false}},
     4},
    {"over-long final line without newline", "ab\nabcdefgh", {{"ab", 1, false}, {"", 2, true}}, 4},
    {"over-long line by one byte", "abcde\nx\n", {{"", 1, true}, {"x", 2, false}}, 4},
};

}  // namespace

TEST_CASE("ndjson: table of inputs, whole and split at every point", "[ndjson]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    CHECK(read_all(c.input, {}, c.max_line) == c.expected);
    for (std::size_t cut = 0; cut <= c.input.size(); ++cut) {
      INFO("split at " << cut);
      CHECK(read_all(c.input, {cut}, c.max_line) == c.expected);
      for (std::size_t cut2 = cut; cut2 <= c.input.size(); ++cut2) {
        INFO("and at " << cut2);
        CHECK(read_all(c.input, {cut, cut2}, c.max_line) == c.expected);
      }
    }
  }
}

TEST_CASE("ndjson: one byte at a time", "[ndjson]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < c.input.size(); ++i)
      cuts.push_back(i);
    CHECK(read_all(c.input, cuts, c.max_line) == c.expected);
  }
}

TEST_CASE("ndjson: an over-long line is reported once, before its end arrives", "[ndjson]") {
  NdjsonReader reader(8);
  reader.feed("ok\n");
  REQUIRE(reader.next()->text == "ok");
  reader.feed(std::string(100, 'x'));
  auto marker = reader.next();
  REQUIRE(marker);
  CHECK(marker->too_long);
  CHECK(marker->number == 2);
  reader.feed(std::string(1000, 'y'));  // still the same line: nothing kept, nothing reported
  CHECK_FALSE(reader.next());
  reader.feed("zz\nnext\n");
  auto after = reader.next();
  REQUIRE(after);
  CHECK(after->text == "next");
  CHECK(after->number == 3);
}

TEST_CASE("ndjson: memory stays bounded by the limit plus one read", "[ndjson]") {
  NdjsonReader reader(64);
  for (int i = 0; i < 1000; ++i) {
    auto room = reader.prepare(4096);
    REQUIRE(room.size() >= 4096);
    std::fill(room.begin(), room.end(), 'x');
    reader.commit(4096);
    while (reader.next()) {
    }
  }
  // Only the over-long line was ever seen; nothing grew past one read plus padding.
  CHECK(reader.prepare(4096).size() < 2 * 4096 + 2 * 64 + kLinePadding);
}

TEST_CASE("ndjson: lines keep padding readable after them and survive prepare-commit reads",
          "[ndjson]") {
  NdjsonReader reader;
  std::string input;
  for (int i = 0; i < 10000; ++i)
    input += "{\"n\":" + std::to_string(i) + "}\n";
  std::size_t at = 0, count = 0;
  while (at < input.size()) {
    auto room = reader.prepare(1000);
    const std::size_t n = std::min<std::size_t>(777, input.size() - at);
    std::copy_n(input.data() + at, n, room.data());
    reader.commit(n);
    at += n;
    while (auto line = reader.next()) {
      REQUIRE(line->text == "{\"n\":" + std::to_string(count) + "}");
      REQUIRE(line->number == count + 1);
      ++count;
    }
  }
  CHECK_FALSE(reader.finish());
  CHECK(count == 10000);
  CHECK(reader.lines_seen() == 10000);
}

}  // namespace distflow
