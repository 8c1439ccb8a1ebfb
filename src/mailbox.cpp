#include "mailbox.hpp"

#include <cerrno>
#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

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

namespace mailbox_detail {

namespace {

// One CPU for this thread and the same single CPU for the process (its main thread,
// whose mask every thread inherits unless changed): whoever we would wait for can
// only run once we stop.
bool query_other_cpu_usable() {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (::sched_getaffinity(0, sizeof mine, &mine) != 0)
    return true;  // unknown: let the adaptive spin find out
  if (CPU_COUNT(&mine) > 1)
    return true;
  cpu_set_t process;
  CPU_ZERO(&process);
  if (::sched_getaffinity(::getpid(), sizeof process, &process) != 0)
    return true;
  return CPU_COUNT(&process) > 1 || !CPU_EQUAL(&mine, &process);
}

std::uint32_t* futex_word(std::atomic<std::uint32_t>& word) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  return reinterpret_cast<std::uint32_t*>(&word);
}

}  // namespace

bool other_cpu_usable() {
  // Per thread, re-read every 256 calls (only waiting threads call this): a process
  // moved by taskset or sched_setaffinity is noticed soon, at the cost of one
  // system call per 256 waits.
  thread_local int cached = -1;
  thread_local std::uint32_t calls = 0;
  if (cached < 0 || (++calls & 255) == 0)
    cached = query_other_cpu_usable() ? 1 : 0;
  return cached != 0;
}

bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::steady_clock::time_point deadline) {
  // steady_clock is CLOCK_MONOTONIC on Linux; FUTEX_WAIT_BITSET takes an absolute time on it.
  if (deadline == std::chrono::steady_clock::time_point::max()) {
    ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
    return true;
  }
  const auto since_epoch = deadline.time_since_epoch();
  if (since_epoch <= std::chrono::nanoseconds::zero())
    return false;
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  timespec at{};
  at.tv_sec = static_cast<time_t>(secs.count());
  at.tv_nsec = static_cast<long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count());
  const long rc = ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
                            expected, &at, nullptr, FUTEX_BITSET_MATCH_ANY);
  return !(rc != 0 && errno == ETIMEDOUT);
}

void futex_wake(std::atomic<std::uint32_t>& word, bool all) {
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, all ? INT_MAX : 1,
            nullptr, nullptr, 0);
}

}  // namespace mailbox_detail

}  // namespace distflow
