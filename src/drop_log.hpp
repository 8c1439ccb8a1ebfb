#pragma once

// Counts of dropped messages, by reason, turned into log lines at most once per
// interval (issue 10): "dropped 23087 messages in the last 1.0 s: mailbox full
// (1000, drop-newest)". Pure: time is passed in; the caller logs the lines.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distflow {

class DropLog {
 public:
  using Clock = std::chrono::steady_clock;
  explicit DropLog(std::chrono::milliseconds interval = std::chrono::seconds(1));

  /// Counts `n` drops for `reason`. Returns a line to log now when one is due: the
  /// first drop after a quiet interval is reported at once, later ones are summed
  /// until the interval has passed (then take() or the next add() reports them).
  std::optional<std::string> add(std::uint64_t n, std::string_view reason, Clock::time_point now);
  /// What was counted since the last line, as a line; nullopt when nothing was.
  std::optional<std::string> take(Clock::time_point now);
  /// True when drops wait to be reported (the caller arms a timer for take()).
  bool pending() const { return !window_.empty(); }

  /// Every drop so far, by reason, in first-seen order.
  std::vector<std::pair<std::string, std::uint64_t>> totals() const;
  std::uint64_t total() const { return total_; }

 private:
  std::chrono::milliseconds interval_;
  std::optional<Clock::time_point> last_line_;
  std::vector<std::pair<std::string, std::uint64_t>> window_;  // since the last line
  std::vector<std::pair<std::string, std::uint64_t>> totals_;
  std::uint64_t total_ = 0;
};

}  // namespace distflow
