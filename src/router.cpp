#include "router.hpp"

#include <algorithm>
#include <array>

#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "messages.hpp"
#include "pmd_link.hpp"
#include "transport.hpp"

namespace distflow {

// Messages for names not resolved yet, from application threads: appended under
// the mutex, swapped out whole by the I/O thread (no per-message post).
struct Router::Pending {
  struct Item {
    std::uint32_t target_len;
    std::uint32_t payload_len;
    std::uint32_t members_len;
    std::uint32_t done;  // index into completions, or kNone
    std::int64_t timestamp;
  };
  static constexpr std::uint32_t kNone = UINT32_MAX;
  std::string bytes;  // target, then payload, per item
  std::vector<Item> items;
  std::vector<SendCompletion> completions;

  bool empty() const { return items.empty(); }
  void clear() {
    bytes.clear();
    items.clear();
    completions.clear();
  }
};

// A target name and where it leads.
struct Router::Route {
  struct Waiting {
    std::string payload;
    std::int64_t timestamp;
    SendCompletion done;
    std::string members;
  };
  bool resolved = false;
  NodeInfo node;
  std::shared_ptr<Link> link;
  std::vector<Waiting> waiting;  // queued while the PMD resolves the name
  std::size_t waiting_bytes = 0;
};

Router::Router(asio::io_context& io, Transport& transport, PmdLink& pmd,
               TransportCounters& counters, RouterConfig config)
    : io_(io),
      transport_(transport),
      pmd_(pmd),
      counters_(counters),
      config_(config),
      pending_(std::make_unique<Pending>()),
      draining_(std::make_unique<Pending>()) {}

Router::~Router() = default;

void Router::fail_one(SendCompletion& done, errc code, const std::string& message) {
  counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("{}", message);
  if (done) {
    try {
      done(make_error_code(code), message);
    } catch (const std::exception& e) {
      spdlog::error("send completion threw: {}", e.what());
    }
  }
  if (progress_hook_ && io_.get_executor().running_in_this_thread())
    progress_hook_();
}

namespace {

// The routes each thread sent to last: a thread sending to a few names over and over
// (one, or a fan-out in turn) takes neither the router's mutex nor a hash of the
// name. An entry is valid while its router's epoch is the one it was taken at;
// epochs come from one counter, so a router created where another was cannot match
// an old entry. Links are held weakly: a cached route keeps nothing alive.
std::atomic<std::uint64_t> g_route_epochs{0};
struct RouteCache {
  struct Entry {
    std::uint64_t epoch = 0;
    std::string target;
    std::weak_ptr<Link> link;
  };
  static constexpr std::size_t kEntries = 4;
  std::array<Entry, kEntries> entries;
  std::size_t next = 0;  // the entry a miss replaces (round robin)

  std::shared_ptr<Link> find(std::uint64_t epoch, std::string_view target) const {
    for (const Entry& entry : entries) {
      if (entry.epoch == epoch && entry.target == target)
        return entry.link.lock();
    }
    return nullptr;
  }
  void put(std::uint64_t epoch, std::string_view target, const std::shared_ptr<Link>& link) {
    auto same = std::find_if(entries.begin(), entries.end(),
                             [&](const Entry& entry) { return entry.target == target; });
    Entry& entry = same != entries.end() ? *same : entries[next];
    if (same == entries.end())
      next = (next + 1) % kEntries;
    entry.epoch = epoch;
    entry.target.assign(target);
    entry.link = link;
  }
};
thread_local RouteCache t_routes;

}  // namespace

void Router::published_changed() {
  epoch_.store(g_route_epochs.fetch_add(1, std::memory_order_relaxed) + 1,
               std::memory_order_release);
}

void Router::send(std::string_view target, std::string_view payload, SendCompletion done,
                  std::string_view members) {
  const bool on_io = io_.get_executor().running_in_this_thread();
  // A resolved route: encoded here, into the destination's own queue (the I/O
  // thread never waits for room; others wait up to send_wait).
  auto into = [&](Link& link) {
    std::string why;
    const auto wait = on_io ? std::chrono::milliseconds(0) : config_.send_wait;
    if (auto ec = link.enqueue(payload, now_ms(), done, wait, why, members))
      fail_one(done, static_cast<errc>(ec.value()), why);
  };
  if (std::shared_ptr<Link> link = t_routes.find(epoch_.load(std::memory_order_acquire), target)) {
    into(*link);
    return;
  }
  std::unique_lock lock(mutex_);
  if (stopping_) {
    lock.unlock();
    fail_one(done, errc::closed, "cannot send to '" + std::string(target) + "': node is shut down");
    return;
  }
  if (auto it = published_.find(target); it != published_.end()) {
    std::shared_ptr<Link> link = it->second;
    t_routes.put(epoch_.load(std::memory_order_relaxed), target, link);
    lock.unlock();
    into(*link);
    return;
  }
  if (on_io) {
    lock.unlock();
    dispatch(target, payload, now_ms(), std::move(done), members);
    return;
  }
  // Bounded: an application far ahead of the I/O thread waits here.
  if (pending_->bytes.size() >= config_.max_pending_bytes) {
    const auto give_up = std::chrono::steady_clock::now() + config_.send_wait;
    pending_room_.wait_until(lock, give_up, [&] {
      return stopping_ || !interrupted_.empty() ||
             pending_->bytes.size() < config_.max_pending_bytes;
    });
    if (stopping_ || !interrupted_.empty()) {
      const std::string why = stopping_ ? "node is shut down" : interrupted_;
      lock.unlock();
      fail_one(done, errc::closed, "cannot send to '" + std::string(target) + "': " + why);
      return;
    }
  }
  std::uint32_t done_index = Pending::kNone;
  if (done) {
    done_index = static_cast<std::uint32_t>(pending_->completions.size());
    pending_->completions.push_back(std::move(done));
  }
  pending_->bytes.append(target);
  pending_->bytes.append(payload);
  pending_->bytes.append(members);
  pending_->items.push_back({static_cast<std::uint32_t>(target.size()),
                             static_cast<std::uint32_t>(payload.size()),
                             static_cast<std::uint32_t>(members.size()), done_index, now_ms()});
  if (drain_scheduled_)
    return;
  drain_scheduled_ = true;
  lock.unlock();
  asio::post(io_, [this] { drain(); });
}

void Router::drain() {
  {
    std::lock_guard lock(mutex_);
    std::swap(pending_, draining_);
    drain_scheduled_ = false;
  }
  pending_room_.notify_all();
  if (draining_->empty())
    return;
  std::size_t at = 0;
  {
    DeferredWrites writes(transport_);  // one send per link, at the end
    for (const auto& item : draining_->items) {
      std::string_view target(draining_->bytes.data() + at, item.target_len);
      std::string_view payload(target.data() + item.target_len, item.payload_len);
      std::string_view members(payload.data() + item.payload_len, item.members_len);
      at += item.target_len + item.payload_len + item.members_len;
      SendCompletion done;
      if (item.done != Pending::kNone)
        done = std::move(draining_->completions[item.done]);
      dispatch(target, payload, item.timestamp, std::move(done), members);
    }
  }
  draining_->clear();
}

void Router::enqueue(Link& link, std::string_view payload, std::int64_t timestamp,
                     SendCompletion done, std::string_view members) {
  std::string why;
  // Bounded already: by the pending batch (application threads wait there) or by the
  // name's waiting list, so a burst sent before the name resolved is not failed here.
  if (auto ec = link.enqueue(payload, timestamp, done, Link::kAdmitted, why, members))
    fail_one(done, static_cast<errc>(ec.value()), why);
}

void Router::dispatch(std::string_view target, std::string_view payload, std::int64_t timestamp,
                      SendCompletion done, std::string_view members) {
  if (stopped_) {
    fail_one(done, errc::closed, "cannot send to '" + std::string(target) + "': node is shut down");
    return;
  }
  auto it = routes_.find(target);
  if (it == routes_.end()) {
    it = routes_.emplace(std::string(target), Route{}).first;
    resolve(it->first);
  }
  Route& route = it->second;
  if (route.resolved) {
    enqueue(*route.link, payload, timestamp, std::move(done), members);
    return;
  }
  if (route.waiting_bytes + payload.size() > config_.max_outbox_bytes) {
    fail_one(done, errc::queue_full,
             "outbound queue to '" + std::string(target) + "' is full (limit " +
                 std::to_string(config_.max_outbox_bytes) + " bytes)");
    return;
  }
  route.waiting.push_back({std::string(payload), timestamp, std::move(done), std::string(members)});
  route.waiting_bytes += payload.size();
  ++waiting_;
}

void Router::resolve(const std::string& target) {
  pmd_.resolve(target, [this, target](const NodeInfo* node, const std::string& error) {
    auto it = routes_.find(target);
    if (it == routes_.end() || it->second.resolved)
      return;
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      stopping = stopping_;
    }
    if (stopping) {
      fail_route(target, errc::closed, "cannot send to '" + target + "': node is shut down");
    } else if (node) {
      resolved(target, *node);
    } else {
      fail_route(target, errc::unknown_node, error);
    }
  });
}

bool Router::pending_for(std::string_view target) const {
  std::size_t at = 0;
  for (const auto& item : pending_->items) {
    if (std::string_view(pending_->bytes.data() + at, item.target_len) == target)
      return true;
    at += item.target_len + item.payload_len;
  }
  return false;
}

void Router::resolved(const std::string& target, const NodeInfo& node) {
  auto link = transport_.link(node);
  {
    Route& route = routes_.at(target);
    route.resolved = true;
    route.node = node;
    route.link = link;
    auto waiting = std::move(route.waiting);
    route.waiting.clear();
    route.waiting_bytes = 0;
    waiting_ -= waiting.size();
    DeferredWrites writes(transport_);
    for (auto& message : waiting)
      enqueue(*link, message.payload, message.timestamp, std::move(message.done), message.members);
  }
  // Published only once nothing submitted earlier for this name is still in the
  // pending batch: from then on application threads go to the link directly, and
  // would otherwise overtake it.
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || !pending_for(target)) {
        if (!stopping_ && !link->failed()) {
          published_[target] = link;
          published_changed();
        }
        break;
      }
    }
    drain();
  }
  if (progress_hook_)
    progress_hook_();
}

void Router::fail_route(const std::string& target, errc code, const std::string& message) {
  auto it = routes_.find(target);
  if (it == routes_.end())
    return;
  auto waiting = std::move(it->second.waiting);
  waiting_ -= waiting.size();
  routes_.erase(it);
  // Senders that gave a completion (a call, send_sync) hear of it there.
  const auto unheard = std::count_if(waiting.begin(), waiting.end(),
                                     [](const Route::Waiting& w) { return !w.done; });
  if (unheard > 0) {
    spdlog::warn("{} ({} message{} dropped)", message, unheard, unheard == 1 ? "" : "s");
  } else {
    spdlog::debug("{} ({} message{} failed)", message, waiting.size(),
                  waiting.size() == 1 ? "" : "s");
  }
  for (auto& w : waiting)
    fail_one(w.done, code, message);
  if (progress_hook_)
    progress_hook_();
}

std::vector<std::string> Router::forget(const std::string& node_id) {
  {
    std::lock_guard lock(mutex_);
    if (std::erase_if(published_, [&](const auto& entry) {
          return entry.second->node().node_id == node_id;
        }) > 0) {
      published_changed();
    }
  }
  std::vector<std::string> names;
  std::erase_if(routes_, [&](const auto& entry) {
    if (!entry.second.resolved || entry.second.node.node_id != node_id)
      return false;
    names.push_back(entry.first);
    return true;
  });
  return names;
}

std::uint64_t Router::unwritten() const {
  return waiting_ + transport_.unwritten();
}

void Router::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return;
    stopping_ = true;
    published_.clear();
    published_changed();
  }
  stopped_ = true;
  pending_room_.notify_all();
  drain();  // anything submitted meanwhile fails (stopping_)
  std::vector<std::string> unresolved;
  for (const auto& [name, route] : routes_) {
    if (!route.resolved)
      unresolved.push_back(name);
  }
  for (const auto& name : unresolved)
    fail_route(name, errc::closed, "cannot send to '" + name + "': node is shut down");
  routes_.clear();
}

void Router::interrupt_waits(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    interrupted_ = why;
  }
  pending_room_.notify_all();
  transport_.interrupt_waits(why);
}

}  // namespace distflow
