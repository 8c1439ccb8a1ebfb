#include "cluster.hpp"

#include <algorithm>
#include <utility>

namespace distflow {
namespace {

using std::chrono::milliseconds;

EtcdRequest publish_txn(const std::string& key, const std::string& info, std::int64_t lease) {
  EtcdTxn txn;
  txn.compare.push_back({key, EtcdCompare::Target::create, EtcdCompare::Result::equal, 0, {}});
  txn.success.push_back({EtcdOp::Kind::put, key, {}, info, lease});
  txn.failure.push_back({EtcdOp::Kind::range, key, {}, {}, 0});
  return txn;
}

EtcdRequest withdraw_txn(const std::string& key, std::int64_t create_revision) {
  EtcdTxn txn;
  txn.compare.push_back(
      {key, EtcdCompare::Target::create, EtcdCompare::Result::equal, create_revision, {}});
  txn.success.push_back({EtcdOp::Kind::delete_range, key, {}, {}, 0});
  return txn;
}

}  // namespace

std::string alias_in_use_error(std::string_view alias) {
  return "Alias '" + std::string(alias) + "' already in use";
}

ClusterAgent::ClusterAgent(ClusterConfig config, std::uint64_t seed)
    : config_(std::move(config)), prefix_("distflow/" + config_.name + "/nodes/"), rng_(seed) {
  config_.ttl = std::max(config_.ttl, milliseconds(2000));  // etcd's leases count whole seconds
  config_.retry_min = std::max(config_.retry_min, milliseconds(1));
  // A probe at least every ttl/3: a partition shorter than the TTL keeps the lease.
  config_.retry_max = std::clamp(config_.retry_max, config_.retry_min,
                                 std::max(config_.retry_min, config_.ttl / 3));
}

std::uint64_t ClusterAgent::call(CallKind kind, EtcdRequest request, std::string alias,
                                 std::int64_t revision) {
  const std::uint64_t id = next_id_++;
  pending_[id] = Pending{kind, std::move(alias), revision};
  out_.emplace_back(ClusterCall{id, std::move(request), config_.request_timeout});
  return id;
}

std::vector<ClusterOutput> ClusterAgent::take_outputs() {
  std::vector<ClusterOutput> out;
  out.swap(out_);
  return out;
}

milliseconds ClusterAgent::jittered(milliseconds backoff) {
  // Half fixed, half random: PMDs that lost etcd together do not come back in step.
  const auto half = backoff.count() / 2;
  std::uniform_int_distribution<long long> pick(0, std::max<long long>(half, 0));
  return milliseconds(half + pick(rng_));
}

void ClusterAgent::start(ClusterTime now) {
  if (started_)
    return;
  started_ = true;
  ensure(now);
}

void ClusterAgent::stop(ClusterTime now) {
  (void)now;
  if (stopped_ || !started_)
    return;
  stopped_ = true;
  if (watch_call_ != 0)
    out_.emplace_back(ClusterCancel{watch_call_});
  watch_call_ = 0;
  if (lease_ != 0)
    call(CallKind::revoke, EtcdLeaseRevoke{lease_});
  lease_ = 0;
}

ClusterTime ClusterAgent::next_wakeup() const {
  ClusterTime t = ClusterTime::max();
  if (!started_ || stopped_)
    return t;
  if (outage_) {
    if (probe_call_ == 0)
      t = std::min(t, retry_at_);
  } else {
    if (lease_ != 0 && keepalive_call_ == 0)
      t = std::min(t, keepalive_at_);
    if (synced_ && watch_call_ == 0)
      t = std::min(t, watch_retry_at_);
  }
  for (const auto& [alias, local] : locals_) {
    if (local.ticket != 0)
      t = std::min(t, local.verdict_by);
  }
  return t;
}

void ClusterAgent::on_tick(ClusterTime now) {
  if (!started_ || stopped_)
    return;
  // A register waits for etcd at most register_timeout, then it is accepted locally
  // (published later, or reported as a conflict).
  for (auto& [alias, local] : locals_) {
    if (local.ticket != 0 && now >= local.verdict_by)
      verdict(local, alias, {});
  }
  ensure(now);
}

std::uint64_t ClusterAgent::register_local(std::string alias, std::string info, ClusterTime now) {
  const std::uint64_t ticket = next_ticket_++;
  if (view_.count(alias) != 0 || locals_.count(alias) != 0) {
    out_.emplace_back(ClusterVerdict{ticket, alias, alias_in_use_error(alias)});
    return ticket;
  }
  Local& local = locals_[alias];
  local.info = std::move(info);
  local.ticket = ticket;
  local.verdict_by = now + config_.register_timeout;
  if (outage_ || stopped_ || !started_)
    verdict(local, alias, {});  // etcd is known to be unreachable: local registration goes on
  ensure(now);
  return ticket;
}

void ClusterAgent::unregister_local(std::string_view alias, ClusterTime now) {
  const auto it = locals_.find(alias);
  if (it == locals_.end())
    return;
  const std::string name = it->first;
  if (it->second.state == Local::State::published)
    orphans_[name] = it->second.create_revision;
  locals_.erase(it);
  advance(name);
  ensure(now);
}

void ClusterAgent::verdict(Local& local, const std::string& alias, std::string error) {
  if (local.ticket == 0)
    return;
  out_.emplace_back(ClusterVerdict{local.ticket, alias, std::move(error)});
  local.ticket = 0;
}

void ClusterAgent::ensure(ClusterTime now) {
  if (!started_ || stopped_)
    return;
  if (outage_) {
    if (probe_call_ == 0 && now >= retry_at_) {
      // One request that needs etcd's quorum: the lease's keepalive (or a new lease).
      probe_call_ = lease_ != 0 ? call(CallKind::keepalive, EtcdLeaseKeepAlive{lease_})
                                : call(CallKind::grant, EtcdLeaseGrant{config_.ttl.count() / 1000});
      if (lease_ != 0)
        keepalive_call_ = probe_call_;
      else
        grant_call_ = probe_call_;
    }
    return;
  }
  if (lease_ == 0 && grant_call_ == 0)
    grant_call_ = call(CallKind::grant, EtcdLeaseGrant{config_.ttl.count() / 1000});
  if (!synced_ && snapshot_call_ == 0)
    snapshot_call_ = call(CallKind::snapshot, EtcdRange{prefix_, etcd_prefix_end(prefix_)});
  if (synced_ && watch_call_ == 0 && snapshot_call_ == 0 && now >= watch_retry_at_) {
    watch_call_ =
        call(CallKind::watch, EtcdWatch{prefix_, etcd_prefix_end(prefix_), revision_ + 1});
    watch_opened_at_ = now;
  }
  if (lease_ != 0 && keepalive_call_ == 0 && now >= keepalive_at_)
    keepalive_call_ = call(CallKind::keepalive, EtcdLeaseKeepAlive{lease_});
  if (!live())
    return;
  std::vector<std::string> work;
  for (const auto& [alias, seq] : orphans_)
    work.push_back(alias);
  for (const auto& [alias, local] : locals_) {
    if (wants_publish(alias, local))
      work.push_back(alias);
  }
  for (const auto& alias : work)
    advance(alias);
}

/// Issues the next etcd step for `alias`, one at a time per alias: delete our stale
/// key first, then put the local registration.
void ClusterAgent::advance(const std::string& alias) {
  if (!live() || busy_.count(alias) != 0)
    return;
  if (const auto orphan = orphans_.find(alias); orphan != orphans_.end()) {
    busy_[alias] =
        call(CallKind::withdraw, withdraw_txn(key(alias), orphan->second), alias, orphan->second);
    return;
  }
  const auto it = locals_.find(alias);
  if (it == locals_.end())
    return;
  Local& local = it->second;
  if (!wants_publish(alias, local))
    return;
  if (const auto holder = view_.find(alias); holder != view_.end()) {
    // Taken while we waited: the holder is the older registration.
    if (local.ticket != 0) {
      verdict(local, alias, alias_in_use_error(alias));
      locals_.erase(it);
      return;
    }
    local.state = Local::State::conflicted;
    local.holder_seen = 0;
    out_.emplace_back(ClusterConflict{alias, holder->second});
    return;
  }
  local.state = Local::State::publishing;
  local.call = call(CallKind::publish, publish_txn(key(alias), local.info, lease_), alias);
  busy_[alias] = local.call;
}

bool ClusterAgent::wants_publish(const std::string& alias, const Local& local) const {
  if (local.state == Local::State::waiting)
    return true;
  // A holder that our view does not show (any more) once it has caught up with the
  // revision the holder was seen at: it is gone.
  return local.state == Local::State::conflicted && view_.count(alias) == 0 &&
         revision_ >= local.holder_seen;
}

void ClusterAgent::on_response(std::uint64_t id, const EtcdResponse& r, ClusterTime now) {
  const auto it = pending_.find(id);
  if (it == pending_.end())
    return;
  const Pending p = it->second;
  if (p.kind != CallKind::watch || r.stream_end || r.status != EtcdStatus::ok)
    pending_.erase(it);
  if (stopped_)
    return;
  const bool ok = r.status == EtcdStatus::ok;
  if (!p.alias.empty() && (p.kind == CallKind::publish || p.kind == CallKind::withdraw)) {
    const auto busy = busy_.find(p.alias);
    if (busy != busy_.end() && busy->second == id)
      busy_.erase(busy);
  }
  switch (p.kind) {
    case CallKind::grant:
      if (id == grant_call_)
        grant_call_ = 0;
      if (id == probe_call_)
        probe_call_ = 0;
      if (!ok || r.lease == 0) {
        enter_outage(now, r.error.empty() ? "lease grant refused" : r.error);
        break;
      }
      if (outage_)
        leave_outage();
      if (lease_ != 0 && lease_ != r.lease) {
        call(CallKind::revoke, EtcdLeaseRevoke{r.lease});  // a second grant raced the first
        break;
      }
      lease_ = r.lease;
      keepalive_at_ = now + config_.ttl / 3;
      break;
    case CallKind::keepalive:
      if (id == keepalive_call_)
        keepalive_call_ = 0;
      if (id == probe_call_)
        probe_call_ = 0;
      if (!ok) {
        enter_outage(now, r.error);
        break;
      }
      if (outage_)
        leave_outage();
      if (r.ttl <= 0)
        lease_lost();
      else
        keepalive_at_ = now + config_.ttl / 3;
      break;
    case CallKind::snapshot:
      if (id == snapshot_call_)
        snapshot_call_ = 0;
      if (!ok) {
        enter_outage(now, r.error);
        break;
      }
      on_snapshot(r);
      break;
    case CallKind::watch:
      on_watch(id, r, now);
      break;
    case CallKind::publish:
      on_publish(p, id, r, now);
      break;
    case CallKind::withdraw:
      if (!ok) {
        enter_outage(now, r.error);
        break;
      }
      if (const auto orphan = orphans_.find(p.alias);
          orphan != orphans_.end() && orphan->second == p.revision)
        orphans_.erase(orphan);
      break;
    case CallKind::revoke:
      break;
  }
  if (!p.alias.empty())
    advance(p.alias);
  ensure(now);
}

void ClusterAgent::on_publish(const Pending& p, std::uint64_t id, const EtcdResponse& r,
                              ClusterTime now) {
  const auto it = locals_.find(p.alias);
  Local* local = it != locals_.end() && it->second.call == id ? &it->second : nullptr;
  if (r.status != EtcdStatus::ok) {
    // Maybe applied, maybe not: the next publish (same txn) tells, its failure branch
    // showing our own lease.
    if (local != nullptr) {
      local->state = Local::State::waiting;
      verdict(*local, p.alias, {});
    }
    if (r.code == 5 && r.error.find("lease not found") != std::string::npos)
      lease_lost();
    else
      enter_outage(now, r.error);
    return;
  }
  std::int64_t created = 0;
  const EtcdKeyValue* holder = r.kvs.empty() ? nullptr : &r.kvs.front();
  if (r.succeeded)
    created = r.revision;
  else if (holder != nullptr && lease_ != 0 && holder->lease == lease_)
    created = holder->create_revision;  // our own earlier try went through
  if (created != 0) {
    if (local == nullptr) {
      orphans_[p.alias] = created;  // unregistered meanwhile
      return;
    }
    local->state = Local::State::published;
    local->create_revision = created;
    verdict(*local, p.alias, {});
    return;
  }
  if (local == nullptr)
    return;
  if (local->ticket != 0) {
    verdict(*local, p.alias, alias_in_use_error(p.alias));
    locals_.erase(it);
    return;
  }
  local->state = Local::State::conflicted;
  local->holder_seen = holder != nullptr ? holder->mod_revision : r.revision;
  ClusterNode node;
  node.alias = p.alias;
  if (holder != nullptr) {
    node.info = holder->value;
    node.create_revision = holder->create_revision;
  }
  out_.emplace_back(ClusterConflict{p.alias, std::move(node)});
}

void ClusterAgent::on_snapshot(const EtcdResponse& r) {
  std::map<std::string, ClusterNode, std::less<>> seen;
  for (const auto& kv : r.kvs) {
    if (kv.key.size() <= prefix_.size() || kv.key.compare(0, prefix_.size(), prefix_) != 0)
      continue;
    std::string alias = kv.key.substr(prefix_.size());
    if (lease_ != 0 && kv.lease == lease_) {
      // Ours: still registered here, or to be deleted.
      const auto local = locals_.find(alias);
      if (local != locals_.end() && local->second.state != Local::State::publishing) {
        if (local->second.state != Local::State::published ||
            local->second.create_revision != kv.create_revision) {
          local->second.state = Local::State::published;
          local->second.create_revision = kv.create_revision;
          verdict(local->second, alias, {});
        }
      } else if (local == locals_.end() && busy_.count(alias) == 0) {
        orphans_[alias] = kv.create_revision;
      }
      continue;
    }
    seen.emplace(alias, ClusterNode{alias, kv.value, kv.create_revision});
  }
  // The difference to the view we had, in alias order: leaves, then joins.
  std::vector<std::string> gone;
  for (const auto& [alias, node] : view_) {
    const auto now_there = seen.find(alias);
    if (now_there == seen.end() || now_there->second.create_revision != node.create_revision ||
        now_there->second.info != node.info)
      gone.push_back(alias);
  }
  for (const auto& alias : gone)
    drop_remote(alias);
  for (auto& [alias, node] : seen) {
    if (view_.count(alias) == 0)
      set_remote(std::move(node));
  }
  revision_ = std::max(revision_, r.revision);
  synced_ = true;
  if (reported_stale_ && !stale()) {
    reported_stale_ = false;
    out_.emplace_back(ClusterStale{false, {}});
  }
}

void ClusterAgent::on_watch(std::uint64_t id, const EtcdResponse& r, ClusterTime now) {
  if (id != watch_call_)
    return;  // an old watch, canceled
  if (r.status == EtcdStatus::ok && r.created && !r.stream_end) {
    watch_created_ = id;
    return;
  }
  for (const auto& event : r.events)
    apply(event);
  if (r.status == EtcdStatus::ok && !r.stream_end && !r.canceled) {
    if (r.events.empty() && r.revision > revision_)
      revision_ = r.revision;  // a progress notification
    return;
  }
  // The watch is over.
  const bool was_open = watch_created_ == id;
  watch_call_ = 0;
  watch_created_ = 0;
  if (r.canceled && r.compact_revision > 0) {
    // Events we missed are compacted away: read the prefix again, emit the difference.
    synced_ = false;
    return;
  }
  if (!was_open && r.status != EtcdStatus::ok) {
    enter_outage(now, r.error);  // no endpoint would open it
    return;
  }
  // It broke (a member went away): resume from the last revision at once, unless it
  // keeps breaking right after it opened.
  if (now - watch_opened_at_ < milliseconds(1000)) {
    watch_backoff_ = std::clamp(watch_backoff_ * 2, config_.retry_min, config_.retry_max);
    watch_retry_at_ = now + jittered(watch_backoff_);
  } else {
    watch_backoff_ = milliseconds(0);
    watch_retry_at_ = now;
  }
}

void ClusterAgent::apply(const EtcdWatchEvent& event) {
  const auto& key = event.kv.key;
  revision_ = std::max(revision_, event.kv.mod_revision);
  if (key.size() <= prefix_.size() || key.compare(0, prefix_.size(), prefix_) != 0)
    return;
  const std::string alias = key.substr(prefix_.size());
  if (event.type == EtcdWatchEvent::Type::put) {
    if (lease_ != 0 && event.kv.lease == lease_)
      return;  // our own put: its txn's answer says the rest
    const auto old = view_.find(alias);
    if (old != view_.end()) {
      if (old->second.create_revision == event.kv.create_revision &&
          old->second.info == event.kv.value)
        return;
      drop_remote(alias);
    }
    set_remote(ClusterNode{alias, event.kv.value, event.kv.create_revision});
    return;
  }
  if (view_.count(alias) != 0) {
    drop_remote(alias);
    advance(alias);  // a local registration that lost the alias may take it now
    return;
  }
  // Our own key deleted (the lease expired, or by hand) while registered here: put it again.
  const auto local = locals_.find(alias);
  if (local == locals_.end() || local->second.state != Local::State::published)
    return;
  const std::int64_t created = event.prev.create_revision;
  if ((created != 0 && created == local->second.create_revision) ||
      (created == 0 && event.kv.mod_revision > local->second.create_revision)) {
    local->second.state = Local::State::waiting;
    advance(alias);
  }
}

void ClusterAgent::set_remote(ClusterNode node) {
  out_.emplace_back(ClusterJoin{node});
  std::string alias = node.alias;
  view_.insert_or_assign(std::move(alias), std::move(node));
}

void ClusterAgent::drop_remote(const std::string& alias) {
  const auto it = view_.find(alias);
  if (it == view_.end())
    return;
  out_.emplace_back(ClusterLeave{std::move(it->second)});
  view_.erase(it);
}

void ClusterAgent::enter_outage(ClusterTime now, const std::string& reason) {
  if (!outage_) {
    outage_ = true;
    outage_reason_ = reason.empty() ? "etcd unreachable" : reason;
    backoff_ = config_.retry_min;
    if (watch_call_ != 0)
      out_.emplace_back(ClusterCancel{watch_call_});
    watch_call_ = 0;
    watch_created_ = 0;
    // Registrations go on locally while etcd is away.
    for (auto& [alias, local] : locals_)
      verdict(local, alias, {});
  }
  retry_at_ = now + jittered(backoff_);
  backoff_ = std::min(backoff_ * 2, config_.retry_max);
  if (!reported_stale_) {
    reported_stale_ = true;
    out_.emplace_back(ClusterStale{true, outage_reason_});
  }
}

void ClusterAgent::leave_outage() {
  outage_ = false;
  outage_reason_.clear();
  watch_retry_at_ = {};
  watch_backoff_ = milliseconds(0);
  keepalive_at_ = {};
  if (reported_stale_ && !stale()) {
    reported_stale_ = false;
    out_.emplace_back(ClusterStale{false, {}});
  }
}

void ClusterAgent::lease_lost() {
  // etcd deleted our keys with the lease: every registration is put again, with a new one.
  lease_ = 0;
  for (auto& [alias, local] : locals_) {
    if (local.state == Local::State::published)
      local.state = Local::State::waiting;
  }
  orphans_.clear();
}

const ClusterNode* ClusterAgent::find(std::string_view alias) const {
  const auto it = view_.find(alias);
  return it == view_.end() ? nullptr : &it->second;
}

std::vector<ClusterNode> ClusterAgent::nodes() const {
  std::vector<ClusterNode> out;
  out.reserve(view_.size());
  for (const auto& [alias, node] : view_)
    out.push_back(node);
  return out;
}

}  // namespace distflow
