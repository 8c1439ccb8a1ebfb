#pragma once

// The node's mailbox (PROTOCOL.md §3.3): a bounded FIFO between the I/O thread
// (and any other producers) and one consumer thread. The only structure in
// distflow that two threads touch.
//
// Implementation: a lock-free bounded ring of stamped slots (after crossbeam's
// ArrayQueue and Dmitry Vyukov's bounded queue). A push is one CAS on the tail
// plus the slot's stores; the consumer takes every ready item per call and
// publishes its head once per run. Nobody takes a lock or makes a system call
// on the fast path: the consumer sleeps on a futex and producers on a mutex +
// condition variable only when they must wait, and are woken only when a flag
// says they sleep. A waiting thread spins first only while spinning pays: when
// another CPU can run the thread it waits for, and recent spins succeeded (see
// AdaptiveSpin). The I/O
// thread should push what one read decoded with try_push_batch(): one CAS for
// the whole run is several times cheaper than a push() per item.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace distflow {

namespace mailbox_detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Spins briefly, then yields: for the short windows in which another thread is in
/// the middle of publishing or freeing a slot.
class Backoff {
 public:
  void pause() {
    if (step_ < 6) {
      for (unsigned i = 0; i < (1u << step_); ++i)
        cpu_relax();
      ++step_;
    } else {
      std::this_thread::yield();
    }
  }

 private:
  unsigned step_ = 0;
};

/// Asks for the cache line at `p` in exclusive state ahead of a store. PREFETCHW
/// decodes as a NOP on x86-64 CPUs that lack it, so no target flag is needed.
inline void prefetch_for_write(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

// How long a waiting thread polls before it sleeps, at most: a consumer that keeps
// up with its producer would otherwise sleep, and be woken by a system call, for
// nearly every item. Short against any timeout a caller passes.
inline constexpr std::chrono::microseconds kSpinTime{20};
// The shortest spin worth making, and the length of a probe (see AdaptiveSpin).
inline constexpr std::chrono::microseconds kMinSpin{2};

/// Polls `ready` for up to `budget`; true as soon as it holds. The pauses between
/// polls grow (to ~1.5 µs): each poll reads a line the other side is writing and so
/// slows it down, and a consumer that waits a little finds a batch instead of one item.
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget) {
  const auto until = std::chrono::steady_clock::now() + budget;
  for (unsigned pauses = 1;; pauses = pauses < 32 ? pauses * 2 : pauses) {
    if (ready())
      return true;
    for (unsigned i = 0; i < pauses; ++i)
      cpu_relax();
    if (std::chrono::steady_clock::now() >= until)
      return ready();
  }
}

/// False when this thread and the whole process may only run on one and the same
/// CPU: then the thread we wait for cannot run while we spin. Cached per thread,
/// re-read every 256 calls (mailbox.cpp).
bool other_cpu_usable();

/// Futex wait on `word` while it holds `expected`, until `deadline` (steady_clock;
/// time_point::max() waits forever). False on timeout; true when woken, interrupted,
/// or when `word` no longer held `expected`.
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::steady_clock::time_point deadline);
/// Wakes one (or every) thread in futex_wait on `word`.
void futex_wake(std::atomic<std::uint32_t>& word, bool all);

/// When a thread about to sleep should spin first, and for how long. A spin pays
/// only when the thread it waits for runs meanwhile on another CPU: never spin when
/// this process has one CPU; otherwise spin up to kSpinTime, and after kGiveUpAfter
/// spins in a row that found nothing (a peer that answers slower than that, or
/// that shares our CPU) sleep at once, except that every 16th wait probes with
/// kMinSpin; any spin that succeeds restores the full budget. (Halving the budget
/// per failure cost the node->node throughput bench ~20 %: its dispatcher's spins
/// fail now and then between reads, and a spinning consumer also keeps the
/// scheduler from stacking it on its producer's CPU.) Relaxed counters: several
/// producers may share one; a lost update only makes a spin a little longer or
/// shorter.
class AdaptiveSpin {
 public:
  template <class Ready>
  bool spin(Ready&& ready) {
    if (!other_cpu_usable())
      return false;
    std::uint32_t budget = budget_ns_.load(std::memory_order_relaxed);
    if (budget == 0) {
      const std::uint32_t probe = probes_.load(std::memory_order_relaxed) + 1;
      probes_.store(probe, std::memory_order_relaxed);
      if (probe % 16 != 0)
        return false;
      budget = kMin;
    }
    const bool ok = spin_until(ready, std::chrono::nanoseconds(budget));
    if (ok) {
      budget_ns_.store(kMax, std::memory_order_relaxed);
      failures_.store(0, std::memory_order_relaxed);
    } else {
      const std::uint32_t failures = failures_.load(std::memory_order_relaxed) + 1;
      failures_.store(failures, std::memory_order_relaxed);
      if (failures >= kGiveUpAfter)
        budget_ns_.store(0, std::memory_order_relaxed);
    }
    return ok;
  }
  /// The current budget in nanoseconds (for tests).
  std::uint32_t budget_ns() const { return budget_ns_.load(std::memory_order_relaxed); }

 private:
  static constexpr auto kMax = static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(kSpinTime).count());
  static constexpr std::uint32_t kGiveUpAfter = 32;  // spins in a row that found nothing
  static constexpr auto kMin = static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(kMinSpin).count());
  std::atomic<std::uint32_t> budget_ns_{kMax};
  std::atomic<std::uint32_t> probes_{0};
  std::atomic<std::uint32_t> failures_{0};
};

}  // namespace mailbox_detail

enum class OverflowPolicy { drop_newest, drop_oldest, block };

/// "drop-newest" | "drop-oldest" | "block"; nullopt for anything else.
std::optional<OverflowPolicy> parse_overflow_policy(std::string_view text);
std::string_view to_string(OverflowPolicy policy);

enum class PushResult {
  accepted,          ///< queued
  accepted_evicted,  ///< queued after discarding the oldest item (drop-oldest)
  dropped,           ///< discarded: mailbox full (drop-newest)
  full,              ///< try_push under `block`: nothing queued, item untouched
  closed,            ///< mailbox closed: nothing queued
};

struct MailboxStats {
  std::uint64_t accepted = 0;   ///< items that entered the queue
  std::uint64_t dropped = 0;    ///< items discarded by drop-newest or drop-oldest
  std::uint64_t delivered = 0;  ///< items handed to the consumer
  std::size_t size = 0;         ///< items queued now
  /// The most items queued at once so far, as the consumer found them when it
  /// received (or `size`, if larger): its own bookkeeping, one load per batch.
  std::size_t high_water = 0;
  std::size_t capacity = 0;  ///< max_size()
};

/// Bounded multi-producer / single-consumer FIFO with an overflow policy.
/// T must be nothrow-move-constructible. Memory grows in chunks up to max_size.
template <class T>
class Mailbox {
 public:
  explicit Mailbox(std::size_t max_size, OverflowPolicy policy = OverflowPolicy::drop_newest);
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  /// Applies the policy. Under `block` it waits for room (or close); nothing dropped. A
  /// producer that had to sleep is woken once a run of slots is free (see
  /// notify_when_space), not for each one.
  PushResult push(T&& item);
  /// Never waits. Under `block` a full mailbox returns `full` and leaves `item` as it was.
  PushResult try_push(T& item);
  /// try_push() for each item in order, waking the consumer once for the lot. Returns how
  /// many leading items were taken (queued or dropped by the policy); under `block` it stops
  /// at the first item that finds the mailbox full, and on close, leaving the rest untouched.
  std::size_t try_push_batch(std::span<T> items);
  /// Registers a one-shot callback run (on the consumer's thread) as soon as a run of
  /// room appears (min(capacity / 4 + 1, 64) free slots, or the mailbox closes); if
  /// there is room already it runs at once on the caller's thread.
  /// For the I/O thread under `block`: stop reading, resume when called.
  void notify_when_space(std::function<void()> callback);

  /// Waits up to `timeout` for an item; nullopt on timeout, or when closed and empty.
  std::optional<T> receive(std::chrono::nanoseconds timeout);
  std::optional<T> try_receive();
  /// Moves up to `max` items into `out` (appending), waiting up to `timeout` for the
  /// first one. Returns the number moved; 0 on timeout or when closed and drained.
  std::size_t receive_batch(std::deque<T>& out, std::size_t max, std::chrono::nanoseconds timeout);
  /// The same into a vector (cheaper to append to and to reuse).
  std::size_t receive_batch(std::vector<T>& out, std::size_t max, std::chrono::nanoseconds timeout);

  /// Refuses further pushes and wakes every waiter; queued items stay receivable.
  void close();
  bool closed() const;
  /// True once closed and every item has been received.
  bool drained() const;

  /// Exact once producers and consumer are idle; a recent snapshot while they run.
  MailboxStats stats() const;
  std::size_t max_size() const { return max_size_; }
  OverflowPolicy policy() const { return policy_; }

 private:
  static_assert(std::is_nothrow_move_constructible_v<T>, "Mailbox<T> needs a noexcept move");

  // Positions are lap * one_lap_ + index; the tail's mark bit (between index and
  // lap) means closed. A slot holds the item of position p when stamp == p + 1.
  // Under drop-newest and block only the consumer moves the head: producers test
  // for room against the head and never read a slot (their stores then stream
  // through the store buffer), and the consumer never writes one. Under
  // drop-oldest producers evict from the head too, so the consumer claims each
  // item with a CAS and marks its slot free for position p with stamp == p
  // (crossbeam's ArrayQueue).
  struct Slot {
    std::atomic<std::uint64_t> stamp;
    alignas(T) unsigned char storage[sizeof(T)];
    T* item() { return std::launder(reinterpret_cast<T*>(storage)); }
  };
  static constexpr std::size_t kChunkShift = 10;  // 1024 slots per lazily allocated chunk
  static constexpr std::size_t kChunkSlots = std::size_t{1} << kChunkShift;
  static constexpr std::size_t kCacheLine = 64;
  static constexpr std::uint64_t kPrefetchSlots = 2 * kCacheLine / sizeof(Slot) + 1;
  enum class Enqueue { ok, full, closed };

  Slot* slot_for_push(std::uint64_t index);
  Slot* slot_if_allocated(std::uint64_t index) const;
  std::uint64_t next_position(std::uint64_t position) const;
  std::uint64_t count_of(std::uint64_t position) const;
  Enqueue try_enqueue(T& item);
  Enqueue enqueue_owned(std::span<T> items, std::size_t& taken);
  template <class Sink>
  bool try_dequeue(Sink&& sink);
  template <class Sink>
  std::size_t dequeue_run(Sink&& sink, std::size_t max);
  template <class Sink>
  std::size_t receive_into(Sink&& sink, std::size_t max, std::chrono::nanoseconds timeout);
  PushResult push_unnotified(T& item);
  bool full_now() const;
  bool has_item_or_closed() const;
  bool head_ready_or_closed() const;
  void wake_consumer();
  void wake_producers();
  void after_receive(std::size_t n);
  void note_depth(std::size_t n, bool full_batch);
  void wait_for_item(std::chrono::steady_clock::time_point deadline);
  void wait_for_space();

  // Read-only after construction.
  std::size_t max_size_;
  OverflowPolicy policy_;
  std::uint64_t mark_bit_;
  std::uint64_t one_lap_;
  unsigned lap_shift_;
  std::size_t chunk_count_;
  std::uint64_t wake_run_;  // free slots that wake (or end the spin of) a waiting producer
  std::unique_ptr<std::atomic<Slot*>[]> chunks_;

  // Producers' line. head_seen_ is a recent head_ (acquired there, released here):
  // producers test for room against it and read head_, which the consumer keeps
  // writing, only when it says full.
  alignas(kCacheLine) std::atomic<std::uint64_t> tail_{0};
  std::atomic<std::uint64_t> head_seen_{0};
  // Shared by producers that wait for room (block).
  mailbox_detail::AdaptiveSpin producer_spin_;
  // Consumer's line (drop-oldest producers also advance head_ when they evict).
  alignas(kCacheLine) std::atomic<std::uint64_t> head_{0};
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> high_water_{0};  // written by the consumer only
  mailbox_detail::AdaptiveSpin consumer_spin_;
  // The consumer's futex word: 1 while it sleeps or is about to. Read by producers on
  // every push, written only when the consumer goes to sleep (and by its waker).
  alignas(kCacheLine) std::atomic<std::uint32_t> consumer_sleeping_{0};
  // Set by close() after the tail's mark bit: what a polling consumer reads instead
  // of the tail, whose line every push writes.
  std::atomic<bool> closed_hint_{false};
  // Read by the consumer after every receive: blocked producers + a pending callback.
  alignas(kCacheLine) std::atomic<std::uint32_t> waiters_{0};
  // Slow paths only.
  alignas(kCacheLine) std::atomic<std::uint64_t> dropped_{0};
  mutable std::mutex wait_mutex_;
  std::condition_variable space_ready_;
  std::function<void()> space_callback_;  // guarded by wait_mutex_
};

// ---- implementation -------------------------------------------------------------

template <class T>
Mailbox<T>::Mailbox(std::size_t max_size, OverflowPolicy policy)
    : max_size_(max_size == 0 ? 1 : max_size), policy_(policy) {
  mark_bit_ = 1;
  while (mark_bit_ <= max_size_)
    mark_bit_ <<= 1;
  one_lap_ = mark_bit_ << 1;
  lap_shift_ = 0;
  while ((std::uint64_t{1} << lap_shift_) < one_lap_)
    ++lap_shift_;
  chunk_count_ = (max_size_ + kChunkSlots - 1) >> kChunkShift;
  wake_run_ = std::min<std::uint64_t>(max_size_ / 4 + 1, 64);
  chunks_ = std::make_unique<std::atomic<Slot*>[]>(chunk_count_);
  for (std::size_t i = 0; i < chunk_count_; ++i)
    chunks_[i].store(nullptr, std::memory_order_relaxed);
  slot_for_push(0);  // the first chunk up front: small mailboxes never allocate again
}

template <class T>
Mailbox<T>::~Mailbox() {
  while (dequeue_run([](T&&) {}, SIZE_MAX) > 0) {
  }
  for (std::size_t i = 0; i < chunk_count_; ++i) {
    delete[] chunks_[i].load(std::memory_order_relaxed);
  }
}

template <class T>
auto Mailbox<T>::slot_if_allocated(std::uint64_t index) const -> Slot* {
  Slot* chunk = chunks_[index >> kChunkShift].load(std::memory_order_acquire);
  return chunk ? chunk + (index & (kChunkSlots - 1)) : nullptr;
}

template <class T>
auto Mailbox<T>::slot_for_push(std::uint64_t index) -> Slot* {
  if (Slot* slot = slot_if_allocated(index))
    return slot;
  // First lap through this chunk: allocate it, stamped free for lap 0. Racing
  // producers may both allocate; one installs, the other frees its copy.
  const std::size_t chunk_index = index >> kChunkShift;
  const std::size_t first = chunk_index << kChunkShift;
  const std::size_t n = std::min(kChunkSlots, max_size_ - first);
  auto* fresh = new Slot[n];
  for (std::size_t i = 0; i < n; ++i)
    fresh[i].stamp.store(first + i, std::memory_order_relaxed);
  Slot* expected = nullptr;
  if (!chunks_[chunk_index].compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
    delete[] fresh;
    return expected + (index & (kChunkSlots - 1));
  }
  return fresh + (index & (kChunkSlots - 1));
}

template <class T>
std::uint64_t Mailbox<T>::next_position(std::uint64_t position) const {
  const std::uint64_t index = position & (mark_bit_ - 1);
  const std::uint64_t lap = position & ~(one_lap_ - 1);
  return index + 1 < max_size_ ? position + 1 : lap + one_lap_;
}

template <class T>
std::uint64_t Mailbox<T>::count_of(std::uint64_t position) const {
  return (position >> lap_shift_) * max_size_ + (position & (mark_bit_ - 1));
}

template <class T>
auto Mailbox<T>::try_enqueue(T& item) -> Enqueue {
  mailbox_detail::Backoff backoff;
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  for (;;) {
    if (tail & mark_bit_)
      return Enqueue::closed;
    const std::uint64_t index = tail & (mark_bit_ - 1);
    Slot* slot = slot_for_push(index);
    const std::uint64_t stamp = slot->stamp.load(std::memory_order_acquire);
    if (stamp == tail) {
      // seq_cst: pairs with the consumer's sleeping flag (see wait_for_item).
      if (tail_.compare_exchange_weak(tail, next_position(tail), std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
        ::new (static_cast<void*>(slot->storage)) T(std::move(item));
        slot->stamp.store(tail + 1, std::memory_order_release);
        return Enqueue::ok;
      }
    } else if (stamp + one_lap_ == tail + 1) {
      // The slot still holds the previous lap's item: full, unless the head has
      // just moved and the consumer is still freeing it.
      const std::uint64_t head = head_.load(std::memory_order_seq_cst);
      if (head + one_lap_ == tail)
        return Enqueue::full;
      backoff.pause();
      tail = tail_.load(std::memory_order_relaxed);
    } else {
      backoff.pause();  // another producer claimed this position; catch up
      tail = tail_.load(std::memory_order_relaxed);
    }
  }
}

template <class T>
auto Mailbox<T>::enqueue_owned(std::span<T> items, std::size_t& taken) -> Enqueue {
  taken = 0;
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  for (;;) {
    if (tail & mark_bit_)
      return Enqueue::closed;
    // If the CAS below succeeds, the consumer had moved the previous lap's items
    // out of these slots before it published this head (acquire chains through
    // head_seen_). A stale head only understates the room.
    std::uint64_t head = head_seen_.load(std::memory_order_acquire);
    std::uint64_t first = count_of(tail);
    if (count_of(head) > first) {  // our tail is stale
      tail = tail_.load(std::memory_order_relaxed);
      continue;
    }
    if (first - count_of(head) >= max_size_) {
      head = head_.load(std::memory_order_acquire);
      head_seen_.store(head, std::memory_order_release);
      if (first - count_of(head) >= max_size_) {
        const std::uint64_t fresh = tail_.load(std::memory_order_relaxed);
        if (fresh == tail)
          return Enqueue::full;
        tail = fresh;
        continue;
      }
    }
    const std::size_t n = std::min<std::size_t>(
        items.size(), max_size_ - static_cast<std::size_t>(first - count_of(head)));
    if (first < max_size_) {
      // First lap: allocate every chunk the run touches before claiming it, so a
      // failed allocation leaves nothing claimed and unpublished.
      for (std::uint64_t c = first; c < first + n && c < max_size_; c += kChunkSlots)
        slot_for_push(c);
      slot_for_push(std::min<std::uint64_t>(first + n, max_size_) - 1);
    }
    const std::uint64_t new_tail =
        n == 1 ? next_position(tail)
               : ((first + n) / max_size_ << lap_shift_) + (first + n) % max_size_;
    // seq_cst: pairs with the consumer's sleeping flag (see wait_for_item).
    if (tail_.compare_exchange_weak(tail, new_tail, std::memory_order_seq_cst,
                                    std::memory_order_relaxed)) {
      std::uint64_t position = tail;
      for (std::size_t k = 0; k < n; ++k) {
        const std::uint64_t index = position & (mark_bit_ - 1);
        Slot* slot = slot_if_allocated(index);
        // The consumer last read the slots ahead: fetch them for writing now, so
        // their misses overlap instead of each stalling the next push's CAS.
        if (index + kPrefetchSlots < max_size_) {
          if (Slot* ahead = slot_if_allocated(index + kPrefetchSlots)) {
            mailbox_detail::prefetch_for_write(ahead);
          }
        }
        ::new (static_cast<void*>(slot->storage)) T(std::move(items[k]));
        slot->stamp.store(position + 1, std::memory_order_release);
        position = next_position(position);
      }
      taken = n;
      return Enqueue::ok;
    }
  }
}

template <class T>
template <class Sink>
bool Mailbox<T>::try_dequeue(Sink&& sink) {
  mailbox_detail::Backoff backoff;
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t index = head & (mark_bit_ - 1);
    Slot* slot = slot_if_allocated(index);
    // A chunk not allocated yet has never held an item: its stamps read as free.
    const std::uint64_t stamp = slot ? slot->stamp.load(std::memory_order_acquire) : index;
    if (stamp == head + 1) {
      // A CAS, not a store: drop-oldest producers evict from the head too.
      if (head_.compare_exchange_weak(head, next_position(head), std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
        // Out of the slot before the sink runs: a sink that throws (a container
        // that cannot grow) then loses this item but leaves the ring consistent.
        T* item = slot->item();
        T taken(std::move(*item));
        item->~T();
        slot->stamp.store(head + one_lap_, std::memory_order_release);
        sink(std::move(taken));
        return true;
      }
    } else if (stamp == head) {
      const std::uint64_t tail = tail_.load(std::memory_order_seq_cst) & ~mark_bit_;
      if (tail == head)
        return false;
      backoff.pause();  // a producer claimed this slot and is still writing it
      head = head_.load(std::memory_order_relaxed);
    } else {
      backoff.pause();  // an evicting producer moved the head under us
      head = head_.load(std::memory_order_relaxed);
    }
  }
}

template <class T>
template <class Sink>
std::size_t Mailbox<T>::dequeue_run(Sink&& sink, std::size_t max) {
  if (policy_ == OverflowPolicy::drop_oldest) {
    std::size_t n = 0;
    while (n < max && try_dequeue(sink))
      ++n;
    return n;
  }
  // Only this thread moves the head: take every published item in a row, then
  // publish the head once for the run (release: the slots are free for
  // producers; seq_cst: pairs with a blocked producer's waiters_ increment, see
  // after_receive). A sink that throws leaves its item in place.
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  std::size_t n = 0;
  try {
    while (n < max) {
      Slot* slot = slot_if_allocated(head & (mark_bit_ - 1));
      if (!slot || slot->stamp.load(std::memory_order_acquire) != head + 1)
        break;
      T* item = slot->item();
      sink(std::move(*item));
      item->~T();
      head = next_position(head);
      ++n;
    }
  } catch (...) {
    if (n > 0)
      head_.store(head, std::memory_order_seq_cst);
    throw;
  }
  if (n > 0)
    head_.store(head, std::memory_order_seq_cst);
  return n;
}

template <class T>
bool Mailbox<T>::full_now() const {
  const std::uint64_t tail = tail_.load(std::memory_order_seq_cst) & ~mark_bit_;
  const std::uint64_t head = head_.load(std::memory_order_seq_cst);
  return head + one_lap_ == tail;
}

template <class T>
bool Mailbox<T>::has_item_or_closed() const {
  const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
  return (tail & mark_bit_) || (tail & ~mark_bit_) != head_.load(std::memory_order_relaxed);
}

template <class T>
bool Mailbox<T>::head_ready_or_closed() const {
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  const Slot* slot = slot_if_allocated(head & (mark_bit_ - 1));
  return (slot && slot->stamp.load(std::memory_order_relaxed) == head + 1) ||
         closed_hint_.load(std::memory_order_relaxed);
}

template <class T>
void Mailbox<T>::wake_consumer() {
  // The load follows our seq_cst tail CAS; the consumer stores the flag before
  // its seq_cst look at the tail. One of the two sees the other (Dekker). Of several
  // producers that see it set, the one that clears it makes the system call.
  if (consumer_sleeping_.load(std::memory_order_seq_cst) == 0)
    return;
  if (consumer_sleeping_.exchange(0, std::memory_order_seq_cst) != 0)
    mailbox_detail::futex_wake(consumer_sleeping_, false);
}

template <class T>
void Mailbox<T>::wake_producers() {
  std::function<void()> callback;
  {
    std::lock_guard lock(wait_mutex_);
    if (space_callback_) {
      callback.swap(space_callback_);
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  space_ready_.notify_all();
  if (callback)
    callback();
}

template <class T>
void Mailbox<T>::after_receive(std::size_t n) {
  // Only the consumer writes delivered_: no read-modify-write needed.
  delivered_.store(delivered_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  // Follows our seq_cst head CAS; a producer registers before its seq_cst look at the head.
  // Sleeping producers are woken once a run of slots is free, not per freed slot: woken
  // for one slot, a producer fills it and sleeps again, and both sides pay a system
  // call per item. A consumer that keeps receiving frees the run (it is at most a
  // quarter of the capacity); one that drains the mailbox frees all of it.
  if (waiters_.load(std::memory_order_seq_cst) != 0) {
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    const std::uint64_t head = head_.load(std::memory_order_relaxed);
    if ((tail & mark_bit_) || count_of(tail) + wake_run_ <= count_of(head) + max_size_)
      wake_producers();
  }
}

template <class T>
void Mailbox<T>::note_depth(std::size_t n, bool full_batch) {
  // The depth only grows between two receives (drop-oldest keeps it at the bound),
  // so the most a receive finds is the high-water mark. A run that stopped short of
  // `max` took everything published: its length is the depth. Only a full run
  // looks at the tail (one load per batch, on the consumer's side).
  std::uint64_t depth = n;
  if (full_batch) {
    const std::uint64_t tail = count_of(tail_.load(std::memory_order_relaxed) & ~mark_bit_);
    const std::uint64_t head = count_of(head_.load(std::memory_order_relaxed));
    depth = std::min<std::uint64_t>(n + (tail > head ? tail - head : 0), max_size_);
  }
  if (depth > high_water_.load(std::memory_order_relaxed))
    high_water_.store(depth, std::memory_order_relaxed);
}

template <class T>
void Mailbox<T>::wait_for_item(std::chrono::steady_clock::time_point deadline) {
  // Polls the head slot, not the tail: see closed_hint_.
  if (consumer_spin_.spin([&] { return head_ready_or_closed(); }))
    return;
  // Set, then look: a producer that pushes after our look sees the flag (see
  // wake_consumer) and clears it, so the futex wait returns at once or is woken.
  // Any return goes back to the caller, which looks again (a spurious one costs
  // one empty dequeue).
  consumer_sleeping_.store(1, std::memory_order_seq_cst);
  if (!has_item_or_closed())
    mailbox_detail::futex_wait(consumer_sleeping_, 1, deadline);
  consumer_sleeping_.store(0, std::memory_order_relaxed);
}

template <class T>
void Mailbox<T>::wait_for_space() {
  // While spinning, wait for a run of free slots rather than the first one: a
  // producer that retries per freed slot reads the head line the consumer writes
  // per item, and both slow down. Asleep, any room will do.
  const std::uint64_t run = wake_run_;
  if (producer_spin_.spin([&] {
        const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
        const std::uint64_t head = head_.load(std::memory_order_seq_cst);
        return (tail & mark_bit_) || count_of(tail) + run <= count_of(head) + max_size_;
      }))
    return;
  std::unique_lock lock(wait_mutex_);
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  space_ready_.wait(lock, [&] { return closed() || !full_now(); });
  waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

template <class T>
PushResult Mailbox<T>::push_unnotified(T& item) {
  bool evicted = false;
  for (;;) {
    std::size_t taken = 0;
    const Enqueue outcome = policy_ == OverflowPolicy::drop_oldest
                                ? try_enqueue(item)
                                : enqueue_owned(std::span<T>(&item, 1), taken);
    switch (outcome) {
      case Enqueue::ok:
        return evicted ? PushResult::accepted_evicted : PushResult::accepted;
      case Enqueue::closed:
        return PushResult::closed;
      case Enqueue::full:
        break;
    }
    switch (policy_) {
      case OverflowPolicy::drop_newest:
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return PushResult::dropped;
      case OverflowPolicy::drop_oldest:
        // Evict, then try again: another producer may take the freed slot first,
        // in which case we evict once more. Every eviction is one counted drop.
        if (try_dequeue([](T&&) {})) {
          dropped_.fetch_add(1, std::memory_order_relaxed);
          evicted = true;
        }
        break;
      case OverflowPolicy::block:
        return PushResult::full;
    }
  }
}

template <class T>
PushResult Mailbox<T>::push(T&& item) {
  for (;;) {
    const PushResult result = push_unnotified(item);
    if (result != PushResult::full) {
      if (result == PushResult::accepted || result == PushResult::accepted_evicted) {
        wake_consumer();
      }
      return result;
    }
    wait_for_space();
  }
}

template <class T>
PushResult Mailbox<T>::try_push(T& item) {
  const PushResult result = push_unnotified(item);
  if (result == PushResult::accepted || result == PushResult::accepted_evicted)
    wake_consumer();
  return result;
}

template <class T>
std::size_t Mailbox<T>::try_push_batch(std::span<T> items) {
  std::size_t taken = 0;
  bool queued = false;
  if (policy_ != OverflowPolicy::drop_oldest) {
    // One tail CAS claims as many slots as there is room for.
    while (taken < items.size()) {
      std::size_t n = 0;
      const Enqueue outcome = enqueue_owned(items.subspan(taken), n);
      if (outcome == Enqueue::closed ||
          (outcome == Enqueue::full && policy_ == OverflowPolicy::block)) {
        break;
      }
      if (outcome == Enqueue::full) {
        dropped_.fetch_add(1, std::memory_order_relaxed);  // drop-newest: this one, then retry
        n = 1;
      } else {
        queued = true;
      }
      taken += n;
    }
    if (queued)
      wake_consumer();
    return taken;
  }
  for (T& item : items) {
    const PushResult result = push_unnotified(item);
    if (result == PushResult::full || result == PushResult::closed)
      break;
    queued = queued || result != PushResult::dropped;
    ++taken;
  }
  if (queued)
    wake_consumer();
  return taken;
}

template <class T>
void Mailbox<T>::notify_when_space(std::function<void()> callback) {
  std::function<void()> run_now;
  {
    std::lock_guard lock(wait_mutex_);
    if (closed() || !full_now()) {
      run_now.swap(callback);
    } else {
      if (!space_callback_)
        waiters_.fetch_add(1, std::memory_order_seq_cst);
      space_callback_.swap(callback);
      // Registered before this second look: a receive that makes room from now
      // on sees waiters_ and runs the callback; if room appeared already, we do.
      if (!full_now()) {
        run_now.swap(space_callback_);
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
      }
    }
  }
  if (run_now)
    run_now();
}

template <class T>
template <class Sink>
std::size_t Mailbox<T>::receive_into(Sink&& sink, std::size_t max,
                                     std::chrono::nanoseconds timeout) {
  if (max == 0)
    return 0;
  std::size_t n = dequeue_run(sink, max);
  if (n == 0 && timeout > std::chrono::nanoseconds::zero()) {
    const auto now = std::chrono::steady_clock::now();
    const auto deadline = timeout < std::chrono::steady_clock::time_point::max() - now
                              ? now + timeout
                              : std::chrono::steady_clock::time_point::max();
    for (;;) {
      wait_for_item(deadline);
      n = dequeue_run(sink, max);
      if (n > 0 || drained() || std::chrono::steady_clock::now() >= deadline)
        break;
    }
  }
  if (n > 0) {
    note_depth(n, n == max);
    after_receive(n);
  }
  return n;
}

template <class T>
std::optional<T> Mailbox<T>::receive(std::chrono::nanoseconds timeout) {
  std::optional<T> item;
  receive_into([&](T&& value) { item.emplace(std::move(value)); }, 1, timeout);
  return item;
}

template <class T>
std::optional<T> Mailbox<T>::try_receive() {
  return receive(std::chrono::nanoseconds::zero());
}

template <class T>
std::size_t Mailbox<T>::receive_batch(std::deque<T>& out, std::size_t max,
                                      std::chrono::nanoseconds timeout) {
  return receive_into([&](T&& value) { out.push_back(std::move(value)); }, max, timeout);
}

template <class T>
std::size_t Mailbox<T>::receive_batch(std::vector<T>& out, std::size_t max,
                                      std::chrono::nanoseconds timeout) {
  return receive_into([&](T&& value) { out.push_back(std::move(value)); }, max, timeout);
}

template <class T>
void Mailbox<T>::close() {
  tail_.fetch_or(mark_bit_, std::memory_order_seq_cst);
  closed_hint_.store(true, std::memory_order_seq_cst);
  std::function<void()> callback;
  {
    std::lock_guard lock(wait_mutex_);
    if (space_callback_) {
      callback.swap(space_callback_);
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  if (consumer_sleeping_.exchange(0, std::memory_order_seq_cst) != 0)
    mailbox_detail::futex_wake(consumer_sleeping_, true);
  space_ready_.notify_all();
  if (callback)
    callback();
}

template <class T>
bool Mailbox<T>::closed() const {
  return (tail_.load(std::memory_order_seq_cst) & mark_bit_) != 0;
}

template <class T>
bool Mailbox<T>::drained() const {
  const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
  return (tail & mark_bit_) && (tail & ~mark_bit_) == head_.load(std::memory_order_seq_cst);
}

template <class T>
MailboxStats Mailbox<T>::stats() const {
  // Positions count items: lap * max_size + index (crossbeam's len() for the size).
  std::uint64_t tail = 0, head = 0;
  do {
    tail = tail_.load(std::memory_order_seq_cst) & ~mark_bit_;
    head = head_.load(std::memory_order_seq_cst);
  } while ((tail_.load(std::memory_order_seq_cst) & ~mark_bit_) != tail);
  MailboxStats stats;
  stats.accepted = count_of(tail);
  stats.dropped = dropped_.load(std::memory_order_relaxed);
  stats.delivered = delivered_.load(std::memory_order_relaxed);
  stats.size = static_cast<std::size_t>(count_of(tail) - count_of(head));
  stats.high_water =
      std::max(static_cast<std::size_t>(high_water_.load(std::memory_order_relaxed)), stats.size);
  stats.capacity = max_size_;
  return stats;
}

}  // namespace distflow
