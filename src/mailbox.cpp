#include "mailbox.hpp"

namespace distflow {

std::optional<OverflowPolicy> parse_overflow_policy(std::string_view text) {
  if (text == "drop-newest")
    return OverflowPolicy::drop_newest;
  if (text == "drop-oldest")
    return OverflowPolicy::drop_oldest;
  if (text == "block")
    return OverflowPolicy::block;
  return std::nullopt;
}

std::string_view to_string(OverflowPolicy policy) {
  switch (policy) {
    case OverflowPolicy::drop_newest:
      return "drop-newest";
    case OverflowPolicy::drop_oldest:
      return "drop-oldest";
    case OverflowPolicy::block:
      return "block";
  }
  return "drop-newest";
}

}  // namespace distflow
