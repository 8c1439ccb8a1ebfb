// Decisions where the protocol is silent: backoff 50 ms doubling to 1 s, +-25%
// jitter, for ever; a connection with no answer for 3 heartbeats + 1 s is dropped;
// an auto-starting node runs ensure_pmd (on a helper thread) after 1 s without a
// PMD. Peer events: join only for a node id not known yet; after a reconnect the
// new snapshot is diffed with the old view (leaves get reason "pmd_resync").

#include "pmd_link.hpp"

#include <algorithm>

#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "address.hpp"
#include "messages.hpp"
#include "pmd_client.hpp"
#include "process.hpp"
#include "session.hpp"

namespace distflow {
namespace {

constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kFirstBackoff = std::chrono::milliseconds(50);
// At most 1 s (+25% jitter) between attempts: a restarted PMD gets every node back
// within 2 s however long it was down; refused loopback connects are cheap.
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// How long the PMD may stay silent before an auto-starting node spawns a new one.
constexpr auto kRestartPmdAfter = std::chrono::milliseconds(1000);
constexpr auto kConnectTimeout = std::chrono::milliseconds(2000);

std::string json_object(std::string_view key, std::string_view value) {
  std::string out = "{";
  append_json_string(out, key);
  out += ':';
  append_json_string(out, value);
  out += '}';
  return out;
}

void call_peer_handler(const std::shared_ptr<const PmdLink::PeerHandler>& handler,
                       const NodeInfo& peer, std::string_view reason) {
  if (!handler || !*handler)
    return;
  try {
    (*handler)(peer, reason);
  } catch (const std::exception& e) {
    spdlog::warn("peer handler threw: {}", e.what());
  }
}

}  // namespace

PmdLink::PmdLink(asio::io_context& io, PmdLinkConfig config)
    : io_(io),
      config_(std::move(config)),
      retry_timer_(io),
      heartbeat_timer_(io),
      wake_(io),
      jitter_(std::random_device{}()) {}

PmdLink::~PmdLink() {
  if (pmd_starter_.joinable())
    pmd_starter_.join();
}

std::string PmdLink::describe_self() const {
  const NodeInfo& self = config_.self;
  return self.alias.empty() ? "'" + self.node_id + "'"
                            : "'" + self.alias + "' (" + self.node_id + ")";
}

void PmdLink::start(std::function<void(const std::string&)> started) {
  started_ = std::move(started);
  spawn_logged(io_, run(), "pmd link");
}

void PmdLink::settle(const std::string& error) {
  if (settled_)
    return;
  settled_ = true;
  if (started_)
    started_(error);
}

std::chrono::milliseconds PmdLink::jittered(std::chrono::milliseconds base) {
  // +-25%: nodes that lost the PMD together do not all come back together.
  std::uniform_int_distribution<long> spread(-base.count() / 4, base.count() / 4);
  return base + std::chrono::milliseconds(spread(jitter_));
}

asio::awaitable<void> PmdLink::run() {
  auto backoff = kFirstBackoff;
  auto down_since = std::chrono::steady_clock::now();
  bool warned = false;
  while (!stopping_) {
    std::string error;
    PmdProbe kind = PmdProbe::unreachable;
    auto connection = co_await PmdConnection::open(io_, config_.pmd, kConnectTimeout, error, kind);
    if (stopping_) {
      if (connection)
        connection->close();
      break;
    }
    if (!connection) {
      if (!settled_) {
        settle("cannot register " + describe_self() + " with pmd " + config_.pmd.to_string() +
               ": " + error);
        co_return;
      }
      if (!warned) {
        spdlog::warn("pmd {} unreachable: {}; reconnecting", config_.pmd.to_string(), error);
        warned = true;
      }
      maybe_restart_pmd(down_since);
      retry_timer_.expires_after(jittered(backoff));
      co_await retry_timer_.async_wait(kAwait);
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    warned = false;
    connection_ = connection;
    last_reply_ = std::chrono::steady_clock::now();
    std::string why;
    connection->on_closed([this, &why](const std::string& reason) {
      why = reason;
      wake_.cancel();
    });
    connection->on_event([this](const PmdReply& event) {
      last_reply_ = std::chrono::steady_clock::now();
      handle_event(event);
    });
    register_self();
    watch_peers();
    spawn_logged(io_, heartbeat_loop(connection), "pmd heartbeat");
    while (!connection->closed()) {
      wake_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_.async_wait(kAwait);
    }
    connection->on_closed({});
    heartbeat_timer_.cancel();  // its loop ends with this connection
    if (connection_ == connection)
      connection_.reset();
    const bool was_registered = registered_;
    registered_ = false;
    if (!settled_) {
      settle("cannot register " + describe_self() + " with pmd " + config_.pmd.to_string() + ": " +
             why);
      co_return;
    }
    if (stopping_)
      break;
    spdlog::warn("lost connection to pmd {}: {}; reconnecting", config_.pmd.to_string(), why);
    down_since = std::chrono::steady_clock::now();
    if (was_registered) {
      backoff = kFirstBackoff;  // a healthy link: try again at once
      continue;
    }
    // Accepted but never registered (a PMD that closes on us): do not spin.
    retry_timer_.expires_after(jittered(backoff));
    co_await retry_timer_.async_wait(kAwait);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void PmdLink::maybe_restart_pmd(std::chrono::steady_clock::time_point down_since) {
  if (!config_.auto_start_pmd || pmd_starting_.load())
    return;
  if (std::chrono::steady_clock::now() - down_since < kRestartPmdAfter)
    return;
  if (pmd_starter_.joinable())
    pmd_starter_.join();  // finished: pmd_starting_ is false
  pmd_starting_.store(true);
  spdlog::info("starting a new pmd on {}", config_.pmd.to_string());
  // ensure_pmd blocks (spawn, then poll): never on the I/O thread. The port is the lock.
  pmd_starter_ = std::thread([this, endpoint = config_.pmd, exe = config_.executable] {
    try {
      ensure_pmd(endpoint, std::chrono::milliseconds(2000), exe);
    } catch (const std::exception& e) {
      spdlog::warn("cannot start a pmd: {}", e.what());
    }
    pmd_starting_.store(false);
  });
}

asio::awaitable<void> PmdLink::heartbeat_loop(std::shared_ptr<PmdConnection> connection) {
  auto& timer = heartbeat_timer_;
  while (!connection->closed() && !stopping_) {
    timer.expires_after(config_.heartbeat_interval);
    co_await timer.async_wait(kAwait);
    if (connection->closed() || stopping_)
      co_return;
    // A PMD that accepts but never answers (frozen) is as good as gone.
    if (std::chrono::steady_clock::now() - last_reply_ >
        3 * config_.heartbeat_interval + std::chrono::seconds(1)) {
      spdlog::warn("pmd {} stopped answering; reconnecting", config_.pmd.to_string());
      connection->close();
      co_return;
    }
    send_heartbeat();
  }
}

void PmdLink::request(std::string_view type, std::string_view payload,
                      std::function<void(const PmdReply*, const std::string&)> done) {
  if (!connection_ || connection_->closed()) {
    // Always asynchronous, so callers never see their callback run inside the call.
    asio::post(io_, [done = std::move(done), ep = config_.pmd.to_string()] {
      if (done)
        done(nullptr, "no connection to pmd " + ep);
    });
    return;
  }
  connection_->request(
      type, payload,
      [this, done = std::move(done)](const PmdReply* reply, const std::string& error) {
        if (reply)
          last_reply_ = std::chrono::steady_clock::now();
        if (done)
          done(reply, error);
      });
}

void PmdLink::send_heartbeat() {
  request("heartbeat", json_object("nodeId", config_.self.node_id),
          [this](const PmdReply* reply, const std::string&) {
            // Expired (frozen too long) or removed: register again, and say so.
            if (reply && reply->error == "Node not found" && !stopping_) {
              if (registered_) {
                spdlog::warn(
                    "registration of {} with pmd {} is gone (expired or removed); registering "
                    "again",
                    describe_self(), config_.pmd.to_string());
              }
              registered_ = false;
              register_self();
            }
          });
}

void PmdLink::register_self() {
  // heartbeatMs announced: the PMD expects heartbeats from the registration on.
  request("register", register_payload(config_.self, config_.heartbeat_interval.count()),
          [this](const PmdReply* reply, const std::string&) {
            if (!reply)
              return;  // connection lost: the loop reconnects and registers again
            if (!reply->error.empty()) {
              std::string message = "cannot register " + describe_self() + " with pmd " +
                                    config_.pmd.to_string() + ": " + reply->error;
              if (!settled_) {
                settle(message);
              } else {
                spdlog::error("{}; retrying with the next heartbeat", message);
              }
              return;
            }
            if (!registered_ && settled_)
              spdlog::info("registered again with pmd {}", config_.pmd.to_string());
            registered_ = true;
            // The first heartbeat at once: the PMD's TTL then covers this node from
            // its registration on (a node frozen now still leaves).
            send_heartbeat();
          });
}

void PmdLink::watch_peers() {
  request("watch", R"({"snapshot":true})", [this](const PmdReply* reply, const std::string&) {
    if (!reply)
      return;
    if (reply->nodes) {
      sync_peers(*reply->nodes);
      return;
    }
    // The original PMD has no snapshot: ask for the list instead.
    request("list", "{}", [this](const PmdReply* list, const std::string&) {
      if (list)
        sync_peers(list->nodes.value_or(std::vector<NodeInfo>{}));
    });
  });
}

// A fresh view from the PMD: diff it with ours (after a reconnect) and emit events.
void PmdLink::sync_peers(const std::vector<NodeInfo>& nodes) {
  std::vector<NodeInfo> fresh;
  for (const auto& node : nodes) {
    if (node.node_id != config_.self.node_id)
      fresh.push_back(node);
  }
  std::vector<NodeInfo> joined, left;
  std::shared_ptr<const PeerHandler> on_join, on_leave;
  {
    std::lock_guard lock(peers_mutex_);
    on_join = join_handler_;
    on_leave = leave_handler_;
    for (const auto& node : fresh) {
      if (std::none_of(peers_.begin(), peers_.end(),
                       [&](const NodeInfo& p) { return p.node_id == node.node_id; })) {
        joined.push_back(node);
      }
    }
    for (const auto& peer : peers_) {
      if (std::none_of(fresh.begin(), fresh.end(),
                       [&](const NodeInfo& n) { return n.node_id == peer.node_id; })) {
        left.push_back(peer);
      }
    }
    peers_ = std::move(fresh);
  }
  if (!settled_) {
    // Registered before the watch answer (responses come in request order).
    if (registered_)
      settle({});
    return;
  }
  for (const auto& peer : left) {
    if (changed_hook_)
      changed_hook_(peer, true, "pmd_resync");
    call_peer_handler(on_leave, peer, "pmd_resync");
  }
  for (const auto& peer : joined) {
    if (changed_hook_)
      changed_hook_(peer, false, {});
    call_peer_handler(on_join, peer, "");
  }
}

void PmdLink::handle_event(const PmdReply& event) {
  if (!event.peer || event.peer->node_id == config_.self.node_id)
    return;
  const NodeInfo& peer = *event.peer;
  std::shared_ptr<const PeerHandler> handler;
  if (event.event == "peer:join") {
    bool known = false;
    {
      std::lock_guard lock(peers_mutex_);
      handler = join_handler_;
      for (auto& p : peers_) {
        if (p.node_id == peer.node_id) {
          p = peer;
          known = true;
        }
      }
      if (!known)
        peers_.push_back(peer);
    }
    if (changed_hook_)
      changed_hook_(peer, false, {});
    if (!known)
      call_peer_handler(handler, peer, event.reason);
  } else if (event.event == "peer:leave") {
    bool known = false;
    {
      std::lock_guard lock(peers_mutex_);
      handler = leave_handler_;
      known =
          std::erase_if(peers_, [&](const NodeInfo& p) { return p.node_id == peer.node_id; }) > 0;
    }
    if (changed_hook_)
      changed_hook_(peer, true, event.reason.empty() ? "left" : event.reason);
    if (known)
      call_peer_handler(handler, peer, event.reason);
  }
}

std::optional<NodeInfo> PmdLink::find_peer(std::string_view name) const {
  std::lock_guard lock(peers_mutex_);
  for (const auto& peer : peers_) {
    if (peer.alias == name || peer.node_id == name)
      return peer;
  }
  return std::nullopt;
}

asio::awaitable<void> PmdLink::resolve_remote(PmdEndpoint endpoint, std::string name,
                                              std::string target, Resolved done) {
  const std::string key = endpoint.to_string();
  std::shared_ptr<PmdConnection> connection;
  if (auto it = remote_.find(key); it != remote_.end() && !it->second->closed())
    connection = it->second;
  if (!connection) {
    std::string error;
    PmdProbe kind = PmdProbe::unreachable;
    connection = co_await PmdConnection::open(io_, endpoint, kConnectTimeout, error, kind,
                                              config_.credentials, config_.self.node_id);
    if (!connection) {
      done(nullptr, "cannot resolve target '" + target + "': " + error);
      co_return;
    }
    if (stopping_) {
      connection->close();
      done(nullptr, "cannot resolve target '" + target + "': node is shut down");
      co_return;
    }
    remote_[key] = connection;
  }
  connection->request(
      "resolve", json_object("alias", name),
      [target, endpoint, done = std::move(done)](const PmdReply* reply, const std::string& error) {
        if (!reply) {
          done(nullptr, "cannot resolve target '" + target + "': " + error);
        } else if (!reply->node) {
          done(nullptr, "unknown target '" + target + "': " + reply->error + " on pmd " +
                            endpoint.to_string());
        } else {
          NodeInfo node = *reply->node;
          node.host = node_host_via(node.host, endpoint.host);
          done(&node, {});
        }
      });
}

void PmdLink::resolve(const std::string& name, Resolved done) {
  if (name.find('@') != std::string::npos) {
    std::string error;
    auto address = parse_node_address(name, error);
    if (!address) {
      asio::post(io_, [done = std::move(done), error] { done(nullptr, error); });
      return;
    }
    if (address->host) {
      const PmdEndpoint endpoint{*address->host, address->pmd_port.value_or(config_.pmd.port)};
      spawn_logged(io_, resolve_remote(endpoint, address->name, name, std::move(done)),
                   "remote resolve");
      return;
    }
  }
  request("resolve", json_object("alias", name),
          [this, name, done = std::move(done)](const PmdReply* reply, const std::string& error) {
            if (reply && reply->node) {
              done(&*reply->node, {});
            } else if (reply) {
              done(nullptr, "unknown target '" + name + "': " + reply->error);
            } else if (auto peer = find_peer(name)) {
              done(&*peer, {});  // PMD unreachable: the last known view
            } else {
              done(nullptr, "cannot resolve target '" + name + "': " + error);
            }
          });
}

void PmdLink::watch_remote(std::uint64_t id, const std::string& target,
                           std::function<void(std::string_view why)> gone) {
  std::string error;
  auto address = parse_node_address(target, error);
  if (!address || !address->host) {
    gone(address ? "not an alias@host target" : error);
    return;
  }
  const PmdEndpoint endpoint{*address->host, address->pmd_port.value_or(config_.pmd.port)};
  watches_[id] = nullptr;  // reserved: unwatch_remote() before the dial ends cancels it
  spawn_logged(io_, run_remote_watch(id, endpoint, address->name, target, std::move(gone)),
               "remote watch");
}

void PmdLink::unwatch_remote(std::uint64_t id) {
  auto it = watches_.find(id);
  if (it == watches_.end())
    return;
  if (it->second)
    it->second->close();
  watches_.erase(it);
}

asio::awaitable<void> PmdLink::run_remote_watch(std::uint64_t id, PmdEndpoint endpoint,
                                                std::string name, std::string target,
                                                std::function<void(std::string_view)> gone) {
  std::string error;
  PmdProbe kind = PmdProbe::unreachable;
  auto connection = co_await PmdConnection::open(io_, endpoint, kConnectTimeout, error, kind,
                                                 config_.credentials, config_.self.node_id);
  if (!watches_.contains(id) || stopping_) {
    if (connection)
      connection->close();
    co_return;
  }
  if (!connection) {
    watches_.erase(id);
    gone("cannot watch '" + target + "': " + error);
    co_return;
  }
  watches_[id] = connection;
  // Fires once; afterwards the watch is over and its connection closed.
  auto fire = std::make_shared<std::function<void(std::string_view)>>(std::move(gone));
  auto end = [this, id, fire](std::string_view why) {
    if (!*fire)
      return;
    auto once = std::move(*fire);
    *fire = nullptr;
    if (auto it = watches_.find(id); it != watches_.end()) {
      auto held = it->second;
      watches_.erase(it);
      if (held)
        held->close();
    }
    once(why);
  };
  const auto is_it = [name](const NodeInfo& node) {
    return node.alias == name || node.node_id == name;
  };
  connection->on_event([end, is_it, target](const PmdReply& event) {
    if (event.event == "peer:leave" && event.peer && is_it(*event.peer))
      end("'" + target + "' left (" + (event.reason.empty() ? "unknown" : event.reason) + ")");
  });
  connection->on_closed([end, endpoint](const std::string& why) {
    end("lost the watch on pmd " + endpoint.to_string() + ": " + why);
  });
  connection->request(
      "watch", R"({"snapshot":true})",
      [end, is_it, target, endpoint](const PmdReply* reply, const std::string& why) {
        if (!reply) {
          end("lost the watch on pmd " + endpoint.to_string() + ": " + why);
          return;
        }
        if (!reply->success) {
          end("cannot watch '" + target + "': " + reply->error);
          return;
        }
        if (reply->nodes && std::none_of(reply->nodes->begin(), reply->nodes->end(), is_it))
          end("not registered");
      });
}

void PmdLink::unregister(std::chrono::milliseconds timeout, std::function<void()> done) {
  if (!connection_ || connection_->closed() || !registered_) {
    asio::post(io_, std::move(done));
    return;
  }
  auto finished = std::make_shared<bool>(false);
  auto timer = std::make_shared<asio::steady_timer>(io_, timeout);
  auto once = [finished, timer, done = std::move(done)]() mutable {
    if (*finished)
      return;
    *finished = true;
    timer->cancel();
    done();
  };
  auto shared_once = std::make_shared<decltype(once)>(std::move(once));
  request("unregister", json_object("nodeId", config_.self.node_id),
          [shared_once](const PmdReply*, const std::string&) { (*shared_once)(); });
  timer->async_wait([shared_once](std::error_code ec) {
    if (!ec)
      (*shared_once)();
  });
}

void PmdLink::stop() {
  if (stopping_)
    return;
  stopping_ = true;
  retry_timer_.cancel();
  heartbeat_timer_.cancel();
  for (auto& [key, connection] : remote_) {
    if (connection)
      connection->close();
  }
  remote_.clear();
  for (auto& [id, connection] : watches_) {
    if (connection)
      connection->close();
  }
  watches_.clear();
  if (connection_)
    connection_->close();
  wake_.cancel();
  settle("node shut down while starting");
}

std::vector<NodeInfo> PmdLink::peers() const {
  std::lock_guard lock(peers_mutex_);
  return peers_;
}

void PmdLink::on_peer_join(PeerHandler handler) {
  auto h = std::make_shared<const PeerHandler>(std::move(handler));
  std::lock_guard lock(peers_mutex_);
  join_handler_ = std::move(h);
}

void PmdLink::on_peer_leave(PeerHandler handler) {
  auto h = std::make_shared<const PeerHandler>(std::move(handler));
  std::lock_guard lock(peers_mutex_);
  leave_handler_ = std::move(h);
}

}  // namespace distflow
