// The write queue under every session: frames in reused chunks, counted, bounded.

#include "outbox.hpp"

#include <catch2/catch.hpp>

#include "framing.hpp"

namespace distflow {

TEST_CASE("outbox: frames append in place, are numbered, and come out in order", "[outbox]") {
  Outbox box(1u << 30);
  CHECK(box.empty());
  for (int i = 0; i < 3; ++i) {
    std::string* out = box.reserve(64);
    REQUIRE(out);
    append_frame(*out, "{\"n\":" + std::to_string(i) + "}");
    CHECK(box.commit() == static_cast<std::uint64_t>(i + 1));
  }
  CHECK(box.bytes() == 3 * (4 + 7));
  CHECK(box.chunk_count() == 1);  // small frames share one chunk
  std::uint64_t frames_end = 0;
  const std::string chunk = box.take(frames_end);
  CHECK(frames_end == 3);
  CHECK(chunk.size() == 33);
  CHECK(chunk.substr(4, 7) == R"({"n":0})");
  CHECK(box.empty());
  CHECK(box.bytes() == 0);
}

TEST_CASE("outbox: a frame never straddles chunks; a large one gets its own", "[outbox]") {
  Outbox box(1u << 30);
  const std::string big(Outbox::kChunkBytes + 10, 'x');
  std::string* out = box.reserve(100);
  append_frame(*out, "small");
  box.commit();
  out = box.reserve(big.size() + 4);
  append_frame(*out, big);
  box.commit();
  out = box.reserve(100);
  append_frame(*out, "after");
  box.commit();
  CHECK(box.chunk_count() == 3);
  std::uint64_t end = 0;
  CHECK(box.take(end).size() == 9);
  CHECK(end == 1);
  CHECK(box.take(end).size() == big.size() + 4);
  CHECK(end == 2);
  CHECK(box.take(end).size() == 9);
  CHECK(end == 3);
}

TEST_CASE("outbox: the bound refuses a frame and changes nothing; partial writes count",
          "[outbox]") {
  Outbox box(100);
  std::string* out = box.reserve(60);
  REQUIRE(out);
  out->append(60, 'a');
  box.commit();
  CHECK(box.reserve(50) == nullptr);  // 110 > 100
  CHECK(box.bytes() == 60);
  std::uint64_t end = 0;
  CHECK_FALSE(box.consume_front(20, end));
  CHECK(box.front().size() == 40);
  CHECK(box.bytes() == 40);
  REQUIRE(box.reserve(50));  // room again
  box.commit(0);             // reserved, nothing appended
  CHECK(box.consume_front(40, end));
  CHECK(end == 1);
  CHECK(box.empty());
  // A reservation that appends nothing leaves no empty chunk behind.
  REQUIRE(box.reserve(10));
  box.commit(0);
  CHECK(box.empty());
  out = box.reserve(10);
  out->append("xyz");
  box.commit();
  CHECK(box.clear() == 1);
  CHECK(box.empty());
}

}  // namespace distflow
