#pragma once

// The PMD's etcd agent (issue 15) as a pure state machine: time and etcd answers
// in, decisions out (etcd requests to make, remote joins and leaves, register
// verdicts). No I/O, no clock, no thread: cluster_service.hpp runs it on the
// PMD's io_context with an EtcdClient.
//
// Design. Each PMD holds one lease (TTL ttl, kept alive every ttl/3). A local
// registration is the key distflow/<cluster>/nodes/<alias>, its value the node's
// NodeInfo JSON with the advertised host, put with the lease by a txn that
// succeeds only when the key is absent: aliases are unique cluster-wide, and a
// taken alias gets the original's error "Alias '<alias>' already in use". A
// local leave deletes the key at once (a txn guarded by its create revision, so
// a key someone else re-created is never touched); a PMD that dies entirely
// disappears when its lease expires. The agent reads the prefix (noting the
// revision) and watches from the next one: the other PMDs' puts and deletes
// become ClusterJoin/ClusterLeave in etcd's order. A broken watch resumes from
// the last revision it applied; after a compaction it reads the prefix again and
// emits the difference. When etcd cannot be reached the view is kept as it was
// (no leave because of the outage) and marked stale, registrations are accepted
// locally, and a probe (keepalive, or grant) is retried with backoff and jitter;
// when one answers, the watch resumes, the keys registered meanwhile are put,
// those withdrawn are deleted, and a lost lease is replaced (its keys re-put).
// An alias that another PMD took meanwhile stays with the older registration,
// the one etcd holds (the smaller create revision): the local one is reported
// as a ClusterConflict and stays local only, published again if the holder leaves.
//
// What the PMD does with it, through PmdCluster (pmd_cluster.hpp; ClusterService
// runs this agent behind it):
//  * start: make the agent from PmdConfig's factory on the server's io_context,
//    start(on_event); at shutdown stop(1 s) before the sessions close.
//  * register (after the local checks, aliased nodes only): publish(alias, info);
//    answer the node in its Verdict: at once when the alias is known remote
//    ("Alias '<alias>' already in use") or etcd is unreachable (accepted), else
//    after etcd's txn, at most register_timeout (1 s, under a node's 2 s PMD
//    timeout). Hold that connection's later replies until then.
//  * unregister, connection closed, TTL expiry: withdraw(alias).
//  * resolve of a plain alias: the local registry first, then find().
//  * on_event join/leave: the registry's remote entries (alias, NodeInfo JSON
//    with its host) and peer:join/peer:leave for the watchers, marked remote.
//  * list / watch --cluster: nodes(); status: status() (stale, revision).

#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "etcd_protocol.hpp"
#include "pmd_cluster.hpp"  // ClusterNode

namespace distflow {

struct ClusterConfig {
  std::string name = "default";                      ///< keys: distflow/<name>/nodes/<alias>
  std::chrono::milliseconds ttl{10000};              ///< the lease, kept alive every ttl/3
  std::chrono::milliseconds request_timeout{5000};   ///< deadline of each etcd request
  std::chrono::milliseconds register_timeout{1000};  ///< longest wait of a register for etcd
  std::chrono::milliseconds retry_min{200};          ///< backoff while etcd is unreachable
  std::chrono::milliseconds retry_max{5000};         ///< at most ttl/3
};

using ClusterTime = std::chrono::steady_clock::time_point;

/// Make this etcd request; give its answers to on_response(id, ...).
struct ClusterCall {
  std::uint64_t id = 0;
  EtcdRequest request;
  std::chrono::milliseconds timeout{0};
};
struct ClusterCancel {  ///< stop request `id` (a watch)
  std::uint64_t id = 0;
};
struct ClusterJoin {
  ClusterNode node;
};
struct ClusterLeave {
  ClusterNode node;
};
/// The answer to register_local(): `error` empty when accepted.
struct ClusterVerdict {
  std::uint64_t ticket = 0;
  std::string alias;
  std::string error;
};
/// A registration accepted locally (during an outage, or after register_timeout)
/// lost its alias to `holder`, the older registration: it stays local only.
struct ClusterConflict {
  std::string alias;
  ClusterNode holder;
};
/// The view became stale (etcd unreachable: `reason`) or current again.
struct ClusterStale {
  bool stale = false;
  std::string reason;
};
using ClusterOutput = std::variant<ClusterCall, ClusterCancel, ClusterJoin, ClusterLeave,
                                   ClusterVerdict, ClusterConflict, ClusterStale>;

/// "Alias '<alias>' already in use" (the register error of the original PMD).
std::string alias_in_use_error(std::string_view alias);

class ClusterAgent {
 public:
  /// `seed`: for the jitter of the retries.
  ClusterAgent(ClusterConfig config, std::uint64_t seed);

  void start(ClusterTime now);
  /// A local registration; returns the ticket of its ClusterVerdict (no verdict
  /// comes if unregister_local() is called for it first).
  std::uint64_t register_local(std::string alias, std::string info, ClusterTime now);
  void unregister_local(std::string_view alias, ClusterTime now);
  /// An answer to a ClusterCall (several for a watch).
  void on_response(std::uint64_t id, const EtcdResponse& response, ClusterTime now);
  /// Call at next_wakeup() (earlier or later is harmless).
  void on_tick(ClusterTime now);
  /// Revokes the lease (the keys go at once) and stops; the revoke is the last call.
  void stop(ClusterTime now);

  /// The decisions made since the last call, in order.
  std::vector<ClusterOutput> take_outputs();
  ClusterTime next_wakeup() const;

  /// The remote view.
  const ClusterNode* find(std::string_view alias) const;
  std::vector<ClusterNode> nodes() const;  ///< by alias
  std::size_t remote_count() const { return view_.size(); }
  /// True until the first read of the prefix, and while etcd is unreachable.
  bool stale() const { return outage_ || !synced_; }
  std::int64_t revision() const { return revision_; }
  std::int64_t lease() const { return lease_; }
  std::string key(std::string_view alias) const { return prefix_ + std::string(alias); }

 private:
  enum class CallKind { grant, keepalive, snapshot, watch, publish, withdraw, revoke };
  struct Pending {
    CallKind kind;
    std::string alias;
    std::int64_t revision = 0;  // withdraw: the create revision it deletes
  };
  struct Local {
    enum class State { waiting, publishing, published, conflicted };
    std::string info;
    State state = State::waiting;
    std::uint64_t ticket = 0;  // a verdict is owed
    ClusterTime verdict_by;
    std::uint64_t call = 0;  // publishing: its txn
    std::int64_t create_revision = 0;
    std::int64_t holder_seen = 0;  // conflicted: the holder existed at this revision
  };

  std::uint64_t call(CallKind kind, EtcdRequest request, std::string alias = {},
                     std::int64_t revision = 0);
  void ensure(ClusterTime now);
  void advance(const std::string& alias);
  bool wants_publish(const std::string& alias, const Local& local) const;
  bool live() const { return !outage_ && !stopped_ && lease_ != 0 && synced_; }
  void enter_outage(ClusterTime now, const std::string& reason);
  void leave_outage();
  void lease_lost();
  void verdict(Local& local, const std::string& alias, std::string error);
  void on_publish(const Pending& p, std::uint64_t id, const EtcdResponse& r, ClusterTime now);
  void on_snapshot(const EtcdResponse& r);
  void on_watch(std::uint64_t id, const EtcdResponse& r, ClusterTime now);
  void apply(const EtcdWatchEvent& event);
  void set_remote(ClusterNode node);
  void drop_remote(const std::string& alias);
  std::chrono::milliseconds jittered(std::chrono::milliseconds backoff);

  ClusterConfig config_;
  std::string prefix_;
  std::mt19937_64 rng_;
  std::uint64_t next_id_ = 1;
  std::vector<ClusterOutput> out_;
  std::map<std::uint64_t, Pending> pending_;

  bool started_ = false, stopped_ = false;
  std::int64_t lease_ = 0;
  std::uint64_t grant_call_ = 0, keepalive_call_ = 0, snapshot_call_ = 0;
  ClusterTime keepalive_at_{};
  bool synced_ = false;              // the view holds a snapshot, and revision_ is valid
  std::int64_t revision_ = 0;        // the last revision applied to the view
  std::uint64_t watch_call_ = 0;     // 0: no watch
  std::uint64_t watch_created_ = 0;  // the watch call that etcd confirmed
  ClusterTime watch_retry_at_{};
  ClusterTime watch_opened_at_{};
  std::chrono::milliseconds watch_backoff_{0};
  bool outage_ = false;
  std::string outage_reason_;
  bool reported_stale_ = true;
  std::uint64_t probe_call_ = 0;
  ClusterTime retry_at_{};
  std::chrono::milliseconds backoff_{0};

  std::map<std::string, ClusterNode, std::less<>> view_;  // remote nodes
  std::map<std::string, Local, std::less<>> locals_;
  std::map<std::string, std::int64_t, std::less<>> orphans_;  // our keys to delete
  std::map<std::string, std::uint64_t, std::less<>> busy_;    // alias -> its txn in flight
  std::uint64_t next_ticket_ = 1;
};

}  // namespace distflow
