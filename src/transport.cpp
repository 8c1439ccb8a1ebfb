#include "transport.hpp"

#include <algorithm>
#include <deque>
#include <span>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "framing.hpp"
#include "session.hpp"

namespace distflow {

using asio::ip::tcp;
namespace {

constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
// Large reads: one syscall brings in hundreds of small frames.
constexpr std::size_t kReadChunk = 256u << 10;
// Messages handed to the mailbox together: one claim and at most one wake-up for
// the lot, while the consumer can start on them before the whole read is parsed.
constexpr std::size_t kPushBatch = 256;
// While a destination is busy its outbox and write buffer keep their capacity
// (up to the queue's own bound): growing them again, or glibc trimming the arena
// under them, costs copies and page faults on every batch. Once the writer goes
// idle, spare outbox chunks beyond this are released (a burst is over).
constexpr std::size_t kKeepIdleBuffer = 4u << 20;
// The outbox is a queue of chunks of this capacity, reused once written: frames are
// encoded straight into the last one (a frame never straddles two; a larger frame
// gets a chunk of its own), so a burst neither grows nor copies a buffer and,
// once warm, touches no new page.
constexpr std::size_t kChunkBytes = 1u << 20;
constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr std::size_t kWriteSlice = 1u << 20;
// write_deferred() sends at most this much itself; a larger backlog goes to the writer.
constexpr std::size_t kDirectWriteMax = 64u << 10;

std::string describe_endpoint(const tcp::socket& socket) {
  std::error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  if (ec)
    return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

bool is_quiet_close(const std::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::operation_aborted ||
         ec == asio::error::connection_reset;
}

}  // namespace

// ---- outbound: one per destination node -------------------------------------

class Outbound : public std::enable_shared_from_this<Outbound> {
 public:
  Outbound(Transport& transport, const NodeInfo& node)
      : transport_(transport),
        node_(node),
        encoder_(transport.config_.self_id, node.node_id, transport.config_.self_alias),
        socket_(transport.io_),
        resolver_(transport.io_),
        signal_(transport.io_),
        connect_deadline_(transport.io_) {
    signal_.expires_at(asio::steady_timer::time_point::max());
  }

  const NodeInfo& node() const { return node_; }
  void start() { spawn_logged(transport_.io_, run(), "outbound connection"); }

  void enqueue(std::string_view payload, std::int64_t timestamp, SendCompletion done) {
    if (failed_) {
      report_one(std::move(done), errc::closed, "connection to " + describe() + " is closed");
      return;
    }
    if (queued_bytes_ + payload.size() > transport_.config_.max_outbox_bytes) {
      std::string message = "outbound queue to " + describe() + " is full (limit " +
                            std::to_string(transport_.config_.max_outbox_bytes) + " bytes)";
      if (transport_.dropped_hook_)
        transport_.dropped_hook_(1, message);
      report_one(std::move(done), errc::queue_full, message);
      return;
    }
    Chunk& tail = chunk_for(encoder_.max_frame_bytes(payload.size()));
    const std::size_t before = tail.bytes.size();
    encoder_.append(tail.bytes, payload, timestamp);
    const std::size_t added = tail.bytes.size() - before;
    queued_bytes_ += added;
    backlog_bytes_ += added;
    transport_.unwritten_bytes_ += added;
    ++queued_;
    tail.frames_end = queued_;
    ++transport_.unwritten_;
    if (done)
      completions_.emplace_back(queued_, std::move(done));
    if (!idle_)
      return;
    if (transport_.defer_depth_ > 0) {
      if (!deferred_) {
        deferred_ = true;
        transport_.deferred_.push_back(shared_from_this());
      }
      return;
    }
    idle_ = false;
    signal_.cancel_one();
  }

  /// On the I/O thread, with the writer parked (idle, nothing in flight): one
  /// non-blocking send of the queued frames; what the socket does not take goes to
  /// the writer. Saves the writer's resumption (and its own send) per message.
  void write_deferred() {
    deferred_ = false;
    if (failed_ || !idle_ || chunks_.empty())
      return;
    std::error_code ec;
    std::size_t n = 0;
    std::string& out = chunks_.front().bytes;
    if (chunks_.size() == 1 && out.size() <= kDirectWriteMax)
      n = socket_.write_some(asio::buffer(out), ec);  // the socket is non-blocking
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      fail(ec, "connection lost to");
      return;
    }
    backlog_bytes_ -= n;
    queued_bytes_ -= n;
    transport_.unwritten_bytes_ -= n;
    if (n == out.size()) {
      recycle(std::move(out));
      chunks_.pop_front();
      frames_written(queued_);
      return;
    }
    out.erase(0, n);
    idle_ = false;
    signal_.cancel_one();
  }

  /// Fails whatever is unwritten and closes; the connection leaves the transport.
  void fail(const std::error_code& ec, std::string_view what) {
    if (failed_)
      return;
    failed_ = true;
    auto self = shared_from_this();
    std::error_code ignored;
    socket_.close(ignored);
    resolver_.cancel();
    connect_deadline_.cancel();
    signal_.cancel();
    const std::uint64_t lost = queued_ - written_;
    written_ = queued_;
    transport_.unwritten_ -= lost;
    transport_.unwritten_bytes_ -= backlog_bytes_;
    backlog_bytes_ = 0;
    transport_.counters_.send_failures.fetch_add(lost, std::memory_order_relaxed);
    std::string message = std::string(what) + " " + describe() + ": " + ec.message();
    if (lost > 0) {
      message +=
          "; " + std::to_string(lost) + " unsent message" + (lost == 1 ? "" : "s") + " dropped";
      spdlog::warn("{}", message);
    } else if (ec == errc::closed) {
      spdlog::debug("{}", message);
    } else {
      spdlog::info("{}", message);
    }
    chunks_.clear();
    queued_bytes_ = 0;
    auto completions = std::move(completions_);
    completions_.clear();
    transport_.remove(*this);
    if (transport_.failed_hook_)
      transport_.failed_hook_(node_.node_id);
    for (auto& [seq, done] : completions)
      call(done, ec, message);
    if (transport_.progress_hook_)
      transport_.progress_hook_();
  }

 private:
  Transport& transport_;
  NodeInfo node_;
  MessageEncoder encoder_;
  tcp::socket socket_;
  tcp::resolver resolver_;
  asio::steady_timer signal_;  // never expires; cancel_one() wakes the writer
  asio::steady_timer connect_deadline_;
  struct Chunk {
    std::string bytes;             // whole frames
    std::uint64_t frames_end = 0;  // queued_ after its last frame
  };
  std::deque<Chunk> chunks_;        // frames queued for writing, oldest first
  std::vector<std::string> spare_;  // written chunks, cleared, capacity kept
  std::size_t queued_bytes_ = 0;    // bytes in chunks_
  std::string wbuf_;                // the chunk being written
  std::uint64_t queued_ = 0;        // frames ever queued
  std::uint64_t written_ = 0;       // frames written or failed
  std::size_t backlog_bytes_ = 0;   // bytes of those frames not yet written
  std::deque<std::pair<std::uint64_t, SendCompletion>> completions_;
  bool idle_ = false;
  bool failed_ = false;
  bool deferred_ = false;  // in transport_.deferred_
  char discard_[512] = {};

  std::string describe() const {
    std::string text = "'" + (node_.alias.empty() ? node_.node_id : node_.alias) + "'";
    return text + " at " + node_.host + ":" + std::to_string(node_.port);
  }

  // The last chunk if the frame fits in it, else a new one (a spare if there is one).
  Chunk& chunk_for(std::size_t frame_bytes) {
    if (!chunks_.empty()) {
      Chunk& last = chunks_.back();
      if (last.bytes.size() + frame_bytes <= last.bytes.capacity())
        return last;
    }
    Chunk& chunk = chunks_.emplace_back();
    if (!spare_.empty()) {
      chunk.bytes = std::move(spare_.back());
      spare_.pop_back();
    }
    chunk.bytes.reserve(std::max(kChunkBytes, frame_bytes));
    return chunk;
  }

  // A written chunk goes back to the spares, unless it was one of its own (large).
  void recycle(std::string&& bytes) {
    if (bytes.capacity() > 2 * kChunkBytes)
      return;
    bytes.clear();
    spare_.push_back(std::move(bytes));
  }

  static void call(SendCompletion& done, const std::error_code& ec, const std::string& message) {
    if (!done)
      return;
    try {
      done(ec, message);
    } catch (const std::exception& e) {
      spdlog::error("send completion threw: {}", e.what());
    }
  }

  void report_one(SendCompletion done, errc code, const std::string& message) {
    transport_.counters_.send_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("{}", message);
    call(done, make_error_code(code), message);
    if (transport_.progress_hook_)
      transport_.progress_hook_();
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    // A silent host (SYN dropped) would hold queued messages for minutes: bound it.
    connect_deadline_.expires_after(kConnectTimeout);
    connect_deadline_.async_wait([weak = weak_from_this()](std::error_code ec) {
      auto connection = weak.lock();
      if (!ec && connection)
        connection->fail(asio::error::timed_out, "cannot connect to");
    });
    std::error_code ec;
    auto address = asio::ip::make_address(node_.host, ec);
    if (!ec) {
      std::tie(ec) = co_await socket_.async_connect(tcp::endpoint(address, node_.port), kAwait);
    } else {
      auto [rec, results] =
          co_await resolver_.async_resolve(node_.host, std::to_string(node_.port), kAwait);
      ec = rec;
      if (!ec && !failed_)
        std::tie(ec, std::ignore) = co_await asio::async_connect(socket_, results, kAwait);
    }
    if (failed_)
      co_return;
    connect_deadline_.cancel();
    if (ec) {
      fail(ec, "cannot connect to");
      co_return;
    }
    std::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    socket_.non_blocking(true, ignored);  // write_deferred()'s sends never block
    spdlog::debug("connected to {}", describe());
    spawn_logged(transport_.io_, watch_close(), "outbound close watch");
    while (!failed_) {
      if (chunks_.empty()) {
        if (spare_.size() > kKeepIdleBuffer / kChunkBytes)
          spare_.resize(kKeepIdleBuffer / kChunkBytes);
        idle_ = true;
        co_await signal_.async_wait(kAwait);
        idle_ = false;
        continue;
      }
      // One chunk per write (at most kChunkBytes but for a large frame's own chunk):
      // the next frames go to a fresh chunk meanwhile.
      wbuf_ = std::move(chunks_.front().bytes);
      const std::uint64_t batch_end = chunks_.front().frames_end;
      chunks_.pop_front();
      queued_bytes_ -= wbuf_.size();
      // Written in slices so the backlog shrinks (and waiting senders resume) while
      // a large batch is still going out.
      for (std::size_t at = 0; at < wbuf_.size();) {
        const std::size_t slice = std::min(kWriteSlice, wbuf_.size() - at);
        auto [wec, n] =
            co_await asio::async_write(socket_, asio::buffer(wbuf_.data() + at, slice), kAwait);
        if (failed_)
          co_return;
        if (wec) {
          fail(wec, "connection lost to");
          co_return;
        }
        at += slice;
        backlog_bytes_ -= slice;
        transport_.unwritten_bytes_ -= slice;
        if (at < wbuf_.size() && transport_.progress_hook_)
          transport_.progress_hook_();
      }
      recycle(std::move(wbuf_));
      wbuf_ = std::string();
      frames_written(batch_end);
    }
  }

  // Frames up to `batch_end` are on the wire: counters, completions, progress.
  void frames_written(std::uint64_t batch_end) {
    const std::uint64_t frames = batch_end - written_;
    written_ = batch_end;
    transport_.unwritten_ -= frames;
    transport_.counters_.sent.fetch_add(frames, std::memory_order_relaxed);
    while (!completions_.empty() && completions_.front().first <= written_) {
      auto done = std::move(completions_.front().second);
      completions_.pop_front();
      call(done, {}, {});
    }
    if (transport_.progress_hook_)
      transport_.progress_hook_();
  }

  // Peers never talk on our outbound connection: reading only reveals its end.
  asio::awaitable<void> watch_close() {
    auto self = shared_from_this();
    for (;;) {
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(discard_), kAwait);
      if (failed_)
        co_return;
      if (ec) {
        fail(ec, "connection closed by");
        co_return;
      }
      spdlog::debug("ignoring {} bytes from {} on an outbound connection", n, describe());
    }
  }
};

// ---- inbound: one per accepted connection ------------------------------------

class InboundSession : public std::enable_shared_from_this<InboundSession> {
 public:
  InboundSession(Transport& transport, tcp::socket socket)
      : transport_(transport),
        socket_(std::move(socket)),
        resume_(transport.io_),
        stall_(transport.io_),
        decoder_(transport.config_.max_frame_bytes),
        peer_(describe_endpoint(socket_)) {
    resume_.expires_at(asio::steady_timer::time_point::max());
  }

  void start() { spawn_logged(transport_.io_, read_loop(), "inbound session"); }

  void stop() {
    if (stopped_)
      return;
    stopped_ = true;
    std::error_code ignored;
    socket_.close(ignored);
    resume_.cancel();
    stall_.cancel();
  }

  void resume() {
    resumed_ = true;
    resume_.cancel_one();
  }

 private:
  Transport& transport_;
  tcp::socket socket_;
  asio::steady_timer resume_;  // never expires; cancelled when the mailbox has room
  asio::steady_timer stall_;   // closes a peer that stops inside a frame
  FrameDecoder decoder_;
  std::vector<Envelope> batch_;  // parsed, not yet taken by the mailbox from pushed_ on
  std::size_t pushed_ = 0;
  bool counted_ = false;  // batch_ is in counters_.received
  std::string peer_;
  std::string why_;
  bool stopped_ = false;
  bool resumed_ = false;
  bool reading_ = false;          // waiting in async_read_some (only then can the peer stall)
  bool stall_armed_ = false;      // stall_ has a wait pending
  std::uint64_t stall_wait_ = 0;  // which wait is the current one

  // Before a read that follows a partial frame: the peer has the stall timeout to
  // send more. Re-armed per read that leaves a partial frame, never per message.
  // While push_rest() waits for mailbox room (`block`) the node is not reading:
  // a wait that expires then is ignored, and the next read re-arms.
  void arm_stall() {
    const auto timeout = transport_.config_.stall_timeout;
    if (timeout.count() <= 0)
      return;
    stall_armed_ = true;
    stall_.expires_after(timeout);
    stall_.async_wait([weak = weak_from_this(), wait = ++stall_wait_](std::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->stopped_ || wait != self->stall_wait_ || !self->reading_)
        return;
      spdlog::info("inbound connection from {} stalled {} ms inside a frame (buffered={}); closing",
                   self->peer_, self->transport_.config_.stall_timeout.count(),
                   self->decoder_.buffered());
      self->stop();
    });
  }

  void disarm_stall() {
    if (!stall_armed_)
      return;
    stall_armed_ = false;
    ++stall_wait_;
    stall_.cancel();
  }

  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    spdlog::debug("inbound connection from {}", peer_);
    auto& counters = transport_.counters_;
    batch_.reserve(kPushBatch);
    while (!stopped_) {
      if (decoder_.buffered() > 0) {
        arm_stall();
      } else {
        disarm_stall();
      }
      auto room = decoder_.prepare(kReadChunk);
      reading_ = true;
      auto [ec, n] =
          co_await socket_.async_read_some(asio::buffer(room.data(), room.size()), kAwait);
      reading_ = false;
      if (stopped_)
        break;
      if (ec) {
        if (!is_quiet_close(ec))
          spdlog::info("inbound connection from {} failed: {}", peer_, ec.message());
        if (ec == asio::error::eof && decoder_.finish()) {
          spdlog::info("inbound connection from {}: {}", peer_,
                       describe_frame_error(decoder_.finish(), decoder_));
        }
        break;
      }
      decoder_.commit(n);
      std::error_code frame_ec;
      bool open = true;
      if (transport_.inline_handler_ && batch_.empty()) {
        deliver_inline(frame_ec);
        if (stopped_)
          break;
      }
      while (auto body = decoder_.next(frame_ec)) {
        Envelope& envelope = batch_.emplace_back();
        if (transport_.parser_.parse(*body, envelope, &why_)) {
          batch_.pop_back();
          counters.bad_frames.fetch_add(1, std::memory_order_relaxed);
          spdlog::info("bad message from {}: {}", peer_, why_);
          continue;
        }
        if (batch_.size() == kPushBatch && !push_batch()) {
          if (!(open = co_await push_rest()))
            break;
        }
      }
      if (!open)
        break;
      if (!batch_.empty() && !push_batch() && !co_await push_rest())
        break;
      if (frame_ec) {
        counters.bad_frames.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("protocol error from {}: {}; closing", peer_,
                     describe_frame_error(frame_ec, decoder_));
        break;
      }
    }
    batch_.clear();
    stop();
    transport_.remove(*this);
  }

  // Every complete frame of this read to the inline handler, in order; their replies
  // are written once the whole read is handled.
  void deliver_inline(std::error_code& frame_ec) {
    auto& counters = transport_.counters_;
    DeferredWrites writes(transport_);
    while (!stopped_) {
      auto body = decoder_.next(frame_ec);
      if (!body)
        break;
      Envelope envelope;
      if (transport_.parser_.parse(*body, envelope, &why_)) {
        counters.bad_frames.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("bad message from {}: {}", peer_, why_);
        continue;
      }
      counters.received.fetch_add(1, std::memory_order_relaxed);
      transport_.inline_handler_(envelope);
    }
  }

  // Hands the batch to the mailbox, in order, with one claim on its slots and at
  // most one wake-up of the consumer. True when all of it went (queued, or dropped
  // by the policy); false when `block` found the mailbox full or it is closed.
  bool push_batch() {
    auto& mailbox = transport_.mailbox_;
    if (!counted_) {
      // Counted before the push: whoever receives a message sees it counted.
      transport_.counters_.received.fetch_add(batch_.size(), std::memory_order_relaxed);
      counted_ = true;
    }
    if (transport_.inline_handler_) {
      // Installed while this batch waited for mailbox room: the rest goes inline.
      DeferredWrites writes(transport_);
      for (; pushed_ < batch_.size(); ++pushed_)
        transport_.inline_handler_(batch_[pushed_]);
      batch_.clear();
      pushed_ = 0;
      counted_ = false;
      return true;
    }
    const bool may_drop = mailbox.policy() != OverflowPolicy::block;
    const std::uint64_t dropped_before = may_drop ? mailbox.stats().dropped : 0;
    pushed_ += mailbox.try_push_batch(std::span<Envelope>(batch_).subspan(pushed_));
    if (may_drop)
      transport_.note_drops(mailbox.stats().dropped - dropped_before);
    if (pushed_ < batch_.size())
      return false;
    batch_.clear();
    pushed_ = 0;
    counted_ = false;
    return true;
  }

  // The rest of a batch that found the mailbox full (`block`): stop reading this
  // socket until the consumer makes room, nothing dropped. False: the session ends.
  asio::awaitable<bool> push_rest() {
    auto self = shared_from_this();
    while (!push_batch()) {
      if (transport_.mailbox_.closed()) {
        stop();
        co_return false;
      }
      resumed_ = false;
      transport_.wait_for_space(self);
      if (!resumed_)
        co_await resume_.async_wait(kAwait);
      if (stopped_)
        co_return false;
    }
    co_return true;
  }
};

// ---- transport ----------------------------------------------------------------

struct Transport::Listener {
  explicit Listener(asio::io_context& io) : acceptor(io) {}
  tcp::acceptor acceptor;
};

Transport::Transport(asio::io_context& io, TransportConfig config, Mailbox<Envelope>& mailbox,
                     TransportCounters& counters)
    : io_(io),
      config_(std::move(config)),
      mailbox_(mailbox),
      counters_(counters),
      listener_(std::make_unique<Listener>(io)) {}

Transport::~Transport() = default;

std::uint16_t Transport::listen(const std::string& host, std::uint16_t port) {
  std::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec)
    throw Error("cannot listen on '" + host + "': expected an IP address");
  tcp::endpoint endpoint(address, port);
  auto& acceptor = listener_->acceptor;
  auto fail = [&](const char* step) {
    throw Error("cannot listen on " + host + ":" + std::to_string(port) + ": " + step + ": " +
                ec.message());
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec)
    fail("open");
  acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec)
    fail("reuse_address");
  acceptor.bind(endpoint, ec);
  if (ec)
    fail("bind");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    fail("listen");
  const std::uint16_t bound = acceptor.local_endpoint(ec).port();
  if (ec)
    fail("local_endpoint");
  spawn_logged(io_, accept_loop(), "accept loop");
  return bound;
}

asio::awaitable<void> Transport::accept_loop() {
  asio::steady_timer pause(io_);
  while (!stopped_) {
    auto [ec, socket] = co_await listener_->acceptor.async_accept(kAwait);
    if (stopped_ || ec == asio::error::operation_aborted)
      co_return;
    if (ec) {
      // Out of descriptors and the like: breathe instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      pause.expires_after(std::chrono::milliseconds(100));
      co_await pause.async_wait(kAwait);
      continue;
    }
    std::error_code ignored;
    if (inbound_.size() >= config_.max_inbound_connections) {
      spdlog::info("refusing inbound connection: {} open (limit)", inbound_.size());
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<InboundSession>(*this, std::move(socket));
    inbound_.push_back(session);
    session->start();
  }
}

std::shared_ptr<Outbound> Transport::connection(const NodeInfo& node) {
  auto it = outbound_.find(node.node_id);
  if (it != outbound_.end()) {
    const NodeInfo& known = it->second->node();
    if (known.host == node.host && known.port == node.port)
      return it->second;
    // Re-registered elsewhere: the old address is dead.
    auto stale = it->second;
    stale->fail(make_error_code(errc::closed), "replacing connection to");
  }
  auto connection = std::make_shared<Outbound>(*this, node);
  outbound_.emplace(node.node_id, connection);
  if (stopped_) {
    connection->fail(make_error_code(errc::closed), "node is shutting down; no connection to");
  } else {
    connection->start();
  }
  return connection;
}

void Transport::enqueue(Outbound& connection, std::string_view payload_json,
                        std::int64_t timestamp_ms, SendCompletion done) {
  connection.enqueue(payload_json, timestamp_ms, std::move(done));
}

DeferredWrites::DeferredWrites(Transport& transport) : transport_(transport) {
  transport_.defer_writes();
}

DeferredWrites::~DeferredWrites() {
  try {
    transport_.write_deferred();
  } catch (const std::exception& e) {
    spdlog::error("writing deferred frames failed (a bug): {}", e.what());
  }
}

void Transport::set_inline_handler(InlineHandler handler) {
  inline_handler_ = std::move(handler);
}

void Transport::write_deferred() {
  if (defer_depth_ > 0)
    --defer_depth_;
  if (defer_depth_ > 0)
    return;
  // A write can fail its connection, whose hooks may queue more: take the list first.
  while (!deferred_.empty()) {
    auto connections = std::move(deferred_);
    deferred_.clear();
    for (auto& connection : connections)
      connection->write_deferred();
  }
}

void Transport::on_connection_failed(std::function<void(const std::string&)> hook) {
  failed_hook_ = std::move(hook);
}

void Transport::on_progress(std::function<void()> hook) {
  progress_hook_ = std::move(hook);
}

void Transport::on_dropped(std::function<void(std::uint64_t, std::string_view)> hook) {
  dropped_hook_ = std::move(hook);
}

void Transport::note_drops(std::uint64_t dropped) {
  if (dropped == 0 || !dropped_hook_)
    return;
  if (mailbox_full_.empty()) {
    mailbox_full_ = "mailbox full (" + std::to_string(mailbox_.max_size()) + ", " +
                    std::string(to_string(mailbox_.policy())) + ")";
  }
  dropped_hook_(dropped, mailbox_full_);
}

void Transport::wait_for_space(const std::shared_ptr<InboundSession>& session) {
  blocked_.push_back(session);
  if (space_requested_)
    return;
  space_requested_ = true;
  // Runs on the consumer's thread (or here, if room appeared meanwhile).
  mailbox_.notify_when_space([this] {
    asio::post(io_, [this] {
      space_requested_ = false;
      auto blocked = std::move(blocked_);
      blocked_.clear();
      for (auto& weak : blocked) {
        if (auto s = weak.lock())
          s->resume();
      }
    });
  });
}

void Transport::remove(const InboundSession& session) {
  auto it = std::find_if(inbound_.begin(), inbound_.end(),
                         [&](const auto& s) { return s.get() == &session; });
  if (it != inbound_.end())
    inbound_.erase(it);
}

void Transport::remove(const Outbound& connection) {
  auto it = outbound_.find(connection.node().node_id);
  if (it != outbound_.end() && it->second.get() == &connection)
    outbound_.erase(it);
}

void Transport::stop() {
  if (stopped_)
    return;
  stopped_ = true;
  std::error_code ignored;
  listener_->acceptor.close(ignored);
  auto inbound = std::move(inbound_);
  inbound_.clear();
  for (auto& session : inbound)
    session->stop();
  std::vector<std::shared_ptr<Outbound>> outbound;
  for (auto& [id, connection] : outbound_)
    outbound.push_back(connection);
  for (auto& connection : outbound)
    connection->fail(make_error_code(errc::closed), "closing connection to");
  outbound_.clear();
  for (auto& weak : blocked_) {
    if (auto s = weak.lock())
      s->resume();
  }
  blocked_.clear();
}

}  // namespace distflow
