// Drop reports: counts by reason, at most one line per interval, nothing lost.

#include "drop_log.hpp"

#include <catch2/catch.hpp>

namespace distflow {
namespace {

using namespace std::chrono_literals;

}  // namespace

TEST_CASE("drop_log: the first drop is reported at once, later ones once per interval",
          "[drop_log]") {
  DropLog log(1s);
  const auto t0 = DropLog::Clock::time_point{} + 100s;
  auto first = log.add(1, "mailbox full (1000, drop-newest)", t0);
  REQUIRE(first);
  CHECK(*first == "dropped 1 message: mailbox full (1000, drop-newest)");
  // A burst within the interval: summed, not logged.
  for (int i = 0; i < 1000; ++i)
    CHECK_FALSE(log.add(23, "mailbox full (1000, drop-newest)", t0 + 10ms * i / 100));
  CHECK(log.pending());
  auto next = log.add(87, "mailbox full (1000, drop-newest)", t0 + 1s);
  REQUIRE(next);
  CHECK(*next == "dropped 23087 messages in the last 1.0 s: mailbox full (1000, drop-newest)");
  CHECK_FALSE(log.pending());
  CHECK_FALSE(log.take(t0 + 2s));
  CHECK(log.total() == 23088);
}

TEST_CASE("drop_log: several reasons in one line; take() reports the tail", "[drop_log]") {
  DropLog log(1s);
  const auto t0 = DropLog::Clock::time_point{} + 100s;
  REQUIRE(log.add(2, "output closed", t0));
  CHECK_FALSE(log.add(5, "mailbox full (10, drop-oldest)", t0 + 100ms));
  CHECK_FALSE(log.add(1, "output closed", t0 + 200ms));
  auto tail = log.take(t0 + 1500ms);
  REQUIRE(tail);
  CHECK(*tail ==
        "dropped 6 messages in the last 1.5 s: 5 mailbox full (10, drop-oldest), 1 output closed");
  const auto totals = log.totals();
  REQUIRE(totals.size() == 2);
  CHECK(totals[0] == std::pair<std::string, std::uint64_t>{"output closed", 3});
  CHECK(totals[1] == std::pair<std::string, std::uint64_t>{"mailbox full (10, drop-oldest)", 5});
  CHECK_FALSE(log.add(0, "nothing", t0 + 5s));
}

}  // namespace distflow
