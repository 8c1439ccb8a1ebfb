// The node runtime (PROTOCOL.md §3, issue 4). Decisions where the protocol is silent:
//
// * Threads: one I/O thread runs the io_context and owns every socket, timer,
//   outbox, the route cache and the PMD link; coroutines capture `this` because
//   shutdown() joins that thread before anything is destroyed. send() appends to a
//   mutex-protected batch and posts one drain per batch (not one per message). It
//   waits while 4 MiB are submitted and not yet taken by the I/O thread, and (up to
//   5 s, then it goes on) while 8 MiB (at most half of max_outbox_bytes) are
//   unwritten: a fast
//   producer is slowed to the sockets' pace instead of overflowing a queue.
// * Routes: a target name resolves through the PMD once; the result is cached per
//   name and forgotten on peer:join/peer:leave of that node and when its connection
//   fails. While the PMD is unreachable, the last known peer list answers instead.
//   "to" in outgoing frames is the destination's node id.
// * send() validates each payload (JsonValidator, on the caller's thread) unless
//   NodeOptions::validate_payloads is off for text the caller already checked.
// * Failure callbacks (SendCallback) and peer handlers run on the I/O thread.
// * Peer events: join only for a node id not known yet; after a PMD reconnect the
//   new snapshot is diffed with the old view (leaves get reason "pmd_resync").
// * PMD link: backoff 50 ms doubling to 1 s, +-25% jitter, forever; a link with no
//   answer for 3 heartbeats + 1 s is dropped; an auto-starting node runs ensure_pmd
//   (on a helper thread) after 1 s without a PMD.
// * shutdown(): queued messages get up to 500 ms to reach their sockets, the
//   unregister answer up to 300 ms, then every connection (inbound too) closes;
//   whatever is still unwritten is counted and logged as failed.

#include "node_runtime.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include <asio/connect.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "drop_log.hpp"
#include "errors.hpp"
#include "process.hpp"
#include "session.hpp"
#include "transport.hpp"

namespace distflow {

using asio::ip::tcp;
namespace {

constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kFirstBackoff = std::chrono::milliseconds(50);
// At most 1 s (+25% jitter) between attempts: a restarted PMD gets every node back
// within 2 s however long it was down (issue 6); refused loopback connects are cheap.
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// How long the PMD may stay silent before an auto-starting node spawns a new one.
constexpr auto kRestartPmdAfter = std::chrono::milliseconds(1000);
// Shutdown: best-effort flush of queued messages, then the unregister answer.
constexpr auto kShutdownFlush = std::chrono::milliseconds(500);
constexpr auto kShutdownUnregister = std::chrono::milliseconds(300);
constexpr auto kShutdownJoin = std::chrono::milliseconds(2000);
// send() waits while this much is submitted and not yet taken by the I/O thread.
constexpr std::size_t kMaxPendingBytes = 4u << 20;
// ...and, up to kSendWait, while this much (at most half of max_outbox_bytes) waits
// for the sockets.
constexpr std::size_t kMaxBacklogBytes = 8u << 20;
constexpr auto kSendWait = std::chrono::seconds(5);
// Messages the dispatcher takes from the mailbox at once.
constexpr std::size_t kDispatchBatch = 256;

std::atomic<bool> g_node_alive{false};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

std::string generate_node_id(std::string_view alias) {
  std::random_device device;
  std::string id(alias.empty() ? std::string_view("node") : alias.substr(0, 64));
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "-%ld-%06x", static_cast<long>(::getpid()),
                device() & 0xffffffu);
  return id + suffix;
}

std::string json_object(std::string_view key, std::string_view value) {
  std::string out = "{";
  append_json_string(out, key);
  out += ':';
  append_json_string(out, value);
  out += '}';
  return out;
}

// Messages from API threads, appended under a mutex; the I/O thread swaps the
// whole batch out at once (no per-message post or allocation).
struct PendingBatch {
  struct Item {
    std::uint32_t target_len;
    std::uint32_t payload_len;
    std::uint32_t done;  // index into completions, or kNone
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

// A target name (alias or node id) and where it leads.
struct Route {
  struct Waiting {
    std::string payload;
    std::int64_t timestamp;
    SendCompletion done;
  };
  bool resolved = false;
  NodeInfo node;
  std::shared_ptr<Outbound> connection;
  std::vector<Waiting> waiting;  // queued while the PMD resolves the name
  std::size_t waiting_bytes = 0;
};

// One connection to the PMD, with its own write queue and heartbeat timer.
struct PmdLink {
  explicit PmdLink(asio::io_context& io) : socket(io), signal(io), heartbeat(io) {
    signal.expires_at(asio::steady_timer::time_point::max());
  }
  tcp::socket socket;
  asio::steady_timer signal;
  asio::steady_timer heartbeat;
  std::string out, wbuf;
  bool idle = false;
  bool closed = false;

  void close() {
    closed = true;
    std::error_code ignored;
    socket.close(ignored);
    signal.cancel();
    heartbeat.cancel();
  }
};

using PmdCallback = std::function<void(const PmdReply* reply, const std::string& error)>;

class NodeRuntimeImpl final : public NodeRuntime {
 public:
  explicit NodeRuntimeImpl(NodeOptions options)
      : options_(std::move(options)),
        node_id_(options_.node_id.empty() ? generate_node_id(options_.alias) : options_.node_id),
        alias_(options_.alias),
        mailbox_(options_.mailbox_size, options_.overflow),
        retry_timer_(io_),
        stop_timer_(io_),
        jitter_(std::random_device{}()) {}

  ~NodeRuntimeImpl() override {
    shutdown();
    if (io_thread_.joinable()) {
      if (io_thread_.get_id() == std::this_thread::get_id()) {
        io_thread_.detach();
      } else {
        io_thread_.join();
      }
    }
    if (dispatcher_.joinable()) {
      if (dispatcher_.get_id() == std::this_thread::get_id()) {
        dispatcher_.detach();
      } else {
        dispatcher_.join();
      }
    }
    if (pmd_starter_.joinable())
      pmd_starter_.join();
    g_node_alive.store(false);
  }

  void begin() {
    TransportConfig config{node_id_, alias_, options_.max_frame_bytes, options_.max_outbox_bytes,
                           options_.max_connections};
    config.stall_timeout = options_.stall_timeout;
    transport_ = std::make_unique<Transport>(io_, std::move(config), mailbox_, counters_);
    port_ = transport_->listen(options_.listen_host, options_.listen_port);
    transport_->on_connection_failed([this](const std::string& id) { forget_routes(id); });
    transport_->on_progress([this] {
      publish_backlog();
      check_flush();
    });
    transport_->on_dropped(
        [this](std::uint64_t n, std::string_view reason) { count_dropped(n, reason); });
    auto started = start_promise_.get_future();
    spawn_logged(io_, pmd_loop(), "pmd link");
    io_done_ = io_done_promise_.get_future();
    io_thread_ = std::thread([this] { run_io(); });
    if (started.wait_for(options_.start_timeout) == std::future_status::timeout) {
      shutdown();
      throw Error("cannot register " + describe_self() + " with pmd " + options_.pmd.to_string() +
                  ": no answer within " + std::to_string(options_.start_timeout.count()) + " ms");
    }
    if (std::string error = started.get(); !error.empty()) {
      shutdown();
      throw Error(error);
    }
    spdlog::debug("node started node_id={} alias={} port={} pmd={}", node_id_, alias_, port_,
                  options_.pmd.to_string());
  }

  const std::string& node_id() const override { return node_id_; }
  const std::string& alias() const override { return alias_; }
  std::uint16_t port() const override { return port_; }

  void on_message(MessageHandler handler) override {
    std::lock_guard lock(handler_mutex_);
    if (has_handler_.load())
      throw Error("on_message: a message handler is already set");
    if (shutdown_started_.load())
      return;
    has_handler_.store(true);
    dispatcher_ = std::thread([this, h = std::move(handler)] { dispatch_loop(h); });
  }

  void on_message_inline(MessageHandler handler) override {
    std::lock_guard lock(handler_mutex_);
    if (has_handler_.load())
      throw Error("on_message_inline: a message handler is already set");
    if (shutdown_started_.load())
      return;
    has_handler_.store(true);
    auto run = [this, h = std::move(handler)](const Envelope& message) {
      if (!shutdown_started_.load(std::memory_order_relaxed))
        call_handler(h, message);
    };
    auto install = [this, run = std::move(run)]() mutable {
      // What arrived before goes first; from here on the read loop calls it.
      {
        DeferredWrites writes(*transport_);
        while (auto message = mailbox_.try_receive())
          run(*message);
      }
      transport_->set_inline_handler(std::move(run));
    };
    if (on_io_thread()) {
      install();
    } else {
      asio::post(io_, std::move(install));
    }
  }

  std::optional<Envelope> receive(std::chrono::milliseconds timeout) override {
    if (has_handler_.load()) {
      throw Error("receive: not available once on_message() has set a handler");
    }
    return mailbox_.receive(timeout);
  }

  std::size_t receive_batch(std::vector<Envelope>& out, std::size_t max,
                            std::chrono::milliseconds timeout) override {
    if (has_handler_.load()) {
      throw Error("receive_batch: not available once on_message() has set a handler");
    }
    return mailbox_.receive_batch(out, max, timeout);
  }

  void count_dropped(std::uint64_t n, std::string_view reason) override {
    if (n == 0)
      return;
    std::optional<std::string> line;
    bool arm = false;
    {
      std::lock_guard lock(drops_mutex_);
      line = drops_.add(n, reason, std::chrono::steady_clock::now());
      arm = drops_.pending() && !drop_timer_armed_;
      drop_timer_armed_ = drop_timer_armed_ || arm;
    }
    if (line)
      spdlog::warn("{}", *line);
    if (arm) {
      if (on_io_thread()) {
        arm_drop_timer();
      } else {
        asio::post(io_, [this] { arm_drop_timer(); });
      }
    }
  }

  void send(std::string_view target, std::string_view payload_json,
            SendCallback on_error) override {
    SendCompletion done;
    if (on_error) {
      done = [cb = std::move(on_error)](std::error_code ec, const std::string& message) {
        if (ec)
          cb(ec, message);
      };
    }
    submit(target, payload_json, std::move(done));
  }

  void send_sync(std::string_view target, std::string_view payload_json,
                 std::chrono::milliseconds timeout) override {
    auto result = std::make_shared<std::promise<std::string>>();
    auto future = result->get_future();
    submit(target, payload_json, [result](std::error_code ec, const std::string& message) {
      result->set_value(ec ? message : std::string());
    });
    if (future.wait_for(timeout) == std::future_status::timeout) {
      throw Error("send to '" + std::string(target) + "': not written within " +
                  std::to_string(timeout.count()) + " ms");
    }
    if (std::string error = future.get(); !error.empty())
      throw Error(error);
  }

  void flush(std::chrono::milliseconds timeout) override {
    if (shutdown_started_.load() || on_io_thread())
      return;
    auto done = std::make_shared<std::promise<void>>();
    auto future = done->get_future();
    asio::post(io_, [this, done] {
      drain();
      flush_waiters_.emplace_back([done] { done->set_value(); });
      check_flush();
    });
    if (future.wait_for(timeout) == std::future_status::timeout) {
      throw Error("flush: outbound messages still queued after " + std::to_string(timeout.count()) +
                  " ms");
    }
  }

  std::vector<NodeInfo> discover() override {
    std::lock_guard lock(peers_mutex_);
    return peers_;
  }

  // Installed under the lock that guards peers_, at once: a peer either is in
  // peers_ already (discover() shows it) or its event reaches this handler.
  void on_peer_join(PeerHandler handler) override {
    auto h = std::make_shared<const PeerHandler>(std::move(handler));
    std::lock_guard lock(peers_mutex_);
    join_handler_ = std::move(h);
  }
  void on_peer_leave(PeerHandler handler) override {
    auto h = std::make_shared<const PeerHandler>(std::move(handler));
    std::lock_guard lock(peers_mutex_);
    leave_handler_ = std::move(h);
  }

  NodeStats stats() const override {
    NodeStats s;
    s.mailbox = mailbox_.stats();
    s.received = counters_.received.load(std::memory_order_relaxed);
    s.bad_frames = counters_.bad_frames.load(std::memory_order_relaxed);
    s.sent = counters_.sent.load(std::memory_order_relaxed);
    s.send_failures = counters_.send_failures.load(std::memory_order_relaxed);
    s.handler_errors = handler_errors_.load(std::memory_order_relaxed);
    std::lock_guard lock(drops_mutex_);
    s.drops = drops_.totals();
    s.dropped = drops_.total();
    return s;
  }

  void shutdown() override {
    if (!shutdown_started_.exchange(true)) {
      {
        std::lock_guard lock(pending_mutex_);
        stopping_ = true;
      }
      pending_room_.notify_all();
      if (io_thread_.joinable()) {
        asio::post(io_, [this] { begin_stop(); });
      }
    }
    if (io_thread_.joinable() && !on_io_thread()) {
      if (io_done_.valid() && io_done_.wait_for(kShutdownJoin) == std::future_status::timeout) {
        spdlog::warn("node I/O thread did not stop within {} ms; forcing it",
                     kShutdownJoin.count());
        io_.stop();
      }
      io_thread_.join();
    }
    mailbox_.close();
    if (dispatcher_.joinable() && dispatcher_.get_id() != std::this_thread::get_id()) {
      dispatcher_.join();
    }
    if (pmd_starter_.joinable() && !on_io_thread())
      pmd_starter_.join();
  }

 private:
  NodeOptions options_;
  std::string node_id_;
  std::string alias_;
  std::uint16_t port_ = 0;
  Mailbox<Envelope> mailbox_;
  TransportCounters counters_;
  std::atomic<std::uint64_t> handler_errors_{0};
  std::atomic<bool> shutdown_started_{false};
  mutable std::mutex drops_mutex_;
  DropLog drops_;
  bool drop_timer_armed_ = false;

  // Shared with API threads.
  std::mutex pending_mutex_;
  std::condition_variable pending_room_;
  PendingBatch pending_;
  bool drain_scheduled_ = false;
  bool stopping_ = false;
  const std::size_t pending_limit_ = std::min(options_.max_outbox_bytes, kMaxPendingBytes);
  const std::size_t backlog_limit_ = std::min(options_.max_outbox_bytes / 2, kMaxBacklogBytes);
  std::atomic<std::size_t> backlog_{0};  // the transport's unwritten bytes, as last published
  std::mutex peers_mutex_;
  std::vector<NodeInfo> peers_;  // written by the I/O thread
  std::mutex handler_mutex_;
  std::atomic<bool> has_handler_{false};
  std::thread dispatcher_;
  std::promise<std::string> start_promise_;  // empty string: registered
  bool start_settled_ = false;

  // The I/O thread's. io_ is declared first so it is destroyed last.
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  std::promise<void> io_done_promise_;
  std::future<void> io_done_;
  std::unique_ptr<Transport> transport_;
  PendingBatch draining_;
  std::unordered_map<std::string, Route, StringHash, std::equal_to<>> routes_;
  std::uint64_t waiting_ = 0;  // messages in routes waiting for resolution
  std::vector<std::function<void()>> flush_waiters_;
  bool draining_now_ = false;            // check_flush() waits: its waiters may end the node
  std::shared_ptr<PmdLink> link_;        // connected
  std::shared_ptr<PmdLink> connecting_;  // being dialled (closed by shutdown)
  std::map<std::uint64_t, PmdCallback> pmd_pending_;
  std::uint64_t next_request_id_ = 1;
  bool registered_ = false;
  std::chrono::steady_clock::time_point last_pmd_reply_;
  asio::steady_timer retry_timer_;
  asio::steady_timer stop_timer_;
  asio::steady_timer drop_timer_{io_};
  std::minstd_rand jitter_;
  bool io_stopping_ = false;  // begin_stop() ran
  bool closing_ = false;      // unregister sent
  bool finished_ = false;     // finish_stop() ran
  // Guarded by peers_mutex_; taken together with the peers_ change they report.
  std::shared_ptr<const PeerHandler> join_handler_, leave_handler_;
  std::thread pmd_starter_;
  std::atomic<bool> pmd_starting_{false};

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_.load(); }

  // The drops counted since the last report, logged once the interval is over.
  void arm_drop_timer() {
    drop_timer_.expires_after(std::chrono::seconds(1));
    drop_timer_.async_wait([this](std::error_code ec) {
      std::optional<std::string> line;
      {
        std::lock_guard lock(drops_mutex_);
        drop_timer_armed_ = false;
        line = drops_.take(std::chrono::steady_clock::now());
      }
      if (line)
        spdlog::warn("{}", *line);
      (void)ec;  // cancelled at shutdown: report what is pending all the same
    });
  }

  std::string describe_self() const {
    return alias_.empty() ? "'" + node_id_ + "'" : "'" + alias_ + "' (" + node_id_ + ")";
  }

  void run_io() {
    io_thread_id_.store(std::this_thread::get_id());
    for (;;) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        spdlog::error("node I/O thread: unexpected exception (a bug): {}", e.what());
      }
    }
    io_done_promise_.set_value();
  }

  // ---- messages in ------------------------------------------------------------

  /// Runs the application's handler: an exception is logged and counted, never fatal.
  void call_handler(const MessageHandler& handler, const Envelope& message) {
    try {
      handler(message);
    } catch (const std::exception& e) {
      handler_errors_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("message handler threw: {}", e.what());
    } catch (...) {
      handler_errors_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("message handler threw a non-exception");
    }
  }

  void dispatch_loop(const MessageHandler& handler) {
    std::vector<Envelope> batch;
    batch.reserve(kDispatchBatch);
    while (!shutdown_started_.load(std::memory_order_relaxed)) {
      if (mailbox_.receive_batch(batch, kDispatchBatch, std::chrono::milliseconds(100)) == 0) {
        if (mailbox_.drained())
          break;
        continue;
      }
      for (const Envelope& message : batch) {
        if (shutdown_started_.load(std::memory_order_relaxed))
          break;
        call_handler(handler, message);
      }
      batch.clear();
    }
  }

  // ---- messages out -----------------------------------------------------------

  void submit(std::string_view target, std::string_view payload, SendCompletion done) {
    if (options_.validate_payloads) {
      thread_local JsonValidator validator;
      thread_local std::string why;
      if (auto ec = validator.validate(payload, &why)) {
        std::string message =
            "cannot send to '" + std::string(target) + "': invalid JSON payload: " + why;
        counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("{}", message);
        if (done)
          done(ec, message);
        return;
      }
    }
    if (on_io_thread()) {
      send_from_io(target, payload, std::move(done));
      return;
    }
    std::unique_lock lock(pending_mutex_);
    // Bounded: an application far ahead of the I/O thread or of the sockets waits
    // here (a peer that stays stuck makes its queue full, and sends to it fail).
    auto must_wait = [&] {
      return !stopping_ && (pending_.bytes.size() >= pending_limit_ ||
                            backlog_.load(std::memory_order_relaxed) >= backlog_limit_);
    };
    if (must_wait() && !on_io_thread()) {
      // The clock is read only here: most sends never wait.
      const auto give_up = std::chrono::steady_clock::now() + kSendWait;
      do {
        // Sliced: the backlog is published without the mutex, so a wakeup can be missed.
        pending_room_.wait_for(lock, std::chrono::milliseconds(1));
      } while (must_wait() && std::chrono::steady_clock::now() <= give_up);
    }
    if (stopping_) {
      lock.unlock();
      counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
      std::string message = "cannot send to '" + std::string(target) + "': node is shut down";
      spdlog::debug("{}", message);
      if (done)
        done(make_error_code(errc::closed), message);
      return;
    }
    std::uint32_t done_index = PendingBatch::kNone;
    if (done) {
      done_index = static_cast<std::uint32_t>(pending_.completions.size());
      pending_.completions.push_back(std::move(done));
    }
    pending_.bytes.append(target);
    pending_.bytes.append(payload);
    pending_.items.push_back({static_cast<std::uint32_t>(target.size()),
                              static_cast<std::uint32_t>(payload.size()), done_index});
    if (drain_scheduled_)
      return;
    drain_scheduled_ = true;
    lock.unlock();
    asio::post(io_, [this] { drain(); });
  }

  // send() on the I/O thread (inline handlers, completions, peer events): straight
  // to the route, no pending batch, no post; an idle connection writes it at the end
  // of the current bracket (Transport::defer_writes), here or in the caller's.
  void send_from_io(std::string_view target, std::string_view payload, SendCompletion done) {
    bool stopping = false;
    {
      std::lock_guard lock(pending_mutex_);
      stopping = stopping_;
    }
    if (stopping) {
      fail_one(std::move(done), errc::closed,
               "cannot send to '" + std::string(target) + "': node is shut down");
      return;
    }
    {
      DeferredWrites writes(*transport_);
      dispatch(target, payload, now_ms(), std::move(done));
    }
    publish_backlog();
    check_flush();
  }

  void drain() {
    {
      std::lock_guard lock(pending_mutex_);
      std::swap(pending_, draining_);
      drain_scheduled_ = false;
    }
    pending_room_.notify_all();
    if (draining_.empty())
      return;
    const std::int64_t timestamp = now_ms();
    std::string_view last_target;
    Route* last_route = nullptr;
    std::size_t at = 0;
    draining_now_ = true;
    {
      DeferredWrites writes(*transport_);  // one send per idle connection, at the end
      for (const auto& item : draining_.items) {
        std::string_view target(draining_.bytes.data() + at, item.target_len);
        std::string_view payload(target.data() + item.target_len, item.payload_len);
        at += item.target_len + item.payload_len;
        SendCompletion done;
        if (item.done != PendingBatch::kNone)
          done = std::move(draining_.completions[item.done]);
        if (last_route != nullptr && last_route->resolved && target == last_target) {
          transport_->enqueue(*last_route->connection, payload, timestamp, std::move(done));
          continue;
        }
        last_route = dispatch(target, payload, timestamp, std::move(done));
        last_target = target;
      }
    }
    draining_.clear();
    draining_now_ = false;
    publish_backlog();
    check_flush();
  }

  void publish_backlog() {
    const std::size_t bytes = transport_->unwritten_bytes();
    const std::size_t before = backlog_.exchange(bytes, std::memory_order_relaxed);
    if (before >= backlog_limit_ && bytes < backlog_limit_)
      pending_room_.notify_all();
  }

  // Returns the route the message went to (stable until a later I/O event).
  Route* dispatch(std::string_view target, std::string_view payload, std::int64_t timestamp,
                  SendCompletion done) {
    if (finished_) {
      fail_one(std::move(done), errc::closed,
               "cannot send to '" + std::string(target) + "': node is shut down");
      return nullptr;
    }
    auto it = routes_.find(target);
    if (it == routes_.end()) {
      it = routes_.emplace(std::string(target), Route{}).first;
      resolve(it->first);
    }
    Route& route = it->second;
    if (route.resolved) {
      transport_->enqueue(*route.connection, payload, timestamp, std::move(done));
      return &route;
    }
    if (route.waiting_bytes + payload.size() > options_.max_outbox_bytes) {
      fail_one(std::move(done), errc::queue_full,
               "outbound queue to '" + std::string(target) + "' is full (limit " +
                   std::to_string(options_.max_outbox_bytes) + " bytes)");
      return &route;
    }
    route.waiting.push_back({std::string(payload), timestamp, std::move(done)});
    route.waiting_bytes += payload.size();
    ++waiting_;
    return &route;
  }

  void fail_one(SendCompletion done, errc code, const std::string& message) {
    counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("{}", message);
    if (done)
      done(make_error_code(code), message);
  }

  void resolve(const std::string& target) {
    pmd_request(
        "resolve", json_object("alias", target),
        [this, target](const PmdReply* reply, const std::string& error) {
          auto it = routes_.find(target);
          if (it == routes_.end() || it->second.resolved)
            return;
          if (finished_) {
            fail_route(it, errc::closed, "cannot send to '" + target + "': node is shut down");
          } else if (reply && reply->node) {
            route_resolved(it, *reply->node);
          } else if (reply) {
            fail_route(it, errc::unknown_node, "unknown target '" + target + "': " + reply->error);
          } else if (auto peer = find_peer(target)) {
            route_resolved(it, *peer);  // PMD unreachable: the last known view
          } else {
            fail_route(it, errc::unknown_node, "cannot resolve target '" + target + "': " + error);
          }
        });
  }

  void route_resolved(decltype(routes_)::iterator it, const NodeInfo& node) {
    // First: replacing a stale connection forgets the resolved routes to this node.
    auto connection = transport_->connection(node);
    Route& route = it->second;
    route.resolved = true;
    route.node = node;
    route.connection = connection;
    auto waiting = std::move(route.waiting);
    route.waiting.clear();
    route.waiting_bytes = 0;
    waiting_ -= waiting.size();
    for (auto& message : waiting) {
      transport_->enqueue(*connection, message.payload, message.timestamp, std::move(message.done));
    }
    check_flush();
  }

  void fail_route(decltype(routes_)::iterator it, errc code, const std::string& message) {
    auto waiting = std::move(it->second.waiting);
    waiting_ -= waiting.size();
    routes_.erase(it);
    counters_.send_failures.fetch_add(waiting.size(), std::memory_order_relaxed);
    spdlog::warn("{} ({} message{} dropped)", message, waiting.size(),
                 waiting.size() == 1 ? "" : "s");
    for (auto& w : waiting) {
      if (!w.done)
        continue;
      try {
        w.done(make_error_code(code), message);
      } catch (const std::exception& e) {
        spdlog::error("send completion threw: {}", e.what());
      }
    }
    check_flush();
  }

  // A resolution is stale once its node left or its connection failed.
  void forget_routes(const std::string& node_id) {
    std::erase_if(routes_, [&](const auto& entry) {
      return entry.second.resolved && entry.second.node.node_id == node_id;
    });
  }

  std::optional<NodeInfo> find_peer(std::string_view name) {
    std::lock_guard lock(peers_mutex_);
    for (const auto& peer : peers_) {
      if (peer.alias == name || peer.node_id == name)
        return peer;
    }
    return std::nullopt;
  }

  void check_flush() {
    if (draining_now_ || flush_waiters_.empty() || waiting_ != 0 || transport_->unwritten() != 0) {
      return;
    }
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (auto& waiter : waiters)
      waiter();
  }

  // ---- the PMD link -----------------------------------------------------------

  void settle_start(const std::string& error) {
    if (start_settled_)
      return;
    start_settled_ = true;
    start_promise_.set_value(error);
  }

  void pmd_request(std::string_view type, std::string_view payload_json, PmdCallback callback) {
    if (!link_ || link_->closed) {
      // Always asynchronous, so callers never see their callback run inside the call.
      asio::post(io_, [cb = std::move(callback), ep = options_.pmd.to_string()] {
        cb(nullptr, "no connection to pmd " + ep);
      });
      return;
    }
    const std::uint64_t id = next_request_id_++;
    append_frame(link_->out, encode_request(type, payload_json, id));
    if (callback)
      pmd_pending_.emplace(id, std::move(callback));
    if (link_->idle) {
      link_->idle = false;
      link_->signal.cancel_one();
    }
  }

  void fail_pmd_requests(const std::string& error) {
    auto pending = std::move(pmd_pending_);
    pmd_pending_.clear();
    for (auto& [id, callback] : pending)
      callback(nullptr, error);
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    // +-25%: nodes that lost the PMD together do not all come back together.
    std::uniform_int_distribution<long> spread(-base.count() / 4, base.count() / 4);
    return base + std::chrono::milliseconds(spread(jitter_));
  }

  asio::awaitable<std::error_code> connect_pmd(tcp::socket& socket) {
    std::error_code ec;
    auto address = asio::ip::make_address(options_.pmd.host, ec);
    if (!ec) {
      std::tie(ec) =
          co_await socket.async_connect(tcp::endpoint(address, options_.pmd.port), kAwait);
      co_return ec;
    }
    tcp::resolver resolver(io_);
    auto [rec, results] = co_await resolver.async_resolve(
        options_.pmd.host, std::to_string(options_.pmd.port), kAwait);
    if (rec)
      co_return rec;
    std::tie(ec, std::ignore) = co_await asio::async_connect(socket, results, kAwait);
    co_return ec;
  }

  asio::awaitable<void> pmd_loop() {
    auto backoff = kFirstBackoff;
    auto down_since = std::chrono::steady_clock::now();
    bool warned = false;
    while (!io_stopping_) {
      auto link = std::make_shared<PmdLink>(io_);
      connecting_ = link;
      std::error_code ec = co_await connect_pmd(link->socket);
      connecting_.reset();
      if (io_stopping_)
        break;
      if (ec) {
        if (!start_settled_) {
          settle_start("cannot register " + describe_self() + " with pmd " +
                       options_.pmd.to_string() + ": " + ec.message());
          co_return;
        }
        if (!warned) {
          spdlog::warn("pmd {} unreachable: {}; reconnecting", options_.pmd.to_string(),
                       ec.message());
          warned = true;
        }
        maybe_restart_pmd(down_since);
        retry_timer_.expires_after(jittered(backoff));
        co_await retry_timer_.async_wait(kAwait);
        backoff = std::min(backoff * 2, kMaxBackoff);
        continue;
      }
      warned = false;
      std::error_code ignored;
      link->socket.set_option(tcp::no_delay(true), ignored);
      link_ = link;
      last_pmd_reply_ = std::chrono::steady_clock::now();
      spawn_logged(io_, pmd_write_loop(link), "pmd writer");
      register_self();
      watch_peers();
      spawn_logged(io_, heartbeat_loop(link), "pmd heartbeat");
      std::string why = co_await pmd_read_loop(link);
      link->close();
      if (link_ == link)
        link_.reset();
      const bool was_registered = registered_;
      registered_ = false;
      fail_pmd_requests("connection to pmd " + options_.pmd.to_string() + " lost");
      if (!start_settled_) {
        settle_start("cannot register " + describe_self() + " with pmd " +
                     options_.pmd.to_string() + ": " + why);
        co_return;
      }
      if (io_stopping_)
        break;
      spdlog::warn("lost connection to pmd {}: {}; reconnecting", options_.pmd.to_string(), why);
      down_since = std::chrono::steady_clock::now();
      if (was_registered) {
        backoff = kFirstBackoff;  // a healthy link: try again at once
        continue;
      }
      // Accepted but never registered (a PMD that closes on us): do not spin.
      retry_timer_.expires_after(jittered(backoff));
      co_await retry_timer_.async_wait(kAwait);
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }

  void maybe_restart_pmd(std::chrono::steady_clock::time_point down_since) {
    if (!options_.auto_start_pmd || pmd_starting_.load())
      return;
    if (std::chrono::steady_clock::now() - down_since < kRestartPmdAfter)
      return;
    if (pmd_starter_.joinable())
      pmd_starter_.join();  // finished: pmd_starting_ is false
    pmd_starting_.store(true);
    spdlog::info("starting a new pmd on {}", options_.pmd.to_string());
    // ensure_pmd blocks (spawn, then poll): never on the I/O thread. The port is the lock.
    pmd_starter_ = std::thread([this, endpoint = options_.pmd, exe = options_.executable] {
      try {
        ensure_pmd(endpoint, std::chrono::milliseconds(2000), exe);
      } catch (const std::exception& e) {
        spdlog::warn("cannot start a pmd: {}", e.what());
      }
      pmd_starting_.store(false);
    });
  }

  asio::awaitable<void> pmd_write_loop(std::shared_ptr<PmdLink> link) {
    while (!link->closed) {
      if (link->out.empty()) {
        link->idle = true;
        co_await link->signal.async_wait(kAwait);
        link->idle = false;
        continue;
      }
      link->wbuf.swap(link->out);
      auto [ec, n] = co_await asio::async_write(link->socket, asio::buffer(link->wbuf), kAwait);
      if (ec) {
        link->close();  // the read loop notices and reconnects
        co_return;
      }
      link->wbuf.clear();
    }
  }

  asio::awaitable<std::string> pmd_read_loop(std::shared_ptr<PmdLink> link) {
    FrameDecoder decoder(kDefaultNodeFrameLimit);
    std::string why;
    for (;;) {
      auto room = decoder.prepare(64u << 10);
      auto [ec, n] =
          co_await link->socket.async_read_some(asio::buffer(room.data(), room.size()), kAwait);
      if (ec)
        co_return ec == asio::error::eof ? std::string("closed by the pmd") : ec.message();
      decoder.commit(n);
      last_pmd_reply_ = std::chrono::steady_clock::now();
      std::error_code frame_ec;
      while (auto body = decoder.next(frame_ec)) {
        auto reply = parse_reply(*body, &why);
        if (!reply) {
          spdlog::info("bad frame from pmd: {}", why);
          continue;
        }
        if (reply->is_event) {
          handle_event(*reply);
          continue;
        }
        if (!reply->request_id)
          continue;
        auto it = pmd_pending_.find(*reply->request_id);
        if (it == pmd_pending_.end())
          continue;
        auto callback = std::move(it->second);
        pmd_pending_.erase(it);
        callback(&*reply, {});
      }
      if (frame_ec)
        co_return "protocol error: " + describe_frame_error(frame_ec, decoder);
    }
  }

  asio::awaitable<void> heartbeat_loop(std::shared_ptr<PmdLink> link) {
    while (!link->closed) {
      link->heartbeat.expires_after(options_.heartbeat_interval);
      co_await link->heartbeat.async_wait(kAwait);
      if (link->closed || io_stopping_)
        co_return;
      // A PMD that accepts but never answers (frozen) is as good as gone.
      if (std::chrono::steady_clock::now() - last_pmd_reply_ >
          3 * options_.heartbeat_interval + std::chrono::seconds(1)) {
        spdlog::warn("pmd {} stopped answering; reconnecting", options_.pmd.to_string());
        link->close();
        co_return;
      }
      send_heartbeat();
    }
  }

  void send_heartbeat() {
    pmd_request("heartbeat", json_object("nodeId", node_id_),
                [this](const PmdReply* reply, const std::string&) {
                  // Expired (frozen too long) or removed: register again, and say so.
                  if (reply && reply->error == "Node not found" && !io_stopping_) {
                    if (registered_) {
                      spdlog::warn(
                          "registration of {} with pmd {} is gone (expired or removed); "
                          "registering again",
                          describe_self(), options_.pmd.to_string());
                    }
                    registered_ = false;
                    register_self();
                  }
                });
  }

  void register_self() {
    NodeInfo self;
    self.node_id = node_id_;
    self.alias = alias_;
    self.host = options_.advertise_host.empty() ? options_.listen_host : options_.advertise_host;
    self.port = port_;
    self.pid = ::getpid();
    self.max_frame =
        static_cast<std::uint32_t>(std::min<std::size_t>(options_.max_frame_bytes, kMaxMaxFrame));
    // Announced: the PMD then expects heartbeats from the registration on.
    pmd_request("register", register_payload(self, options_.heartbeat_interval.count()),
                [this](const PmdReply* reply, const std::string&) {
                  if (!reply)
                    return;  // link lost: the loop reconnects and registers again
                  if (!reply->error.empty()) {
                    std::string message = "cannot register " + describe_self() + " with pmd " +
                                          options_.pmd.to_string() + ": " + reply->error;
                    if (!start_settled_) {
                      settle_start(message);
                    } else {
                      spdlog::error("{}; retrying with the next heartbeat", message);
                    }
                    return;
                  }
                  if (!registered_ && start_settled_) {
                    spdlog::info("registered again with pmd {}", options_.pmd.to_string());
                  }
                  registered_ = true;
                  // The first heartbeat at once: the PMD's TTL then covers this node
                  // from its registration on (a node frozen now still leaves).
                  send_heartbeat();
                });
  }

  void watch_peers() {
    pmd_request("watch", R"({"snapshot":true})", [this](const PmdReply* reply, const std::string&) {
      if (!reply)
        return;
      if (reply->nodes) {
        sync_peers(*reply->nodes);
        return;
      }
      // The original PMD has no snapshot: ask for the list instead.
      pmd_request("list", "{}", [this](const PmdReply* list, const std::string&) {
        if (list)
          sync_peers(list->nodes.value_or(std::vector<NodeInfo>{}));
      });
    });
  }

  // A fresh view from the PMD: diff it with ours (after a reconnect) and emit events.
  void sync_peers(const std::vector<NodeInfo>& nodes) {
    std::vector<NodeInfo> fresh;
    for (const auto& node : nodes) {
      if (node.node_id != node_id_)
        fresh.push_back(node);
    }
    std::vector<NodeInfo> joined, left;
    std::shared_ptr<const PeerHandler> on_join, on_leave;
    {
      std::lock_guard lock(peers_mutex_);
      on_join = join_handler_;
      on_leave = leave_handler_;
      for (const auto& node : fresh) {
        if (std::none_of(peers_.begin(), peers_.end(),
                         [&](const NodeInfo& p) { return p.node_id == node.node_id; })) {
          joined.push_back(node);
        }
      }
      for (const auto& peer : peers_) {
        if (std::none_of(fresh.begin(), fresh.end(),
                         [&](const NodeInfo& n) { return n.node_id == peer.node_id; })) {
          left.push_back(peer);
        }
      }
      peers_ = std::move(fresh);
    }
    if (!start_settled_) {
      // Registered before the watch answer (responses come in request order).
      if (registered_)
        settle_start({});
      return;
    }
    for (const auto& peer : left) {
      forget_routes(peer.node_id);
      call_peer_handler(on_leave, peer, "pmd_resync");
    }
    for (const auto& peer : joined) {
      forget_routes(peer.node_id);
      call_peer_handler(on_join, peer, "");
    }
  }

  void handle_event(const PmdReply& event) {
    if (!event.peer || event.peer->node_id == node_id_)
      return;
    const NodeInfo& peer = *event.peer;
    forget_routes(peer.node_id);
    std::shared_ptr<const PeerHandler> handler;
    if (event.event == "peer:join") {
      bool known = false;
      {
        std::lock_guard lock(peers_mutex_);
        handler = join_handler_;
        for (auto& p : peers_) {
          if (p.node_id == peer.node_id) {
            p = peer;
            known = true;
          }
        }
        if (!known)
          peers_.push_back(peer);
      }
      if (!known)
        call_peer_handler(handler, peer, event.reason);
    } else if (event.event == "peer:leave") {
      bool known = false;
      {
        std::lock_guard lock(peers_mutex_);
        handler = leave_handler_;
        known =
            std::erase_if(peers_, [&](const NodeInfo& p) { return p.node_id == peer.node_id; }) > 0;
      }
      if (known)
        call_peer_handler(handler, peer, event.reason);
    }
  }

  static void call_peer_handler(const std::shared_ptr<const PeerHandler>& handler,
                                const NodeInfo& peer, std::string_view reason) {
    if (!handler || !*handler)
      return;
    try {
      (*handler)(peer, reason);
    } catch (const std::exception& e) {
      spdlog::warn("peer handler threw: {}", e.what());
    }
  }

  // ---- shutdown (I/O thread) --------------------------------------------------

  void begin_stop() {
    if (io_stopping_)
      return;
    io_stopping_ = true;
    retry_timer_.cancel();
    drain();
    flush_waiters_.emplace_back([this] { unregister_and_close(); });
    stop_timer_.expires_after(kShutdownFlush);
    stop_timer_.async_wait([this](std::error_code ec) {
      if (!ec)
        unregister_and_close();
    });
    check_flush();
  }

  void unregister_and_close() {
    if (closing_)
      return;
    closing_ = true;
    stop_timer_.cancel();
    if (!link_ || link_->closed || !registered_) {
      finish_stop();
      return;
    }
    pmd_request("unregister", json_object("nodeId", node_id_),
                [this](const PmdReply*, const std::string&) { finish_stop(); });
    stop_timer_.expires_after(kShutdownUnregister);
    stop_timer_.async_wait([this](std::error_code ec) {
      if (!ec)
        finish_stop();
    });
  }

  void finish_stop() {
    if (finished_)
      return;
    finished_ = true;
    stop_timer_.cancel();
    retry_timer_.cancel();
    drop_timer_.cancel();  // its handler reports what is pending
    if (link_)
      link_->close();
    link_.reset();
    if (connecting_)
      connecting_->close();
    fail_pmd_requests("node is shutting down");
    while (!routes_.empty()) {
      auto it = routes_.begin();
      if (it->second.resolved) {
        routes_.erase(it);
      } else {
        fail_route(it, errc::closed, "cannot send to '" + it->first + "': node is shut down");
      }
    }
    transport_->stop();
    drain();  // anything submitted meanwhile fails (finished_)
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (auto& waiter : waiters)
      waiter();
    settle_start("node shut down while starting");
    spdlog::debug("node stopped node_id={}", node_id_);
    work_.reset();
  }
};

/// Length of the UTF-8 sequence starting `text` (a well-formed one, not a
/// surrogate, at most U+10FFFF), or 0 when it is not one.
std::size_t utf8_sequence(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t n = 0;
  std::uint32_t min = 0;
  std::uint32_t code = 0;
  if (lead < 0x80) {
    return 1;
  } else if ((lead & 0xe0) == 0xc0) {
    n = 2, min = 0x80, code = lead & 0x1fu;
  } else if ((lead & 0xf0) == 0xe0) {
    n = 3, min = 0x800, code = lead & 0x0fu;
  } else if ((lead & 0xf8) == 0xf0) {
    n = 4, min = 0x10000, code = lead & 0x07u;
  } else {
    return 0;
  }
  if (text.size() < n)
    return 0;
  for (std::size_t i = 1; i < n; ++i) {
    if ((byte(i) & 0xc0) != 0x80)
      return 0;
    code = (code << 6) | (byte(i) & 0x3fu);
  }
  if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
    return 0;
  return n;
}

}  // namespace

std::string invalid_name_reason(std::string_view name) {
  constexpr std::size_t kMaxNameBytes = 128;  // the PMD's limit (PROTOCOL.md)
  if (name.empty())
    return "must not be empty";
  if (name.size() > kMaxNameBytes)
    return "longer than " + std::to_string(kMaxNameBytes) + " bytes";
  for (std::size_t at = 0; at < name.size();) {
    const std::size_t n = utf8_sequence(name.substr(at));
    if (n == 0)
      return "not valid UTF-8 (byte " + std::to_string(at) + ")";
    const auto c = static_cast<unsigned char>(name[at]);
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(name[at + 1]) < 0xa0;
    if (c < 0x20 || c == 0x7f || c1)
      return "control character at byte " + std::to_string(at);
    at += n;
  }
  return {};
}

std::unique_ptr<NodeRuntime> NodeRuntime::start(NodeOptions options) {
  for (const std::string* name : {&options.alias, &options.node_id}) {
    if (name->empty())
      continue;
    if (std::string why = invalid_name_reason(*name); !why.empty()) {
      throw Error("cannot start node: invalid " +
                  std::string(name == &options.alias ? "alias" : "node id") + " '" + *name +
                  "': " + why);
    }
  }
  if (g_node_alive.exchange(true)) {
    throw Error(
        "cannot start node: a NodeRuntime is already running in this process "
        "(one node per process)");
  }
  std::unique_ptr<NodeRuntimeImpl> node;
  try {
    if (options.auto_start_pmd) {
      ensure_pmd(options.pmd, options.start_timeout, options.executable);
    }
    node = std::make_unique<NodeRuntimeImpl>(std::move(options));
    node->begin();
  } catch (...) {
    node.reset();
    g_node_alive.store(false);
    throw;
  }
  return node;
}

}  // namespace distflow
