#pragma once

// The node's mailbox (PROTOCOL.md §3.3): a bounded FIFO between the I/O thread
// (and any other producers) and one consumer thread. The only structure in
// distflow that two threads touch.
//
// NOTE: first, plain implementation (mutex + deque + condition variables) that
// fixes the interface; the fast one replaces the private part.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>

namespace distflow {

enum class OverflowPolicy { drop_newest, drop_oldest, block };

/// "drop-newest" | "drop-oldest" | "block"; nullopt for anything else.
std::optional<OverflowPolicy> parse_overflow_policy(std::string_view text);
std::string_view to_string(OverflowPolicy policy);

enum class PushResult {
  accepted,             ///< queued
  accepted_evicted,     ///< queued after discarding the oldest item (drop-oldest)
  dropped,              ///< discarded: mailbox full (drop-newest)
  full,                 ///< try_push under `block`: nothing queued, item untouched
  closed,               ///< mailbox closed: nothing queued
};

struct MailboxStats {
  std::uint64_t accepted = 0;   ///< items that entered the queue
  std::uint64_t dropped = 0;    ///< items discarded by drop-newest or drop-oldest
  std::uint64_t delivered = 0;  ///< items handed to the consumer
  std::size_t size = 0;         ///< items queued now
};

/// Bounded multi-producer / single-consumer FIFO with an overflow policy.
template <class T>
class Mailbox {
 public:
  explicit Mailbox(std::size_t max_size, OverflowPolicy policy = OverflowPolicy::drop_newest);

  /// Applies the policy. Under `block` it waits for room (or close); nothing dropped.
  PushResult push(T&& item);
  /// Never waits. Under `block` a full mailbox returns `full` and leaves `item` as it was.
  PushResult try_push(T& item);
  /// Registers a one-shot callback run (on the consumer's thread) as soon as room
  /// appears; if there is room already it runs at once on the caller's thread.
  /// For the I/O thread under `block`: stop reading, resume when called.
  void notify_when_space(std::function<void()> callback);

  /// Waits up to `timeout` for an item; nullopt on timeout, or when closed and empty.
  std::optional<T> receive(std::chrono::nanoseconds timeout);
  std::optional<T> try_receive();
  /// Moves up to `max` items into `out` (appending), waiting up to `timeout` for the
  /// first one. Returns the number moved; 0 on timeout or when closed and drained.
  std::size_t receive_batch(std::deque<T>& out, std::size_t max, std::chrono::nanoseconds timeout);

  /// Refuses further pushes and wakes every waiter; queued items stay receivable.
  void close();
  bool closed() const;
  /// True once closed and every item has been received.
  bool drained() const;

  MailboxStats stats() const;
  std::size_t max_size() const { return max_size_; }
  OverflowPolicy policy() const { return policy_; }

 private:
  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;
  std::function<void()> space_callback_;
  std::size_t max_size_;
  OverflowPolicy policy_;
  bool closed_ = false;
  std::uint64_t accepted_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t delivered_ = 0;

  void after_pop(std::unique_lock<std::mutex>& lock);
};

// ---- implementation -------------------------------------------------------------

template <class T>
Mailbox<T>::Mailbox(std::size_t max_size, OverflowPolicy policy)
    : max_size_(max_size == 0 ? 1 : max_size), policy_(policy) {}

template <class T>
PushResult Mailbox<T>::push(T&& item) {
  std::unique_lock lock(mutex_);
  if (policy_ == OverflowPolicy::block) {
    not_full_.wait(lock, [&] { return closed_ || items_.size() < max_size_; });
  }
  if (closed_) return PushResult::closed;
  PushResult result = PushResult::accepted;
  if (items_.size() >= max_size_) {
    if (policy_ == OverflowPolicy::drop_newest) {
      ++dropped_;
      return PushResult::dropped;
    }
    items_.pop_front();
    ++dropped_;
    result = PushResult::accepted_evicted;
  }
  items_.push_back(std::move(item));
  ++accepted_;
  lock.unlock();
  not_empty_.notify_one();
  return result;
}

template <class T>
PushResult Mailbox<T>::try_push(T& item) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return PushResult::closed;
    if (policy_ == OverflowPolicy::block && items_.size() >= max_size_) return PushResult::full;
  }
  return push(std::move(item));
}

template <class T>
void Mailbox<T>::notify_when_space(std::function<void()> callback) {
  std::unique_lock lock(mutex_);
  if (closed_ || items_.size() < max_size_) {
    lock.unlock();
    callback();
    return;
  }
  space_callback_ = std::move(callback);
}

template <class T>
void Mailbox<T>::after_pop(std::unique_lock<std::mutex>& lock) {
  std::function<void()> callback;
  if (space_callback_ && items_.size() < max_size_) callback.swap(space_callback_);
  lock.unlock();
  not_full_.notify_all();
  if (callback) callback();
}

template <class T>
std::optional<T> Mailbox<T>::receive(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!not_empty_.wait_for(lock, timeout, [&] { return closed_ || !items_.empty(); })) {
    return std::nullopt;
  }
  if (items_.empty()) return std::nullopt;
  std::optional<T> item(std::move(items_.front()));
  items_.pop_front();
  ++delivered_;
  after_pop(lock);
  return item;
}

template <class T>
std::optional<T> Mailbox<T>::try_receive() {
  return receive(std::chrono::nanoseconds::zero());
}

template <class T>
std::size_t Mailbox<T>::receive_batch(std::deque<T>& out, std::size_t max,
                                      std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!not_empty_.wait_for(lock, timeout, [&] { return closed_ || !items_.empty(); })) return 0;
  std::size_t n = 0;
  while (n < max && !items_.empty()) {
    out.push_back(std::move(items_.front()));
    items_.pop_front();
    ++n;
  }
  delivered_ += n;
  if (n > 0) after_pop(lock);
  return n;
}

template <class T>
void Mailbox<T>::close() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    callback.swap(space_callback_);
  }
  not_empty_.notify_all();
  not_full_.notify_all();
  if (callback) callback();
}

template <class T>
bool Mailbox<T>::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

template <class T>
bool Mailbox<T>::drained() const {
  std::lock_guard lock(mutex_);
  return closed_ && items_.empty();
}

template <class T>
MailboxStats Mailbox<T>::stats() const {
  std::lock_guard lock(mutex_);
  return {accepted_, dropped_, delivered_, items_.size()};
}

}  // namespace distflow
