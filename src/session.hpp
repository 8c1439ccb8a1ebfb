#pragma once

// One TCP connection, whatever it carries (STYLE.md §6, after Asio's chat
// server): a stream (plain TCP, or TLS over the same socket), a read loop that
// fills a FrameDecoder and hands it to the session's handler, one bounded write
// queue of whole frames (an Outbox) with one write in flight, and one idempotent
// stop with a reason. The PMD's client connections, a node's inbound and
// outbound links, its PMD link and the one-shot clients (admin, watch, send) are
// all sessions; they differ only in their handler. Everything here runs on the
// io_context's one thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "framing.hpp"
#include "gate.hpp"
#include "outbox.hpp"

namespace distflow {

class Session;
class TlsContext;

/// What a session tells the code it serves. The session holds it by shared_ptr.
class SessionHandler {
 public:
  virtual ~SessionHandler() = default;
  /// New bytes are in session.decoder(): take the complete frames. Return false to
  /// read no more until session.resume() (back-pressure); this is then called
  /// again, before the next read.
  virtual bool on_readable(Session& session) = 0;
  /// Writes made progress: `bytes` more are on the wire, and frames up to number
  /// `frames_written` (Outbox numbering) are complete.
  virtual void on_written(Session& session, std::size_t bytes, std::uint64_t frames_written) {
    (void)session, (void)bytes, (void)frames_written;
  }
  /// The session delivers nothing more (end of stream, error, stop): called once.
  /// It may still write what is queued when it closes after a flush.
  virtual void on_closed(Session& session, std::string_view reason) = 0;
};

struct SessionOptions {
  std::size_t max_frame_bytes = kDefaultNodeFrameLimit;
  std::size_t max_queue_bytes = 64u << 20;  ///< the write queue's bound
  /// While the write queue holds more than this, nothing is read (the peer is
  /// made to read its replies first; TCP slows its requests down).
  std::size_t pause_reads_above = SIZE_MAX;
  /// A peer that stops inside a frame, or leaves a write without progress, this
  /// long is closed (0: never). Not counted while the handler holds reads back.
  std::chrono::milliseconds stall_timeout{0};
  /// Closed unless established() is called within this long of start() (0: never).
  /// With a gate, the gate must open within it (and opening it establishes).
  std::chrono::milliseconds hello_timeout{0};
  std::size_t read_chunk = 4u << 10;       ///< first read; doubles while reads fill it
  std::size_t max_read_chunk = 64u << 10;  ///< up to this
  /// Liveness without traffic (Erlang's net_ticktime, issue 12): with an interval,
  /// `tick_frame` is sent whenever nothing else was written for that long, and the
  /// session stops when nothing at all arrived for `ticks_missed` intervals (not
  /// counted while reads are held back; 0: never). Both ends must tick (and
  /// ignore the other's tick frames). 0: off.
  std::chrono::milliseconds tick_interval{0};
  unsigned ticks_missed = 4;
  std::string tick_frame;
};

/// The TLS side of a session: the context, our role, the name to verify (client).
struct TlsSide {
  TlsContext* context = nullptr;
  bool server = false;
  std::string server_name;  ///< the host dialled: the server's certificate must name it
};

/// The reason a session's on_closed() gets when the peer ended its side cleanly
/// after whole frames (end of stream): a receiver's hang-up.
inline constexpr std::string_view kClosedByPeer = "closed by the peer";

/// Spawns `task` on `io`; an exception escaping it is logged at error (a bug), never lost.
void spawn_logged(asio::io_context& io, asio::awaitable<void> task, const char* name);
void spawn_logged(const asio::any_io_executor& executor, asio::awaitable<void> task,
                  const char* name);

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses.
bool is_loopback(const asio::ip::address& address);

/// Connects `socket` to host:port within `timeout`: an IP literal at once,
/// "localhost" as 127.0.0.1 then ::1, other names through the system's resolver
/// (each address in turn). asio::error::timed_out at the deadline.
asio::awaitable<std::error_code> dial(asio::ip::tcp::socket& socket, const std::string& host,
                                      std::uint16_t port, std::chrono::milliseconds timeout);

class Session : public std::enable_shared_from_this<Session> {
 public:
  /// Takes a connected socket. With a `tls` context, TLS runs over it (handshake
  /// first); with a `gate`, the gate's frames come next, and the handler sees
  /// frames only once the gate is open.
  Session(asio::ip::tcp::socket socket, std::shared_ptr<SessionHandler> handler,
          SessionOptions options, const TlsSide& tls = {},
          std::unique_ptr<SessionGate> gate = nullptr);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Starts the loops (after the TLS handshake, if any).
  void start();
  /// Instead of start(): refuses the connection in words (`body`, one frame in the
  /// protocol's own shape saying why), then closes after a short linger. The
  /// handler is told it closed and sees no frame.
  void refuse(std::string_view body);

  // ---- reading
  FrameDecoder& decoder() { return decoder_; }
  /// After on_readable() returned false: deliver again, then read on.
  void resume();
  /// The peer has proven itself (first valid frame, handshake): no hello timeout.
  void established();

  // ---- writing
  /// Where to append one frame of at most `frame_bytes`, then commit(); nullptr when
  /// the write queue is full (nothing changed).
  std::string* reserve(std::size_t frame_bytes) { return outbox_.reserve(frame_bytes); }
  /// Counts what was appended since reserve(); returns the last frame's number.
  std::uint64_t commit(std::size_t frames = 1) { return outbox_.commit(frames); }
  /// Whole frames built elsewhere (`frames` of them), past the bound; `bytes` comes
  /// back empty (with a spare buffer's capacity when there is one). Then flush().
  void queue_frames(std::string& bytes, std::size_t frames) { outbox_.append(bytes, frames); }
  /// One frame with `body`, then flush(); false when the queue is full.
  bool send(std::string_view body);
  /// Lets the writer write what is queued.
  void flush();
  /// With the writer idle: one non-blocking send of the queued frames, the rest to
  /// the writer. For brackets that queue many frames and flush once (plain TCP).
  void write_now();
  /// Any thread, plain TCP without a gate only (direct_capable()): one non-blocking
  /// send of `bytes` past the write queue. The caller guarantees that nothing else
  /// is being written meanwhile (Link: its queue and this session's are empty).
  /// Returns the bytes the socket took (0 when it is full), or -1 when the session
  /// is closing or the send failed: the caller then queues the bytes, and the writer
  /// meets the failure.
  std::ptrdiff_t write_direct(std::string_view bytes);
  bool direct_capable() const { return !tls_ && !gate_; }
  /// Bytes written (our FIN counts one) that the peer's host has not acknowledged
  /// yet (SIOCOUTQ); nullopt once closed. A reset drops them.
  std::optional<std::size_t> unacknowledged_bytes();
  /// The session ticks (SessionOptions::tick_interval): its peer ticks too, and
  /// what it sends after we closed draws a reset.
  bool ticks() const { return options_.tick_interval.count() > 0; }
  /// Tick frames queued so far (counted among the frames, see SessionOptions).
  std::uint64_t ticks_sent() const { return ticks_sent_; }
  /// Bytes queued and not yet written.
  std::size_t queued_bytes() const { return outbox_.bytes() + writing_; }
  const Outbox& outbox() const { return outbox_; }

  // ---- ending
  /// Closes now; what is queued is lost. Idempotent.
  void stop(std::string_view reason);
  /// Reads no more; writes what is queued, then closes (bounded by a linger time).
  void close_after_flush(std::string_view reason);
  /// Writes no more, ticks included: half-closes our side now (call it with the
  /// write queue empty). Reading goes on until the peer ends its side.
  void end_writes();
  bool stopped() const { return stopped_; }
  bool closing() const { return closing_; }

  /// The peer's name as the gate proved it (empty without a gate).
  std::string authenticated_peer() const { return gate_ ? gate_->peer_name() : std::string(); }
  bool gate_open() const { return !gate_ || gate_open_; }

  /// "address:port" of the peer, and whether it is a loopback address.
  const std::string& peer() const { return peer_; }
  /// The peer's address alone ("[::1]" for IPv6), for per-address limits.
  std::string peer_host() const { return peer_.substr(0, peer_.rfind(':')); }
  bool loopback() const { return loopback_; }
  asio::ip::tcp::socket& socket() { return socket_; }

 private:
  // write_direct() against the socket's close: held by both; false once closing.
  std::mutex direct_mutex_;
  bool direct_open_ = true;
  void end_direct();
  struct Tls;
  using IoResult = asio::awaitable<std::tuple<std::error_code, std::size_t>>;
  /// The next read or write on the stream, plain or TLS (an awaitable to co_await).
  IoResult read_some(asio::mutable_buffer buffer);
  IoResult write_some(asio::const_buffer buffer);
  asio::awaitable<void> run();
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  void arm_stall(asio::steady_timer& timer, const char* what);
  void arm_tick();
  /// A write failed: plain TCP reads on to the end first (see the definition).
  void write_failed(std::string why);
  void closed(std::string_view reason);
  void loop_done();
  /// Frames for the gate while it is shut; false when the session must wait or end.
  bool feed_gate();
  /// A handshake frame: written before anything the handler queued.
  void send_gate(std::string_view body);

  asio::ip::tcp::socket socket_;
  std::unique_ptr<Tls> tls_;
  std::shared_ptr<SessionHandler> handler_;
  std::unique_ptr<SessionGate> gate_;
  bool gate_open_ = false;
  std::string gate_out_;  // handshake frames not yet written
  SessionOptions options_;
  FrameDecoder decoder_;
  Outbox outbox_;
  asio::steady_timer wake_writer_;  // never expires; cancel_one() wakes the writer
  asio::steady_timer wake_reader_;  // never expires; cancel_one() resumes reading
  asio::steady_timer read_stall_;
  asio::steady_timer write_stall_;
  asio::steady_timer hello_;
  asio::steady_timer linger_;
  asio::steady_timer tick_;
  std::string peer_;
  std::size_t read_chunk_;
  std::size_t writing_ = 0;  // bytes taken from the outbox, not yet written
  std::uint64_t frames_written_ = 0;
  std::uint64_t bytes_in_ = 0;        // read so far (ticks compare it)
  std::uint64_t bytes_out_ = 0;       // written so far
  std::uint64_t ticks_seen_in_ = 0;   // bytes_in_ at the last tick
  std::uint64_t ticks_seen_out_ = 0;  // bytes_out_ at the last tick
  unsigned silent_ticks_ = 0;         // ticks in a row with nothing read
  std::uint64_t ticks_sent_ = 0;
  int loops_ = 0;  // read and write loops running
  bool loopback_ = false;
  bool established_ = false;
  bool writer_idle_ = false;
  bool reading_ = false;        // inside async_read_some
  bool held_ = false;           // on_readable() said wait
  bool pending_input_ = false;  // bytes committed since the handler last saw them
  bool closing_ = false;        // no more reads; the writer finishes the queue
  bool writes_ended_ = false;   // end_writes() or a failed write: nothing more is written
  std::string write_error_;     // why a write failed (the session's end reason)
  bool stopped_ = false;        // socket closed
  bool closed_called_ = false;
};

}  // namespace distflow
