#include "json_log.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>

namespace distflow {
namespace {

using json = nlohmann::json;

json line_of(std::string_view message, std::string_view level = "info") {
  std::string out;
  // 2026-12-01T23:11:05.042Z
  const auto time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1796166665042));
  append_json_log_line(out, time, level, 4242, message);
  REQUIRE(!out.empty());
  REQUIRE(out.back() == '\n');
  REQUIRE(out.find('\n') == out.size() - 1);  // one line
  return json::parse(out);
}

}  // namespace

TEST_CASE("json_log: time, level, pid, message; fields from key=value words", "[json_log]") {
  const json line =
      line_of("session closed peer=127.0.0.1:5000 reason=eof queued=0 count=-12 port=4369");
  CHECK(line["time"] == "2026-12-01T23:11:05.042Z");
  CHECK(line["level"] == "info");
  CHECK(line["pid"] == 4242);
  CHECK(line["message"] ==
        "session closed peer=127.0.0.1:5000 reason=eof queued=0 count=-12 port=4369");
  CHECK(line["fields"] ==
        json::parse(
            R"({"peer":"127.0.0.1:5000","reason":"eof","queued":0,"count":-12,"port":4369})"));
  CHECK(line.size() == 5);
}

TEST_CASE("json_log: field rules: quotes, trailing punctuation, repeats, non-keys", "[json_log]") {
  struct Row {
    const char* message;
    const char* fields;  // JSON; empty: no "fields" key
  };
  const Row rows[] = {
      {"node stopping", ""},
      {"child started pid=77 command='sh -c x'", R"({"pid":77,"command":"sh -c x"})"},
      {"a=1, b=two; c=3", R"({"a":1,"b":"two","c":3})"},
      {"x=1 x=2", R"({"x":1})"},
      {"empty= next=1", R"({"empty":"","next":1})"},
      {"=bare 1a=2 http://h:1/metrics k.sub=v", R"({"k.sub":"v"})"},
      {"big=12345678901234567890 lead=007 neg=-",
       R"({"big":"12345678901234567890","lead":"007","neg":"-"})"},
      {"unclosed='abc def", R"({"unclosed":"'abc"})"},
  };
  for (const Row& row : rows) {
    INFO(row.message);
    const json line = line_of(row.message);
    if (*row.fields == '\0') {
      CHECK(!line.contains("fields"));
    } else {
      CHECK(line["fields"] == json::parse(row.fields));
    }
    CHECK(line["message"] == row.message);
  }
}

TEST_CASE("json_log: escaping: quotes, control characters, invalid UTF-8", "[json_log]") {
  const json line = line_of("say \"hi\"\\ tab\there\nnew\x1b[31m bad\xff end", "warning");
  CHECK(line["level"] == "warning");
  CHECK(line["message"] == "say \"hi\"\\ tab\there\nnew\x1b[31m bad\xef\xbf\xbd end");
  std::string raw;
  append_json_log_line(raw, std::chrono::system_clock::time_point(), "info", 1, "a\nb\x1b");
  CHECK(raw ==
        R"({"time":"1970-01-01T00:00:00.000Z","level":"info","pid":1,"message":"a\nb\u001b"})"
        "\n");
}

TEST_CASE("json_log: the spdlog formatter writes the same line", "[json_log]") {
  auto formatter = make_json_log_formatter();
  auto copy = formatter->clone();
  const spdlog::details::log_msg msg("distflow", spdlog::level::err, "cannot bind port=80");
  spdlog::memory_buf_t out;
  copy->format(msg, out);
  const std::string text(out.data(), out.size());
  REQUIRE(text.ends_with("}\n"));
  const json line = json::parse(text);
  CHECK(line["level"] == "error");
  CHECK(line["message"] == "cannot bind port=80");
  CHECK(line["fields"]["port"] == 80);
  CHECK(line["pid"] == static_cast<long>(::getpid()));
}

}  // namespace distflow
