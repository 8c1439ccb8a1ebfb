#pragma once

// Where a node's messages go (PROTOCOL.md §3.2). A target name (alias or node
// id) is resolved through the PMD link once and cached; messages to a name being
// resolved wait, bounded, and go in order once it is; the cache forgets a node
// that left, moved, or whose link failed. Application threads read the cache and
// encode straight into the destination's link (link.hpp); a name not resolved
// yet takes the slow path through the I/O thread, which publishes the route only
// once nothing sent earlier to that name is still on its way (order kept).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>

#include "errors.hpp"
#include "link.hpp"
#include "pmd_protocol.hpp"

namespace distflow {

class PmdLink;
class Transport;
struct TransportCounters;

struct RouterConfig {
  std::size_t max_outbox_bytes = kDefaultOutboxBytes;  ///< per destination, also while resolving
  /// Bytes submitted for names not resolved yet before application threads wait.
  std::size_t max_pending_bytes = 4u << 20;
  /// How long a send waits for room (a destination behind, or the pending queue) before it fails.
  std::chrono::milliseconds send_wait{5000};
};

class Router {
 public:
  Router(asio::io_context& io, Transport& transport, PmdLink& pmd, TransportCounters& counters,
         RouterConfig config);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  /// Any thread: one message (valid JSON) for `target`. Failures are counted,
  /// logged at debug, and given to `done` (on the I/O thread, or in this call).
  /// `members`: more envelope members, rendered (`"ref":"r1"`), for requests and replies.
  void send(std::string_view target, std::string_view payload, SendCompletion done,
            std::string_view members = {});

  // ---- the I/O thread
  /// The routes to `node_id` are stale (it left or moved, or its link failed).
  /// Returns the names that led to it.
  std::vector<std::string> forget(const std::string& node_id);
  /// Messages accepted and neither written nor failed (flush() waits for 0).
  std::uint64_t unwritten() const;
  /// Takes what application threads submitted for unresolved names (posted by send()).
  void drain();
  /// Refuses further messages, fails those waiting for a resolution, wakes waiting
  /// senders. Idempotent.
  void stop();
  /// Wakes senders waiting for room; they fail with `why` (the node is stopping). Any thread.
  void interrupt_waits(const std::string& why);

  /// Runs when messages were written or failed (drives flush()).
  void on_progress(std::function<void()> hook) { progress_hook_ = std::move(hook); }

 private:
  struct Route;
  struct Pending;
  void dispatch(std::string_view target, std::string_view payload, std::int64_t timestamp,
                SendCompletion done, std::string_view members);
  void resolve(const std::string& target);
  void resolved(const std::string& target, const NodeInfo& node);
  void fail_route(const std::string& target, errc code, const std::string& message);
  void fail_one(SendCompletion& done, errc code, const std::string& message);
  void enqueue(Link& link, std::string_view payload, std::int64_t timestamp, SendCompletion done,
               std::string_view members);
  bool pending_for(std::string_view target) const;  // under mutex_

  asio::io_context& io_;
  Transport& transport_;
  PmdLink& pmd_;
  TransportCounters& counters_;
  RouterConfig config_;
  std::function<void()> progress_hook_;

  // Shared with application threads.
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  mutable std::mutex mutex_;
  // Changes (under mutex_) whenever published_ does, to a value no router had before:
  // a thread's cached route (router.cpp) holds while it reads the same value.
  std::atomic<std::uint64_t> epoch_{0};
  void published_changed();
  std::condition_variable pending_room_;
  std::unordered_map<std::string, std::shared_ptr<Link>, NameHash, std::equal_to<>> published_;
  std::unique_ptr<Pending> pending_;
  bool drain_scheduled_ = false;
  bool stopping_ = false;
  std::string interrupted_;

  // The I/O thread's.
  std::unique_ptr<Pending> draining_;
  std::unordered_map<std::string, Route, NameHash, std::equal_to<>> routes_;
  std::uint64_t waiting_ = 0;  // messages in routes waiting for a resolution
  bool stopped_ = false;       // stop() ran
};

}  // namespace distflow
