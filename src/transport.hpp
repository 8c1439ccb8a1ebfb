#pragma once

// Node-to-node transport (PROTOCOL.md §3): the listener with its inbound
// sessions, which parse envelopes into the mailbox (or an inline handler), and
// the outbound links, one per destination node (link.hpp). Everything here runs
// on the node's I/O thread except what link.hpp says application threads may do.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include "link.hpp"
#include "log_throttle.hpp"
#include "mailbox.hpp"
#include "messages.hpp"
#include "metrics.hpp"
#include "pmd_protocol.hpp"

namespace distflow {

class Session;

/// Runs on the I/O thread for each message parsed, in the transport's read loop,
/// instead of the mailbox push (NodeRuntime::on_message_inline). It must not throw.
using InlineHandler = std::function<void(const Envelope& message)>;

/// Counters read by other threads (NodeRuntime::stats()).
struct TransportCounters {
  std::atomic<std::uint64_t> received{0};        ///< frames parsed from peers
  std::atomic<std::uint64_t> bad_frames{0};      ///< malformed bodies, oversize frames
  std::atomic<std::uint64_t> sent{0};            ///< messages written to sockets
  std::atomic<std::uint64_t> send_failures{0};   ///< messages that will never be written
  std::atomic<std::uint32_t> inbound_links{0};   ///< inbound sessions open now
  std::atomic<std::uint32_t> outbound_links{0};  ///< links held now (one per destination)
  std::atomic<std::uint64_t> bytes_received{0};  ///< frames' bytes read from peers
  std::atomic<std::uint64_t> bytes_sent{0};      ///< bytes written to peers
};

/// The payload of a stats request (a request with exactly this payload): the node
/// answers it itself, with its counters; no handler sees it (PROTOCOL.md §3.6).
inline constexpr std::string_view kStatsRequest = R"({"type":"$distflow.stats"})";

struct TransportConfig {
  std::string self_id;
  std::string self_alias;
  std::size_t max_frame_bytes = 16u << 20;
  std::size_t max_outbox_bytes = kDefaultOutboxBytes;  ///< per destination
  std::size_t max_inbound_connections = 1024;          ///< more are closed on accept
  /// Inbound connections from one non-loopback address at once; more are closed.
  std::size_t max_connections_per_address = 64;
  /// An inbound peer that makes no progress inside a frame, or an outbound one that
  /// takes no bytes, this long is closed (0: never). Not counted while the node
  /// itself stops reading (`block`, mailbox full).
  std::chrono::milliseconds stall_timeout{30000};
  /// An inbound connection that sends no valid frame this long after it was
  /// accepted is closed (0: never): idle sockets do not hold slots for ever.
  std::chrono::milliseconds hello_timeout{10000};
  std::chrono::milliseconds connect_timeout{5000};
  /// Cookie and TLS for every connection, inbound and outbound (none: plain TCP,
  /// the original's bytes); owned by the node.
  const class Credentials* credentials = nullptr;
  /// Authenticated connections tick at this interval (an idle link carries a tick;
  /// 4 silent intervals: the peer is down). 0: no ticks.
  std::chrono::milliseconds tick_interval{1000};
};

/// Transport::defer_writes() for a scope; write_deferred() at its end, even when
/// what ran inside threw (a write error there is logged, never thrown).
class DeferredWrites {
 public:
  explicit DeferredWrites(class Transport& transport);
  ~DeferredWrites();
  DeferredWrites(const DeferredWrites&) = delete;
  DeferredWrites& operator=(const DeferredWrites&) = delete;

 private:
  Transport& transport_;
};

class Transport final : private LinkOwner {
 public:
  Transport(asio::io_context& io, TransportConfig config, Mailbox<Envelope>& mailbox,
            TransportCounters& counters);
  ~Transport() override;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  /// Binds `host:port` (0: ephemeral; with `last_port`, the first free port of
  /// port..last_port) and starts accepting; returns the bound port. Throws
  /// distflow::Error when the address cannot be bound.
  std::uint16_t listen(const std::string& host, std::uint16_t port, std::uint16_t last_port = 0);

  /// The one link to `node` (by node id; dialled on first use, replaced when the
  /// node registered elsewhere).
  std::shared_ptr<Link> link(const NodeInfo& node);
  /// Fails the link to `node_id`, if there is one (its node left): its queue fails at once.
  void drop_link(const std::string& node_id, const std::string& why);
  /// Wakes senders waiting for room on any link; they fail with `why`. Any thread.
  void interrupt_waits(const std::string& why);

  /// From now on, messages go to `handler` on the I/O thread instead of the mailbox.
  void set_inline_handler(InlineHandler handler);
  /// Between defer_writes() and the matching write_deferred() (nestable), links
  /// given frames on the I/O thread are not woken: write_deferred() moves their
  /// frames into their sessions and writes them directly, one non-blocking send per
  /// link. A read batch of inline handlers and a drain of application sends are
  /// such brackets.
  void defer_writes() { ++defer_depth_; }
  void write_deferred();

  /// Runs after the link to `node_id` failed, with why (the caller forgets its routes).
  void on_connection_failed(
      std::function<void(const std::string& node_id, const std::string& why)> hook);
  /// Takes every received reply (Envelope::is_reply(), PROTOCOL.md §3.5) instead of
  /// the mailbox and the handlers: the calls in flight match them.
  void on_reply(std::function<void(const Envelope& reply)> hook) { reply_hook_ = std::move(hook); }
  /// Takes every stats request (kStatsRequest) instead of the mailbox and the handlers.
  void on_stats_request(std::function<void(const Envelope& request)> hook) {
    stats_hook_ = std::move(hook);
  }
  /// The outbound links now (the I/O thread).
  std::vector<OutboundLinkStats> links() const;
  /// Runs whenever queued messages were written or failed (drives flush()).
  void on_progress(std::function<void()> hook);
  /// Runs when messages are dropped by the mailbox's policy; `reason` names the limit.
  void on_dropped(std::function<void(std::uint64_t n, std::string_view reason)> hook);
  /// Messages queued on links and not yet written or failed.
  std::uint64_t unwritten() const;
  /// Bytes written on links that tick and not yet acknowledged by the peers' hosts.
  std::size_t unacknowledged() const;

  /// Closes the listener and every connection, inbound and outbound; unwritten
  /// messages fail. Idempotent.
  void stop();

 private:
  class Inbound;
  struct Listener;

  // LinkOwner
  void link_progress(std::uint64_t written, std::uint64_t failed, std::uint64_t bytes) override;
  void link_failed(const Link& link, std::error_code ec, const std::string& message,
                   std::uint64_t lost) override;
  void link_ready(const std::shared_ptr<Link>& link) override;
  void link_wrote_direct(std::uint64_t frames, std::uint64_t bytes) override;
  void link_connected(const Link& link) override;

  asio::awaitable<void> accept_loop();
  void wait_for_space(const std::shared_ptr<Session>& session);
  void note_drops(std::uint64_t dropped);
  void remove(const Session& session);

  asio::io_context& io_;
  TransportConfig config_;
  LinkConfig link_config_;
  Mailbox<Envelope>& mailbox_;
  TransportCounters& counters_;
  EnvelopeParser parser_;  // one per thread: the I/O thread's
  std::unique_ptr<Listener> listener_;
  std::unordered_map<std::string, std::shared_ptr<Link>> links_;
  std::vector<std::shared_ptr<Session>> inbound_;
  std::unordered_map<std::string, std::size_t> per_address_;  // non-loopback inbound counts
  std::vector<std::weak_ptr<Session>> blocked_;               // readers waiting for mailbox room
  InlineHandler inline_handler_;
  int defer_depth_ = 0;
  std::vector<std::shared_ptr<Link>> deferred_;  // links given frames inside the bracket
  bool space_requested_ = false;
  bool stopped_ = false;
  bool ticks_ = false;  // authenticated links tick (their tick frames are not messages)
  std::function<void(const std::string&, const std::string&)> failed_hook_;
  std::function<void(const Envelope&)> reply_hook_;
  std::function<void(const Envelope&)> stats_hook_;
  std::function<void()> progress_hook_;
  std::function<void(std::uint64_t, std::string_view)> dropped_hook_;
  std::string mailbox_full_;                                // the reason given for mailbox drops
  PeerLogThrottle handshake_log_{std::chrono::seconds(1)};  // failures, per peer address
  // Failed links per destination since its last working one: redials back off.
  std::unordered_map<std::string, unsigned> dial_failures_;
  std::minstd_rand jitter_{std::random_device{}()};
};

}  // namespace distflow
