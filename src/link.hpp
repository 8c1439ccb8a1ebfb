#pragma once

// One destination's outbound connection (PROTOCOL.md §3.2). Application threads
// encode their messages straight into the link's queue, under the link's own
// mutex (no hand-off of payload copies, no work left for the I/O thread but a
// move), and wait there while this destination is too far behind: back-pressure
// per destination, so one stuck peer never holds up sends to the others. The I/O
// thread moves the queued frames into the session's write queue. A link that
// fails (refused, lost, its node left) fails everything queued, at once, and
// wakes whoever waits.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/io_context.hpp>

#include "framing.hpp"
#include "messages.hpp"
#include "pmd_protocol.hpp"

namespace distflow {

class Link;
class Session;

/// The frame of an idle authenticated link (issue 12's tick, PROTOCOL.md §3.4):
/// both ends send it when they have sent nothing else for a tick interval.
inline constexpr std::string_view kTickFrame = R"({"type":"tick"})";

/// The reason in a node's refusal frame `{"error":"..."}` (what a node writes on
/// a connection it will not serve, PROTOCOL.md §3.2); nullopt for any other frame.
std::optional<std::string> refusal_reason(std::string_view frame);

/// Outcome of one queued message: empty error code once written to the socket.
using SendCompletion = std::function<void(std::error_code, const std::string& message)>;

/// What a link reports to the transport that owns it (on the I/O thread).
class LinkOwner {
 public:
  virtual ~LinkOwner() = default;
  /// Frames were written (`frames`) or failed (`failed`, with the reason).
  virtual void link_progress(std::uint64_t written, std::uint64_t failed,
                             std::uint64_t bytes = 0) = 0;
  /// The link failed (`message` says why, and how many messages were lost); it
  /// leaves the owner's map and its destination is to be forgotten. The owner logs.
  virtual void link_failed(const Link& link, std::error_code ec, const std::string& message,
                           std::uint64_t lost) = 0;
  /// The link is connected (and its handshake done): dial failures are forgotten.
  virtual void link_connected(const Link& link) = 0;
  /// A link with queued frames wants drain() on the I/O thread.
  virtual void link_ready(const std::shared_ptr<class Link>& link) = 0;
  /// Any thread: a sender wrote `frames` (and `bytes`) itself, past the queue.
  virtual void link_wrote_direct(std::uint64_t frames, std::uint64_t bytes) = 0;
};

struct LinkConfig {
  std::string self_id;
  std::string self_alias;
  std::size_t max_queue_bytes =
      kDefaultOutboxBytes;  ///< unwritten bytes before sends wait, then fail
  std::chrono::milliseconds connect_timeout{5000};
  /// A destination that takes no bytes for this long is dropped (0: never).
  std::chrono::milliseconds stall_timeout{0};
  /// Cookie and TLS for every link (none: plain TCP); owned by the node.
  const class Credentials* credentials = nullptr;
  /// Authenticated links tick at this interval and are dropped after 4 silent ones.
  std::chrono::milliseconds tick_interval{1000};
};

class Link : public std::enable_shared_from_this<Link> {
 public:
  Link(asio::io_context& io, NodeInfo node, const LinkConfig& config, LinkOwner& owner);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  const NodeInfo& node() const { return node_; }

  // ---- any thread
  /// Encodes one message. While more than the limit is unwritten it waits, up to
  /// `wait` (zero on the I/O thread); then, or once the link failed, the message
  /// fails: returns the error with its text in `why` (`done` is left to the caller).
  /// Otherwise `done` (if any) is taken, and runs on the I/O thread once the message
  /// is written or failed. `wait` == kAdmitted: the message was bounded before (the
  /// router's pending batch, a name's waiting list) and is queued whatever the limit.
  static constexpr std::chrono::milliseconds kAdmitted{-1};
  std::error_code enqueue(std::string_view payload, std::int64_t timestamp, SendCompletion& done,
                          std::chrono::milliseconds wait, std::string& why,
                          std::string_view members = {});
  /// Bytes queued on this link and not yet on the wire.
  std::size_t unwritten_bytes() const { return unwritten_.load(std::memory_order_relaxed); }
  /// Wakes senders waiting for room: they fail with `why` (the node is stopping).
  void interrupt_waits(const std::string& why);

  // ---- the I/O thread
  /// Dials the destination, after `delay` (a redial after failures: backoff).
  void start(std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  /// Moves the queued frames into the session; `write_now` (a deferred-writes bracket
  /// ends, or a drain that moved at most `direct_max_frames` frames): one direct
  /// send, else the writer is woken (and writes them with whatever follows by then).
  void drain(bool write_now, std::uint64_t direct_max_frames = UINT64_MAX);
  /// Fails every unwritten frame with `why`, closes, leaves the owner. Idempotent.
  void fail(std::error_code ec, const std::string& why);
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  /// Frames queued and neither written nor failed yet.
  std::uint64_t pending_frames() const;
  /// On a link that ticks: bytes written that the destination's host has not
  /// acknowledged yet, which closing would expose to the reset that its next
  /// tick draws. 0 on a link that does not tick (nothing comes back on it).
  std::size_t unacknowledged_bytes() const;
  /// "'alias' at host:port".
  std::string describe() const;

 private:
  class Handler;
  void connected(std::shared_ptr<Session> session);
  void written(std::uint64_t frames_written, std::size_t bytes);

  asio::io_context& io_;
  NodeInfo node_;
  LinkConfig config_;
  LinkOwner& owner_;

  // Shared with application threads.
  mutable std::mutex mutex_;
  std::condition_variable room_;
  MessageEncoder encoder_;
  // Encoded frames not yet moved to the session, in runs of about kRunBytes: a run
  // is closed when the next frame would not fit its buffer, so no buffer grows (and
  // copies itself, and faults in new pages) while a fast sender outruns the writer.
  struct Run {
    std::string bytes;
    std::uint64_t frames = 0;
  };
  std::vector<Run> closed_;         // full runs, oldest first
  std::string queue_;               // the run being filled
  std::uint64_t queue_frames_ = 0;  // frames in queue_
  std::vector<std::string> free_;   // emptied run buffers, back from the session
  // A plain session a sender may write to itself (Session::write_direct), while
  // io_idle_: nothing queued here, nothing handed to the session unwritten. A lone
  // message to an idle destination then goes out from the sender's thread, without
  // waking the I/O thread. Only a lone message does (direct_due()): a sender in a loop,
  // to one destination or many, must not pay a syscall (and, on loopback, the
  // receiver's TCP input) per message while the writers sleep; it batches through them.
  std::shared_ptr<Session> direct_;
  bool io_idle_ = false;
  std::chrono::steady_clock::time_point last_write_{};  // the last direct or writer's write
  bool direct_due();  // under mutex_, io_idle_: the frame is a lone one (see link.cpp)
  bool write_direct(std::size_t frame_begin);  // under mutex_: the frame at frame_begin
  void next_run(std::size_t frame_bytes);      // under mutex_: queue_ has room for a frame
  std::uint64_t queued_ = 0;                   // frames ever queued (numbering, from 1)
  std::deque<std::pair<std::uint64_t, SendCompletion>> completions_;
  bool drain_posted_ = false;  // a drain is coming: senders need not post one
  bool writer_pulls_ = false;  // the session's writer is busy: written() takes what follows
  void take_queue();           // under mutex_: the runs into taken_
  void hand_over();            // I/O thread: taken_ into the session's outbox
  int waiting_ = 0;            // senders asleep in room_
  std::string fail_reason_;    // set once failed (under mutex_)
  std::string interrupted_;    // set by interrupt_waits()
  // Written under mutex_ only, read anywhere (metrics): a plain load and store,
  // not a locked add, which would first wait for the frame just encoded to leave
  // the store buffer.
  std::atomic<std::size_t> unwritten_{0};
  void add_unwritten(std::size_t bytes) {  // under mutex_; wraps to subtract
    unwritten_.store(unwritten_.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  }
  std::atomic<bool> failed_{false};

  // The I/O thread's.
  std::shared_ptr<Session> session_;
  std::vector<Run> taken_;             // runs out of the queue, for the session
  std::vector<std::string> returned_;  // their buffers once handed over, for free_
  std::uint64_t moved_ = 0;            // frames moved into the session
  std::uint64_t written_ = 0;          // frames written
};

}  // namespace distflow
