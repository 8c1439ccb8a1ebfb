#pragma once

// Keeps a repeated log line from flooding the log: at most one per period, with
// the count of the ones held back. Pure: the caller passes the time in.

#include <chrono>
#include <cstdint>
#include <optional>

namespace distflow {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogThrottle(Clock::duration period) : period_(period) {}

  /// One occurrence at `now`: true when it may be logged (the first, then one a
  /// period); `suppressed` then holds how many were held back since the last one
  /// logged.
  bool allow(Clock::time_point now, std::uint64_t& suppressed);

 private:
  Clock::duration period_;
  std::optional<Clock::time_point> last_;
  std::uint64_t held_ = 0;
};

}  // namespace distflow
