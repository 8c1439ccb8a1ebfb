// The node runtime (PROTOCOL.md §3): the lifecycle and the public API over four
// parts, each owning one state machine on the node's I/O thread:
//   pmd_link   the registration, heartbeats and the view of the peers
//   router     names to destinations, resolution, the order of sends
//   link       one destination's queue and session (application threads encode
//              straight into it; back-pressure per destination)
//   transport  the listener and inbound sessions into the mailbox
// Decisions where the protocol is silent:
// * Threads: one I/O thread runs the io_context; coroutines capture `this`
//   because shutdown() joins that thread before anything is destroyed. on_message()
//   adds a dispatcher thread that drains the mailbox.
// * send() validates each payload (JsonValidator, on the caller's thread) unless
//   NodeOptions::validate_payloads is off for text the caller already checked.
// * Failure callbacks (SendCallback) and peer handlers run on the I/O thread.
// * A peer that leaves fails its link's queue at once (the senders waiting on it too).
// * shutdown(): senders waiting for room fail at once; queued messages get up to
//   500 ms to reach their sockets and, on links that tick, the peers' hosts (what
//   is still unacknowledged then is logged: a tick's reset drops it), the
//   unregister answer up to 300 ms, then every connection (inbound too) closes;
//   whatever is still unwritten fails, counted.

#include "node_runtime.hpp"

#include <atomic>
#include <cstdio>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <pthread.h>
#include <random>
#include <thread>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "credentials.hpp"
#include "drop_log.hpp"
#include "errors.hpp"
#include "exposure.hpp"
#include "metrics_server.hpp"
#include "pmd_link.hpp"
#include "process.hpp"
#include "router.hpp"
#include "service_metrics.hpp"
#include "transport.hpp"

namespace distflow {
namespace {

// Shutdown: best-effort flush of queued messages, then the unregister answer.
constexpr auto kShutdownFlush = std::chrono::milliseconds(500);
constexpr auto kShutdownAckPoll = std::chrono::milliseconds(5);
constexpr auto kShutdownUnregister = std::chrono::milliseconds(300);
constexpr auto kShutdownJoin = std::chrono::milliseconds(2000);
// Messages the dispatcher takes from the mailbox at once.
constexpr std::size_t kDispatchBatch = 256;
// How long a send() waits for room (a destination behind) before it fails.
constexpr auto kSendWait = std::chrono::seconds(5);

std::atomic<bool> g_node_alive{false};

std::string generate_node_id(std::string_view alias) {
  std::random_device device;
  std::string id(alias.empty() ? std::string_view("node") : alias.substr(0, 64));
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "-%ld-%06x", static_cast<long>(::getpid()),
                device() & 0xffffffu);
  return id + suffix;
}

class NodeRuntimeImpl final : public NodeRuntime {
 public:
  explicit NodeRuntimeImpl(NodeOptions options)
      : options_(std::move(options)),
        node_id_(options_.node_id.empty() ? generate_node_id(options_.alias) : options_.node_id),
        alias_(options_.alias),
        mailbox_(options_.mailbox_size, options_.overflow),
        stop_timer_(io_),
        ack_timer_(io_),
        drop_timer_(io_),
        call_timer_(io_) {}

  ~NodeRuntimeImpl() override {
    shutdown();
    for (std::thread* thread : {&io_thread_, &dispatcher_}) {
      if (!thread->joinable())
        continue;
      if (thread->get_id() == std::this_thread::get_id()) {
        thread->detach();
      } else {
        thread->join();
      }
    }
    g_node_alive.store(false);
  }

  void begin() {
    credentials_ = std::make_unique<Credentials>(options_.security);
    TransportConfig config;
    config.self_id = node_id_;
    config.self_alias = alias_;
    config.max_frame_bytes = options_.max_frame_bytes;
    config.max_outbox_bytes = options_.max_outbox_bytes;
    config.max_inbound_connections = options_.max_connections;
    config.stall_timeout = options_.stall_timeout;
    config.credentials = credentials_.get();
    config.tick_interval = options_.tick_interval;
    transport_ = std::make_unique<Transport>(io_, std::move(config), mailbox_, counters_);
    port_ =
        transport_->listen(options_.listen_host, options_.listen_port, options_.listen_port_last);

    PmdLinkConfig link;
    link.pmd = options_.pmd;
    link.self.node_id = node_id_;
    link.self.alias = alias_;
    link.self.host =
        options_.advertise_host.empty() ? options_.listen_host : options_.advertise_host;
    link.self.port = port_;
    link.self.pid = ::getpid();
    link.self.max_frame =
        static_cast<std::uint32_t>(std::min<std::size_t>(options_.max_frame_bytes, kMaxMaxFrame));
    link.heartbeat_interval = options_.heartbeat_interval;
    link.auto_start_pmd = options_.auto_start_pmd;
    link.executable = options_.executable;
    link.credentials = credentials_.get();
    pmd_ = std::make_unique<PmdLink>(io_, std::move(link));

    RouterConfig routing;
    routing.max_outbox_bytes = options_.max_outbox_bytes;
    routing.max_pending_bytes = std::min<std::size_t>(options_.max_outbox_bytes, 4u << 20);
    routing.send_wait = kSendWait;
    router_ = std::make_unique<Router>(io_, *transport_, *pmd_, counters_, routing);

    transport_->on_connection_failed([this](const std::string& id, const std::string& why) {
      gone(id, {}, router_->forget(id), why);
    });
    transport_->on_stats_request([this](const Envelope& request) {
      reply_with(request.reply_address(), request.ref_json(),
                 node_stats_json(stats(), node_id_, alias_), {});
    });
    transport_->on_reply([this](const Envelope& reply) {
      if (!calls_.complete(reply))
        spdlog::debug("reply from '{}' dropped: no call waits for it (late)", reply.from());
    });
    transport_->on_progress([this] { check_flush(); });
    transport_->on_dropped(
        [this](std::uint64_t n, std::string_view reason) { count_dropped(n, reason); });
    router_->on_progress([this] { check_flush(); });
    pmd_->on_peer_changed([this](const NodeInfo& peer, bool left, std::string_view why) {
      auto names = router_->forget(peer.node_id);
      if (left) {
        const std::string name = peer.alias.empty() ? peer.node_id : peer.alias;
        gone(peer.node_id, peer.alias, std::move(names),
             "'" + name + "' left (" + std::string(why) + ")");
        transport_->drop_link(peer.node_id, "'" + (peer.alias.empty() ? peer.node_id : peer.alias) +
                                                "' left (" + std::string(why) + ")");
      }
    });

    if (options_.metrics) {
      metrics_ = std::make_unique<MetricsServer>(io_, *options_.metrics, options_.security, [this] {
        return node_metrics_page(stats(), node_id_, alias_);
      });
    }

    auto started = start_promise_.get_future();
    pmd_->start([this](const std::string& error) { start_promise_.set_value(error); });
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
  std::uint16_t metrics_port() const override { return metrics_ ? metrics_->port() : 0; }

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
    if (has_handler_.load())
      throw Error("receive: not available once on_message() has set a handler");
    return mailbox_.receive(timeout);
  }

  std::size_t receive_batch(std::vector<Envelope>& out, std::size_t max,
                            std::chrono::milliseconds timeout) override {
    if (has_handler_.load())
      throw Error("receive_batch: not available once on_message() has set a handler");
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
      router_->drain();
      flush_waiters_.emplace_back([done] { done->set_value(); });
      check_flush();
    });
    if (future.wait_for(timeout) == std::future_status::timeout) {
      throw Error("flush: outbound messages still queued after " + std::to_string(timeout.count()) +
                  " ms");
    }
  }

  // ---- request/reply ------------------------------------------------------------

  std::future<Envelope> call(std::string_view target, std::string_view payload_json,
                             std::chrono::milliseconds timeout) override {
    auto result = std::make_shared<std::promise<Envelope>>();
    auto future = result->get_future();
    call(target, payload_json, timeout,
         [result](std::error_code ec, const Envelope& reply, const std::string& error) {
           if (ec) {
             result->set_exception(std::make_exception_ptr(Error(error)));
           } else {
             result->set_value(reply);
           }
         });
    return future;
  }

  void call(std::string_view target, std::string_view payload_json,
            std::chrono::milliseconds timeout, ReplyCallback done) override {
    thread_local std::string members;
    const auto [id, deadline] = calls_.open(target, timeout, std::move(done), members);
    // The timer wakes at the earliest deadline; one later than its wake-up needs no post.
    const auto at = deadline.time_since_epoch().count();
    if (at < call_wake_.load(std::memory_order_acquire)) {
      call_wake_.store(at, std::memory_order_release);
      asio::post(io_, [this] { expire_calls(); });
    }
    submit(
        target, payload_json,
        [this, id = id](std::error_code ec, const std::string& why) {
          if (ec)
            calls_.fail(id, ec, why);
        },
        members);
  }

  void reply(const Envelope& request, std::string_view payload_json,
             SendCallback on_error) override {
    if (!request.is_request())
      throw Error("reply: the message from '" + std::string(request.from()) +
                  "' is not a request (it has no 'ref')");
    reply_with(request.reply_address(), request.ref_json(), payload_json, std::move(on_error));
  }

  void reply_to(std::string_view to, std::string_view ref, std::string_view payload_json,
                SendCallback on_error) override {
    std::string token;
    append_json_string(token, ref);
    reply_with(to, token, payload_json, std::move(on_error));
  }

  std::uint64_t monitor(std::string_view target, MonitorHandler handler) override {
    std::uint64_t id = 0;
    {
      std::lock_guard lock(monitors_mutex_);
      id = next_monitor_++;
      monitors_.emplace(id, Monitor{std::string(target), std::move(handler)});
    }
    if (target.find('@') != std::string_view::npos) {
      // Another host's node: that host's PMD says when it leaves.
      asio::post(io_, [this, id, name = std::string(target)] {
        pmd_->watch_remote(id, name, [this, id](std::string_view why) { fire_monitor(id, why); });
      });
    } else {
      asio::post(io_, [this, id] {
        std::string name;
        {
          std::lock_guard lock(monitors_mutex_);
          auto it = monitors_.find(id);
          if (it == monitors_.end())
            return;
          name = it->second.target;
        }
        for (const NodeInfo& peer : pmd_->peers()) {
          if (peer.alias == name || peer.node_id == name)
            return;
        }
        if (name == alias_ || name == node_id_)
          return;
        fire_monitor(id, "not registered");
      });
    }
    return id;
  }

  void demonitor(std::uint64_t id) override {
    std::lock_guard lock(monitors_mutex_);
    if (monitors_.erase(id) > 0)  // an alias@host monitor's watch connection closes
      asio::post(io_, [this, id] { pmd_->unwatch_remote(id); });
  }

  void interrupt_sends(std::string_view why) override {
    router_->interrupt_waits(std::string(why));
  }

  std::vector<NodeInfo> discover() override { return pmd_->peers(); }
  void on_peer_join(PeerHandler handler) override { pmd_->on_peer_join(std::move(handler)); }
  void on_peer_leave(PeerHandler handler) override { pmd_->on_peer_leave(std::move(handler)); }

  NodeStats stats() const override {
    NodeStats s;
    s.mailbox = mailbox_.stats();
    s.received = counters_.received.load(std::memory_order_relaxed);
    s.bad_frames = counters_.bad_frames.load(std::memory_order_relaxed);
    s.sent = counters_.sent.load(std::memory_order_relaxed);
    s.send_failures = counters_.send_failures.load(std::memory_order_relaxed);
    s.handler_errors = handler_errors_.load(std::memory_order_relaxed);
    s.inbound_links = counters_.inbound_links.load(std::memory_order_relaxed);
    s.outbound_links = counters_.outbound_links.load(std::memory_order_relaxed);
    s.bytes_received = counters_.bytes_received.load(std::memory_order_relaxed);
    s.bytes_sent = counters_.bytes_sent.load(std::memory_order_relaxed);
    s.links = links();
    s.calls_in_flight = calls_.in_flight();
    s.call_timeouts = calls_.timeouts();
    s.late_replies = calls_.late_replies();
    s.uptime = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started_at_);
    std::lock_guard lock(drops_mutex_);
    s.drops = drops_.totals();
    s.dropped = drops_.total();
    return s;
  }

  // The outbound links, from the I/O thread (asked and waited for from another).
  std::vector<OutboundLinkStats> links() const {
    auto collect = [this] {
      return transport_ && !finished_ ? transport_->links() : std::vector<OutboundLinkStats>{};
    };
    if (on_io_thread())
      return collect();
    if (!io_thread_.joinable() || shutdown_started_.load())
      return {};
    auto result = std::make_shared<std::promise<std::vector<OutboundLinkStats>>>();
    auto future = result->get_future();
    asio::post(const_cast<asio::io_context&>(io_),
               [result, collect] { result->set_value(collect()); });
    if (future.wait_for(std::chrono::seconds(1)) != std::future_status::ready)
      return {};
    return future.get();
  }

  void shutdown() override {
    if (!shutdown_started_.exchange(true)) {
      if (router_)
        router_->interrupt_waits("node is shutting down");
      if (io_thread_.joinable())
        asio::post(io_, [this] { begin_stop(); });
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
    if (dispatcher_.joinable() && dispatcher_.get_id() != std::this_thread::get_id())
      dispatcher_.join();
  }

 private:
  NodeOptions options_;
  std::string node_id_;
  std::string alias_;
  std::uint16_t port_ = 0;
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  Mailbox<Envelope> mailbox_;
  TransportCounters counters_;
  std::atomic<std::uint64_t> handler_errors_{0};
  std::atomic<bool> shutdown_started_{false};
  mutable std::mutex drops_mutex_;
  DropLog drops_;
  bool drop_timer_armed_ = false;
  std::mutex handler_mutex_;
  std::atomic<bool> has_handler_{false};
  std::thread dispatcher_;
  std::promise<std::string> start_promise_;  // empty string: registered

  // The I/O thread's. io_ is declared first so it is destroyed last.
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  std::promise<void> io_done_promise_;
  std::future<void> io_done_;
  std::unique_ptr<Credentials> credentials_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<PmdLink> pmd_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<MetricsServer> metrics_;  // with NodeOptions::metrics
  std::vector<std::function<void()>> flush_waiters_;
  asio::steady_timer stop_timer_;
  asio::steady_timer ack_timer_;  // polls the peers' acknowledgements at stop
  asio::steady_timer drop_timer_;
  CallTable calls_{make_call_tag()};
  asio::steady_timer call_timer_;
  // When call_timer_ wakes next (steady_clock ticks); max: idle.
  std::atomic<std::chrono::steady_clock::rep> call_wake_{
      std::numeric_limits<std::chrono::steady_clock::rep>::max()};
  struct Monitor {
    std::string target;
    MonitorHandler handler;
  };
  std::mutex monitors_mutex_;
  std::uint64_t next_monitor_ = 1;
  std::map<std::uint64_t, Monitor> monitors_;
  bool io_stopping_ = false;  // begin_stop() ran
  bool closing_ = false;      // unregister sent
  bool finished_ = false;     // finish_stop() ran

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_.load(); }

  std::string describe_self() const {
    return alias_.empty() ? "'" + node_id_ + "'" : "'" + alias_ + "' (" + node_id_ + ")";
  }

  void run_io() {
    ::pthread_setname_np(::pthread_self(), "distflow-io");  // for top -H, perf, gdb
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

  // The drops counted since the last report, logged once the interval is over.
  void arm_drop_timer() {
    drop_timer_.expires_after(std::chrono::seconds(1));
    drop_timer_.async_wait([this](std::error_code) {
      // Also when cancelled at shutdown: report what is pending all the same.
      std::optional<std::string> line;
      {
        std::lock_guard lock(drops_mutex_);
        drop_timer_armed_ = false;
        line = drops_.take(std::chrono::steady_clock::now());
      }
      if (line)
        spdlog::warn("{}", *line);
    });
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
    ::pthread_setname_np(::pthread_self(), "distflow-disp");
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

  // ---- calls and monitors (I/O thread) -------------------------------------------

  // Ends the calls past their deadline and sets the timer for the next one.
  void expire_calls() {
    const auto next = calls_.expire(std::chrono::steady_clock::now());
    call_wake_.store(next ? next->time_since_epoch().count()
                          : std::numeric_limits<std::chrono::steady_clock::rep>::max(),
                     std::memory_order_release);
    if (!next || io_stopping_)
      return;
    call_timer_.expires_at(*next);
    call_timer_.async_wait([this](std::error_code ec) {
      if (!ec)
        expire_calls();
    });
  }

  // `node_id` (alias `alias`, reached by `names`) left or its link was lost: its
  // calls fail and its monitors fire now, with `why` ("'kv' left (socket_closed)").
  void gone(const std::string& node_id, const std::string& alias, std::vector<std::string> names,
            const std::string& why) {
    names.push_back(node_id);
    if (!alias.empty())
      names.push_back(alias);
    for (const std::string& name : names)
      calls_.fail_target(name, make_error_code(errc::peer_gone), why);
    fire_monitors(
        [&](const std::string& target) {
          return std::find(names.begin(), names.end(), target) != names.end();
        },
        why);
  }

  // Every monitor whose target `match`es fires (once: it is removed first).
  template <typename Match>
  void fire_monitors(Match match, std::string_view why) {
    std::vector<MonitorHandler> fired;
    {
      std::lock_guard lock(monitors_mutex_);
      for (auto it = monitors_.begin(); it != monitors_.end();) {
        if (match(it->second.target)) {
          fired.push_back(std::move(it->second.handler));
          it = monitors_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& handler : fired)
      run_monitor(handler, why);
  }

  void fire_monitor(std::uint64_t id, std::string_view why) {
    MonitorHandler handler;
    {
      std::lock_guard lock(monitors_mutex_);
      auto it = monitors_.find(id);
      if (it == monitors_.end())
        return;  // fired already, or demonitored
      handler = std::move(it->second.handler);
      monitors_.erase(it);
    }
    run_monitor(handler, why);
  }

  void run_monitor(const MonitorHandler& handler, std::string_view why) {
    try {
      handler(why);
    } catch (const std::exception& e) {
      handler_errors_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("monitor handler threw: {}", e.what());
    }
  }

  void reply_with(std::string_view to, std::string_view ref_token, std::string_view payload_json,
                  SendCallback on_error) {
    std::string members = "\"inReplyTo\":";
    members += ref_token;
    SendCompletion done;
    if (on_error) {
      done = [cb = std::move(on_error)](std::error_code ec, const std::string& message) {
        if (ec)
          cb(ec, message);
      };
    }
    submit(to, payload_json, std::move(done), members);
  }

  // ---- messages out -----------------------------------------------------------

  void submit(std::string_view target, std::string_view payload, SendCompletion done,
              std::string_view members = {}) {
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
    if (shutdown_started_.load(std::memory_order_relaxed) && !on_io_thread()) {
      counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
      std::string message = "cannot send to '" + std::string(target) + "': node is shut down";
      spdlog::debug("{}", message);
      if (done)
        done(make_error_code(errc::closed), message);
      return;
    }
    router_->send(target, payload, std::move(done), members);
  }

  void check_flush() {
    if (flush_waiters_.empty() || router_->unwritten() != 0)
      return;
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (auto& waiter : waiters)
      waiter();
  }

  // ---- shutdown (I/O thread) --------------------------------------------------

  void begin_stop() {
    if (io_stopping_)
      return;
    io_stopping_ = true;
    router_->drain();
    flush_waiters_.emplace_back([this] { await_acknowledged(); });
    stop_timer_.expires_after(kShutdownFlush);
    stop_timer_.async_wait([this](std::error_code ec) {
      if (!ec)
        unregister_and_close();
    });
    check_flush();
  }

  // Written is not received: on a link that ticks, what our kernel still holds
  // once we close is dropped by the reset that the peer's next tick draws. Within
  // the flush budget (stop_timer_), wait until the peers' hosts have it all.
  void await_acknowledged() {
    if (closing_)
      return;
    if (transport_->unacknowledged() == 0) {
      unregister_and_close();
      return;
    }
    ack_timer_.expires_after(kShutdownAckPoll);
    ack_timer_.async_wait([this](std::error_code ec) {
      if (!ec)
        await_acknowledged();
    });
  }

  void unregister_and_close() {
    if (closing_)
      return;
    closing_ = true;
    stop_timer_.cancel();
    ack_timer_.cancel();
    if (const std::size_t bytes = transport_->unacknowledged(); bytes > 0) {
      spdlog::warn(
          "stopping with {} bytes written to peers and not acknowledged by their hosts "
          "within {} ms: a peer's next tick resets them, and they are lost",
          bytes, kShutdownFlush.count());
    }
    pmd_->unregister(kShutdownUnregister, [this] { finish_stop(); });
  }

  void finish_stop() {
    if (finished_)
      return;
    finished_ = true;
    stop_timer_.cancel();
    ack_timer_.cancel();
    drop_timer_.cancel();  // its handler reports what is pending
    call_timer_.cancel();
    calls_.fail_all(make_error_code(errc::closed), "the node stopped");
    pmd_->stop();
    router_->stop();
    transport_->stop();
    if (metrics_)
      metrics_->stop();
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (auto& waiter : waiters)
      waiter();
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
  const ExposureVerdict exposure =
      check_exposure({options.listen_host}, "--listen", !options.security.cookie.empty(),
                     options.security.tls.configured(), options.security.insecure);
  // (The warning for `insecure` is the command line's to give: a library caller
  // set it in code.)
  if (!exposure.error.empty())
    throw Error("cannot start node: " + exposure.error);
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
