#include "framing.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <catch2/catch.hpp>

#include "errors.hpp"

using distflow::errc;
using distflow::FrameDecoder;

namespace {

std::string header(std::uint32_t n) {
  std::string h(4, '\0');
  h[0] = static_cast<char>((n >> 24) & 0xff);
  h[1] = static_cast<char>((n >> 16) & 0xff);
  h[2] = static_cast<char>((n >> 8) & 0xff);
  h[3] = static_cast<char>(n & 0xff);
  return h;
}

std::string frames_of(const std::vector<std::string>& bodies) {
  std::string out;
  for (const auto& b : bodies)
    distflow::append_frame(out, b);
  return out;
}

// Every complete body the decoder has, as owned strings; stops at an error.
std::vector<std::string> drain(FrameDecoder& decoder, std::error_code& ec) {
  std::vector<std::string> out;
  while (auto body = decoder.next(ec)) {
    // The padding promise: kFramePadding readable bytes after every body (ASan checks).
    volatile char past_end = body->data()[body->size() + distflow::kFramePadding - 1];
    (void)past_end;
    out.emplace_back(*body);
  }
  return out;
}

}  // namespace

TEST_CASE("framing: append_frame writes a big-endian length then the body", "[framing]") {
  std::string out = "x";
  distflow::append_frame(out, "{}");
  distflow::append_frame(out, std::string(300, 'a'));
  REQUIRE(out.substr(0, 7) == std::string("x\0\0\0\x02{}", 7));
  REQUIRE(out.substr(7, 4) == header(300));
  REQUIRE(out.size() == 1 + 4 + 2 + 4 + 300);
}

TEST_CASE("framing: begin_frame and end_frame patch the header in place", "[framing]") {
  std::string out = "prefix";
  const std::size_t at = distflow::begin_frame(out);
  REQUIRE(at == 6);
  out += "{\"a\":1}";
  distflow::end_frame(out, at);
  const std::size_t second = distflow::begin_frame(out);
  out += std::string(70000, 'b');
  distflow::end_frame(out, second);
  REQUIRE(out.substr(6, 4) == header(7));
  REQUIRE(out.substr(17, 4) == header(70000));

  FrameDecoder decoder(1 << 20);
  decoder.feed(std::string_view(out).substr(6));
  std::error_code ec;
  const auto bodies = drain(decoder, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(bodies == std::vector<std::string>{"{\"a\":1}", std::string(70000, 'b')});
}

TEST_CASE("framing: many frames in one feed, in order", "[framing]") {
  std::vector<std::string> bodies;
  for (int i = 0; i < 1000; ++i)
    bodies.push_back("{\"n\":" + std::to_string(i) + "}");
  FrameDecoder decoder(1024);
  decoder.feed(frames_of(bodies));
  std::error_code ec;
  REQUIRE(drain(decoder, ec) == bodies);
  REQUIRE_FALSE(ec);
  REQUIRE(decoder.buffered() == 0);
  REQUIRE_FALSE(decoder.finish());
}

TEST_CASE("framing: a stream split at every point decodes the same", "[framing]") {
  const std::vector<std::string> bodies = {"{}", "{\"from\":\"a\",\"payload\":[1,2,3]}", "x",
                                           std::string(200, 'z')};
  const std::string stream = frames_of(bodies);
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    for (std::size_t cut2 = cut; cut2 <= stream.size(); cut2 += 7) {
      CAPTURE(cut, cut2);
      FrameDecoder decoder(1024);
      std::error_code ec;
      std::vector<std::string> got;
      for (auto piece : {std::string_view(stream).substr(0, cut),
                         std::string_view(stream).substr(cut, cut2 - cut),
                         std::string_view(stream).substr(cut2)}) {
        decoder.feed(piece);
        for (auto& b : drain(decoder, ec))
          got.push_back(std::move(b));
        REQUIRE_FALSE(ec);
      }
      REQUIRE(got == bodies);
      REQUIRE_FALSE(decoder.finish());
    }
  }
}

TEST_CASE("framing: byte-at-a-time feeding through prepare and commit", "[framing]") {
  const std::vector<std::string> bodies = {"{\"a\":1}", std::string(5000, 'q'), "{}"};
  const std::string stream = frames_of(bodies);
  FrameDecoder decoder(1 << 16);
  std::error_code ec;
  std::vector<std::string> got;
  for (char c : stream) {
    auto room = decoder.prepare(1);
    REQUIRE(room.size() >= 1);
    room[0] = c;
    decoder.commit(1);
    for (auto& b : drain(decoder, ec))
      got.push_back(std::move(b));
    REQUIRE_FALSE(ec);
  }
  REQUIRE(got == bodies);
}

TEST_CASE("framing: malformed lengths are errors, checked before any allocation", "[framing]") {
  struct Row {
    std::uint32_t length;
    std::size_t limit;
    errc error;
    std::string text;
  };
  const Row rows[] = {
      {0, 1024, errc::frame_empty, "frame length 0 is not allowed"},
      {1025, 1024, errc::frame_too_large, "frame length 1025 exceeds limit 1024"},
      {2130706442, 1048576, errc::frame_too_large, "frame length 2130706442 exceeds limit 1048576"},
      {0xFFFFFFFF, 16u << 20, errc::frame_too_large,
       "frame length 4294967295 exceeds limit 16777216"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.length);
    FrameDecoder decoder(row.limit);
    // A valid frame first: the error comes after it, not instead of it.
    decoder.feed(frames_of({"{}"}) + header(row.length) + "abc");
    std::error_code ec;
    REQUIRE(drain(decoder, ec) == std::vector<std::string>{"{}"});
    REQUIRE(ec == row.error);
    REQUIRE(decoder.announced_length() == row.length);
    REQUIRE(distflow::describe_frame_error(ec, decoder) == row.text);
    // The decoder stays failed, and never grew its buffer towards the announced size.
    decoder.feed(frames_of({"{}"}));
    REQUIRE_FALSE(decoder.next(ec).has_value());
    REQUIRE(ec == row.error);
    REQUIRE(decoder.prepare(1).size() < 64 * 1024);
  }
}

TEST_CASE("framing: a frame exactly at the limit is accepted", "[framing]") {
  FrameDecoder decoder(16);
  decoder.feed(frames_of({std::string(16, 'a')}));
  std::error_code ec;
  REQUIRE(drain(decoder, ec) == std::vector<std::string>{std::string(16, 'a')});
  REQUIRE_FALSE(ec);
}

TEST_CASE("framing: finish() reports a stream that ends inside a frame", "[framing]") {
  const std::string stream = frames_of({"{\"a\":1}"});
  for (std::size_t keep = 0; keep <= stream.size(); ++keep) {
    CAPTURE(keep);
    FrameDecoder decoder(1024);
    decoder.feed(std::string_view(stream).substr(0, keep));
    std::error_code ec;
    drain(decoder, ec);
    REQUIRE_FALSE(ec);
    if (keep == 0 || keep == stream.size()) {
      REQUIRE_FALSE(decoder.finish());
    } else {
      REQUIRE(decoder.finish() == errc::frame_truncated);
      REQUIRE(distflow::describe_frame_error(decoder.finish(), decoder) ==
              "stream ended inside a frame (" + std::to_string(keep) + " bytes buffered)");
    }
  }
}

TEST_CASE("framing: bodies stay valid until the next prepare or feed", "[framing]") {
  FrameDecoder decoder(1024);
  decoder.feed(frames_of({"{\"first\":1}", "{\"second\":2}"}));
  std::error_code ec;
  const auto first = decoder.next(ec);
  const auto second = decoder.next(ec);
  REQUIRE(first.has_value());
  REQUIRE(second.has_value());
  REQUIRE(*first == "{\"first\":1}");
  REQUIRE(*second == "{\"second\":2}");
  REQUIRE_FALSE(decoder.next(ec).has_value());
  REQUIRE_FALSE(ec);
}
