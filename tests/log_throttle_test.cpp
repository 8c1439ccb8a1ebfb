// The log throttle (src/log_throttle.hpp): at most one line a period, and the
// count of the ones held back.

#include "log_throttle.hpp"

#include <catch2/catch.hpp>

namespace distflow {

TEST_CASE("log_throttle: one a period, with the count held back", "[log_throttle]") {
  using std::chrono::milliseconds;
  LogThrottle throttle(std::chrono::seconds(1));
  const auto t0 = LogThrottle::Clock::time_point() + std::chrono::hours(1);
  std::uint64_t suppressed = 99;
  REQUIRE(throttle.allow(t0, suppressed));  // the first passes at once
  CHECK(suppressed == 0);
  for (int i = 1; i <= 5; ++i)
    CHECK_FALSE(throttle.allow(t0 + milliseconds(i * 100), suppressed));
  CHECK_FALSE(throttle.allow(t0 + milliseconds(999), suppressed));
  REQUIRE(throttle.allow(t0 + milliseconds(1000), suppressed));
  CHECK(suppressed == 6);
  // The period counts from the last line logged; a quiet spell resets nothing else.
  CHECK_FALSE(throttle.allow(t0 + milliseconds(1500), suppressed));
  REQUIRE(throttle.allow(t0 + std::chrono::minutes(5), suppressed));
  CHECK(suppressed == 1);
  REQUIRE(throttle.allow(t0 + std::chrono::minutes(10), suppressed));
  CHECK(suppressed == 0);
}

}  // namespace distflow
