#pragma once

// Keeps a repeated log line from flooding the log: at most one per period, with
// the count of the ones held back. Pure: the caller passes the time in.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

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

/// One LogThrottle per peer address (handshake failures are logged at most once a
/// second per peer, issue 12), forgetting them all past `max_peers` addresses.
class PeerLogThrottle {
 public:
  explicit PeerLogThrottle(LogThrottle::Clock::duration period, std::size_t max_peers = 1024)
      : period_(period), max_peers_(max_peers) {}
  bool allow(const std::string& peer, LogThrottle::Clock::time_point now,
             std::uint64_t& suppressed) {
    if (throttles_.size() >= max_peers_ && !throttles_.contains(peer))
      throttles_.clear();
    return throttles_.try_emplace(peer, period_).first->second.allow(now, suppressed);
  }
  /// Every occurrence so far (logged or not).
  std::uint64_t count() const { return count_; }
  void counted() { ++count_; }

 private:
  LogThrottle::Clock::duration period_;
  std::size_t max_peers_;
  std::unordered_map<std::string, LogThrottle> throttles_;
  std::uint64_t count_ = 0;
};

}  // namespace distflow
