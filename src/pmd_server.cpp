#include "pmd_server.hpp"

#include <algorithm>
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <unistd.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "credentials.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "log_throttle.hpp"
#include "metrics_server.hpp"
#include "registry.hpp"
#include "service_metrics.hpp"
#include "session.hpp"
#include "systemd.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;
constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
// Room reserved per reply: most are a few hundred bytes; a larger one (a long
// `list`) grows its chunk.
constexpr std::size_t kReplyRoom = 4096;
// Joins and leaves are logged at debug; at info, one line of counts at most this often.
constexpr std::chrono::seconds kActivityLogPeriod{60};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Server;

/// One client connection of the daemon, as its session's handler.
class Client final : public SessionHandler {
 public:
  Client(Server& server, ConnectionId id) : server_(server), id_(id) {}
  bool on_readable(Session& session) override;
  void on_closed(Session& session, std::string_view reason) override;

 private:
  Server& server_;
  ConnectionId id_;
};

class Server {
 public:
  Server(asio::io_context& io, const PmdConfig& config)
      : io_(io),
        config_(config),
        credentials_(config.security),
        sweep_(io),
        signals_(io),
        registry_(config.ttl, config.missed_heartbeats) {}

  /// Binds every address; false when the port is in use and the config says to
  /// step aside.
  bool listen();
  std::uint16_t port() const { return acceptors_.front().local_endpoint().port(); }
  void start();

  /// Handles the complete frames buffered in the session's decoder, replies
  /// queued in place; false when it stopped at the pause mark with frames left.
  bool serve(Session& session, ConnectionId id);
  /// The connection delivers nothing more: it leaves the registry.
  void on_closed(ConnectionId id, const Session& session, std::string_view reason);
  void shutdown_all(Session* requester, std::string_view why);

 private:
  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor);
  bool bind(tcp::acceptor& acceptor, const std::string& address, std::uint16_t port);
  void arm_sweep();
  /// `remote`: events of the cluster's nodes (not for watchers of local nodes only).
  void broadcast(const std::vector<std::string>& events, bool remote = false);
  void start_cluster();
  void on_cluster_event(const ClusterEvent& event);
  /// Tells the cluster what the registry owes it (publishes, withdrawals).
  void sync_cluster();
  /// A held register of `conn` was answered by the cluster.
  void on_verdict(ConnectionId conn, const PmdOutcome::Held& held, const std::string& error);
  void append_cluster_state(std::string& out) const;
  void touch() {
    if (registry_.size() > 0)
      last_occupied_ = std::chrono::steady_clock::now();
  }
  SessionOptions session_options() const {
    SessionOptions options;
    options.max_frame_bytes = config_.max_frame_bytes;
    options.max_queue_bytes = config_.max_write_queue_bytes;
    // A client that pipelines faster than it reads its replies is neither served
    // nor read from until it has caught up (TCP slows it down); one that reads
    // nothing stalls the writer and is closed after the stall timeout.
    options.pause_reads_above = config_.max_write_queue_bytes / 2;
    options.stall_timeout = config_.stall_timeout;
    options.hello_timeout = config_.hello_timeout;
    // Most connections are a node's registration, a few frames a minute; a
    // pipelining client grows its reads to 64 KiB (hundreds of requests each).
    options.read_chunk = 4u << 10;
    options.max_read_chunk = 64u << 10;
    return options;
  }

  asio::io_context& io_;
  const PmdConfig& config_;
  Credentials credentials_;
  std::vector<tcp::acceptor> acceptors_;
  PeerLogThrottle handshake_log_{std::chrono::seconds(1)};
  asio::steady_timer sweep_;
  asio::signal_set signals_;
  Registry registry_;
  std::map<ConnectionId, std::shared_ptr<Session>> sessions_;
  ConnectionId next_id_ = 1;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point last_occupied_ = std::chrono::steady_clock::now();
  LogThrottle accept_log_{std::chrono::seconds(1)};
  LogThrottle refuse_log_{std::chrono::seconds(1)};
  RegistryStats logged_stats_;  // as of the last activity line
  std::chrono::steady_clock::time_point activity_since_ = std::chrono::steady_clock::now();
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  PmdConnectionCounts connections_;
  std::unique_ptr<MetricsServer> metrics_;  // with --metrics
  std::unique_ptr<PmdCluster> cluster_;     // with --cluster
  std::set<ConnectionId> awaiting_;         // a register waits for the cluster's verdict
};

void Server::start_cluster() {
  std::string advertise = config_.cluster_advertise;
  if (advertise.empty()) {
    std::string host = config_.binds.empty() ? config_.bind : config_.binds.front();
    std::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (!ec && address.is_unspecified()) {
      char name[256] = {};
      host = ::gethostname(name, sizeof name - 1) == 0 ? name : "localhost";
    }
    advertise = PmdEndpoint{host, port()}.to_string();
  }
  cluster_ = config_.cluster(io_);
  registry_.set_cluster(advertise, [this](std::string& out) { append_cluster_state(out); });
  cluster_->start([this](const ClusterEvent& event) { on_cluster_event(event); });
}

void Server::append_cluster_state(std::string& out) const {
  const ClusterStatus status = cluster_->status();
  std::set<std::string> members{registry_.pmd()};
  for (const auto& node : registry_.remote_nodes()) {
    if (!node.pmd.empty())
      members.insert(node.pmd);
  }
  out += "{\"name\":";
  append_json_string(out, config_.cluster_name);
  out += ",\"etcd\":";
  append_json_string(out, config_.cluster_etcd);
  out += ",\"pmd\":";
  append_json_string(out, registry_.pmd());
  out += status.stale ? ",\"state\":\"stale\"" : ",\"state\":\"current\"";
  if (status.stale && !status.stale_reason.empty()) {
    out += ",\"staleReason\":";
    append_json_string(out, status.stale_reason);
  }
  out += ",\"revision\":" + std::to_string(status.revision);
  out += ",\"lease\":" + std::to_string(status.lease);
  out += ",\"remoteNodes\":" + std::to_string(status.remote_nodes);
  out += ",\"members\":[";
  bool first = true;
  for (const auto& member : members) {
    if (!first)
      out += ',';
    first = false;
    append_json_string(out, member);
  }
  out += "]}";
}

void Server::on_cluster_event(const ClusterEvent& event) {
  if (stopping_)
    return;
  switch (event.kind) {
    case ClusterEvent::Kind::join: {
      auto node = parse_node_info(event.node.info);
      if (!node || node->alias != event.node.alias) {
        spdlog::warn("cluster: ignoring the entry of '{}': not a NodeInfo with that alias",
                     printable(event.node.alias));
        return;
      }
      broadcast(registry_.remote_join(std::move(*node)), true);
      break;
    }
    case ClusterEvent::Kind::leave:
      broadcast(registry_.remote_leave(event.node.alias), true);
      break;
    case ClusterEvent::Kind::conflict:
    case ClusterEvent::Kind::stale:
    case ClusterEvent::Kind::current:
      break;  // logged by the agent; status() says it
  }
}

void Server::sync_cluster() {
  if (!cluster_)
    return;
  for (auto& op : registry_.take_cluster_ops()) {
    if (op.info.empty()) {
      cluster_->withdraw(op.alias);
    } else {
      const std::string alias = op.alias;
      cluster_->publish(std::move(op.alias), std::move(op.info), [alias](const std::string& error) {
        if (!error.empty())
          spdlog::warn("cluster: re-registration of '{}' refused: {}", printable(alias), error);
      });
    }
  }
}

void Server::on_verdict(ConnectionId conn, const PmdOutcome::Held& held, const std::string& error) {
  awaiting_.erase(conn);
  std::string payload;
  std::vector<std::string> events;
  if (!registry_.finish_register(conn, held.node_id, error, payload, events))
    return;
  if (auto it = sessions_.find(conn); it != sessions_.end()) {
    const auto session = it->second;
    if (!session->send(pmd_response(held.request_id, payload))) {
      session->stop("slow reader: its reply queue is full");
    } else {
      session->resume();
    }
  }
  broadcast(events);
  sync_cluster();
}

bool Client::on_readable(Session& session) {
  return server_.serve(session, id_);
}

void Client::on_closed(Session& session, std::string_view reason) {
  server_.on_closed(id_, session, reason);
}

bool Server::listen() {
  std::error_code ec;
  if (config_.listen_fd >= 0) {
    auto& acceptor = acceptors_.emplace_back(io_);
    acceptor.assign(is_ipv6_socket(config_.listen_fd) ? tcp::v6() : tcp::v4(), config_.listen_fd,
                    ec);
    if (ec)
      throw Error("cannot serve the socket passed by systemd: " + ec.message());
    return true;
  }
  std::vector<std::string> addresses = config_.binds;
  if (addresses.empty())
    addresses.push_back(config_.bind);
  std::uint16_t port = config_.port;
  for (const std::string& address : addresses) {
    auto& acceptor = acceptors_.emplace_back(io_);
    if (!bind(acceptor, address, port))
      return false;
    port = acceptor.local_endpoint().port();  // port 0: the others take the same one
  }
  return true;
}

bool Server::bind(tcp::acceptor& acceptor, const std::string& bind, std::uint16_t port) {
  std::error_code ec;
  const auto address = asio::ip::make_address(bind, ec);
  if (ec)
    throw Error("invalid bind address '" + bind + "': expected an IP address");
  const tcp::endpoint endpoint(address, port);
  const std::string where =
      (address.is_v6() ? "[" + bind + "]" : bind) + ":" + std::to_string(port);
  auto& acceptor_ = acceptor;
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
  if (config_.metrics) {
    metrics_ = std::make_unique<MetricsServer>(io_, *config_.metrics, config_.security, [this] {
      connections_.open = sessions_.size();
      return pmd_metrics_page(registry_, connections_,
                              std::chrono::steady_clock::now() - started_at_);
    });
  }
  for (auto& acceptor : acceptors_)
    spawn_logged(io_, accept_loop(acceptor), "pmd accept loop");
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](std::error_code ec, int signo) {
    if (!ec)
      shutdown_all(nullptr, signo == SIGINT ? "SIGINT" : "SIGTERM");
  });
  arm_sweep();
  if (config_.cluster)
    start_cluster();
}

void Server::arm_sweep() {
  using std::chrono::milliseconds;
  milliseconds period = expiry_sweep_period(config_.ttl);
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
      spdlog::debug("pmd: {} node(s) expired (no heartbeat within their ttl)", events.size());
    broadcast(events);
    sync_cluster();
    const auto now = std::chrono::steady_clock::now();
    if (now - activity_since_ >= kActivityLogPeriod) {
      const RegistryStats& stats = registry_.stats();
      if (stats != logged_stats_) {
        spdlog::info(
            "pmd: last {} s: {} joins, {} leaves ({} ttl_expired)",
            std::chrono::duration_cast<std::chrono::seconds>(now - activity_since_).count(),
            stats.joins - logged_stats_.joins, stats.leaves - logged_stats_.leaves,
            stats.ttl_expired - logged_stats_.ttl_expired);
        logged_stats_ = stats;
      }
      activity_since_ = now;
    }
    if (config_.auto_shutdown.count() > 0 && registry_.size() == 0 &&
        std::chrono::steady_clock::now() - last_occupied_ >= config_.auto_shutdown) {
      shutdown_all(nullptr, "auto-shutdown: no registered node");
      return;
    }
    arm_sweep();
  });
}

asio::awaitable<void> Server::accept_loop(tcp::acceptor& acceptor) {
  asio::steady_timer backoff(io_);
  while (!stopping_) {
    auto [ec, socket] = co_await acceptor.async_accept(kAwait);
    if (stopping_)
      break;
    if (ec) {
      // e.g. EMFILE: back off instead of spinning.
      if (std::uint64_t suppressed = 0;
          accept_log_.allow(std::chrono::steady_clock::now(), suppressed)) {
        spdlog::warn("pmd: accept failed: {} ({} more since the last report)", ec.message(),
                     suppressed);
      }
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(kAwait);
      continue;
    }
    if (sessions_.size() >= config_.max_connections) {
      ++connections_.refused;
      if (std::uint64_t suppressed = 0;
          refuse_log_.allow(std::chrono::steady_clock::now(), suppressed)) {
        spdlog::info(
            "pmd: refusing connections: {} open, the limit ({} more since the last report)",
            sessions_.size(), suppressed);
      }
      // In words, so that the client says why (a response without requestId).
      auto refused = std::make_shared<Session>(
          std::move(socket), std::make_shared<Client>(*this, next_id_++), session_options());
      refused->refuse(R"({"type":"response","payload":{"error":"too many connections: )" +
                      std::to_string(sessions_.size()) + R"x( open (--max-connections)"}})x");
      continue;
    }
    ++connections_.accepted;
    const ConnectionId id = next_id_++;
    // Nodes and tools of this host come over loopback, as the original's do. A
    // peer from elsewhere proves itself first when the PMD has a cookie or TLS
    // (issue 12): until its gate opens nothing of it is served.
    std::error_code ignored;
    const bool remote = !is_loopback(socket.remote_endpoint(ignored).address());
    SessionOptions options = session_options();
    TlsSide tls;
    std::unique_ptr<SessionGate> gate;
    if (remote && credentials_.authenticated()) {
      tls = credentials_.accept_tls();
      gate = credentials_.accept_gate("pmd");
      options.hello_timeout = kHandshakeTimeout;
    }
    auto session = std::make_shared<Session>(std::move(socket), std::make_shared<Client>(*this, id),
                                             options, tls, std::move(gate));
    spdlog::debug("pmd: session opened peer={}", session->peer());
    sessions_.emplace(id, session);
    session->start();
  }
}

void Server::broadcast(const std::vector<std::string>& events, bool remote) {
  if (events.empty())
    return;
  // Copy: a send may stop a slow watcher, which leaves the map.
  const std::vector<ConnectionId> watchers(registry_.watchers().begin(),
                                           registry_.watchers().end());
  for (ConnectionId id : watchers) {
    auto it = sessions_.find(id);
    if (it == sessions_.end() || (remote && !registry_.wants_cluster(id)))
      continue;
    auto session = it->second;
    for (const auto& event : events) {
      if (!session->send(event)) {
        spdlog::info("pmd: disconnecting slow reader peer={} queued={} limit={}", session->peer(),
                     session->queued_bytes(), config_.max_write_queue_bytes);
        session->stop("slow reader: its event queue is full");
        break;
      }
    }
  }
}

bool Server::serve(Session& session, ConnectionId id) {
  if (awaiting_.contains(id))
    return false;  // the register before waits for the cluster: its reply comes first
  touch();
  const std::int64_t now = now_ms();
  const bool debug = spdlog::should_log(spdlog::level::debug);
  bool served = false;
  bool more = true;
  while (!session.closing()) {
    std::string* out = session.reserve(kReplyRoom);
    if (out == nullptr) {
      spdlog::info("pmd: disconnecting slow reader peer={} queued={} limit={}", session.peer(),
                   session.queued_bytes(), config_.max_write_queue_bytes);
      session.stop("slow reader: its reply queue is full");
      return true;
    }
    const std::size_t before = out->size();
    PmdOutcome outcome;
    const bool handled =
        next_outcome_into(registry_, id, session.decoder(), now, session.loopback(), *out, outcome);
    if (debug && handled) {
      const std::string_view reply = std::string_view(*out).substr(before + kFrameHeaderBytes);
      spdlog::debug("pmd: request handled peer={} reply_bytes={} events={}", session.peer(),
                    reply.size(), outcome.events.size());
      spdlog::trace("pmd: reply peer={} {:.128}", session.peer(), reply);
    }
    session.commit(out->size() > before ? 1 : 0);
    if (!handled)
      break;
    served = true;
    if (outcome.held) {
      // Unique across the cluster: the reply waits for etcd (at most its register
      // timeout), and so do this connection's later requests.
      awaiting_.insert(id);
      auto held = std::make_shared<PmdOutcome::Held>(std::move(*outcome.held));
      std::string alias = held->alias, info = std::move(held->info);
      cluster_->publish(
          std::move(alias), std::move(info),
          [this, id, held](const std::string& error) { on_verdict(id, *held, error); });
      if (awaiting_.contains(id)) {
        more = false;
        break;
      }
      continue;
    }
    sync_cluster();
    if (!outcome.events.empty()) {
      for (const auto& event : outcome.events)
        spdlog::debug("pmd: event {:.256}", event);
      broadcast(outcome.events);
      touch();
    }
    if (outcome.close) {
      spdlog::info("pmd: protocol error peer={} error={}; closing", session.peer(),
                   outcome.problem);
      session.close_after_flush(outcome.problem);
    } else if (outcome.shutdown) {
      shutdown_all(&session, "shutdown request");
    }
    if (session.queued_bytes() > config_.max_write_queue_bytes / 2) {
      more = false;  // the pause mark: serve the rest once the replies are read
      break;
    }
  }
  if (served)
    session.established();
  session.flush();
  touch();
  return more;
}

void Server::on_closed(ConnectionId id, const Session& session, std::string_view reason) {
  spdlog::debug("pmd: session closed peer={} reason={}", session.peer(), reason);
  if (reason.starts_with("handshake refused") || reason.starts_with("TLS handshake failed")) {
    handshake_log_.counted();
    if (std::uint64_t more = 0;
        handshake_log_.allow(session.peer_host(), std::chrono::steady_clock::now(), more)) {
      spdlog::warn("pmd: peer={} {} ({} more from that address since the last report)",
                   session.peer(), reason, more);
    }
  } else if (reason.starts_with("stalled") || reason.starts_with("nothing valid")) {
    spdlog::info("pmd: peer={} {}; closed", session.peer(), reason);
  }
  touch();
  connections_.count_close(reason);
  sessions_.erase(id);
  awaiting_.erase(id);
  auto events = registry_.connection_closed(id);
  for (const auto& event : events)
    spdlog::debug("pmd: event {:.256}", event);
  broadcast(events);
  sync_cluster();
}

void Server::shutdown_all(Session* requester, std::string_view why) {
  if (stopping_)
    return;
  stopping_ = true;
  spdlog::info("pmd: shutting down ({}), closing {} connections", why, sessions_.size());
  std::error_code ignored;
  for (auto& acceptor : acceptors_)
    acceptor.close(ignored);
  sweep_.cancel();
  signals_.cancel(ignored);
  if (cluster_)
    cluster_->stop(std::chrono::seconds(1));  // our keys go at once
  if (metrics_)
    metrics_->stop();
  auto sessions = sessions_;
  for (auto& [id, session] : sessions) {
    if (session.get() == requester) {
      session->close_after_flush("shutdown");
    } else {
      session->stop("shutdown");
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
  spdlog::info("pmd: listening on {}:{} ttl={}ms auto_shutdown={}ms max_frame={}{}{}",
               config.binds.empty() ? config.bind : fmt::format("{}", fmt::join(config.binds, ",")),
               server.port(), config.ttl.count(), config.auto_shutdown.count(),
               config.max_frame_bytes, config.security.cookie.empty() ? "" : " cookie=on",
               config.security.tls.configured() ? " tls=on" : "");
  if (on_listening)
    on_listening(server.port());
  io.run();
  spdlog::info("pmd: stopped");
}

}  // namespace distflow
