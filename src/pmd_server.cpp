#include "pmd_server.hpp"

#include <algorithm>
#include <csignal>
#include <exception>
#include <map>
#include <memory>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "registry.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;
constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
// Reads start small (most connections are a node's registration, a few frames a
// minute) and grow while reads fill the room: a pipelining client gets 64 KiB
// reads, hundreds of requests per read.
constexpr std::size_t kMinReadChunk = 4 * 1024;
constexpr std::size_t kMaxReadChunk = 64 * 1024;
// After a protocol error or shutdown, how long a session may take to flush its
// last reply and drain the peer's unread bytes (so the reply is not lost to a reset).
constexpr std::chrono::milliseconds kLinger{1000};
constexpr std::size_t kMaxDrainBytes = 1u << 20;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void log_escaped(std::exception_ptr e) {
  if (!e)
    return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("pmd: unexpected exception in a coroutine: {}", ex.what());
  }
}

bool is_loopback(const asio::ip::address& address) {
  if (address.is_loopback())
    return true;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return false;
}

class Server;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Server& server, ConnectionId id, const PmdConfig& config)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        drained_(socket_.get_executor()),
        linger_(socket_.get_executor()),
        stall_(socket_.get_executor()),
        server_(server),
        id_(id),
        decoder_(config.max_frame_bytes),
        max_queue_(config.max_write_queue_bytes),
        stall_timeout_(config.stall_timeout) {
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
    drained_.expires_at(std::chrono::steady_clock::time_point::max());
    std::error_code ec;
    const auto remote = socket_.remote_endpoint(ec);
    if (!ec) {
      loopback_ = is_loopback(remote.address());
      peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
    } else {
      peer_ = "?";
    }
  }

  void start();
  /// Queues one frame; a peer more than `max_queue_` bytes behind is disconnected.
  void send(std::string_view body);
  /// Where replies are appended in place (then check_queue(), then wake()).
  std::string& pending() { return pending_; }
  /// False, and the session stopped, when the peer is more than `max_queue_` behind.
  bool check_queue();
  /// Lets the writer write what is pending (one write for everything queued so far).
  void wake() {
    if (!stopped_ && !pending_.empty())
      timer_.cancel_one();
  }
  /// Replies queued past half the limit: stop serving this client for now.
  bool over_pause_mark() const { return pending_.size() + writing_bytes_ > max_queue_ / 2; }
  ConnectionId id() const { return id_; }
  bool loopback() const { return loopback_; }
  bool closing() const { return closing_; }
  FrameDecoder& decoder() { return decoder_; }
  /// Stops reading; flushes what is queued, then closes (bounded by kLinger).
  void close_after_flush();
  /// Closes now. Idempotent.
  void stop() {
    stopped_ = true;
    closing_ = true;
    std::error_code ec;
    socket_.close(ec);
    timer_.cancel();
    drained_.cancel();
    linger_.cancel();
    stall_.cancel();
  }
  const std::string& peer() const { return peer_; }

 private:
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  /// The peer has stall_timeout_ to make progress (finish its frame, read its replies).
  void arm_stall(std::string_view what);

  tcp::socket socket_;
  asio::steady_timer timer_;    // never expires; cancel_one() wakes the writer
  asio::steady_timer drained_;  // never expires; the writer cancels it after each write
  asio::steady_timer linger_;   // bounds close_after_flush()
  asio::steady_timer stall_;    // closes a peer stalled inside a frame
  Server& server_;
  ConnectionId id_;
  FrameDecoder decoder_;
  std::size_t max_queue_;
  std::chrono::milliseconds stall_timeout_;
  std::string pending_;
  std::size_t writing_bytes_ = 0;
  std::size_t read_chunk_ = kMinReadChunk;
  bool loopback_ = false;
  bool closing_ = false;
  bool stopped_ = false;
  std::string peer_;
};

class Server {
 public:
  Server(asio::io_context& io, const PmdConfig& config)
      : io_(io), config_(config), acceptor_(io), sweep_(io), signals_(io), registry_(config.ttl) {}

  /// Binds; false when the port is in use and the config says to step aside.
  bool listen();
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  void start();

  /// Handles the complete frames buffered in the session's decoder, replies
  /// appended in place; true when it stopped at the pause mark with frames left.
  bool serve(Session& session);
  /// The read side ended: the connection leaves the registry.
  void on_closed(ConnectionId id, const std::string& peer);
  /// Both loops ended: the session is gone.
  void forget(ConnectionId id) { sessions_.erase(id); }
  void shutdown_all(Session* requester, std::string_view why);

 private:
  asio::awaitable<void> accept_loop();
  void arm_sweep();
  void broadcast(const std::vector<std::string>& events);
  void touch() {
    if (registry_.size() > 0)
      last_occupied_ = std::chrono::steady_clock::now();
  }

  asio::io_context& io_;
  const PmdConfig& config_;
  tcp::acceptor acceptor_;
  asio::steady_timer sweep_;
  asio::signal_set signals_;
  Registry registry_;
  std::map<ConnectionId, std::shared_ptr<Session>> sessions_;
  ConnectionId next_id_ = 1;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point last_occupied_ = std::chrono::steady_clock::now();
};

void Session::start() {
  auto self = shared_from_this();
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->read_loop(); }, log_escaped);
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->write_loop(); }, log_escaped);
}

void Session::send(std::string_view body) {
  if (stopped_)
    return;
  append_frame(pending_, body);
  if (check_queue())
    timer_.cancel_one();
}

bool Session::check_queue() {
  if (pending_.size() + writing_bytes_ <= max_queue_)
    return true;
  spdlog::info("pmd: disconnecting slow reader peer={} queued={} limit={}", peer_,
               pending_.size() + writing_bytes_, max_queue_);
  stop();
  return false;
}

void Session::arm_stall(std::string_view what) {
  if (stall_timeout_.count() <= 0 || closing_)
    return;
  // Re-armed at every sign of progress: the deadline is for progress, not for the whole.
  stall_.expires_after(stall_timeout_);
  stall_.async_wait([self = shared_from_this(), what](std::error_code ec) {
    if (ec || self->closing_)
      return;
    spdlog::info("pmd: peer={} stalled {} ms {} (buffered={} queued={}); closing", self->peer_,
                 self->stall_timeout_.count(), what, self->decoder_.buffered(),
                 self->pending_.size() + self->writing_bytes_);
    self->stop();
  });
}

void Session::close_after_flush() {
  if (closing_)
    return;
  closing_ = true;
  timer_.cancel_one();
  linger_.expires_after(kLinger);
  linger_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec)
      self->stop();
  });
}

asio::awaitable<void> Session::read_loop() {
  while (!closing_) {
    // Back-pressure: while the replies of a client that pipelines faster than it
    // reads pile up, it is neither served nor read from until the writer has
    // caught up (TCP then slows the client down), rather than dropped as a slow
    // reader; the rest of what it sent waits in the decoder.
    // A client that does not read at all makes no progress: it is closed after the
    // stall timeout, and costs at most its bounded queue until then.
    while (!closing_ && over_pause_mark()) {
      arm_stall("without reading its replies");
      co_await drained_.async_wait(kAwait);
    }
    if (closing_)
      break;
    if (server_.serve(*this))
      continue;  // stopped at the pause mark with frames left
    if (decoder_.buffered() > 0) {
      arm_stall("inside a frame");  // after every read that leaves a partial frame
    } else {
      stall_.cancel();
    }
    auto room = decoder_.prepare(read_chunk_);
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(room.data(), room.size()), kAwait);
    if (!ec && n == room.size() && read_chunk_ < kMaxReadChunk)
      read_chunk_ *= 2;
    if (ec) {
      if (!stopped_ && decoder_.finish()) {
        spdlog::info("pmd: peer={} {}", peer_, describe_frame_error(decoder_.finish(), decoder_));
      }
      break;
    }
    decoder_.commit(n);
  }
  if (!closing_)
    close_after_flush();
  timer_.cancel_one();
  server_.on_closed(id_, peer_);
}

asio::awaitable<void> Session::write_loop() {
  std::string writing;
  while (!stopped_) {
    if (pending_.empty()) {
      if (closing_)
        break;
      co_await timer_.async_wait(kAwait);
      continue;
    }
    writing.swap(pending_);
    pending_.clear();
    writing_bytes_ = writing.size();
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(writing), kAwait);
    writing_bytes_ = 0;
    writing.clear();
    drained_.cancel();
    if (ec) {
      stop();
      break;
    }
  }
  if (!stopped_) {
    // Lingering close: half-close, then discard what the peer still sends, so
    // that closing with unread bytes does not reset away our last reply.
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    std::size_t drained = 0;
    char sink[4096];
    while (!stopped_ && drained < kMaxDrainBytes) {
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(sink), kAwait);
      if (ec)
        break;
      drained += n;
    }
  }
  stop();
  server_.forget(id_);
}

bool Server::listen() {
  std::error_code ec;
  const auto address = asio::ip::make_address(config_.bind, ec);
  if (ec)
    throw Error("invalid bind address '" + config_.bind + "': expected an IP address");
  const tcp::endpoint endpoint(address, config_.port);
  const std::string where = config_.bind + ":" + std::to_string(config_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (ec)
    throw Error("cannot listen on " + where + ": " + ec.message());
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor_.bind(endpoint, ec);
  if (ec == asio::error::address_in_use && config_.quiet_if_port_in_use) {
    spdlog::info("pmd: {} is already in use; another daemon serves it, exiting", where);
    return false;
  }
  if (ec) {
    throw Error("cannot listen on " + where + ": " + ec.message() +
                (ec == asio::error::address_in_use ? " (is a PMD already running there?)" : ""));
  }
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  // Two daemons may both bind (SO_REUSEADDR) before either listens: the loser's
  // listen() is where it learns that the port is taken.
  if (ec == asio::error::address_in_use && config_.quiet_if_port_in_use) {
    spdlog::info("pmd: {} is already in use; another daemon serves it, exiting", where);
    return false;
  }
  if (ec)
    throw Error("cannot listen on " + where + ": " + ec.message());
  return true;
}

void Server::start() {
  asio::co_spawn(io_, accept_loop(), log_escaped);
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](std::error_code ec, int signo) {
    if (!ec)
      shutdown_all(nullptr, signo == SIGINT ? "SIGINT" : "SIGTERM");
  });
  arm_sweep();
}

void Server::arm_sweep() {
  using std::chrono::milliseconds;
  milliseconds period{1000};
  if (config_.ttl.count() > 0)
    period = std::min(period, config_.ttl / 4);
  if (config_.auto_shutdown.count() > 0)
    period = std::min(period, config_.auto_shutdown / 4);
  period = std::max(period, milliseconds(10));
  sweep_.expires_after(period);
  sweep_.async_wait([this](std::error_code ec) {
    if (ec || stopping_)
      return;
    touch();
    auto events = registry_.expire(now_ms());
    if (!events.empty())
      spdlog::info("pmd: {} node(s) expired (no heartbeat within {} ms)", events.size(),
                   config_.ttl.count());
    broadcast(events);
    if (config_.auto_shutdown.count() > 0 && registry_.size() == 0 &&
        std::chrono::steady_clock::now() - last_occupied_ >= config_.auto_shutdown) {
      shutdown_all(nullptr, "auto-shutdown: no registered node");
      return;
    }
    arm_sweep();
  });
}

asio::awaitable<void> Server::accept_loop() {
  asio::steady_timer backoff(io_);
  while (!stopping_) {
    auto [ec, socket] = co_await acceptor_.async_accept(kAwait);
    if (stopping_)
      break;
    if (ec) {
      // e.g. EMFILE: back off instead of spinning.
      spdlog::warn("pmd: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(kAwait);
      continue;
    }
    if (sessions_.size() >= config_.max_connections) {
      spdlog::info("pmd: refusing connection: {} connections open (limit)", sessions_.size());
      std::error_code ignored;
      socket.close(ignored);
      continue;
    }
    std::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const ConnectionId id = next_id_++;
    auto session = std::make_shared<Session>(std::move(socket), *this, id, config_);
    spdlog::debug("pmd: session opened peer={}", session->peer());
    sessions_.emplace(id, session);
    session->start();
  }
}

void Server::broadcast(const std::vector<std::string>& events) {
  if (events.empty())
    return;
  // Copy: a send may stop a slow watcher, which never re-enters the registry here.
  const std::vector<ConnectionId> watchers(registry_.watchers().begin(),
                                           registry_.watchers().end());
  for (ConnectionId id : watchers) {
    auto it = sessions_.find(id);
    if (it == sessions_.end())
      continue;
    for (const auto& event : events)
      it->second->send(event);
  }
}

bool Server::serve(Session& session) {
  touch();
  const std::int64_t now = now_ms();
  const bool debug = spdlog::should_log(spdlog::level::debug);
  bool paused = false;
  while (!session.closing()) {
    std::string& out = session.pending();
    const std::size_t before = out.size();
    PmdOutcome outcome;
    if (!next_outcome_into(registry_, session.id(), session.decoder(), now, session.loopback(), out,
                           outcome)) {
      break;
    }
    if (debug) {
      const std::string_view reply = std::string_view(out).substr(before + kFrameHeaderBytes);
      spdlog::debug("pmd: request handled peer={} reply_bytes={} events={}", session.peer(),
                    reply.size(), outcome.events.size());
      spdlog::trace("pmd: reply peer={} {:.128}", session.peer(), reply);
    }
    if (!outcome.events.empty()) {
      for (const auto& event : outcome.events)
        spdlog::info("pmd: event {:.256}", event);
      broadcast(outcome.events);
      touch();
    }
    if (outcome.close) {
      spdlog::info("pmd: protocol error peer={} error={}; closing", session.peer(),
                   outcome.problem);
      session.close_after_flush();
    }
    if (outcome.shutdown)
      shutdown_all(&session, "shutdown request");
    if (!session.check_queue())
      break;
    if (session.over_pause_mark()) {
      paused = true;
      break;
    }
  }
  session.wake();
  touch();
  return paused;
}

void Server::on_closed(ConnectionId id, const std::string& peer) {
  spdlog::debug("pmd: session closed peer={}", peer);
  touch();
  auto events = registry_.connection_closed(id);
  for (const auto& event : events)
    spdlog::info("pmd: event {:.256}", event);
  broadcast(events);
}

void Server::shutdown_all(Session* requester, std::string_view why) {
  if (stopping_)
    return;
  stopping_ = true;
  spdlog::info("pmd: shutting down ({}), closing {} connections", why, sessions_.size());
  std::error_code ignored;
  acceptor_.close(ignored);
  sweep_.cancel();
  signals_.cancel(ignored);
  auto sessions = sessions_;
  for (auto& [id, session] : sessions) {
    if (session.get() == requester) {
      session->close_after_flush();
    } else {
      session->stop();
    }
  }
}

}  // namespace

void run_pmd(const PmdConfig& config, const std::function<void(std::uint16_t)>& on_listening) {
  asio::io_context io(1);
  Server server(io, config);
  if (!server.listen())
    return;
  server.start();
  spdlog::info("pmd: listening on {}:{} ttl={}ms auto_shutdown={}ms max_frame={}", config.bind,
               server.port(), config.ttl.count(), config.auto_shutdown.count(),
               config.max_frame_bytes);
  if (on_listening)
    on_listening(server.port());
  io.run();
  spdlog::info("pmd: stopped");
}

}  // namespace distflow
