#include "link.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include "credentials.hpp"
#include "errors.hpp"
#include "framing.hpp"
#include "json.hpp"
#include "outbox.hpp"
#include "session.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;

// The queue's runs: the outbox's chunk size, so a full run becomes one chunk and
// its buffer is recycled as one; and how many emptied buffers a link keeps.
constexpr std::size_t kRunBytes = Outbox::kChunkBytes;
constexpr std::size_t kFreeRuns = 2;
// A lone message (a reply, a ping) follows this link's last write and its thread's
// last send to an idle link by at least this; a stream's messages come closer
// (0.3-2 us apart on loopback) and batch through the writer.
constexpr std::chrono::microseconds kDirectGap{4};
thread_local std::chrono::steady_clock::time_point t_last_idle_send{};

void call(SendCompletion& done, const std::error_code& ec, const std::string& message) {
  if (!done)
    return;
  try {
    done(ec, message);
  } catch (const std::exception& e) {
    spdlog::error("send completion threw: {}", e.what());
  }
}

}  // namespace

std::optional<std::string> refusal_reason(std::string_view frame) {
  JsonObjectWalker walker;
  std::string padded(frame);
  if (walker.walk(padded, false))
    return std::nullopt;
  std::optional<std::string> reason;
  for (const JsonMember& member : walker.members()) {
    if (member.key == "from" || member.key == "payload")
      return std::nullopt;  // a message, whatever else it carries
    if (member.key == "error" && !member.value.empty() && member.value.front() == '"') {
      std::string storage;
      reason = std::string(json_string_text(member.value, storage));
    }
  }
  return reason;
}

/// The destination's end of the session: it never talks on our connection (the
/// original's nodes reply on their own), so reads only reveal the end.
class Link::Handler final : public SessionHandler {
 public:
  explicit Handler(std::weak_ptr<Link> link) : link_(std::move(link)) {}
  bool on_readable(Session& session) override {
    std::error_code ec;
    std::size_t ignored = 0;
    while (auto frame = session.decoder().next(ec)) {
      if (*frame == kTickFrame)
        continue;
      if (auto reason = refusal_reason(*frame)) {
        if (auto link = link_.lock()) {
          link->fail(make_error_code(errc::closed),
                     "refused by " + link->describe() + ": " + *reason);
        }
        return true;
      }
      ++ignored;
    }
    if (ignored > 0)
      spdlog::debug("ignoring {} frames from {} on an outbound connection", ignored,
                    session.peer());
    if (ec)
      session.stop("protocol error: " + describe_frame_error(ec, session.decoder()));
    return true;
  }
  void on_written(Session&, std::size_t bytes, std::uint64_t frames_written) override {
    if (auto link = link_.lock())
      link->written(frames_written, bytes);
  }
  void on_closed(Session&, std::string_view reason) override {
    if (auto link = link_.lock()) {
      link->fail(make_error_code(errc::closed),
                 "connection lost to " + link->describe() + ": " + std::string(reason));
    }
  }

 private:
  std::weak_ptr<Link> link_;
};

Link::Link(asio::io_context& io, NodeInfo node, const LinkConfig& config, LinkOwner& owner)
    : io_(io),
      node_(std::move(node)),
      config_(config),
      owner_(owner),
      encoder_(config.self_id, node_.node_id, config.self_alias) {}

Link::~Link() = default;

std::string Link::describe() const {
  return "'" + (node_.alias.empty() ? node_.node_id : node_.alias) + "' at " + node_.host + ":" +
         std::to_string(node_.port);
}

std::error_code Link::enqueue(std::string_view payload, std::int64_t timestamp,
                              SendCompletion& done, std::chrono::milliseconds wait,
                              std::string& why, std::string_view members) {
  const std::size_t frame_bytes = encoder_.max_frame_bytes(payload.size(), members.size());
  std::unique_lock lock(mutex_);
  auto full = [&] {
    return wait != kAdmitted &&
           unwritten_.load(std::memory_order_relaxed) + frame_bytes > config_.max_queue_bytes &&
           unwritten_.load(std::memory_order_relaxed) > 0;
  };
  if (fail_reason_.empty() && interrupted_.empty() && full() && wait.count() > 0) {
    // Back-pressure for this destination only; a failure or a stop wakes us.
    const auto give_up = std::chrono::steady_clock::now() + wait;
    ++waiting_;
    room_.wait_until(lock, give_up,
                     [&] { return !fail_reason_.empty() || !interrupted_.empty() || !full(); });
    --waiting_;
  }
  if (!fail_reason_.empty()) {
    why = fail_reason_;
    return make_error_code(errc::closed);
  }
  if (!interrupted_.empty() && full()) {
    why = "cannot send to " + describe() + ": " + interrupted_;
    return make_error_code(errc::closed);
  }
  if (full()) {
    why = "outbound queue to " + describe() + " is full (limit " +
          std::to_string(config_.max_queue_bytes) + " bytes)";
    return make_error_code(errc::queue_full);
  }
  if (queue_.size() + frame_bytes > queue_.capacity())
    next_run(frame_bytes);
  const std::size_t before = queue_.size();
  {
    // The run's buffer was last read by the writer's CPU (the kernel's copy): take
    // the lines a few frames ahead now, so the stores below need not wait for them.
    const char* ahead = queue_.data() + before + frame_bytes + 256;
    const char* limit = queue_.data() + queue_.capacity();
    for (int line = 0; line < 4 && ahead < limit; ++line, ahead += 64)
      __builtin_prefetch(ahead, 1, 3);
  }
  encoder_.append(queue_, payload, timestamp, members);
  const std::size_t body = queue_.size() - before - kFrameHeaderBytes;
  if (node_.max_frame != 0 && body > node_.max_frame) {
    // The receiver would drop it and the connection: refused here, with its limit.
    queue_.resize(before);
    why = "message of " + std::to_string(body) + " bytes exceeds the limit of " + describe() +
          " (" + std::to_string(node_.max_frame) + " bytes, its --max-frame)";
    return make_error_code(errc::frame_too_large);
  }
  if (io_idle_ && !done && queue_frames_ == 0 && closed_.empty() && direct_due() &&
      write_direct(before))
    return {};
  add_unwritten(queue_.size() - before);
  ++queue_frames_;
  ++queued_;
  if (done)
    completions_.emplace_back(queued_, std::move(done));
  if (!drain_posted_) {
    drain_posted_ = true;
    lock.unlock();
    owner_.link_ready(shared_from_this());
  }
  return {};
}

std::size_t Link::unacknowledged_bytes() const {
  if (!session_ || !session_->ticks())
    return 0;
  return session_->unacknowledged_bytes().value_or(0);
}

std::uint64_t Link::pending_frames() const {
  std::lock_guard lock(mutex_);
  return failed() ? 0 : queued_ - written_;
}

void Link::interrupt_waits(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    interrupted_ = why;
  }
  room_.notify_all();
}

void Link::start(std::chrono::milliseconds delay) {
  asio::co_spawn(
      io_,
      [self = shared_from_this(), delay]() -> asio::awaitable<void> {
        if (delay.count() > 0) {
          asio::steady_timer pause(self->io_, delay);
          co_await pause.async_wait(asio::use_awaitable);
          if (self->failed())
            co_return;
        }
        tcp::socket socket(self->io_);
        const std::error_code ec = co_await dial(socket, self->node_.host, self->node_.port,
                                                 self->config_.connect_timeout);
        if (self->failed())
          co_return;
        if (ec) {
          self->fail(ec, "cannot connect to " + self->describe() + ": " + ec.message());
          co_return;
        }
        SessionOptions options;
        options.max_queue_bytes = SIZE_MAX;  // bounded before: enqueue() waits or fails
        options.stall_timeout = self->config_.stall_timeout;
        options.max_frame_bytes = kDefaultNodeFrameLimit;
        // With a cookie or TLS every link proves itself, to a node it names (issue 12).
        TlsSide tls;
        std::unique_ptr<SessionGate> gate;
        if (const Credentials* credentials = self->config_.credentials) {
          tls = credentials->dial_tls(self->node_.host);
          gate = credentials->dial_gate(self->config_.self_id, self->node_.node_id);
          if (credentials->authenticated()) {
            options.hello_timeout = kHandshakeTimeout;
            options.tick_interval = self->config_.tick_interval;
            options.tick_frame = std::string(kTickFrame);
          }
        }
        auto session = std::make_shared<Session>(std::move(socket),
                                                 std::make_shared<Handler>(self->weak_from_this()),
                                                 options, tls, std::move(gate));
        self->connected(std::move(session));
      },
      [](const std::exception_ptr& e) {
        if (!e)
          return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("outbound link ended with an exception (a bug): {}", ex.what());
        }
      });
}

void Link::connected(std::shared_ptr<Session> session) {
  session_ = std::move(session);
  session_->start();
  if (session_->direct_capable()) {  // plain TCP: no TLS, no handshake, no ticks
    std::lock_guard lock(mutex_);
    direct_ = session_;  // senders write once io_idle_ (after a first write of the queue)
  }
  spdlog::debug("connected to {}", describe());
  drain(false);
}

void Link::drain(bool write_now, std::uint64_t direct_max_frames) {
  std::uint64_t moved_now = 0;
  {
    std::lock_guard lock(mutex_);
    drain_posted_ = false;
    writer_pulls_ = false;
    if (!session_ || failed())
      return;  // frames wait in the queue for the connection (or fail with the link)
    moved_now = queue_frames_;
    for (const Run& run : closed_)
      moved_now += run.frames;
    take_queue();
    if (moved_now > 0 && !(write_now && moved_now <= direct_max_frames)) {
      // The writer will write these; each write it finishes takes what was queued
      // meanwhile (written()), so busy senders post nothing to this thread.
      writer_pulls_ = drain_posted_ = true;
    }
  }
  hand_over();
  if (write_now && moved_now <= direct_max_frames) {
    session_->write_now();
  } else {
    session_->flush();
  }
}

bool Link::direct_due() {
  // The clock is read only here, when the writer is idle: not per message of a stream.
  const auto now = std::chrono::steady_clock::now();
  const bool lone = now - last_write_ >= kDirectGap && now - t_last_idle_send >= kDirectGap;
  t_last_idle_send = now;
  if (lone)
    last_write_ = now;
  return lone;
}

bool Link::write_direct(std::size_t frame_begin) {
  const std::string_view frame(queue_.data() + frame_begin, queue_.size() - frame_begin);
  const std::ptrdiff_t n = direct_->write_direct(frame);
  if (n <= 0) {
    io_idle_ = false;  // socket full, closing or failed: the writer takes over
    return false;
  }
  const auto taken = static_cast<std::size_t>(n);
  if (taken == frame.size()) {
    queue_.resize(frame_begin);
    owner_.link_wrote_direct(1, taken);
    return true;
  }
  // The socket took part of it: the rest is the queue's first frame, for the writer.
  queue_.erase(frame_begin, taken);
  owner_.link_wrote_direct(0, taken);
  return false;
}

void Link::next_run(std::size_t frame_bytes) {
  if (!queue_.empty()) {
    closed_.push_back({std::move(queue_), queue_frames_});
    queue_frames_ = 0;
    queue_ = std::string();
  }
  if (!free_.empty()) {
    queue_ = std::move(free_.back());
    free_.pop_back();
  }
  queue_.reserve(std::max(kRunBytes, frame_bytes));
}

void Link::take_queue() {
  if (!queue_.empty() || !closed_.empty())
    io_idle_ = false;
  for (std::string& buffer : returned_) {
    if (free_.size() < kFreeRuns)
      free_.push_back(std::move(buffer));
  }
  returned_.clear();
  for (Run& run : closed_) {
    moved_ += run.frames;
    taken_.push_back(std::move(run));
  }
  closed_.clear();
  if (queue_.empty())
    return;
  moved_ += queue_frames_;
  taken_.push_back({std::move(queue_), queue_frames_});
  queue_frames_ = 0;
  queue_ = std::string();
  if (!free_.empty()) {
    queue_ = std::move(free_.back());
    free_.pop_back();
  }
}

void Link::hand_over() {
  for (Run& run : taken_) {
    // A short run is copied into the outbox's last chunk, a long one swapped in
    // (and the outbox hands back an emptied chunk): either way a buffer comes back.
    session_->queue_frames(run.bytes, run.frames);
    run.bytes.clear();
    if (run.bytes.capacity() >= kRunBytes)
      returned_.push_back(std::move(run.bytes));
  }
  taken_.clear();
}

void Link::written(std::uint64_t frames_written, std::size_t bytes) {
  if (written_ == 0 && frames_written > 0)
    owner_.link_connected(*this);  // through the handshake, bytes taken: this peer works
  std::vector<SendCompletion> done;
  const std::uint64_t frames = frames_written - written_;
  written_ = frames_written;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    add_unwritten(0 - bytes);
    while (!completions_.empty() && completions_.front().first <= written_) {
      done.push_back(std::move(completions_.front().second));
      completions_.pop_front();
    }
    wake = waiting_ > 0;
    if (writer_pulls_ && !failed()) {
      if (queue_.empty() && closed_.empty()) {
        writer_pulls_ = drain_posted_ = false;  // the next send posts a drain
      } else {
        take_queue();
      }
    }
    // All that was handed over is written, and nothing waits: senders may write.
    const bool idle = direct_ && !failed() && written_ == moved_ && taken_.empty() &&
                      queue_.empty() && closed_.empty();
    if (idle && !io_idle_)
      last_write_ = std::chrono::steady_clock::now();
    io_idle_ = idle;
  }
  hand_over();  // the writer goes on with it
  if (wake)
    room_.notify_all();
  // Counted first: whoever a completion wakes sees the message counted.
  if (frames > 0 || bytes > 0)
    owner_.link_progress(frames, 0, bytes);
  for (auto& completion : done)
    call(completion, {}, {});
}

void Link::fail(std::error_code ec, const std::string& why) {
  std::deque<std::pair<std::uint64_t, SendCompletion>> completions;
  std::uint64_t lost = 0;
  {
    std::lock_guard lock(mutex_);
    if (failed_.exchange(true))
      return;
    fail_reason_ = why;
    io_idle_ = false;
    direct_.reset();
    lost = queued_ - written_;
    completions.swap(completions_);
    queue_.clear();
    closed_.clear();
    queue_frames_ = 0;
    unwritten_.store(0, std::memory_order_relaxed);
  }
  room_.notify_all();
  auto self = shared_from_this();
  if (session_)
    session_->stop(why);
  std::string message = why;
  if (lost > 0) {
    message +=
        "; " + std::to_string(lost) + " unsent message" + (lost == 1 ? "" : "s") + " dropped";
  }
  owner_.link_failed(*this, ec, message, lost);
  owner_.link_progress(0, lost);
  for (auto& [seq, done] : completions)
    call(done, ec, message);
}

}  // namespace distflow
