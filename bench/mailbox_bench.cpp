// Mailbox push+pop across threads: the real Mailbox against a plain
// std::mutex + std::deque + std::condition_variable queue, in the same binary.
// Every run moves kItemsPerIteration items per iteration with the `block`
// policy (nothing dropped), so items/s is what the consumer received.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "mailbox.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kItemsPerIteration = 1 << 20;

/// The baseline: bounded, blocking, one lock per push and per pop.
class BaselineQueue {
 public:
  explicit BaselineQueue(std::size_t max_size) : max_size_(max_size) {}

  void push(std::uint64_t item) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return items_.size() < max_size_; });
    items_.push_back(item);
    lock.unlock();
    not_empty_.notify_one();
  }

  /// Up to `max` items under one lock (as the mailbox's receive_batch): appends to `out`.
  std::size_t pop_batch(std::vector<std::uint64_t>& out, std::size_t max) {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty(); });
    const std::size_t n = std::min(max, items_.size());
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(items_.front());
      items_.pop_front();
    }
    lock.unlock();
    not_full_.notify_all();
    return n;
  }

  std::uint64_t pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty(); });
    const std::uint64_t item = items_.front();
    items_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return item;
  }

 private:
  std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<std::uint64_t> items_;
  std::size_t max_size_;
};

// Producers split kItemsPerIteration between them; the checksum keeps the
// consumer's work from being optimised away and proves nothing was lost.
template <class Produce, class Consume>
void run_threads(benchmark::State& state, Produce produce, Consume consume) {
  const auto producers = static_cast<std::uint64_t>(state.range(0));
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (std::uint64_t p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        for (std::uint64_t i = p; i < kItemsPerIteration; i += producers)
          produce(i);
      });
    }
    const std::uint64_t sum = consume(kItemsPerIteration);
    for (auto& t : threads)
      t.join();
    if (sum != kItemsPerIteration * (kItemsPerIteration - 1) / 2) {
      state.SkipWithError("items lost");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kItemsPerIteration));
}

void BM_Mailbox_Batch(benchmark::State& state) {
  distflow::Mailbox<std::uint64_t> mailbox(static_cast<std::size_t>(state.range(1)),
                                           distflow::OverflowPolicy::block);
  std::vector<std::uint64_t> batch;
  batch.reserve(256);
  run_threads(
      state, [&](std::uint64_t i) { mailbox.push(std::uint64_t{i}); },
      [&](std::uint64_t n) {
        std::uint64_t sum = 0;
        for (std::uint64_t got = 0; got < n;) {
          batch.clear();
          got += mailbox.receive_batch(batch, 256, 1s);
          for (std::uint64_t v : batch)
            sum += v;
        }
        return sum;
      });
}

// The I/O thread's way: one read decodes many frames, pushed with one call (runs of 16).
void BM_Mailbox_PushBatch(benchmark::State& state) {
  distflow::Mailbox<std::uint64_t> mailbox(static_cast<std::size_t>(state.range(1)),
                                           distflow::OverflowPolicy::block);
  const auto producers = static_cast<std::uint64_t>(state.range(0));
  std::vector<std::uint64_t> batch;
  batch.reserve(256);
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (std::uint64_t p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        std::uint64_t run[16];
        for (std::uint64_t i = p; i < kItemsPerIteration;) {
          std::size_t n = 0;
          for (; n < 16 && i < kItemsPerIteration; ++n, i += producers)
            run[n] = i;
          std::span<std::uint64_t> rest(run, n);
          while (!rest.empty()) {
            rest = rest.subspan(mailbox.try_push_batch(rest));
            if (!rest.empty())
              std::this_thread::yield();
          }
        }
      });
    }
    std::uint64_t sum = 0;
    for (std::uint64_t got = 0; got < kItemsPerIteration;) {
      batch.clear();
      got += mailbox.receive_batch(batch, 256, 1s);
      for (std::uint64_t v : batch)
        sum += v;
    }
    for (auto& t : threads)
      t.join();
    if (sum != kItemsPerIteration * (kItemsPerIteration - 1) / 2) {
      state.SkipWithError("items lost");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kItemsPerIteration));
}

void BM_Mailbox_Single(benchmark::State& state) {
  distflow::Mailbox<std::uint64_t> mailbox(static_cast<std::size_t>(state.range(1)),
                                           distflow::OverflowPolicy::block);
  run_threads(
      state, [&](std::uint64_t i) { mailbox.push(std::uint64_t{i}); },
      [&](std::uint64_t n) {
        std::uint64_t sum = 0;
        for (std::uint64_t got = 0; got < n;) {
          if (auto v = mailbox.receive(1s)) {
            sum += *v;
            ++got;
          }
        }
        return sum;
      });
}

void BM_Baseline_MutexDeque(benchmark::State& state) {
  BaselineQueue queue(static_cast<std::size_t>(state.range(1)));
  run_threads(
      state, [&](std::uint64_t i) { queue.push(i); },
      [&](std::uint64_t n) {
        std::uint64_t sum = 0;
        for (std::uint64_t got = 0; got < n; ++got)
          sum += queue.pop();
        return sum;
      });
}

// The same queue with the consumer taking up to 256 per lock: the fair match of
// BM_Mailbox_Batch (BM_Baseline_MutexDeque is the match of BM_Mailbox_Single).
void BM_Baseline_MutexDeque_Batch(benchmark::State& state) {
  BaselineQueue queue(static_cast<std::size_t>(state.range(1)));
  std::vector<std::uint64_t> batch;
  batch.reserve(256);
  run_threads(
      state, [&](std::uint64_t i) { queue.push(i); },
      [&](std::uint64_t n) {
        std::uint64_t sum = 0;
        for (std::uint64_t got = 0; got < n;) {
          batch.clear();
          got += queue.pop_batch(batch, 256);
          for (std::uint64_t v : batch)
            sum += v;
        }
        return sum;
      });
}

// Args: {producers, capacity}. 1000 is the node's default mailbox size.
void mailbox_args(benchmark::internal::Benchmark* b) {
  for (std::int64_t producers : {1, 2}) {
    for (std::int64_t capacity : {1000, 65536})
      b->Args({producers, capacity});
  }
  b->ArgNames({"producers", "capacity"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_Mailbox_Batch)->Apply(mailbox_args);
BENCHMARK(BM_Mailbox_PushBatch)->Apply(mailbox_args);
BENCHMARK(BM_Mailbox_Single)->Apply(mailbox_args);
BENCHMARK(BM_Baseline_MutexDeque)->Apply(mailbox_args);
BENCHMARK(BM_Baseline_MutexDeque_Batch)->Apply(mailbox_args);
