#pragma once

// The node: one per process (PROTOCOL.md §3). It owns an I/O thread (one
// io_context: listener, peer connections, the PMD link) and a mailbox that
// hands received messages to the application.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "calls.hpp"
#include "framing.hpp"
#include "mailbox.hpp"
#include "messages.hpp"
#include "metrics.hpp"
#include "pmd_protocol.hpp"
#include "security_options.hpp"

namespace distflow {

struct NodeOptions {
  std::string alias;           ///< optional; unique per PMD
  std::string node_id;         ///< empty: generated (alias-based, unique)
  PmdEndpoint pmd;             ///< the PMD to register with
  bool auto_start_pmd = true;  ///< ensure_pmd() at start and when lost
  std::string executable;      ///< binary re-exec'd as the PMD; empty: self
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;  ///< 0: ephemeral
  /// With a listen_port: the last port of the range listen_port..listen_port_last to
  /// try (0: listen_port alone).
  std::uint16_t listen_port_last = 0;
  std::string advertise_host;  ///< host registered with the PMD; empty: listen_host
  std::size_t mailbox_size = 1000;
  OverflowPolicy overflow = OverflowPolicy::drop_newest;
  std::size_t max_frame_bytes = kDefaultNodeFrameLimit;
  std::size_t max_connections = 1024;  ///< inbound peer connections at once; more are closed
  /// An inbound peer that stops inside a frame for this long is closed (0: never).
  std::chrono::milliseconds stall_timeout{30000};
  /// Unwritten bytes per destination: beyond them send() to it waits (up to 5 s, not
  /// at all on the I/O thread), then fails. A larger message passes an empty queue.
  std::size_t max_outbox_bytes = kDefaultOutboxBytes;
  /// From the I/O thread (a busy message handler never delays it), the first one at
  /// registration: with the PMD's default 2 s TTL a frozen node leaves within 2.5 s.
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds start_timeout{5000};
  /// With a cookie or TLS, links to other nodes carry a tick when idle and are
  /// dropped after 4 silent intervals: a partition or a frozen peer is found
  /// without traffic (Erlang's net_ticktime). 0: no ticks.
  std::chrono::milliseconds tick_interval{1000};
  /// send() checks that each payload is one valid JSON value (grammar and UTF-8) and
  /// fails the message otherwise. Off: the caller guarantees it (e.g. already validated).
  bool validate_payloads = true;
  /// Cookie and TLS for every connection to and from other nodes, and to other
  /// hosts' PMDs (issue 12). Listening beyond loopback without either is refused
  /// unless `insecure` is set.
  SecurityOptions security;
  /// Serve Prometheus metrics (HTTP GET /metrics, node_metrics_page()) there, from the
  /// I/O thread; beyond loopback the exposure rule applies (with `security`). None: off.
  std::optional<MetricsEndpoint> metrics;
};

/// Called with a failed send: what failed and why ("unknown target 'x': Node not found").
using SendCallback = std::function<void(std::error_code, const std::string& message)>;
using PeerHandler = std::function<void(const NodeInfo& peer, std::string_view reason)>;
using MessageHandler = std::function<void(const Envelope& message)>;
/// A monitored target is gone: why ("'kv' left (socket_closed)", "connection lost to 'kv' ...").
using MonitorHandler = std::function<void(std::string_view reason)>;

struct NodeStats {
  MailboxStats mailbox;
  std::uint64_t received = 0;    ///< frames parsed from peers
  std::uint64_t bad_frames = 0;  ///< malformed bodies from peers (logged at info)
  std::uint64_t sent = 0;        ///< messages written to sockets
  std::uint64_t send_failures = 0;
  std::uint64_t handler_errors = 0;  ///< exceptions thrown by the message handler
  /// Every message dropped so far, by reason (mailbox policy, full outbound queue,
  /// count_dropped()), in first-seen order; `dropped` is their sum.
  std::vector<std::pair<std::string, std::uint64_t>> drops;
  std::uint64_t dropped = 0;
  std::size_t inbound_links = 0;     ///< peers connected to us now
  std::size_t outbound_links = 0;    ///< destinations we hold a link to now
  std::uint64_t bytes_received = 0;  ///< frame bytes read from peers
  std::uint64_t bytes_sent = 0;      ///< bytes written to peers
  /// The links to destinations now, with their queues (filled on the I/O thread;
  /// from another thread, stats() asks it and waits up to 1 s).
  std::vector<OutboundLinkStats> links;
  std::size_t calls_in_flight = 0;  ///< call()s waiting for their reply
  std::uint64_t call_timeouts = 0;  ///< call()s that ended at their deadline
  std::uint64_t late_replies = 0;   ///< replies no call waited for (after a timeout): dropped
  std::chrono::microseconds uptime{0};
};

/// Why `name` cannot be a node alias or id: empty, longer than 128 bytes, not
/// UTF-8, or holding control characters. Empty when it can.
std::string invalid_name_reason(std::string_view name);

class NodeRuntime {
 public:
  /// Starts the node: ensures the PMD, listens, registers, watches, heartbeats.
  /// Throws distflow::Error on failure, or if another NodeRuntime is alive in this process.
  static std::unique_ptr<NodeRuntime> start(NodeOptions options);
  virtual ~NodeRuntime() = default;

  virtual const std::string& node_id() const = 0;
  virtual const std::string& alias() const = 0;
  virtual std::uint16_t port() const = 0;
  /// The port of the metrics endpoint (NodeOptions::metrics); 0 without one.
  virtual std::uint16_t metrics_port() const = 0;

  /// Runs `handler` for every message on a dispatcher thread that drains the mailbox.
  /// Exceptions from it are logged and counted; delivery goes on. Set once.
  virtual void on_message(MessageHandler handler) = 0;
  /// Opt-in for quick handlers: runs `handler` on the node's I/O thread, straight from
  /// the transport's read loop, with no mailbox and no thread hand-off (the lowest
  /// latency). It must not block (every connection and timer of the node waits while
  /// it runs) and should be short. Exceptions from it are logged and counted
  /// (handler_errors); delivery goes on. The mailbox's size, overflow policy and
  /// stats do not apply: nothing is queued, and a slow handler slows down the reads
  /// (TCP flow control pushes back on the senders). send() from inside it queues
  /// without a wake-up; the frames are written once the current read is handled.
  /// Messages received before it is installed are handed to it first, in order.
  /// Set once, and not together with on_message() or receive().
  virtual void on_message_inline(MessageHandler handler) = 0;
  /// Without a handler: the next message, waiting up to `timeout`.
  virtual std::optional<Envelope> receive(std::chrono::milliseconds timeout) = 0;
  /// Without a handler: appends up to `max` messages to `out`, waiting up to `timeout`
  /// for the first. Returns how many; 0 on timeout, or once shut down and drained.
  virtual std::size_t receive_batch(std::vector<Envelope>& out, std::size_t max,
                                    std::chrono::milliseconds timeout) = 0;
  /// Counts `n` received messages the application could not deliver, with a reason
  /// ("output closed"): they appear in stats().drops and in the node's drop report
  /// (one log line a second at most).
  virtual void count_dropped(std::uint64_t n, std::string_view reason) = 0;

  /// Queues `payload_json` (valid JSON text, sent verbatim) for `target` (alias or
  /// node id). Returns at once (it waits only when far ahead of the sockets); a failure
  /// is logged, counted, and given to `on_error`, which runs on the I/O thread.
  virtual void send(std::string_view target, std::string_view payload_json,
                    SendCallback on_error = {}) = 0;
  /// Like send(), but waits until the message is written to the socket; throws
  /// distflow::Error on failure (unknown target, connection refused...).
  virtual void send_sync(std::string_view target, std::string_view payload_json,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) = 0;
  /// Sends waiting for room (a destination far behind) fail at once with `why`, and
  /// later ones fail instead of waiting: the node is about to stop. Any thread.
  virtual void interrupt_sends(std::string_view why) = 0;
  /// Waits until every queued outbound message is written (or failed).
  virtual void flush(std::chrono::milliseconds timeout = std::chrono::seconds(5)) = 0;

  // ---- request/reply (PROTOCOL.md §3.5) -----------------------------------------
  /// Sends `payload_json` to `target` as a request (with a `ref`) and returns its
  /// reply. Many calls may be in flight at once, to one target or many. The future
  /// throws distflow::Error when no reply comes within `timeout` ("call to 'kv': no
  /// reply within 5000 ms"), and at once when the request cannot be sent (unknown
  /// target...), the target leaves its PMD, its link is lost, or the node stops. A
  /// reply that arrives after its call ended is counted (late_replies) and dropped.
  virtual std::future<Envelope> call(std::string_view target, std::string_view payload_json,
                                     std::chrono::milliseconds timeout) = 0;
  /// The callback variant: `done` runs exactly once, on the I/O thread (or in this
  /// call, when the node is already shut down). Keep it short.
  virtual void call(std::string_view target, std::string_view payload_json,
                    std::chrono::milliseconds timeout, ReplyCallback done) = 0;
  /// Answers `request` (Envelope::is_request()): `payload_json` goes to its sender
  /// (Envelope::reply_address()) with `inReplyTo` set to its ref. Like send():
  /// failures are given to `on_error`. Throws distflow::Error if it is not a request.
  virtual void reply(const Envelope& request, std::string_view payload_json,
                     SendCallback on_error = {}) = 0;
  /// The same by parts: the sender's reply address and the request's ref (its text).
  virtual void reply_to(std::string_view to, std::string_view ref, std::string_view payload_json,
                        SendCallback on_error = {}) = 0;
  /// Runs `handler` once, on the I/O thread, when `target` (alias or node id on this
  /// PMD, or alias@host) is gone: it leaves its PMD, or the link to it is lost. A
  /// target that is not registered fires at once ("not registered"). An alias@host
  /// target is watched on that host's PMD (its own connection; losing it fires too).
  /// Returns an id for demonitor().
  virtual std::uint64_t monitor(std::string_view target, MonitorHandler handler) = 0;
  /// The monitor will not fire (no-op if it fired already).
  virtual void demonitor(std::uint64_t id) = 0;

  /// The registered peers, this node excluded.
  virtual std::vector<NodeInfo> discover() = 0;
  /// Peer events, run on the I/O thread: keep them short. The handler is in
  /// place when the call returns: a peer that joins after it and is not yet in
  /// discover()'s list reaches the handler (install it first, then discover()).
  virtual void on_peer_join(PeerHandler handler) = 0;
  virtual void on_peer_leave(PeerHandler handler) = 0;

  virtual NodeStats stats() const = 0;

  /// Unregisters, closes every connection, stops the threads. Idempotent; returns
  /// promptly even while peers keep their connections open.
  virtual void shutdown() = 0;
};

}  // namespace distflow
