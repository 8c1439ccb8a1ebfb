// ClusterService against a real etcd (tests/etcd_cluster.hpp; skipped without
// it): two agents in one io_context play two PMDs sharing one cluster. One
// member for the namespace itself; three members for the faults: one member
// killed (nothing noticed), all stopped for longer than the lease TTL (no
// spurious leave, reconcile after).

#include "cluster_service.hpp"

#include <map>
#include <mutex>
#include <set>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "etcd_client.hpp"
#include "etcd_cluster.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Strings = std::vector<std::string>;

/// One "PMD": a ClusterService and what it reported.
struct Agent {
  Agent(asio::io_context& io, const std::string& url, std::chrono::milliseconds ttl) {
    ClusterServiceOptions o;
    parse_etcd_url(url, o.etcd);
    o.etcd.attempt_timeout = 500ms;
    o.etcd.request_timeout = 5000ms;
    o.cluster.name = "itest";
    o.cluster.ttl = ttl;
    o.cluster.retry_min = 100ms;
    o.cluster.retry_max = 1000ms;
    service = cluster_service_factory(o)(io);  // as the PMD gets it
    service->start([this](const ClusterEvent& e) {
      switch (e.kind) {
        case ClusterEvent::Kind::join:
          events.push_back("+" + e.node.alias);
          break;
        case ClusterEvent::Kind::leave:
          events.push_back("-" + e.node.alias);
          break;
        case ClusterEvent::Kind::conflict:
          conflicts.push_back(e.node.alias);
          break;
        case ClusterEvent::Kind::stale:
          ++stale_count;
          break;
        case ClusterEvent::Kind::current:
          ++current_count;
          break;
      }
    });
  }
  void publish(const std::string& alias) {
    verdicts.erase(alias);
    service->publish(alias, R"({"alias":")" + alias + R"("})",
                     [this, alias](const std::string& error) { verdicts[alias] = error; });
  }
  Strings view() const {
    Strings out;
    for (const auto& node : service->nodes())
      out.push_back(node.alias);
    return out;
  }
  std::unique_ptr<PmdCluster> service;
  Strings events;
  Strings conflicts;
  std::map<std::string, std::string> verdicts;
  int stale_count = 0;
  int current_count = 0;
};

/// Runs `io` until `done()` holds; false at the deadline.
template <class Pred>
bool run_until(asio::io_context& io, Pred done, std::chrono::milliseconds timeout = 15s) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline)
      return false;
    io.run_one_for(20ms);
    if (io.stopped())
      io.restart();
  }
  return true;
}

/// Runs `io` for `duration` (scenario time, e.g. an outage that lasts a while).
void run_for(asio::io_context& io, std::chrono::milliseconds duration) {
  const auto until = Clock::now() + duration;
  run_until(
      io, [&] { return Clock::now() >= until; }, duration + 1s);
}

bool current(const Agent& a) {
  return !a.service->status().stale;
}

}  // namespace

TEST_CASE("cluster_service: two PMDs share one namespace through a real etcd",
          "[cluster_service][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  test::EtcdCluster etcd(1);
  asio::io_context io;
  Agent a(io, etcd.url(), 10s), b(io, etcd.url(), 10s);
  REQUIRE(run_until(io, [&] { return current(a) && current(b); }));

  a.publish("worker");
  REQUIRE(run_until(io, [&] { return a.verdicts.count("worker") && !b.events.empty(); }));
  CHECK(a.verdicts["worker"].empty());
  CHECK(b.events == Strings{"+worker"});
  REQUIRE(b.service->find("worker") != nullptr);
  CHECK(b.service->find("worker")->info == R"({"alias":"worker"})");
  CHECK(a.service->find("worker") == nullptr);  // local there, not remote

  b.publish("worker");
  REQUIRE(run_until(io, [&] { return b.verdicts.count("worker") != 0; }));
  CHECK(b.verdicts["worker"] == "Alias 'worker' already in use");

  a.service->withdraw("worker");
  REQUIRE(run_until(io, [&] { return b.events.size() == 2; }));
  CHECK(b.events == Strings{"+worker", "-worker"});
  b.publish("worker2");
  REQUIRE(run_until(io, [&] { return a.events.size() == 1; }));
  b.publish("worker");  // free again
  REQUIRE(run_until(io, [&] { return a.events.size() == 2 && b.verdicts.count("worker"); }));
  CHECK(b.verdicts["worker"].empty());
  CHECK(a.events == Strings{"+worker2", "+worker"});

  // A PMD that dies without a word: its keys go when its lease expires.
  {
    std::mutex mutex;
    std::map<std::uint64_t, EtcdResponse> answers;
    EtcdOptions o;
    parse_etcd_url(etcd.url(), o);
    EtcdClient ghost(o, [&](std::uint64_t id, EtcdResponse r) {
      std::lock_guard lock(mutex);
      answers[id] = std::move(r);
    });
    const auto answered = [&](std::uint64_t id) {
      std::lock_guard lock(mutex);
      return answers.count(id) != 0;
    };
    ghost.submit(1, EtcdLeaseGrant{2});
    REQUIRE(run_until(io, [&] { return answered(1); }));
    std::int64_t lease = 0;
    {
      std::lock_guard lock(mutex);
      lease = answers[1].lease;
    }
    ghost.submit(2, EtcdPut{"distflow/itest/nodes/ghost", "{}", lease});
    REQUIRE(run_until(io, [&] { return answered(2); }));
  }
  REQUIRE(run_until(io, [&] { return b.events.size() >= 2 + 2 && a.events.size() >= 2 + 2; }));
  CHECK(a.events == Strings{"+worker2", "+worker", "+ghost", "-ghost"});

  // A PMD that stops revokes its lease: its nodes leave elsewhere at once.
  a.publish("p1");
  REQUIRE(run_until(io, [&] { return b.view().size() == 1; }));
  a.publish("p2");
  REQUIRE(run_until(io, [&] { return b.view().size() == 2; }));
  CHECK(b.view() == Strings{"p1", "p2"});
  // (A loaded test machine may take more than the PMD's usual second for etcd's
  // answer; still well before the lease's 10 s.)
  a.service->stop(5s);
  REQUIRE(run_until(
      io, [&] { return b.view().empty(); }, 5s));
  CHECK(b.events == Strings{"+worker", "-worker", "+ghost", "-ghost", "+p1", "+p2", "-p1", "-p2"});
  CHECK(a.stale_count == 0);
  CHECK(b.stale_count == 0);
}

TEST_CASE("cluster_service: one etcd member of three killed: nothing noticed",
          "[cluster_service][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  test::EtcdCluster etcd(3);
  asio::io_context io;
  // TTL 3 s: keepalives every second, so several must fail over during the test.
  Agent a(io, etcd.url(), 3s), b(io, etcd.url(), 3s);
  REQUIRE(run_until(io, [&] { return current(a) && current(b); }));
  for (const std::string alias : {"n1", "n2", "n3"}) {
    a.publish(alias);
    REQUIRE(run_until(io, [&] { return a.verdicts.count(alias) != 0; }));
  }
  REQUIRE(run_until(io, [&] { return b.events.size() == 3; }));

  // Member 0 is where both agents started: their watches and keepalives are there.
  etcd.kill(0);
  a.publish("n4");
  REQUIRE(run_until(io, [&] { return b.events.size() == 4; }));
  a.service->withdraw("n1");
  b.publish("b1");
  REQUIRE(run_until(io, [&] { return b.events.size() == 5 && a.events.size() == 1; }));
  run_for(io, 4s);  // beyond the TTL: the lease lives on through the other members

  CHECK(b.events == Strings{"+n1", "+n2", "+n3", "+n4", "-n1"});
  CHECK(a.events == Strings{"+b1"});
  CHECK(a.verdicts["n4"].empty());
  CHECK(b.verdicts["b1"].empty());
  CHECK(a.stale_count == 0);
  CHECK(b.stale_count == 0);
  CHECK(b.view() == Strings{"n2", "n3", "n4"});
  CHECK(current(a));
  CHECK(current(b));
}

TEST_CASE(
    "cluster_service: every etcd member stopped longer than the TTL: no spurious leave, "
    "reconcile after",
    "[cluster_service][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  test::EtcdCluster etcd(3);
  asio::io_context io;
  Agent a(io, etcd.url(), 3s), b(io, etcd.url(), 3s);
  REQUIRE(run_until(io, [&] { return current(a) && current(b); }));
  a.publish("a1");
  REQUIRE(run_until(io, [&] { return b.events.size() == 1; }));
  a.publish("a2");
  b.publish("b1");
  REQUIRE(run_until(io, [&] { return a.events.size() == 1 && b.events.size() == 2; }));

  for (int m = 0; m < 3; ++m)
    etcd.stop(m);
  REQUIRE(run_until(io, [&] { return !current(a) && !current(b); }));
  CHECK(a.stale_count == 1);
  CHECK(b.stale_count == 1);
  CHECK(!b.service->status().stale_reason.empty());

  // Local registration goes on while etcd is away; both take "dup".
  a.publish("a3");
  a.service->withdraw("a1");
  a.publish("dup");
  b.publish("dup");
  run_until(
      io, [&] { return a.verdicts.size() == 4 && b.verdicts.size() == 2; }, 1s);
  CHECK(a.verdicts ==
        std::map<std::string, std::string>{{"a1", ""}, {"a2", ""}, {"a3", ""}, {"dup", ""}});
  CHECK(b.verdicts["dup"].empty());
  run_for(io, 4s);                    // down for longer than the TTL
  CHECK(a.events == Strings{"+b1"});  // the last view, kept: no leave
  CHECK(b.events == Strings{"+a1", "+a2"});
  CHECK(b.view() == Strings{"a1", "a2"});

  for (int m = 0; m < 3; ++m)
    etcd.restart(m);
  REQUIRE(etcd.wait_healthy(20s));
  const auto has = [](const Agent& x, const std::string& alias) {
    return x.service->find(alias) != nullptr;
  };
  REQUIRE(run_until(
      io,
      [&] {
        return current(a) && current(b) && a.conflicts.size() + b.conflicts.size() == 1 &&
               has(b, "a3") && !has(b, "a1") && (has(a, "dup") || has(b, "dup"));
      },
      20s));
  run_for(io, 1s);

  // The leases survived the outage: nothing that stayed registered left anywhere.
  // (After the outage a's changes to different aliases go to etcd in any order.)
  const bool a_kept_dup = b.conflicts.size() == 1;
  CHECK(a.events == (a_kept_dup ? Strings{"+b1"} : Strings{"+b1", "+dup"}));
  REQUIRE(b.events.size() >= 2);
  CHECK(Strings(b.events.begin(), b.events.begin() + 2) == Strings{"+a1", "+a2"});
  const std::multiset<std::string> b_after(b.events.begin() + 2, b.events.end());
  CHECK(b_after == (a_kept_dup ? std::multiset<std::string>{"-a1", "+a3", "+dup"}
                               : std::multiset<std::string>{"-a1", "+a3"}));
  CHECK(a.view() == (a_kept_dup ? Strings{"b1"} : Strings{"b1", "dup"}));
  CHECK(b.view() == (a_kept_dup ? Strings{"a2", "a3", "dup"} : Strings{"a2", "a3"}));
  CHECK((a_kept_dup ? b.conflicts : a.conflicts) == Strings{"dup"});
  CHECK(a.current_count == 2);  // the first read, and after the outage
  CHECK(b.current_count == 2);
}

}  // namespace distflow
