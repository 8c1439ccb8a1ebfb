#pragma once

// Node-to-node transport (PROTOCOL.md §3): the listener with its inbound sessions
// and one outbound connection per destination. Everything here belongs to the
// node's I/O thread; no member is called from any other thread.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include "mailbox.hpp"
#include "messages.hpp"
#include "pmd_protocol.hpp"

namespace distflow {

/// Runs on the I/O thread for each message parsed, in the transport's read loop,
/// instead of the mailbox push (NodeRuntime::on_message_inline). It must not throw.
using InlineHandler = std::function<void(const Envelope& message)>;

/// Outcome of one queued message: empty error code once written to the socket.
using SendCompletion = std::function<void(std::error_code, const std::string& message)>;

/// Counters shared with the API threads (read by stats()).
struct TransportCounters {
  std::atomic<std::uint64_t> received{0};       ///< frames parsed from peers
  std::atomic<std::uint64_t> bad_frames{0};     ///< malformed bodies, oversize frames
  std::atomic<std::uint64_t> sent{0};           ///< messages written to sockets
  std::atomic<std::uint64_t> send_failures{0};  ///< messages that will never be written
};

struct TransportConfig {
  std::string self_id;
  std::string self_alias;
  std::size_t max_frame_bytes = 16u << 20;
  std::size_t max_outbox_bytes = 64u << 20;    ///< per destination
  std::size_t max_inbound_connections = 1024;  ///< more are closed on accept
  /// An inbound peer that makes no progress inside a frame for this long is closed
  /// (0: never). Not counted while the node itself stops reading (`block`, mailbox full).
  std::chrono::milliseconds stall_timeout{30000};
};

class Outbound;
class InboundSession;
class Transport;

/// Transport::defer_writes() for a scope; write_deferred() at its end, even when
/// what ran inside threw (a write error there is logged, never thrown).
class DeferredWrites {
 public:
  explicit DeferredWrites(Transport& transport);
  ~DeferredWrites();
  DeferredWrites(const DeferredWrites&) = delete;
  DeferredWrites& operator=(const DeferredWrites&) = delete;

 private:
  Transport& transport_;
};

class Transport {
 public:
  Transport(asio::io_context& io, TransportConfig config, Mailbox<Envelope>& mailbox,
            TransportCounters& counters);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  /// Binds `host:port` (0: ephemeral) and starts accepting; returns the bound port.
  /// Throws distflow::Error when the address cannot be bound.
  std::uint16_t listen(const std::string& host, std::uint16_t port);

  /// The one connection to `node` (looked up by node id; dialled on first use).
  std::shared_ptr<Outbound> connection(const NodeInfo& node);
  /// Queues one message on `connection`, FIFO. Failures (queue full, connection
  /// refused or broken) are counted, logged, and given to `done`.
  void enqueue(Outbound& connection, std::string_view payload_json, std::int64_t timestamp_ms,
               SendCompletion done);

  /// From now on, messages go to `handler` on the I/O thread instead of the mailbox.
  void set_inline_handler(InlineHandler handler);
  /// Between defer_writes() and the matching write_deferred() (nestable), messages
  /// enqueued on an idle connection are not handed to its writer: write_deferred()
  /// writes them to the socket directly, one non-blocking send per connection (the
  /// rest, if the socket takes less, goes to the writer). A read batch of inline
  /// handlers and a drain of application sends are such brackets.
  void defer_writes() { ++defer_depth_; }
  void write_deferred();

  /// Runs after a connection to `node_id` failed (the caller invalidates its caches).
  void on_connection_failed(std::function<void(const std::string& node_id)> hook);
  /// Runs whenever queued messages were written or failed (drives flush()).
  void on_progress(std::function<void()> hook);
  /// Runs when messages are dropped: by the mailbox's policy (received), or because
  /// a destination's queue is full (sent). `reason` names the limit.
  void on_dropped(std::function<void(std::uint64_t n, std::string_view reason)> hook);
  /// Messages queued on connections and not yet written or failed.
  std::uint64_t unwritten() const { return unwritten_; }
  /// Their bytes (the backlog send() waits on).
  std::size_t unwritten_bytes() const { return unwritten_bytes_; }

  /// Closes the listener and every connection, inbound and outbound; unwritten
  /// messages fail. Idempotent.
  void stop();

 private:
  friend class Outbound;
  friend class InboundSession;

  asio::io_context& io_;
  TransportConfig config_;
  Mailbox<Envelope>& mailbox_;
  TransportCounters& counters_;
  EnvelopeParser parser_;  // one per thread: the I/O thread's
  struct Listener;
  std::unique_ptr<Listener> listener_;
  std::unordered_map<std::string, std::shared_ptr<Outbound>> outbound_;
  std::vector<std::shared_ptr<InboundSession>> inbound_;
  std::vector<std::weak_ptr<InboundSession>> blocked_;  // readers waiting for mailbox room
  InlineHandler inline_handler_;
  int defer_depth_ = 0;
  std::vector<std::shared_ptr<Outbound>> deferred_;  // idle connections with frames queued
  bool space_requested_ = false;
  bool stopped_ = false;
  std::uint64_t unwritten_ = 0;
  std::size_t unwritten_bytes_ = 0;
  std::function<void(const std::string&)> failed_hook_;
  std::function<void()> progress_hook_;
  std::function<void(std::uint64_t, std::string_view)> dropped_hook_;
  std::string mailbox_full_;  // the reason given for mailbox drops

  asio::awaitable<void> accept_loop();
  void wait_for_space(const std::shared_ptr<InboundSession>& session);
  void note_drops(std::uint64_t dropped);
  void remove(const InboundSession& session);
  void remove(const Outbound& connection);
};

}  // namespace distflow
