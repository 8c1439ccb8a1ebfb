#include "drop_log.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace distflow {
namespace {

void add_to(std::vector<std::pair<std::string, std::uint64_t>>& counts, std::string_view reason,
            std::uint64_t n) {
  auto it = std::find_if(counts.begin(), counts.end(),
                         [&](const auto& entry) { return entry.first == reason; });
  if (it == counts.end()) {
    counts.emplace_back(std::string(reason), n);
  } else {
    it->second += n;
  }
}

}  // namespace

DropLog::DropLog(std::chrono::milliseconds interval) : interval_(interval) {}

std::optional<std::string> DropLog::add(std::uint64_t n, std::string_view reason,
                                        Clock::time_point now) {
  if (n == 0)
    return std::nullopt;
  total_ += n;
  add_to(totals_, reason, n);
  add_to(window_, reason, n);
  if (last_line_ && now - *last_line_ < interval_)
    return std::nullopt;
  return take(now);
}

std::optional<std::string> DropLog::take(Clock::time_point now) {
  if (window_.empty())
    return std::nullopt;
  std::uint64_t sum = 0;
  for (const auto& [reason, n] : window_)
    sum += n;
  std::string line = fmt::format("dropped {} message{}", sum, sum == 1 ? "" : "s");
  if (last_line_) {
    const double seconds = std::chrono::duration<double>(now - *last_line_).count();
    line += fmt::format(" in the last {:.1f} s", seconds);
  }
  line += ": ";
  for (std::size_t i = 0; i < window_.size(); ++i) {
    if (i > 0)
      line += ", ";
    if (window_.size() > 1)
      line += fmt::format("{} ", window_[i].second);
    line += window_[i].first;
  }
  window_.clear();
  last_line_ = now;
  return line;
}

std::vector<std::pair<std::string, std::uint64_t>> DropLog::totals() const {
  return totals_;
}

}  // namespace distflow
