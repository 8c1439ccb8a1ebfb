#include "log_throttle.hpp"

namespace distflow {

bool LogThrottle::allow(Clock::time_point now, std::uint64_t& suppressed) {
  if (last_ && now - *last_ < period_) {
    ++held_;
    return false;
  }
  last_ = now;
  suppressed = held_;
  held_ = 0;
  return true;
}

}  // namespace distflow
