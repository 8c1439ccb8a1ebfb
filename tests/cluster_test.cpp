// ClusterAgent without etcd: several agents ("PMDs") against a fake store that
// keeps etcd's semantics (revisions, leases that expire, txn compares, prefix
// ranges, watches replayed from a revision, compaction), with simulated time,
// partitions (one PMD cannot reach etcd), a slow etcd and frozen PMDs.

#include "cluster.hpp"

#include <deque>
#include <map>
#include <memory>
#include <set>

#include <catch2/catch.hpp>

namespace distflow {
namespace {

using namespace std::chrono_literals;

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

/// etcd's key space, leases and history, as far as the agent uses them.
class FakeEtcd {
 public:
  struct Broadcast {
    std::string key;
    EtcdWatchEvent event;
  };

  std::int64_t revision = 1;
  std::int64_t compacted = 0;
  std::map<std::string, EtcdKeyValue> kv;
  std::vector<EtcdWatchEvent> history;  // every event, in revision order
  std::vector<EtcdWatchEvent> fresh;    // events since the last take_fresh()

  EtcdResponse handle(const EtcdRequest& request, ClusterTime now) {
    EtcdResponse r;
    std::visit(
        Overloaded{
            [&](const EtcdLeaseGrant& g) {
              r.lease = next_lease_++;
              r.ttl = g.ttl_seconds;
              leases_[r.lease] = {g.ttl_seconds, now + std::chrono::seconds(g.ttl_seconds)};
            },
            [&](const EtcdLeaseKeepAlive& k) {
              r.lease = k.lease;
              const auto it = leases_.find(k.lease);
              if (it == leases_.end())
                return;  // TTL 0: gone
              it->second.expires = now + std::chrono::seconds(it->second.ttl);
              r.ttl = it->second.ttl;
            },
            [&](const EtcdLeaseRevoke& k) {
              if (leases_.count(k.lease) == 0) {
                r = lease_not_found();
                return;
              }
              drop_lease(k.lease);
            },
            [&](const EtcdPut& p) {
              if (p.lease != 0 && leases_.count(p.lease) == 0) {
                r = lease_not_found();
                return;
              }
              ++revision;
              put(p.key, p.value, p.lease);
            },
            [&](const EtcdRange& g) { r.kvs = range(g.key, g.range_end); },
            [&](const EtcdDeleteRange& d) {
              const auto keys = range(d.key, d.range_end);
              if (!keys.empty())
                ++revision;
              for (const auto& k : keys)
                erase(k.key);
              r.deleted = static_cast<std::int64_t>(keys.size());
            },
            [&](const EtcdTxn& t) {
              bool ok = true;
              for (const auto& c : t.compare)
                ok = ok && holds(c);
              const auto& ops = ok ? t.success : t.failure;
              for (const auto& op : ops) {
                if (op.kind == EtcdOp::Kind::put && op.lease != 0 && leases_.count(op.lease) == 0) {
                  r = lease_not_found();
                  return;
                }
              }
              bool bumped = false;
              for (const auto& op : ops) {
                if (op.kind == EtcdOp::Kind::range) {
                  auto found = range(op.key, op.range_end);
                  r.kvs.insert(r.kvs.end(), found.begin(), found.end());
                  continue;
                }
                std::vector<EtcdKeyValue> keys;
                if (op.kind == EtcdOp::Kind::put) {
                  keys.emplace_back();
                  keys.back().key = op.key;
                } else {
                  keys = range(op.key, op.range_end);
                }
                if (!bumped && !keys.empty()) {
                  ++revision;
                  bumped = true;
                }
                if (op.kind == EtcdOp::Kind::put)
                  put(op.key, op.value, op.lease);
                else
                  for (const auto& k : keys)
                    erase(k.key);
                r.deleted +=
                    op.kind == EtcdOp::Kind::put ? 0 : static_cast<std::int64_t>(keys.size());
              }
              r.succeeded = ok;
            },
            [&](const EtcdWatch&) {},
            [&](const EtcdAuthenticate&) {},
            [&](const EtcdCompaction& c) { compact(c.revision); },
        },
        request);
    r.revision = revision;
    return r;
  }

  /// Leases past their TTL: their keys are deleted in one revision.
  void expire(ClusterTime now) {
    std::vector<std::int64_t> gone;
    for (const auto& [id, lease] : leases_) {
      if (lease.expires <= now)
        gone.push_back(id);
    }
    for (const auto id : gone)
      drop_lease(id);
  }

  void compact(std::int64_t rev) {
    compacted = rev;
    std::erase_if(history, [&](const EtcdWatchEvent& e) { return e.kv.mod_revision < rev; });
  }

  std::vector<EtcdWatchEvent> take_fresh() {
    std::vector<EtcdWatchEvent> out;
    out.swap(fresh);
    return out;
  }

  std::vector<EtcdKeyValue> range(const std::string& key, const std::string& end) const {
    std::vector<EtcdKeyValue> out;
    if (end.empty()) {
      if (const auto it = kv.find(key); it != kv.end())
        out.push_back(it->second);
      return out;
    }
    for (auto it = kv.lower_bound(key); it != kv.end() && it->first < end; ++it)
      out.push_back(it->second);
    return out;
  }

  bool has_lease(std::int64_t id) const { return leases_.count(id) != 0; }

 private:
  struct Lease {
    std::int64_t ttl;
    ClusterTime expires;
  };

  static EtcdResponse lease_not_found() {
    EtcdResponse r;
    r.status = EtcdStatus::failed;
    r.code = 5;
    r.error = "etcdserver: requested lease not found";
    return r;
  }

  bool holds(const EtcdCompare& c) const {
    const auto it = kv.find(c.key);
    std::int64_t have = 0;
    switch (c.target) {
      case EtcdCompare::Target::create:
        have = it == kv.end() ? 0 : it->second.create_revision;
        break;
      case EtcdCompare::Target::mod:
        have = it == kv.end() ? 0 : it->second.mod_revision;
        break;
      case EtcdCompare::Target::version:
        have = it == kv.end() ? 0 : it->second.version;
        break;
      case EtcdCompare::Target::lease:
        have = it == kv.end() ? 0 : it->second.lease;
        break;
      case EtcdCompare::Target::value:
        return (it != kv.end() && it->second.value == c.value) ==
               (c.result == EtcdCompare::Result::equal);
    }
    switch (c.result) {
      case EtcdCompare::Result::equal:
        return have == c.number;
      case EtcdCompare::Result::not_equal:
        return have != c.number;
      case EtcdCompare::Result::greater:
        return have > c.number;
      case EtcdCompare::Result::less:
        return have < c.number;
    }
    return false;
  }

  void put(const std::string& key, const std::string& value, std::int64_t lease) {
    EtcdWatchEvent e;
    auto& slot = kv[key];
    e.prev = slot;
    if (slot.create_revision == 0) {
      slot.key = key;
      slot.create_revision = revision;
    }
    slot.mod_revision = revision;
    ++slot.version;
    slot.value = value;
    slot.lease = lease;
    e.kv = slot;
    record(e);
  }

  void erase(const std::string& key) {
    EtcdWatchEvent e;
    e.type = EtcdWatchEvent::Type::del;
    e.prev = kv.at(key);
    e.kv.key = key;
    e.kv.mod_revision = revision;
    kv.erase(key);
    record(e);
  }

  void record(const EtcdWatchEvent& e) {
    history.push_back(e);
    fresh.push_back(e);
  }

  void drop_lease(std::int64_t id) {
    leases_.erase(id);
    std::vector<std::string> keys;
    for (const auto& [key, value] : kv) {
      if (value.lease == id)
        keys.push_back(key);
    }
    if (!keys.empty())
      ++revision;
    for (const auto& key : keys)
      erase(key);
  }

  std::int64_t next_lease_ = 7000;
  std::map<std::int64_t, Lease> leases_;
};

/// One PMD's agent and what it decided.
struct Pmd {
  Pmd(const ClusterConfig& config, std::uint64_t seed) : agent(config, seed) {}
  ClusterAgent agent;
  bool partitioned = false;         // its calls fail as unavailable
  bool slow = false;                // its calls wait in `held` until released
  bool frozen = false;              // a dead process: no ticks, nothing delivered, nothing sent
  std::vector<std::string> events;  // "+alias" (join) / "-alias" (leave), in order
  std::map<std::uint64_t, std::string> verdicts;
  std::vector<ClusterConflict> conflicts;
  std::vector<bool> stale_reports;
  std::set<std::uint64_t> watches;  // its open watches at the store
  std::vector<ClusterCall> held;

  std::vector<std::string> view() const {
    std::vector<std::string> out;
    for (const auto& node : agent.nodes())
      out.push_back(node.alias + "=" + node.info);
    return out;
  }
  std::size_t leaves() const {
    return static_cast<std::size_t>(std::count_if(
        events.begin(), events.end(), [](const std::string& e) { return e[0] == '-'; }));
  }
};

struct Watcher {
  Pmd* pmd;
  std::uint64_t id;
  std::string key, end;
};

class World {
 public:
  explicit World(ClusterConfig config = {}) : config_(std::move(config)) { config_.name = "test"; }

  Pmd& add(bool start = true) {
    pmds_.push_back(std::make_unique<Pmd>(config_, 1000 + pmds_.size()));
    if (start) {
      pmds_.back()->agent.start(now);
      pump();
    }
    return *pmds_.back();
  }

  std::uint64_t register_node(Pmd& p, const std::string& alias) {
    const auto ticket = p.agent.register_local(alias, info(alias, &p), now);
    pump();
    return ticket;
  }
  void unregister(Pmd& p, const std::string& alias) {
    p.agent.unregister_local(alias, now);
    pump();
  }
  std::string info(const std::string& alias, const Pmd* p) const {
    return "{\"alias\":\"" + alias + "\",\"pmd\":" + std::to_string(index(p)) + "}";
  }

  /// Moves time on in steps, ticking every live PMD and expiring leases.
  void run_for(std::chrono::milliseconds total, std::chrono::milliseconds step = 50ms) {
    for (auto t = 0ms; t < total; t += step) {
      now += step;
      etcd.expire(now);
      broadcast();
      for (auto& p : pmds_) {
        if (!p->frozen && now >= p->agent.next_wakeup())
          p->agent.on_tick(now);
      }
      pump();
    }
  }

  void partition(Pmd& p) {
    p.partitioned = true;
    end_watches(p, EtcdStatus::unavailable);
  }
  void heal(Pmd& p) { p.partitioned = false; }
  /// The watch streams of `p` break (the member serving them went away).
  void break_watches(Pmd& p) { end_watches(p, EtcdStatus::unavailable); }
  void release(Pmd& p) {
    auto held = std::move(p.held);
    p.held.clear();
    for (auto& c : held)
      execute(p, c);
    pump();
  }

  /// Delivers everything until no agent has anything more to say.
  void pump() {
    for (int guard = 0; guard < 100000; ++guard) {
      bool any = false;
      for (auto& p : pmds_) {
        if (p->frozen)
          continue;
        for (auto& out : p->agent.take_outputs()) {
          any = true;
          handle(*p, out);
        }
      }
      broadcast();
      if (!inbox_.empty()) {
        any = true;
        auto [p, id, r] = std::move(inbox_.front());
        inbox_.pop_front();
        if (!p->frozen)
          p->agent.on_response(id, r, now);
      }
      if (!any)
        return;
    }
    FAIL("the agents never went quiet (a request loop)");
  }

  std::size_t index(const Pmd* p) const {
    for (std::size_t i = 0; i < pmds_.size(); ++i) {
      if (pmds_[i].get() == p)
        return i;
    }
    return 99;
  }

  FakeEtcd etcd;
  ClusterTime now = ClusterTime{} + 24h;
  std::size_t calls = 0;

 private:
  void handle(Pmd& p, ClusterOutput& out) {
    std::visit(Overloaded{
                   [&](ClusterCall& c) {
                     ++calls;
                     if (p.partitioned) {
                       EtcdResponse r;
                       r.status = EtcdStatus::unavailable;
                       r.error = "etcd 127.0.0.1:2379: connection refused";
                       r.stream_end = std::holds_alternative<EtcdWatch>(c.request);
                       inbox_.emplace_back(&p, c.id, r);
                     } else if (p.slow && !std::holds_alternative<EtcdWatch>(c.request)) {
                       p.held.push_back(std::move(c));
                     } else {
                       execute(p, c);
                     }
                   },
                   [&](ClusterCancel& c) {
                     const auto it = std::find_if(
                         watchers_.begin(), watchers_.end(),
                         [&](const Watcher& w) { return w.pmd == &p && w.id == c.id; });
                     if (it == watchers_.end())
                       return;
                     watchers_.erase(it);
                     EtcdResponse r;
                     r.status = EtcdStatus::canceled;
                     r.stream_end = true;
                     inbox_.emplace_back(&p, c.id, r);
                   },
                   [&](ClusterJoin& j) { p.events.push_back("+" + j.node.alias); },
                   [&](ClusterLeave& l) { p.events.push_back("-" + l.node.alias); },
                   [&](ClusterVerdict& v) { p.verdicts[v.ticket] = v.error; },
                   [&](ClusterConflict& c) { p.conflicts.push_back(c); },
                   [&](ClusterStale& s) { p.stale_reports.push_back(s.stale); },
               },
               out);
  }

  void execute(Pmd& p, ClusterCall& c) {
    if (const auto* w = std::get_if<EtcdWatch>(&c.request)) {
      EtcdResponse created;
      created.created = true;
      created.revision = etcd.revision;
      if (w->start_revision != 0 && w->start_revision < etcd.compacted) {
        inbox_.emplace_back(&p, c.id, created);
        EtcdResponse canceled;
        canceled.canceled = true;
        canceled.compact_revision = etcd.compacted;
        canceled.stream_end = true;
        inbox_.emplace_back(&p, c.id, canceled);
        return;
      }
      inbox_.emplace_back(&p, c.id, created);
      EtcdResponse replay;
      for (const auto& e : etcd.history) {
        if (e.kv.mod_revision >= w->start_revision && e.kv.key >= w->key && e.kv.key < w->range_end)
          replay.events.push_back(e);
      }
      if (!replay.events.empty()) {
        replay.revision = etcd.revision;
        inbox_.emplace_back(&p, c.id, replay);
      }
      watchers_.push_back({&p, c.id, w->key, w->range_end});
      return;
    }
    inbox_.emplace_back(&p, c.id, etcd.handle(c.request, now));
  }

  void broadcast() {
    const auto fresh = etcd.take_fresh();
    if (fresh.empty())
      return;
    for (const auto& w : watchers_) {
      EtcdResponse m;
      m.revision = etcd.revision;
      for (const auto& e : fresh) {
        if (e.kv.key >= w.key && e.kv.key < w.end)
          m.events.push_back(e);
      }
      if (!m.events.empty())
        inbox_.emplace_back(w.pmd, w.id, m);
    }
  }

  void end_watches(Pmd& p, EtcdStatus status) {
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      if (it->pmd != &p) {
        ++it;
        continue;
      }
      EtcdResponse r;
      r.status = status;
      r.error = "etcd 127.0.0.1:2379: stream: end of stream";
      r.stream_end = true;
      inbox_.emplace_back(&p, it->id, r);
      it = watchers_.erase(it);
    }
    pump();
  }

  ClusterConfig config_;
  std::vector<std::unique_ptr<Pmd>> pmds_;
  std::vector<Watcher> watchers_;
  std::deque<std::tuple<Pmd*, std::uint64_t, EtcdResponse>> inbox_;
};

std::vector<std::string> aliases(const Pmd& p) {
  std::vector<std::string> out;
  for (const auto& node : p.agent.nodes())
    out.push_back(node.alias);
  return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("cluster: a registration becomes a remote join elsewhere, a leave deletes it at once",
          "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  CHECK_FALSE(a.agent.stale());
  CHECK(a.stale_reports == std::vector<bool>{false});

  const auto t = w.register_node(a, "worker");
  REQUIRE(a.verdicts.count(t) == 1);
  CHECK(a.verdicts[t].empty());
  REQUIRE(w.etcd.kv.count("distflow/test/nodes/worker") == 1);
  const auto& key = w.etcd.kv.at("distflow/test/nodes/worker");
  CHECK(key.value == w.info("worker", &a));
  CHECK(key.lease == a.agent.lease());
  CHECK(b.events == Strings{"+worker"});
  REQUIRE(b.agent.find("worker") != nullptr);
  CHECK(b.agent.find("worker")->info == w.info("worker", &a));
  CHECK(b.agent.find("worker")->create_revision == key.create_revision);
  CHECK(a.events.empty());  // its own registration is not remote
  CHECK(a.agent.find("worker") == nullptr);

  w.unregister(a, "worker");
  CHECK(w.etcd.kv.empty());
  CHECK(b.events == Strings{"+worker", "-worker"});
  CHECK(b.agent.nodes().empty());
}

TEST_CASE("cluster: aliases are unique cluster-wide with the original's error", "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "svc");
  const auto t = w.register_node(b, "svc");  // known remote: refused at once
  CHECK(b.verdicts.at(t) == "Alias 'svc' already in use");
  CHECK(alias_in_use_error("svc") == "Alias 'svc' already in use");

  // Both register before either sees the other: etcd's txn decides.
  a.slow = b.slow = true;
  const auto ta = w.register_node(a, "race");
  const auto tb = w.register_node(b, "race");
  CHECK(a.verdicts.count(ta) == 0);
  w.release(a);
  w.release(b);
  CHECK(a.verdicts.at(ta).empty());
  CHECK(b.verdicts.at(tb) == "Alias 'race' already in use");
  CHECK(w.etcd.kv.at("distflow/test/nodes/race").lease == a.agent.lease());
  CHECK(aliases(b) == Strings{"race", "svc"});
  CHECK(b.conflicts.empty());

  // A refused alias is not registered: b may take it once a is gone.
  a.slow = b.slow = false;
  w.unregister(a, "race");
  const auto again = w.register_node(b, "race");
  CHECK(b.verdicts.at(again).empty());
  CHECK(a.events.back() == "+race");
}

TEST_CASE("cluster: the first read of the prefix joins what exists; the view follows in order",
          "[cluster]") {
  World w;
  auto& a = w.add();
  for (const auto* alias : {"n1", "n2", "n3"})
    w.register_node(a, alias);
  w.unregister(a, "n2");
  auto& b = w.add();  // reads n1, n3, then watches
  CHECK(b.events == Strings{"+n1", "+n3"});
  w.register_node(a, "n4");
  w.unregister(a, "n1");
  w.register_node(a, "n1");  // the same alias again: leave, then join
  CHECK(b.events == Strings{"+n1", "+n3", "+n4", "-n1", "+n1"});
  CHECK(aliases(b) == Strings{"n1", "n3", "n4"});

  // A register waits for the first read (at most register_timeout).
  auto& c = w.add(false);
  c.agent.start(w.now);
  c.slow = true;
  w.pump();
  const auto t = c.agent.register_local("late", "{}", w.now);
  w.pump();
  CHECK(c.verdicts.count(t) == 0);
  w.release(c);
  w.release(c);
  CHECK(c.verdicts.at(t).empty());
  CHECK(b.events.back() == "+late");
}

TEST_CASE("cluster: the lease is kept alive; a PMD that stops keeps its nodes only for the TTL",
          "[cluster]") {
  ClusterConfig config;
  config.ttl = 3s;
  World w(config);
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "x");
  const auto calls = w.calls;
  w.run_for(30s);
  CHECK(b.events == Strings{"+x"});  // 30 s > TTL: kept alive
  const auto keepalives = w.calls - calls;
  CHECK(keepalives >= 2 * 30 / 1);  // both PMDs, every ttl/3 = 1 s
  CHECK(keepalives <= 2 * 30 / 1 + 4);

  a.frozen = true;  // the PMD died: no more keepalives, no revoke
  w.run_for(4s);
  CHECK(b.events == Strings{"+x", "-x"});
  CHECK(w.etcd.kv.empty());
}

TEST_CASE("cluster: stop revokes the lease and the other PMDs see every leave at once",
          "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "p");
  w.register_node(a, "q");
  a.agent.stop(w.now);
  w.pump();
  CHECK(b.events == Strings{"+p", "+q", "-p", "-q"});
  CHECK(w.etcd.kv.empty());
  w.run_for(5s);  // a stopped agent asks nothing more
  CHECK(a.agent.next_wakeup() == ClusterTime::max());
}

TEST_CASE("cluster: etcd unreachable keeps the view (no leave), goes on locally, reconciles after",
          "[cluster]") {
  ClusterConfig config;
  config.ttl = 10s;
  config.retry_max = 500ms;
  World w(config);
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "a1");
  w.register_node(a, "a2");
  w.register_node(b, "b1");
  w.register_node(b, "b2");

  w.partition(a);
  w.run_for(4s);  // the next keepalive fails
  CHECK(a.agent.stale());
  CHECK(a.stale_reports == std::vector<bool>{false, true});
  CHECK(aliases(a) == Strings{"b1", "b2"});  // the last view, kept

  // Local registration goes on: accepted at once, put later.
  const auto t = w.register_node(a, "a3");
  CHECK(a.verdicts.at(t).empty());
  w.unregister(a, "a2");  // deleted when etcd is back
  // Meanwhile, on b (which reaches etcd): changes a must see in order afterwards.
  w.unregister(b, "b1");
  w.register_node(b, "b3");
  w.run_for(1s);  // 5 s in all, under the TTL from the last keepalive: a's lease survives
  CHECK(a.leaves() == 0);
  CHECK(aliases(a) == Strings{"b1", "b2"});

  w.heal(a);
  w.run_for(2s);  // the backoff's next probe gets through
  CHECK_FALSE(a.agent.stale());
  CHECK(a.stale_reports == std::vector<bool>{false, true, false});
  CHECK(a.events == Strings{"+b1", "+b2", "-b1", "+b3"});  // resumed in order, no gap
  CHECK(aliases(a) == Strings{"b2", "b3"});
  CHECK(aliases(b) == Strings{"a1", "a3"});
  CHECK(b.events == Strings{"+a1", "+a2", "-a2", "+a3"});
}

TEST_CASE("cluster: a partition longer than the TTL loses the lease; the keys are put again",
          "[cluster]") {
  ClusterConfig config;
  config.ttl = 3s;
  World w(config);
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "a1");
  w.register_node(b, "b1");
  const auto old_lease = a.agent.lease();
  w.partition(a);
  w.run_for(8s);
  CHECK(b.events == Strings{"+a1", "-a1"});  // etcd expired a's lease: that leave is real
  CHECK(a.leaves() == 0);                    // a saw nothing leave because of the outage
  w.heal(a);
  w.run_for(8s);
  CHECK_FALSE(a.agent.stale());
  CHECK(a.agent.lease() != old_lease);
  CHECK(w.etcd.kv.at("distflow/test/nodes/a1").lease == a.agent.lease());
  CHECK(b.events == Strings{"+a1", "-a1", "+a1"});
  CHECK(a.events == Strings{"+b1"});
}

TEST_CASE("cluster: an alias taken during an outage stays with the older registration",
          "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.partition(a);
  w.run_for(4s);
  REQUIRE(a.agent.stale());
  const auto ta = w.register_node(a, "dup");  // accepted locally
  CHECK(a.verdicts.at(ta).empty());
  const auto tb = w.register_node(b, "dup");  // b reaches etcd: it holds the key
  CHECK(b.verdicts.at(tb).empty());
  const auto held = w.etcd.kv.at("distflow/test/nodes/dup");

  w.heal(a);
  w.run_for(6s);
  REQUIRE(a.conflicts.size() == 1);
  CHECK(a.conflicts[0].alias == "dup");
  CHECK(a.conflicts[0].holder.create_revision == held.create_revision);
  CHECK(a.conflicts[0].holder.info == w.info("dup", &b));
  CHECK(aliases(a) == Strings{"dup"});  // the holder, remote
  CHECK(w.etcd.kv.at("distflow/test/nodes/dup").create_revision == held.create_revision);
  CHECK(b.events.empty());
  const auto calls = w.calls;
  w.run_for(10s);
  CHECK(w.calls - calls <= 2 * 10 / 3 + 4);  // keepalives only: no publish loop

  // The holder leaves: a's node, still registered there, takes the alias.
  w.unregister(b, "dup");
  CHECK(w.etcd.kv.at("distflow/test/nodes/dup").lease == a.agent.lease());
  CHECK(b.events == Strings{"+dup"});
  CHECK(a.events == Strings{"+dup", "-dup"});
}

TEST_CASE("cluster: a register waits at most register_timeout, then a late loss is a conflict",
          "[cluster]") {
  ClusterConfig config;
  config.register_timeout = 800ms;
  World w(config);
  auto& a = w.add();
  auto& b = w.add();
  a.slow = true;
  const auto t = w.register_node(a, "slowpoke");
  w.run_for(500ms);
  CHECK(a.verdicts.count(t) == 0);
  w.run_for(500ms);
  CHECK(a.verdicts.at(t).empty());  // accepted locally after 800 ms
  w.register_node(b, "slowpoke");   // b gets there first
  w.release(a);
  REQUIRE(a.conflicts.size() == 1);
  CHECK(a.conflicts[0].alias == "slowpoke");
}

TEST_CASE("cluster: a broken watch resumes from the last revision, with no gap or duplicate",
          "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(b, "one");
  w.run_for(2s);
  w.break_watches(a);  // a resumes at once...
  w.register_node(b, "two");
  w.unregister(b, "one");
  CHECK(a.events == Strings{"+one", "+two", "-one"});
  CHECK_FALSE(a.agent.stale());  // nothing noticed

  // A watch that keeps breaking right after it opens is retried with backoff.
  const auto calls = w.calls;
  for (int i = 0; i < 5; ++i)
    w.break_watches(a);
  CHECK(w.calls - calls <= 2);
  w.run_for(10s);
  w.register_node(b, "three");
  CHECK(a.events.back() == "+three");
}

TEST_CASE("cluster: after a compaction the prefix is read again and only the difference emitted",
          "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(b, "keep");
  w.register_node(b, "goes");
  w.partition(a);
  w.run_for(4s);
  w.unregister(b, "goes");
  w.register_node(b, "new");
  w.unregister(b, "keep");
  w.register_node(b, "keep");  // same alias, a new registration
  w.etcd.compact(w.etcd.revision);
  w.heal(a);
  w.run_for(6s);
  CHECK_FALSE(a.agent.stale());
  // Before: keep, goes (watched); after: leaves, then joins, each in alias order.
  CHECK(a.events == Strings{"+keep", "+goes", "-goes", "-keep", "+keep", "+new"});
  CHECK(aliases(a) == Strings{"keep", "new"});
  w.register_node(b, "after");  // and it watches again
  CHECK(a.events.back() == "+after");
}

TEST_CASE("cluster: a leave during a publish deletes the key when the txn returns", "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  a.slow = true;
  w.register_node(a, "brief");
  w.unregister(a, "brief");
  w.release(a);  // the put goes through...
  w.release(a);  // ...and the delete follows
  CHECK(w.etcd.kv.empty());
  CHECK(b.events == Strings{"+brief", "-brief"});
  // Registered again right away: delete and put stay in order.
  a.slow = false;
  w.register_node(a, "brief");
  w.unregister(a, "brief");
  w.register_node(a, "brief");
  CHECK(w.etcd.kv.count("distflow/test/nodes/brief") == 1);
  CHECK(b.events.back() == "+brief");
}

TEST_CASE("cluster: our key deleted by hand is put again", "[cluster]") {
  World w;
  auto& a = w.add();
  auto& b = w.add();
  w.register_node(a, "mine");
  w.etcd.handle(EtcdDeleteRange{"distflow/test/nodes/mine", {}}, w.now);
  w.pump();
  CHECK(w.etcd.kv.count("distflow/test/nodes/mine") == 1);
  CHECK(b.events == Strings{"+mine", "-mine", "+mine"});
}

TEST_CASE("cluster: retries back off with jitter between retry_min and retry_max", "[cluster]") {
  ClusterConfig config;
  config.retry_min = 200ms;
  config.retry_max = 3200ms;
  World w(config);
  auto& a = w.add();
  w.partition(a);
  while (!a.agent.stale()) {  // to the keepalive that fails
    w.now = a.agent.next_wakeup();
    a.agent.on_tick(w.now);
    w.pump();
  }
  // Each probe fails at once: the gap to the next one doubles (half fixed, half random).
  std::vector<long long> gaps;
  for (int i = 0; i < 8; ++i) {
    const auto before = w.now;
    const auto next = a.agent.next_wakeup();
    REQUIRE(next > before);
    gaps.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(next - before).count());
    w.now = next;
    a.agent.on_tick(w.now);
    w.pump();
  }
  for (std::size_t i = 0; i < gaps.size(); ++i) {
    const long long nominal = std::min<long long>(200LL << i, 3200);
    CHECK(gaps[i] <= nominal);
    CHECK(gaps[i] >= nominal / 2 - 1);
  }
  CHECK(gaps.back() >= 1600);
}

TEST_CASE("cluster: many PMDs and registrations end with every view exact", "[cluster]") {
  World w;
  std::vector<Pmd*> pmds;
  for (int i = 0; i < 10; ++i)
    pmds.push_back(&w.add());
  for (int n = 0; n < 1000; ++n)
    w.register_node(*pmds[static_cast<std::size_t>(n % 10)], "n" + std::to_string(n));
  for (int n = 0; n < 1000; n += 7)
    w.unregister(*pmds[static_cast<std::size_t>(n % 10)], "n" + std::to_string(n));
  w.run_for(1s);
  for (std::size_t i = 0; i < pmds.size(); ++i) {
    std::set<std::string> expected;
    for (int n = 0; n < 1000; ++n) {
      if (n % 7 != 0 && static_cast<std::size_t>(n % 10) != i)
        expected.insert("n" + std::to_string(n));
    }
    const auto got = aliases(*pmds[i]);
    CHECK(std::set<std::string>(got.begin(), got.end()) == expected);
  }
}

}  // namespace distflow
