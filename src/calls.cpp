#include "calls.hpp"

#include <charconv>
#include <random>

#include "errors.hpp"

namespace distflow {

std::string make_call_tag() {
  static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device device;
  std::uint64_t bits = (static_cast<std::uint64_t>(device()) << 32) ^ device();
  std::string tag;
  for (int i = 0; i < 8; ++i, bits /= 36)
    tag += kDigits[bits % 36];
  return tag;
}

CallTable::CallTable(std::string tag) : tag_(std::move(tag)) {}

std::pair<std::uint64_t, CallTable::Clock::time_point> CallTable::open(
    std::string_view target, std::chrono::milliseconds timeout, ReplyCallback done,
    std::string& members) {
  const auto deadline = Clock::now() + timeout;
  std::lock_guard lock(mutex_);
  const std::uint64_t id = next_id_++;
  members = "\"ref\":\"";
  members += tag_;
  members += '.';
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, id);
  DISTFLOW_ASSERT(ec == std::errc());
  members.append(digits, end);
  members += '"';
  calls_.emplace(id, Call{std::string(target), timeout, deadline, std::move(done)});
  deadlines_.emplace(deadline, id);
  return {id, deadline};
}

std::optional<std::uint64_t> CallTable::id_of(std::string_view token) const {
  // "<tag>.<n>", quotes included; anything else is not one of ours.
  if (token.size() < tag_.size() + 4 || token.front() != '"' || token.back() != '"')
    return std::nullopt;
  std::string_view text = token.substr(1, token.size() - 2);
  if (!text.starts_with(tag_) || text[tag_.size()] != '.')
    return std::nullopt;
  text.remove_prefix(tag_.size() + 1);
  std::uint64_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size())
    return std::nullopt;
  return id;
}

CallTable::Call CallTable::take(std::unordered_map<std::uint64_t, Call>::iterator it) {
  Call call = std::move(it->second);
  deadlines_.erase({call.deadline, it->first});
  calls_.erase(it);
  return call;
}

void CallTable::finish(Ended& ended, std::error_code ec) {
  static const Envelope kNoReply;
  for (auto& [call, error] : ended) {
    if (call.done)
      call.done(ec, kNoReply, error);
  }
}

bool CallTable::complete(const Envelope& reply) {
  Call call;
  {
    std::lock_guard lock(mutex_);
    const auto id = id_of(reply.in_reply_to_json());
    auto it = id ? calls_.find(*id) : calls_.end();
    if (it == calls_.end()) {
      ++late_;
      return false;
    }
    call = take(it);
  }
  if (call.done)
    call.done({}, reply, {});
  return true;
}

void CallTable::fail(std::uint64_t id, std::error_code ec, const std::string& error) {
  Ended ended;
  {
    std::lock_guard lock(mutex_);
    auto it = calls_.find(id);
    if (it == calls_.end())
      return;
    ended.emplace_back(take(it), error);
  }
  finish(ended, ec);
}

void CallTable::fail_target(std::string_view target, std::error_code ec, const std::string& error) {
  Ended ended;
  {
    std::lock_guard lock(mutex_);
    for (auto it = calls_.begin(); it != calls_.end();) {
      auto next = std::next(it);
      if (it->second.target == target)
        ended.emplace_back(take(it), "call to '" + std::string(target) + "' failed: " + error);
      it = next;
    }
  }
  finish(ended, ec);
}

void CallTable::fail_all(std::error_code ec, const std::string& error) {
  Ended ended;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, call] : calls_)
      ended.emplace_back(std::move(call), "call to '" + call.target + "' failed: " + error);
    calls_.clear();
    deadlines_.clear();
  }
  finish(ended, ec);
}

std::optional<CallTable::Clock::time_point> CallTable::expire(Clock::time_point now) {
  Ended ended;
  std::optional<Clock::time_point> next;
  {
    std::lock_guard lock(mutex_);
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      Call call = take(calls_.find(deadlines_.begin()->second));
      ++timeouts_;
      std::string error = "call to '" + call.target + "': no reply within " +
                          std::to_string(call.timeout.count()) + " ms";
      ended.emplace_back(std::move(call), std::move(error));
    }
    if (!deadlines_.empty())
      next = deadlines_.begin()->first;
  }
  finish(ended, make_error_code(errc::timed_out));
  return next;
}

std::size_t CallTable::in_flight() const {
  std::lock_guard lock(mutex_);
  return calls_.size();
}

std::uint64_t CallTable::late_replies() const {
  std::lock_guard lock(mutex_);
  return late_;
}

std::uint64_t CallTable::timeouts() const {
  std::lock_guard lock(mutex_);
  return timeouts_;
}

}  // namespace distflow
