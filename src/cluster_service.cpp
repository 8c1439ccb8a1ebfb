#include "cluster_service.hpp"

#include <map>
#include <random>
#include <utility>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

namespace distflow {
namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

std::string endpoints_text(const EtcdOptions& options) {
  std::string out;
  for (const auto& ep : options.endpoints) {
    if (!out.empty())
      out += ',';
    out += ep.host + ":" + std::to_string(ep.port);
  }
  return out;
}

}  // namespace

struct ClusterService::State : std::enable_shared_from_this<State> {
  State(asio::io_context& context, ClusterServiceOptions o)
      : io(context),
        options(std::move(o)),
        agent(options.cluster, std::random_device{}()),
        timer(context) {}

  asio::io_context& io;
  ClusterServiceOptions options;
  ClusterAgent agent;
  std::unique_ptr<EtcdClient> client;
  asio::steady_timer timer;
  EventHandler on_event;
  std::map<std::uint64_t, Verdict> verdicts;                  // ticket -> its callback
  std::map<std::string, std::uint64_t, std::less<>> tickets;  // alias -> ticket
  std::string stale_reason;
  bool started = false;
  bool stopped = false;

  static ClusterTime now() { return std::chrono::steady_clock::now(); }

  /// Acts on the agent's decisions, then sets the timer for its next deadline.
  void pump() {
    if (stopped)
      return;
    for (auto& output : agent.take_outputs()) {
      std::visit(
          Overloaded{
              [&](ClusterCall& c) { client->submit(c.id, std::move(c.request), c.timeout); },
              [&](ClusterCancel& c) { client->cancel(c.id); },
              [&](ClusterJoin& j) {
                spdlog::debug("cluster: remote join alias={}", j.node.alias);
                if (on_event)
                  on_event(ClusterEvent{ClusterEvent::Kind::join, std::move(j.node), {}});
              },
              [&](ClusterLeave& l) {
                spdlog::debug("cluster: remote leave alias={}", l.node.alias);
                if (on_event)
                  on_event(ClusterEvent{ClusterEvent::Kind::leave, std::move(l.node), {}});
              },
              [&](ClusterVerdict& v) { deliver(v); },
              [&](ClusterConflict& c) {
                spdlog::warn(
                    "cluster: alias '{}' is held by an older registration elsewhere "
                    "(create_revision={}); the node registered here keeps it on this "
                    "host only",
                    c.alias, c.holder.create_revision);
                if (on_event)
                  on_event(ClusterEvent{ClusterEvent::Kind::conflict, std::move(c.holder), {}});
              },
              [&](ClusterStale& s) {
                if (s.stale) {
                  stale_reason = s.reason;
                  spdlog::warn(
                      "cluster: etcd unreachable ({}); keeping the last view of {} remote "
                      "nodes, retrying",
                      s.reason, agent.remote_count());
                } else {
                  stale_reason.clear();
                  spdlog::info("cluster: view current revision={} remote_nodes={}",
                               agent.revision(), agent.remote_count());
                }
                if (on_event)
                  on_event(ClusterEvent{
                      s.stale ? ClusterEvent::Kind::stale : ClusterEvent::Kind::current,
                      {},
                      s.reason});
              },
          },
          output);
      if (stopped)
        return;
    }
    arm();
  }

  void deliver(const ClusterVerdict& v) {
    const auto it = verdicts.find(v.ticket);
    if (it == verdicts.end())
      return;
    auto done = std::move(it->second);
    verdicts.erase(it);
    if (const auto t = tickets.find(v.alias); t != tickets.end() && t->second == v.ticket)
      tickets.erase(t);
    if (!v.error.empty())
      spdlog::info("cluster: register of '{}' refused: {}", v.alias, v.error);
    done(v.error);
  }

  void arm() {
    const auto when = agent.next_wakeup();
    if (when == ClusterTime::max()) {
      timer.cancel();
      return;
    }
    timer.expires_at(when);
    timer.async_wait([weak = weak_from_this()](std::error_code ec) {
      const auto self = weak.lock();
      if (ec || !self || self->stopped)
        return;
      self->agent.on_tick(now());
      self->pump();
    });
  }
};

ClusterService::ClusterService(asio::io_context& io, ClusterServiceOptions options)
    : state_(std::make_shared<State>(io, std::move(options))) {
  auto* io_ptr = &io;
  std::weak_ptr<State> weak = state_;
  state_->client = std::make_unique<EtcdClient>(
      state_->options.etcd, [io_ptr, weak](std::uint64_t id, EtcdResponse response) {
        asio::post(*io_ptr, [weak, id, response = std::move(response)] {
          const auto self = weak.lock();
          if (!self || self->stopped)
            return;
          self->agent.on_response(id, response, State::now());
          self->pump();
        });
      });
}

ClusterService::~ClusterService() {
  stop(std::chrono::milliseconds(0));
}

void ClusterService::start(EventHandler on_event) {
  auto& s = *state_;
  if (s.started || s.stopped)
    return;
  s.started = true;
  s.on_event = std::move(on_event);
  spdlog::info("cluster: joining '{}' through etcd {} ttl={}ms", s.options.cluster.name,
               endpoints_text(s.options.etcd), s.options.cluster.ttl.count());
  s.agent.start(State::now());
  s.pump();
}

void ClusterService::publish(std::string alias, std::string info, Verdict done) {
  auto& s = *state_;
  if (s.stopped) {
    done({});
    return;
  }
  const std::string name = alias;
  const auto ticket = s.agent.register_local(std::move(alias), std::move(info), State::now());
  s.verdicts[ticket] = std::move(done);
  s.tickets[name] = ticket;
  s.pump();
}

void ClusterService::withdraw(std::string_view alias) {
  auto& s = *state_;
  if (s.stopped)
    return;
  if (const auto t = s.tickets.find(alias); t != s.tickets.end()) {
    s.verdicts.erase(t->second);
    s.tickets.erase(t);
  }
  s.agent.unregister_local(alias, State::now());
  s.pump();
}

const ClusterNode* ClusterService::find(std::string_view alias) const {
  return state_->agent.find(alias);
}

std::vector<ClusterNode> ClusterService::nodes() const {
  return state_->agent.nodes();
}

ClusterStatus ClusterService::status() const {
  const auto& s = *state_;
  ClusterStatus st;
  st.stale = s.agent.stale();
  st.stale_reason = s.stale_reason;
  st.revision = s.agent.revision();
  st.lease = s.agent.lease();
  st.remote_nodes = s.agent.remote_count();
  return st;
}

void ClusterService::stop(std::chrono::milliseconds grace) {
  auto& s = *state_;
  if (s.stopped)
    return;
  if (s.started) {
    s.agent.stop(State::now());
    s.pump();  // the revoke
  }
  s.stopped = true;
  s.timer.cancel();
  s.client->shutdown(grace);
  s.verdicts.clear();
  s.tickets.clear();
}

PmdClusterFactory cluster_service_factory(ClusterServiceOptions options) {
  return [options = std::move(options)](asio::io_context& io) -> std::unique_ptr<PmdCluster> {
    return std::make_unique<ClusterService>(io, options);
  };
}

}  // namespace distflow
