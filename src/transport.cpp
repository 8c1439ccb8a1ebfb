#include "transport.hpp"

#include <algorithm>
#include <span>
#include <utility>

#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "credentials.hpp"
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

}  // namespace

// ---- inbound: one per accepted connection ------------------------------------

class Transport::Inbound final : public SessionHandler {
 public:
  explicit Inbound(Transport& transport) : transport_(transport) { batch_.reserve(kPushBatch); }

  bool on_readable(Session& session) override {
    // What a full mailbox held back goes first, in order.
    if (!batch_.empty() && !push_batch())
      return hold(session);
    std::error_code frame_ec;
    if (transport_.inline_handler_ && batch_.empty())
      deliver_inline(session, frame_ec);
    while (!session.closing()) {
      auto body = session.decoder().next(frame_ec);
      if (!body)
        break;
      Envelope& envelope = batch_.emplace_back();
      if (!parse(session, *body, envelope)) {
        batch_.pop_back();
        continue;
      }
      session.established();
      if (batch_.size() == kPushBatch && !push_batch())
        return hold(session);
    }
    if (!batch_.empty() && !push_batch())
      return hold(session);
    if (frame_ec) {
      transport_.counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
      session.stop("protocol error: " + describe_frame_error(frame_ec, session.decoder()));
    }
    return true;
  }

  void on_closed(Session& session, std::string_view reason) override {
    if (reason.starts_with("handshake refused") || reason.starts_with("TLS handshake failed")) {
      auto& log = transport_.handshake_log_;
      log.counted();
      if (std::uint64_t more = 0;
          log.allow(session.peer_host(), std::chrono::steady_clock::now(), more)) {
        spdlog::warn(
            "inbound connection from {}: {}; nothing delivered ({} more from that "
            "address since the last report)",
            session.peer(), reason, more);
      }
    } else if (reason.starts_with("stalled") || reason.starts_with("nothing valid") ||
               reason.starts_with("protocol error") || reason.starts_with("no tick")) {
      spdlog::info("inbound connection from {}: {}; closed", session.peer(), reason);
    } else {
      spdlog::debug("inbound connection from {} closed: {}", session.peer(), reason);
    }
    batch_.clear();
    transport_.remove(session);
  }

 private:
  // `block` found the mailbox full: read no more from this peer until there is
  // room (TCP slows it down), nothing dropped.
  bool hold(Session& session) {
    if (transport_.mailbox_.closed()) {
      session.stop("node stopping");
      return true;
    }
    transport_.wait_for_space(session.shared_from_this());
    return false;
  }

  // Every complete frame of this read to the inline handler, in order; their
  // replies are written once the whole read is handled.
  void deliver_inline(Session& session, std::error_code& frame_ec) {
    auto& counters = transport_.counters_;
    DeferredWrites writes(transport_);
    while (!session.closing()) {
      auto body = session.decoder().next(frame_ec);
      if (!body)
        break;
      Envelope envelope;
      if (!parse(session, *body, envelope))
        continue;
      session.established();
      counters.received.fetch_add(1, std::memory_order_relaxed);
      transport_.inline_handler_(envelope);
    }
  }

  // One message; false (counted, logged) for a malformed one, or one whose `from`
  // is not the name its sender proved in the handshake (no forged senders).
  bool parse(Session& session, std::string_view body, Envelope& envelope) {
    if (body == kTickFrame && transport_.ticks_)
      return false;  // an idle authenticated link's tick: it only says the peer lives
    if (!origin_known_) {
      // A peer on another host is named with its address, so that a reply finds it.
      origin_ = session.loopback() ? std::string() : session.peer_host();
      proven_ = session.authenticated_peer();
      origin_known_ = true;
    }
    if (transport_.parser_.parse(body, envelope, origin_, &why_)) {
      transport_.counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("bad message from {}: {}", session.peer(), why_);
      return false;
    }
    if (!proven_.empty() && envelope.from() != proven_) {
      transport_.counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("message from {} dropped: its 'from' is not '{}', the name it proved",
                   session.peer(), proven_);
      return false;
    }
    auto& counters = transport_.counters_;  // the I/O thread is the only writer
    counters.bytes_received.store(
        counters.bytes_received.load(std::memory_order_relaxed) + body.size() + kFrameHeaderBytes,
        std::memory_order_relaxed);
    if (envelope.is_request() && envelope.payload() == kStatsRequest && transport_.stats_hook_) {
      session.established();
      transport_.stats_hook_(envelope);
      return false;
    }
    if (envelope.is_reply() && transport_.reply_hook_) {
      // An answer to one of our calls: to the call table, not the application.
      session.established();
      transport_.counters_.received.fetch_add(1, std::memory_order_relaxed);
      transport_.reply_hook_(envelope);
      return false;
    }
    return true;
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
    } else {
      const bool may_drop = mailbox.policy() != OverflowPolicy::block;
      const std::uint64_t dropped_before = may_drop ? mailbox.stats().dropped : 0;
      pushed_ += mailbox.try_push_batch(std::span<Envelope>(batch_).subspan(pushed_));
      if (may_drop)
        transport_.note_drops(mailbox.stats().dropped - dropped_before);
      if (pushed_ < batch_.size())
        return false;
    }
    batch_.clear();
    pushed_ = 0;
    counted_ = false;
    return true;
  }

  Transport& transport_;
  std::vector<Envelope> batch_;  // parsed, not yet taken by the mailbox from pushed_ on
  std::size_t pushed_ = 0;
  bool counted_ = false;  // batch_ is in counters_.received
  std::string why_;
  std::string origin_;  // the peer's host, when it is not this one
  std::string proven_;  // the name the peer proved (cookie handshake), if any
  bool origin_known_ = false;
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
      listener_(std::make_unique<Listener>(io)) {
  link_config_.self_id = config_.self_id;
  link_config_.self_alias = config_.self_alias;
  link_config_.max_queue_bytes = config_.max_outbox_bytes;
  link_config_.connect_timeout = config_.connect_timeout;
  link_config_.stall_timeout = config_.stall_timeout;
  link_config_.credentials = config_.credentials;
  link_config_.tick_interval = config_.tick_interval;
  ticks_ = config_.credentials != nullptr && config_.credentials->authenticated() &&
           config_.tick_interval.count() > 0;
}

Transport::~Transport() = default;

std::uint16_t Transport::listen(const std::string& host, std::uint16_t port,
                                std::uint16_t last_port) {
  if (last_port > port) {
    // A range (firewalls): the first free port of it.
    for (std::uint32_t candidate = port; candidate <= last_port; ++candidate) {
      try {
        return listen(host, static_cast<std::uint16_t>(candidate), 0);
      } catch (const Error&) {
        listener_ = std::make_unique<Listener>(io_);  // that one was taken: the next
      }
    }
    throw Error("cannot listen on " + host + ": no free port in " + std::to_string(port) + "-" +
                std::to_string(last_port));
  }
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
  SessionOptions options;
  options.max_frame_bytes = config_.max_frame_bytes;
  options.stall_timeout = config_.stall_timeout;
  options.hello_timeout = config_.hello_timeout;
  options.read_chunk = kReadChunk;
  options.max_read_chunk = kReadChunk;
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
    // With a cookie or TLS every peer proves itself before anything is delivered.
    TlsSide tls;
    std::unique_ptr<SessionGate> gate;
    SessionOptions session_options = options;
    if (const Credentials* credentials = config_.credentials) {
      tls = credentials->accept_tls();
      gate = credentials->accept_gate(config_.self_id);
      if (credentials->authenticated()) {
        session_options.hello_timeout = kHandshakeTimeout;
        session_options.tick_interval = config_.tick_interval;
        session_options.tick_frame = std::string(kTickFrame);
      }
    }
    auto session = std::make_shared<Session>(std::move(socket), std::make_shared<Inbound>(*this),
                                             session_options, tls, std::move(gate));
    // Refused in words (PROTOCOL.md §3.2): our senders report the reason.
    if (inbound_.size() >= config_.max_inbound_connections) {
      spdlog::info("refusing inbound connection: {} open (limit)", inbound_.size());
      session->refuse(R"({"error":"too many connections: )" + std::to_string(inbound_.size()) +
                      R"x( open (--max-connections)"})x");
      continue;
    }
    if (!session->loopback()) {
      std::size_t& count = per_address_[session->peer_host()];
      if (count >= config_.max_connections_per_address) {
        spdlog::info("refusing inbound connection from {}: {} open from that address (limit)",
                     session->peer(), count);
        session->refuse(R"({"error":"too many connections from one address: )" +
                        std::to_string(count) + R"( open"})");
        continue;
      }
      ++count;
    }
    inbound_.push_back(session);
    counters_.inbound_links.store(static_cast<std::uint32_t>(inbound_.size()));
    session->start();
  }
}

std::shared_ptr<Link> Transport::link(const NodeInfo& node) {
  auto it = links_.find(node.node_id);
  if (it != links_.end()) {
    const NodeInfo& known = it->second->node();
    if (known.host == node.host && known.port == node.port && !it->second->failed())
      return it->second;
    // Re-registered elsewhere: the old address is dead.
    auto stale = it->second;
    stale->fail(make_error_code(errc::closed), "replacing connection to " + stale->describe());
  }
  auto link = std::make_shared<Link>(io_, node, link_config_, static_cast<LinkOwner&>(*this));
  links_[node.node_id] = link;
  counters_.outbound_links.store(static_cast<std::uint32_t>(links_.size()));
  if (stopped_) {
    link->fail(make_error_code(errc::closed),
               "node is shutting down; no connection to " + link->describe());
    return link;
  }
  // A destination whose last links failed is redialled with backoff and jitter:
  // 100 ms doubling to 5 s, +-25% (a partition or a refusing peer is not hammered).
  std::chrono::milliseconds delay{0};
  if (auto failures = dial_failures_.find(node.node_id); failures != dial_failures_.end()) {
    const auto base = std::chrono::milliseconds(
        std::min<long>(100L << std::min(failures->second - 1, 6u), 5000L));
    std::uniform_int_distribution<long> spread(-base.count() / 4, base.count() / 4);
    delay = base + std::chrono::milliseconds(spread(jitter_));
  }
  link->start(delay);
  return link;
}

void Transport::drop_link(const std::string& node_id, const std::string& why) {
  auto it = links_.find(node_id);
  if (it == links_.end())
    return;
  auto link = it->second;
  link->fail(make_error_code(errc::unknown_node),
             "cannot send to " + link->describe() + ": " + why);
}

void Transport::interrupt_waits(const std::string& why) {
  asio::post(io_, [this, why] {
    for (auto& [id, link] : links_)
      link->interrupt_waits(why);
  });
}

void Transport::link_ready(const std::shared_ptr<Link>& link) {
  if (!io_.get_executor().running_in_this_thread()) {
    // One frame (a request, a ping) is written from the posted handler itself:
    // waking the session's writer would cost two more handlers and reactor polls.
    // A run of them goes to the writer, which writes it with what follows.
    asio::post(io_, [link] { link->drain(true, 1); });
  } else if (defer_depth_ > 0) {
    deferred_.push_back(link);
  } else {
    link->drain(false);  // the writer takes everything queued by this handler at once
  }
}

void Transport::link_progress(std::uint64_t written, std::uint64_t failed, std::uint64_t bytes) {
  if (written > 0)
    counters_.sent.fetch_add(written, std::memory_order_relaxed);
  if (bytes > 0)
    counters_.bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  if (failed > 0)
    counters_.send_failures.fetch_add(failed, std::memory_order_relaxed);
  if (progress_hook_)
    progress_hook_();
}

void Transport::link_wrote_direct(std::uint64_t frames, std::uint64_t bytes) {
  counters_.sent.fetch_add(frames, std::memory_order_relaxed);
  counters_.bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
}

void Transport::link_connected(const Link& link) {
  dial_failures_.erase(link.node().node_id);
}

void Transport::link_failed(const Link& link, std::error_code ec, const std::string& message,
                            std::uint64_t lost) {
  if (!stopped_ && ec != errc::unknown_node) {
    auto& failures = dial_failures_[link.node().node_id];
    failures = std::min(failures + 1, 16u);
  }
  if (message.find("handshake") != std::string::npos) {
    // A wrong cookie or certificate fails every attempt: once a second per address.
    handshake_log_.counted();
    if (std::uint64_t more = 0;
        handshake_log_.allow(link.node().host, std::chrono::steady_clock::now(), more)) {
      spdlog::warn("{} ({} more from that address since the last report)", message, more);
    }
  } else if (lost > 0 || message.find("no tick") != std::string::npos) {
    spdlog::warn("{}", message);
  } else if (ec == errc::closed || ec == errc::unknown_node) {
    spdlog::debug("{}", message);  // shut down, or the peer left with nothing queued
  } else {
    spdlog::info("{}", message);
  }
  const std::string node_id = link.node().node_id;
  auto it = links_.find(node_id);
  if (it != links_.end() && it->second->failed())
    links_.erase(it);
  counters_.outbound_links.store(static_cast<std::uint32_t>(links_.size()));
  if (failed_hook_)
    failed_hook_(node_id, message);
}

std::vector<OutboundLinkStats> Transport::links() const {
  std::vector<OutboundLinkStats> out;
  for (const auto& [id, link] : links_) {
    const NodeInfo& node = link->node();
    out.push_back({node.node_id, node.alias, node.host + ":" + std::to_string(node.port),
                   link->pending_frames(), link->unwritten_bytes()});
  }
  return out;
}

std::uint64_t Transport::unwritten() const {
  std::uint64_t frames = 0;
  for (const auto& [id, link] : links_)
    frames += link->pending_frames();
  return frames;
}

std::size_t Transport::unacknowledged() const {
  std::size_t bytes = 0;
  for (const auto& [id, link] : links_)
    bytes += link->unacknowledged_bytes();
  return bytes;
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
  // A write can fail its link, whose hooks may queue more: take the list first.
  while (!deferred_.empty()) {
    auto links = std::move(deferred_);
    deferred_.clear();
    for (auto& link : links)
      link->drain(true);
  }
}

void Transport::on_connection_failed(
    std::function<void(const std::string&, const std::string&)> hook) {
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

void Transport::wait_for_space(const std::shared_ptr<Session>& session) {
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

void Transport::remove(const Session& session) {
  auto it = std::find_if(inbound_.begin(), inbound_.end(),
                         [&](const auto& s) { return s.get() == &session; });
  if (it == inbound_.end())
    return;
  if (!session.loopback()) {
    if (auto count = per_address_.find(session.peer_host());
        count != per_address_.end() && --count->second == 0)
      per_address_.erase(count);
  }
  inbound_.erase(it);
  counters_.inbound_links.store(static_cast<std::uint32_t>(inbound_.size()));
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
    session->stop("node stopping");
  std::vector<std::shared_ptr<Link>> links;
  for (auto& [id, link] : links_)
    links.push_back(link);
  for (auto& link : links)
    link->fail(make_error_code(errc::closed), "closing connection to " + link->describe());
  links_.clear();
  counters_.inbound_links.store(0);
  counters_.outbound_links.store(0);
  for (auto& weak : blocked_) {
    if (auto s = weak.lock())
      s->resume();
  }
  blocked_.clear();
}

}  // namespace distflow
