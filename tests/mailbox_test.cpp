#include "mailbox.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <sched.h>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using distflow::Mailbox;
using distflow::OverflowPolicy;
using distflow::PushResult;
using namespace std::chrono_literals;

namespace {

// Items of the multi-producer tests: which producer, and its sequence number.
struct Tagged {
  std::uint32_t producer = 0;
  std::uint32_t seq = 0;
};

// Everything left in `mailbox`, in order, without waiting.
template <class T>
std::vector<T> drain_now(Mailbox<T>& mailbox) {
  std::vector<T> out;
  while (auto item = mailbox.try_receive())
    out.push_back(std::move(*item));
  return out;
}

std::vector<int> range(int from, int to) {
  std::vector<int> v;
  for (int i = from; i < to; ++i)
    v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("mailbox: policy names round-trip", "[mailbox]") {
  struct Row {
    const char* text;
    OverflowPolicy policy;
  };
  for (const Row& row :
       {Row{"drop-newest", OverflowPolicy::drop_newest},
        Row{"drop-oldest", OverflowPolicy::drop_oldest}, Row{"block", OverflowPolicy::block}}) {
    CAPTURE(row.text);
    REQUIRE(distflow::parse_overflow_policy(row.text) == row.policy);
    REQUIRE(distflow::to_string(row.policy) == row.text);
  }
  for (const char* bad : {"", "drop_newest", "Block", "drop-newest ", "none"}) {
    CAPTURE(bad);
    REQUIRE_FALSE(distflow::parse_overflow_policy(bad).has_value());
  }
  REQUIRE(Mailbox<int>(5).policy() == OverflowPolicy::drop_newest);
}

TEST_CASE("mailbox: each policy on a full mailbox, exact results and counts", "[mailbox]") {
  struct Row {
    OverflowPolicy policy;
    PushResult overflow_result;
    std::vector<int> left;
    std::uint64_t accepted, dropped;
  };
  // Capacity 4, ten items pushed with try_push (never waits).
  const Row rows[] = {
      {OverflowPolicy::drop_newest, PushResult::dropped, range(0, 4), 4, 6},
      {OverflowPolicy::drop_oldest, PushResult::accepted_evicted, range(6, 10), 10, 6},
      {OverflowPolicy::block, PushResult::full, range(0, 4), 4, 0},
  };
  for (const Row& row : rows) {
    CAPTURE(distflow::to_string(row.policy));
    Mailbox<int> mailbox(4, row.policy);
    for (int i = 0; i < 10; ++i) {
      int item = i;
      REQUIRE(mailbox.try_push(item) == (i < 4 ? PushResult::accepted : row.overflow_result));
    }
    auto stats = mailbox.stats();
    REQUIRE(stats.accepted == row.accepted);
    REQUIRE(stats.dropped == row.dropped);
    REQUIRE(stats.delivered == 0);
    REQUIRE(stats.size == 4);
    REQUIRE(drain_now(mailbox) == row.left);
    stats = mailbox.stats();
    REQUIRE(stats.delivered == 4);
    REQUIRE(stats.size == 0);
  }
}

TEST_CASE("mailbox: the high-water mark is the most items queued at once", "[mailbox]") {
  for (OverflowPolicy policy :
       {OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest, OverflowPolicy::block}) {
    CAPTURE(distflow::to_string(policy));
    Mailbox<int> mailbox(100, policy);
    const auto push = [&mailbox](int n) {
      for (int i = 0; i < n; ++i) {
        int item = i;
        REQUIRE(mailbox.try_push(item) == PushResult::accepted);
      }
    };
    std::vector<int> out;
    REQUIRE(mailbox.stats().high_water == 0);
    REQUIRE(mailbox.stats().capacity == 100);
    push(10);
    REQUIRE(mailbox.receive_batch(out, 100, std::chrono::milliseconds(0)) == 10);
    REQUIRE(mailbox.stats().high_water == 10);
    push(30);
    // A batch smaller than the queue: the consumer counts what it left behind.
    REQUIRE(mailbox.receive_batch(out, 5, std::chrono::milliseconds(0)) == 5);
    REQUIRE(mailbox.stats().high_water == 30);
    REQUIRE(mailbox.receive_batch(out, 100, std::chrono::milliseconds(0)) == 25);
    push(3);
    REQUIRE(mailbox.try_receive());
    REQUIRE(mailbox.stats().high_water == 30);  // a mark, not the current depth
    // A consumer that receives nothing: the current depth counts.
    push(60);
    REQUIRE(mailbox.stats().high_water == 62);
    REQUIRE(mailbox.stats().size == 62);
  }
  Mailbox<int> full(4, OverflowPolicy::drop_newest);
  for (int i = 0; i < 10; ++i) {
    int item = i;
    full.try_push(item);
  }
  REQUIRE(full.try_receive().has_value());
  REQUIRE(full.stats().high_water == 4);
}

TEST_CASE("mailbox: push() applies the drop policies like try_push()", "[mailbox]") {
  Mailbox<int> newest(2, OverflowPolicy::drop_newest);
  Mailbox<int> oldest(2, OverflowPolicy::drop_oldest);
  const PushResult want_newest[] = {PushResult::accepted, PushResult::accepted,
                                    PushResult::dropped};
  const PushResult want_oldest[] = {PushResult::accepted, PushResult::accepted,
                                    PushResult::accepted_evicted};
  for (int i = 0; i < 3; ++i) {
    REQUIRE(newest.push(int{i}) == want_newest[i]);
    REQUIRE(oldest.push(int{i}) == want_oldest[i]);
  }
  REQUIRE(drain_now(newest) == std::vector<int>{0, 1});
  REQUIRE(drain_now(oldest) == std::vector<int>{1, 2});
}

TEST_CASE("mailbox: try_push under block leaves a refused item untouched", "[mailbox]") {
  Mailbox<std::string> mailbox(1, OverflowPolicy::block);
  std::string first = "first", second = "second, long enough to live on the heap";
  REQUIRE(mailbox.try_push(first) == PushResult::accepted);
  REQUIRE(mailbox.try_push(second) == PushResult::full);
  REQUIRE(second == "second, long enough to live on the heap");
  REQUIRE(mailbox.try_receive() == "first");
  REQUIRE(mailbox.try_push(second) == PushResult::accepted);
  REQUIRE(mailbox.try_receive() == "second, long enough to live on the heap");
}

TEST_CASE("mailbox: FIFO across many laps for every capacity", "[mailbox]") {
  // Capacities around powers of two and past one 1024-slot chunk.
  for (std::size_t capacity : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 1000u, 1024u, 1025u, 2500u}) {
    CAPTURE(capacity);
    Mailbox<std::uint64_t> mailbox(capacity, OverflowPolicy::block);
    std::uint64_t next_in = 0, next_out = 0;
    const std::uint64_t total = capacity * 5 + 17;
    while (next_out < total) {
      // Fill in uneven bursts, drain in uneven bursts: every wrap point is crossed.
      for (std::size_t k = 0; k < capacity / 2 + 1 && next_in < total; ++k) {
        std::uint64_t item = next_in;
        if (mailbox.try_push(item) != PushResult::accepted)
          break;
        ++next_in;
      }
      REQUIRE(mailbox.stats().size == next_in - next_out);
      std::vector<std::uint64_t> batch;
      mailbox.receive_batch(batch, capacity / 3 + 1, 0ns);
      for (std::uint64_t v : batch)
        REQUIRE(v == next_out++);
    }
    const auto stats = mailbox.stats();
    REQUIRE(stats.accepted == total);
    REQUIRE(stats.delivered == total);
    REQUIRE(stats.dropped == 0);
    REQUIRE(stats.size == 0);
  }
}

TEST_CASE("mailbox: a zero capacity means one", "[mailbox]") {
  Mailbox<int> mailbox(0);
  REQUIRE(mailbox.max_size() == 1);
  REQUIRE(mailbox.push(1) == PushResult::accepted);
  REQUIRE(mailbox.push(2) == PushResult::dropped);
}

TEST_CASE("mailbox: try_receive and receive timeout on an empty mailbox", "[mailbox]") {
  Mailbox<int> mailbox(8);
  REQUIRE_FALSE(mailbox.try_receive().has_value());
  const auto start = std::chrono::steady_clock::now();
  REQUIRE_FALSE(mailbox.receive(30ms).has_value());
  REQUIRE(std::chrono::steady_clock::now() - start >= 30ms);
  std::deque<int> out;
  REQUIRE(mailbox.receive_batch(out, 10, 5ms) == 0);
  REQUIRE(out.empty());
  REQUIRE(mailbox.push(7) == PushResult::accepted);
  REQUIRE(mailbox.receive(1s) == 7);
  REQUIRE(mailbox.stats().delivered == 1);
}

TEST_CASE("mailbox: receive_batch takes at most max and appends", "[mailbox]") {
  Mailbox<int> mailbox(16);
  for (int i = 0; i < 10; ++i)
    mailbox.push(int{i});
  std::deque<int> out{-1};
  REQUIRE(mailbox.receive_batch(out, 4, 0ns) == 4);
  REQUIRE(out == std::deque<int>{-1, 0, 1, 2, 3});
  std::vector<int> rest;
  REQUIRE(mailbox.receive_batch(rest, 100, 1s) == 6);
  REQUIRE(rest == range(4, 10));
  REQUIRE(mailbox.receive_batch(rest, 0, 0ns) == 0);
}

TEST_CASE("mailbox: close refuses pushes, then the consumer drains, then sees closed",
          "[mailbox]") {
  for (auto policy :
       {OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest, OverflowPolicy::block}) {
    CAPTURE(distflow::to_string(policy));
    Mailbox<int> mailbox(4, policy);
    for (int i = 0; i < 3; ++i)
      REQUIRE(mailbox.push(int{i}) == PushResult::accepted);
    REQUIRE_FALSE(mailbox.closed());
    mailbox.close();
    mailbox.close();  // idempotent
    REQUIRE(mailbox.closed());
    REQUIRE_FALSE(mailbox.drained());
    int item = 9;
    REQUIRE(mailbox.push(int{9}) == PushResult::closed);
    REQUIRE(mailbox.try_push(item) == PushResult::closed);
    REQUIRE(item == 9);
    REQUIRE(mailbox.receive(1s) == 0);
    std::deque<int> out;
    REQUIRE(mailbox.receive_batch(out, 10, 1s) == 2);
    REQUIRE(out == std::deque<int>{1, 2});
    REQUIRE(mailbox.drained());
    // Closed and empty: no waiting for the timeout.
    const auto start = std::chrono::steady_clock::now();
    REQUIRE_FALSE(mailbox.receive(10s).has_value());
    REQUIRE(mailbox.receive_batch(out, 10, 10s) == 0);
    REQUIRE(std::chrono::steady_clock::now() - start < 5s);
    const auto stats = mailbox.stats();
    REQUIRE(stats.accepted == 3);
    REQUIRE(stats.delivered == 3);
    REQUIRE(stats.size == 0);
  }
}

TEST_CASE("mailbox: close wakes a waiting consumer and a blocked producer", "[mailbox]") {
  Mailbox<int> mailbox(1, OverflowPolicy::block);
  std::optional<int> received = 1;
  std::thread consumer([&] { received = mailbox.receive(60s); });
  std::this_thread::sleep_for(20ms);  // not for synchronisation: lets it reach the wait
  mailbox.close();
  consumer.join();
  REQUIRE_FALSE(received.has_value());

  Mailbox<int> full(1, OverflowPolicy::block);
  REQUIRE(full.push(1) == PushResult::accepted);
  PushResult result = PushResult::accepted;
  std::thread producer([&] { result = full.push(2); });
  std::this_thread::sleep_for(20ms);
  full.close();
  producer.join();
  REQUIRE(result == PushResult::closed);
  REQUIRE(full.receive(1s) == 1);
  REQUIRE(full.drained());
}

TEST_CASE("mailbox: block makes push wait for room, nothing dropped", "[mailbox]") {
  Mailbox<int> mailbox(2, OverflowPolicy::block);
  constexpr int kCount = 1000;
  // Catch2 assertions are not thread-safe: other threads record, the test thread checks.
  std::atomic<int> not_accepted{0};
  std::thread producer([&] {
    for (int i = 0; i < kCount; ++i) {
      if (mailbox.push(int{i}) != PushResult::accepted)
        not_accepted.fetch_add(1);
    }
  });
  for (int i = 0; i < kCount; ++i)
    REQUIRE(mailbox.receive(10s) == i);
  producer.join();
  REQUIRE(not_accepted.load() == 0);
  const auto stats = mailbox.stats();
  REQUIRE(stats.accepted == kCount);
  REQUIRE(stats.dropped == 0);
  REQUIRE(stats.delivered == kCount);
}

TEST_CASE("mailbox: notify_when_space runs once, on the consumer's thread", "[mailbox]") {
  Mailbox<int> mailbox(2, OverflowPolicy::block);
  int calls = 0;
  std::thread::id ran_on;
  auto count = [&] {
    ++calls;
    ran_on = std::this_thread::get_id();
  };

  // Room already: runs at once, on the caller's thread.
  mailbox.notify_when_space(count);
  REQUIRE(calls == 1);
  REQUIRE(ran_on == std::this_thread::get_id());

  REQUIRE(mailbox.push(1) == PushResult::accepted);
  REQUIRE(mailbox.push(2) == PushResult::accepted);
  int item = 3;
  REQUIRE(mailbox.try_push(item) == PushResult::full);
  mailbox.notify_when_space(count);
  REQUIRE(calls == 1);

  std::thread::id consumer_id;
  std::optional<int> first, second;
  std::thread consumer([&] {
    consumer_id = std::this_thread::get_id();
    first = mailbox.receive(1s);
    second = mailbox.receive(1s);
  });
  consumer.join();
  REQUIRE(first == 1);
  REQUIRE(second == 2);
  REQUIRE(calls == 2);  // once, not once per receive
  REQUIRE(ran_on == consumer_id);
  REQUIRE(mailbox.try_push(item) == PushResult::accepted);

  // Registering twice keeps one callback; close runs a pending one.
  REQUIRE(mailbox.try_push(item) == PushResult::accepted);
  int other_calls = 0;
  mailbox.notify_when_space([&] { ++other_calls; });
  mailbox.notify_when_space(count);
  mailbox.close();
  REQUIRE(calls == 3);
  REQUIRE(other_calls == 0);
  // Closed: runs at once.
  mailbox.notify_when_space(count);
  REQUIRE(calls == 4);
}

TEST_CASE("mailbox: try_push_batch takes what fits and wakes the consumer once", "[mailbox]") {
  struct Row {
    OverflowPolicy policy;
    std::size_t taken;
    std::vector<int> left;
    std::uint64_t dropped;
  };
  const Row rows[] = {
      {OverflowPolicy::drop_newest, 6, range(0, 4), 2},
      {OverflowPolicy::drop_oldest, 6, range(2, 6), 2},
      {OverflowPolicy::block, 4, range(0, 4), 0},
  };
  for (const Row& row : rows) {
    CAPTURE(distflow::to_string(row.policy));
    Mailbox<int> mailbox(4, row.policy);
    std::vector<int> items = range(0, 6);
    REQUIRE(mailbox.try_push_batch(items) == row.taken);
    REQUIRE(mailbox.stats().dropped == row.dropped);
    REQUIRE(drain_now(mailbox) == row.left);
    if (row.policy == OverflowPolicy::block) {
      REQUIRE(mailbox.try_push_batch(std::span<int>(items).subspan(4)) == 2);
      REQUIRE(drain_now(mailbox) == range(4, 6));
    }
    mailbox.close();
    REQUIRE(mailbox.try_push_batch(items) == 0);
  }
}

TEST_CASE("mailbox: try_push_batch runs cross laps and chunks in order", "[mailbox]") {
  for (std::size_t capacity : {3u, 1000u, 2500u}) {
    for (std::size_t batch_size : {1u, 5u, 700u, 3000u}) {
      CAPTURE(capacity, batch_size);
      Mailbox<std::uint64_t> mailbox(capacity, OverflowPolicy::block);
      std::uint64_t next_in = 0, next_out = 0;
      const std::uint64_t total = capacity * 4 + 11;
      std::vector<std::uint64_t> batch, out;
      while (next_out < total) {
        batch.clear();
        for (std::size_t k = 0; k < batch_size && next_in + k < total; ++k) {
          batch.push_back(next_in + k);
        }
        const std::size_t taken = mailbox.try_push_batch(batch);
        REQUIRE(taken == std::min(batch.size(), capacity - (next_in - next_out)));
        next_in += taken;
        out.clear();
        mailbox.receive_batch(out, capacity / 2 + 1, 0ns);
        for (std::uint64_t v : out)
          REQUIRE(v == next_out++);
      }
      const auto stats = mailbox.stats();
      REQUIRE(stats.accepted == total);
      REQUIRE(stats.delivered == total);
      REQUIRE(stats.size == 0);
    }
  }
}

TEST_CASE("mailbox: owned items are moved through and freed", "[mailbox]") {
  auto tracker = std::make_shared<int>(0);
  {
    Mailbox<std::shared_ptr<int>> mailbox(3, OverflowPolicy::drop_oldest);
    for (int i = 0; i < 5; ++i)
      mailbox.push(std::shared_ptr<int>(tracker));
    REQUIRE(tracker.use_count() == 4);  // two evicted and destroyed
    REQUIRE(mailbox.try_receive().has_value());
    REQUIRE(tracker.use_count() == 3);
  }
  REQUIRE(tracker.use_count() == 1);  // the destructor frees what was left
}

TEST_CASE("mailbox: several producers, no consumer: drop counts exact", "[mailbox]") {
  constexpr std::uint32_t kProducers = 4, kEach = 5000;
  constexpr std::size_t kCapacity = 1000;
  for (auto policy : {OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest}) {
    CAPTURE(distflow::to_string(policy));
    Mailbox<Tagged> mailbox(kCapacity, policy);
    std::atomic<std::uint64_t> refused{0};
    std::vector<std::thread> producers;
    for (std::uint32_t p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (std::uint32_t i = 0; i < kEach; ++i) {
          if (mailbox.push(Tagged{p, i}) == PushResult::dropped)
            refused.fetch_add(1);
        }
      });
    }
    for (auto& t : producers)
      t.join();
    const auto stats = mailbox.stats();
    REQUIRE(stats.size == kCapacity);
    REQUIRE(stats.dropped == kProducers * kEach - kCapacity);
    if (policy == OverflowPolicy::drop_newest) {
      REQUIRE(refused.load() == stats.dropped);
      REQUIRE(stats.accepted == kCapacity);
    } else {
      REQUIRE(refused.load() == 0);
      REQUIRE(stats.accepted == kProducers * kEach);
    }
    std::vector<std::int64_t> last(kProducers, -1);
    for (const Tagged& t : drain_now(mailbox)) {
      REQUIRE(static_cast<std::int64_t>(t.seq) > last[t.producer]);
      last[t.producer] = t.seq;
    }
  }
}

TEST_CASE("mailbox: several producers and a consumer: no loss, FIFO per producer, counts add up",
          "[mailbox]") {
  constexpr std::uint32_t kProducers = 3, kEach = 20000;
  for (auto policy :
       {OverflowPolicy::block, OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest}) {
    for (std::size_t capacity : {std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
      CAPTURE(distflow::to_string(policy), capacity);
      Mailbox<Tagged> mailbox(capacity, policy);
      std::atomic<std::uint64_t> refused{0}, evicting{0}, errors{0};
      std::vector<std::thread> producers;
      for (std::uint32_t p = 0; p < kProducers; ++p) {
        producers.emplace_back([&, p] {
          for (std::uint32_t i = 0; i < kEach; ++i) {
            // Odd producers use the batch entry point (runs of 8), the others push().
            Tagged item{p, i};
            if (p % 2 == 1) {
              std::vector<Tagged> run;
              for (; run.size() < 8 && i < kEach; ++i)
                run.push_back(Tagged{p, i});
              --i;
              std::span<Tagged> rest(run);
              while (!rest.empty()) {
                const std::size_t taken = mailbox.try_push_batch(rest);
                if (taken == 0 && policy != OverflowPolicy::block)
                  errors.fetch_add(1);
                rest = rest.subspan(taken);
                if (taken == 0)
                  std::this_thread::yield();
              }
              continue;
            }
            const PushResult r = mailbox.push(std::move(item));
            if (r == PushResult::dropped)
              refused.fetch_add(1);
            if (r == PushResult::accepted_evicted)
              evicting.fetch_add(1);
            if (r == PushResult::closed || r == PushResult::full)
              errors.fetch_add(1);
          }
        });
      }
      std::vector<std::int64_t> last(kProducers, -1);
      std::uint64_t received = 0, out_of_order = 0;
      std::thread consumer([&] {
        std::vector<Tagged> batch;
        for (;;) {
          batch.clear();
          if (mailbox.receive_batch(batch, 64, 50ms) == 0) {
            if (mailbox.drained())
              break;
            continue;
          }
          for (const Tagged& t : batch) {
            if (static_cast<std::int64_t>(t.seq) <= last[t.producer])
              ++out_of_order;
            last[t.producer] = t.seq;
          }
          received += batch.size();
        }
      });
      for (auto& t : producers)
        t.join();
      mailbox.close();
      consumer.join();
      const auto stats = mailbox.stats();
      REQUIRE(errors.load() == 0);
      REQUIRE(out_of_order == 0);
      REQUIRE(stats.delivered == received);
      REQUIRE(stats.size == 0);
      if (policy == OverflowPolicy::block) {
        REQUIRE(received == kProducers * kEach);
        REQUIRE(stats.dropped == 0);
        for (std::int64_t l : last)
          REQUIRE(l == kEach - 1);
      } else {
        REQUIRE(received + stats.dropped == kProducers * kEach);
      }
      if (policy == OverflowPolicy::drop_newest) {
        REQUIRE(stats.accepted == received);
        REQUIRE(refused.load() <= stats.dropped);
      }
      if (policy == OverflowPolicy::drop_oldest) {
        REQUIRE(stats.accepted == kProducers * kEach);
        REQUIRE(stats.accepted == stats.delivered + stats.dropped);
        // Each push that evicted counted at least one drop.
        REQUIRE(evicting.load() <= stats.dropped);
      }
    }
  }
}

TEST_CASE("mailbox: block with an I/O-style producer using notify_when_space", "[mailbox]") {
  // The producer never blocks: on `full` it parks until the callback fires, as the
  // I/O thread stops reading a socket and resumes from the callback.
  constexpr std::uint32_t kCount = 20000;
  Mailbox<std::uint32_t> mailbox(16, OverflowPolicy::block);
  std::atomic<int> errors{0};
  std::thread producer([&] {
    std::atomic<bool> room{false};
    for (std::uint32_t i = 0; i < kCount;) {
      std::uint32_t item = i;
      const PushResult r = mailbox.try_push(item);
      if (r == PushResult::accepted) {
        ++i;
        continue;
      }
      if (r != PushResult::full || item != i)
        errors.fetch_add(1);
      room.store(false);
      mailbox.notify_when_space([&] { room.store(true); });
      while (!room.load())
        std::this_thread::yield();
    }
    mailbox.close();
  });
  std::uint32_t next = 0;
  std::deque<std::uint32_t> batch;
  while (mailbox.receive_batch(batch, 5, 10s) > 0 || !mailbox.drained()) {
    for (std::uint32_t v : batch)
      REQUIRE(v == next++);
    batch.clear();
  }
  producer.join();
  REQUIRE(errors.load() == 0);
  REQUIRE(next == kCount);
  REQUIRE(mailbox.stats().dropped == 0);
}

TEST_CASE("mailbox: a sleeping producer is woken once a run of slots is free", "[mailbox]") {
  // Capacity 8: the run is 8 / 4 + 1 = 3. The callback runs on the consumer's thread
  // inside receive, so what it has seen after each receive is exact.
  Mailbox<int> mailbox(8, OverflowPolicy::block);
  for (int i = 0; i < 8; ++i)
    REQUIRE(mailbox.push(int{i}) == PushResult::accepted);
  int calls = 0;
  mailbox.notify_when_space([&] { ++calls; });
  REQUIRE(calls == 0);
  REQUIRE(mailbox.try_receive() == 0);
  REQUIRE(mailbox.try_receive() == 1);
  REQUIRE(calls == 0);  // two free slots: not yet
  REQUIRE(mailbox.try_receive() == 2);
  REQUIRE(calls == 1);
  REQUIRE(mailbox.try_receive() == 3);
  REQUIRE(calls == 1);  // one-shot

  // A batch that frees the run at once runs it once, and a blocked push() resumes.
  for (int i = 8; i < 12; ++i)
    REQUIRE(mailbox.push(int{i}) == PushResult::accepted);
  std::atomic<bool> pushed{false};
  std::thread producer([&] { pushed.store(mailbox.push(12) == PushResult::accepted); });
  std::vector<int> out;
  std::size_t got = 0;
  while (got < 9)
    got += mailbox.receive_batch(out, 9, 10s);
  producer.join();
  REQUIRE(pushed.load());
  REQUIRE(out == range(4, 13));
}

TEST_CASE("mailbox: adaptive spin gives up after failures in a row, probes, comes back",
          "[mailbox]") {
  // On a thread that may run elsewhere (skipped on a one-CPU machine or process).
  std::thread([] {
    if (!distflow::mailbox_detail::other_cpu_usable())
      return;
    distflow::mailbox_detail::AdaptiveSpin spin;
    int polls = 0;
    auto never = [&] {
      ++polls;
      return false;
    };
    auto always = [&] {
      ++polls;
      return true;
    };
    const std::uint32_t full = 20000;  // kSpinTime in ns
    CHECK(spin.budget_ns() == full);
    // A success in between resets the count of failures.
    for (int i = 0; i < 31; ++i)
      CHECK_FALSE(spin.spin(never));
    CHECK(spin.budget_ns() == full);
    CHECK(spin.spin(always));
    for (int i = 0; i < 31; ++i)
      CHECK_FALSE(spin.spin(never));
    CHECK(spin.budget_ns() == full);
    CHECK_FALSE(spin.spin(never));  // the 32nd in a row
    CHECK(spin.budget_ns() == 0);
    // No budget: 15 waits sleep at once (never poll), the 16th probes.
    polls = 0;
    for (int i = 0; i < 15; ++i)
      CHECK_FALSE(spin.spin(never));
    CHECK(polls == 0);
    CHECK(spin.spin(always));
    CHECK(polls == 1);
    CHECK(spin.budget_ns() == full);
  }).join();
}

namespace {

// Pins the calling thread to the first CPU it may use; restores the old mask on
// destruction. Threads started meanwhile inherit the pinned mask.
class PinToOneCpu {
 public:
  PinToOneCpu() {
    CPU_ZERO(&old_);
    ok_ = ::sched_getaffinity(0, sizeof old_, &old_) == 0;
    if (!ok_)
      return;
    cpu_set_t one;
    CPU_ZERO(&one);
    for (std::size_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &old_)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    ok_ = ::sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~PinToOneCpu() {
    if (ok_)
      ::sched_setaffinity(0, sizeof old_, &old_);
  }
  PinToOneCpu(const PinToOneCpu&) = delete;
  PinToOneCpu& operator=(const PinToOneCpu&) = delete;
  bool ok() const { return ok_; }

 private:
  cpu_set_t old_;
  bool ok_ = false;
};

}  // namespace

TEST_CASE("mailbox: on one CPU nobody spins, and ping-pong and streams lose nothing", "[mailbox]") {
  // The test thread is the process's main thread: pinning it pins the process as
  // other_cpu_usable() sees it, and the threads below inherit the mask.
  PinToOneCpu pin;
  if (!pin.ok())
    return;
  std::atomic<int> spins_allowed{-1};
  std::atomic<int> errors{0};
  std::thread([&] {
    spins_allowed.store(distflow::mailbox_detail::other_cpu_usable() ? 1 : 0);
    distflow::mailbox_detail::AdaptiveSpin spin;
    int polls = 0;
    for (int i = 0; i < 32; ++i) {
      if (spin.spin([&] { return ++polls > 0; }))
        errors.fetch_add(1);
    }
    if (polls != 0)
      errors.fetch_add(1);
  }).join();
  REQUIRE(spins_allowed.load() == 0);
  REQUIRE(errors.load() == 0);

  // Ping-pong: every hand-off puts the waiting thread to sleep.
  constexpr int kTrips = 2000;
  Mailbox<int> ping(4, OverflowPolicy::block), pong(4, OverflowPolicy::block);
  std::thread echo([&] {
    for (int i = 0; i < kTrips; ++i) {
      auto v = ping.receive(10s);
      if (!v || *v != i || pong.push(int{*v}) != PushResult::accepted)
        errors.fetch_add(1);
    }
  });
  for (int i = 0; i < kTrips; ++i) {
    REQUIRE(ping.push(int{i}) == PushResult::accepted);
    REQUIRE(pong.receive(10s) == i);
  }
  echo.join();

  // A stream through a small block mailbox: producer and consumer both sleep.
  constexpr int kCount = 50000;
  Mailbox<int> stream(16, OverflowPolicy::block);
  std::thread producer([&] {
    for (int i = 0; i < kCount; ++i) {
      if (stream.push(int{i}) != PushResult::accepted)
        errors.fetch_add(1);
    }
  });
  std::vector<int> out;
  int next = 0;
  while (next < kCount) {
    out.clear();
    if (stream.receive_batch(out, 7, 10s) == 0)
      break;
    for (int v : out)
      REQUIRE(v == next++);
  }
  producer.join();
  REQUIRE(next == kCount);
  REQUIRE(errors.load() == 0);
  REQUIRE(stream.stats().delivered == kCount);
}

TEST_CASE("mailbox: receive with an unbounded timeout is woken by a push", "[mailbox]") {
  Mailbox<int> mailbox(4);
  std::atomic<bool> accepted{false};
  std::thread producer([&] { accepted.store(mailbox.push(7) == PushResult::accepted); });
  REQUIRE(mailbox.receive(std::chrono::nanoseconds::max()) == 7);
  producer.join();
  REQUIRE(accepted.load());
  std::thread closer([&] { mailbox.close(); });
  REQUIRE_FALSE(mailbox.receive(std::chrono::nanoseconds::max()).has_value());
  closer.join();
}
