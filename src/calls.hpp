#pragma once

// Calls in flight (request/reply, PROTOCOL.md §3.5). A call is a message with a
// `ref` the caller picks; the answer is a message whose `inReplyTo` holds it. The
// table gives each call its ref ("<process tag>.<counter>", unique per caller),
// matches replies to calls, and ends every call exactly once: with its reply, a
// failure (send failed, the target left, its link was lost) or its deadline.
// Callbacks run outside the lock, on the thread that ended the call.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "messages.hpp"

namespace distflow {

/// How a call ended: the reply, or an error (`reply` empty) and what failed, in words.
using ReplyCallback =
    std::function<void(std::error_code ec, const Envelope& reply, const std::string& error)>;

class CallTable {
 public:
  using Clock = std::chrono::steady_clock;

  /// `tag`: this process's part of every ref (letters and digits).
  explicit CallTable(std::string tag);
  CallTable(const CallTable&) = delete;
  CallTable& operator=(const CallTable&) = delete;

  /// Any thread: a new call to `target`. Sets `members` to the envelope member to
  /// send with the request (`"ref":"<tag>.<n>"`). Returns its id and deadline.
  std::pair<std::uint64_t, Clock::time_point> open(std::string_view target,
                                                   std::chrono::milliseconds timeout,
                                                   ReplyCallback done, std::string& members);

  /// A reply arrived: ends its call and runs its callback. False when no call waits
  /// for it (answered already, timed out, not ours): counted as late.
  bool complete(const Envelope& reply);
  /// Ends call `id` with an error (its request could not be sent); no-op if it ended.
  void fail(std::uint64_t id, std::error_code ec, const std::string& error);
  /// Ends every call to `target` (an alias, node id or alias@host, as the caller
  /// wrote it): `error` says why ("'kv' left (socket closed)").
  void fail_target(std::string_view target, std::error_code ec, const std::string& error);
  /// Ends every call (the node stops).
  void fail_all(std::error_code ec, const std::string& error);
  /// Ends the calls whose deadline has passed ("call to 'kv': no reply within
  /// 5000 ms"). Returns the next deadline, if any call is left.
  std::optional<Clock::time_point> expire(Clock::time_point now);

  std::size_t in_flight() const;
  std::uint64_t late_replies() const;
  std::uint64_t timeouts() const;

 private:
  struct Call {
    std::string target;
    std::chrono::milliseconds timeout;
    Clock::time_point deadline;
    ReplyCallback done;
  };
  using Ended = std::vector<std::pair<Call, std::string>>;  // with their error
  std::optional<std::uint64_t> id_of(std::string_view ref_token) const;
  Call take(std::unordered_map<std::uint64_t, Call>::iterator it);  // under mutex_
  static void finish(Ended& ended, std::error_code ec);

  const std::string tag_;
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, Call> calls_;
  std::set<std::pair<Clock::time_point, std::uint64_t>> deadlines_;
  std::uint64_t late_ = 0;
  std::uint64_t timeouts_ = 0;
};

/// A tag for this process's refs: short, and unlikely to repeat across processes.
std::string make_call_tag();

}  // namespace distflow
