// `distflow pmd --cluster` end to end (issue 15): the real binary, a real etcd
// (tests/etcd_cluster.hpp; skipped without it), PMDs on distinct loopback
// addresses (127.0.0.2, 127.0.0.3, ...) sharing one cluster. Nodes are real
// `distflow node` processes where messaging matters, raw register clients
// elsewhere (a connection may own many registrations).

#include <csignal>
#include <functional>
#include <thread>

#include <catch2/catch.hpp>

#include "etcd_cluster.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

using Clock = std::chrono::steady_clock;

/// True once `done()` holds (polled every 20 ms), false at the deadline.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// A clustered PMD on its own loopback address.
struct ClusterPmd {
  ClusterPmd(const std::string& bind, const EtcdCluster& etcd, const std::string& ttl = "3s",
             const std::string& name = "e2e")
      : host(bind),
        pmd({"--bind", bind, "--cluster", etcd.url(), "--cluster-name", name, "--cluster-ttl",
             ttl}) {}
  std::string host;
  PmdProcess pmd;
  std::uint16_t port() const { return pmd.port; }
  std::string address() const { return host + ":" + pmd.port_str(); }
  /// `distflow pmd ARGS... --host H --port P`.
  RunResult admin(std::vector<std::string> args) const {
    std::vector<std::string> argv{distflow_binary(), "pmd"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--host", host, "--port", pmd.port_str()});
    return run(argv);
  }
  std::string status_json() const { return admin({"status", "--json"}).out; }
  bool current() const { return status_json().find(R"("state":"current")") != std::string::npos; }
};

std::string register_body(const std::string& alias, const std::string& host, int id = 1) {
  return R"({"type":"register","requestId":)" + std::to_string(id) + R"(,"payload":{"nodeId":")" +
         alias + R"(-id","alias":")" + alias + R"(","host":")" + host + R"(","port":4000}})";
}

std::string resolve_body(const std::string& alias) {
  return R"({"type":"resolve","requestId":7,"payload":{"alias":")" + alias + R"("}})";
}

/// The PMD resolves `alias` (a remote entry when `remote`).
bool resolves(const ClusterPmd& pmd, const std::string& alias, bool remote = true) {
  RawClient client(pmd.host, pmd.port());
  const auto reply = client.request(resolve_body(alias));
  return reply && reply->find(R"("alias":")" + alias + "\"") != std::string::npos &&
         (reply->find(R"("remote":true)") != std::string::npos) == remote;
}

/// A watcher connection: frames of events, read with a deadline.
struct Watcher {
  explicit Watcher(const ClusterPmd& pmd) : client(pmd.host, pmd.port()) {
    client.send_frame(R"({"type":"watch","requestId":1,"payload":{"snapshot":true}})");
    snapshot = client.read_frame().value_or("");
  }
  /// The next event frame that mentions `needle`; nullopt at the deadline.
  std::optional<std::string> wait_for(const std::string& needle,
                                      std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      auto frame = client.read_frame(left);
      if (!frame)
        return std::nullopt;
      seen.push_back(*frame);
      if (frame->find(needle) != std::string::npos)
        return frame;
    }
  }
  RawClient client;
  std::string snapshot;
  std::vector<std::string> seen;
};

bool have_etcd() {
  if (etcd_binary().empty()) {
    WARN(kNoEtcd);
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("pmd cluster: bad --cluster flags are usage errors", "[pmd_cluster]") {
  const auto bad_url = run({distflow_binary(), "pmd", "--port", "0", "--cluster", "http://x"});
  CHECK(bad_url.code == 2);
  CHECK(bad_url.err.find("--cluster") != std::string::npos);
  const auto bad_ttl = run({distflow_binary(), "pmd", "--port", "0", "--cluster",
                            "etcd://127.0.0.1:2379", "--cluster-ttl", "1s"});
  CHECK(bad_ttl.code == 2);
  CHECK(bad_ttl.err.find("--cluster-ttl") != std::string::npos);
  const auto bad_name = run({distflow_binary(), "pmd", "--port", "0", "--cluster",
                             "etcd://127.0.0.1:2379", "--cluster-name", "a/b"});
  CHECK(bad_name.code == 2);
}

TEST_CASE("pmd cluster: a node on one PMD is resolved, messaged and watched from another",
          "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(1);
  ClusterPmd a("127.0.0.2", etcd), b("127.0.0.3", etcd);
  REQUIRE(eventually([&] { return a.current() && b.current(); }));
  Watcher watch_b(b);

  ChildProcess node({distflow_binary(), "node", "--alias", "worker", "--host", a.host, "--port",
                     a.pmd.port_str(), "--listen", a.host, "--no-auto-pmd"});
  // Watched from B: the join, marked remote, with the PMD it lives on.
  const auto join = watch_b.wait_for(R"("event":"peer:join")");
  REQUIRE(join);
  CHECK(join->find(R"("alias":"worker")") != std::string::npos);
  CHECK(join->find(R"("remote":true)") != std::string::npos);
  CHECK(join->find(R"("pmd":")" + a.address() + "\"") != std::string::npos);

  // Resolved from B by plain alias.
  const auto resolved = b.admin({"resolve", "worker", "--json"});
  REQUIRE(resolved.code == 0);
  CHECK(resolved.out.find(R"("host":"127.0.0.2")") != std::string::npos);
  CHECK(resolved.out.find(R"("remote":true)") != std::string::npos);
  // A answers it as its own.
  CHECK(resolves(a, "worker", false));

  // Messaged through B by plain alias.
  const auto sent = run({distflow_binary(), "send", "worker", R"({"via":"b"})", "--host", b.host,
                         "--port", b.pmd.port_str()});
  REQUIRE(sent.code == 0);
  const auto line = node.wait_for_line(R"("via":"b")");
  REQUIRE(line);

  // list: remote entries marked; --no-cluster: B's own nodes only; status: the cluster.
  CHECK(b.admin({"list", "--json"}).out.find(R"("alias":"worker")") != std::string::npos);
  CHECK(b.admin({"list", "--json", "--no-cluster"}).out == "[]\n");
  const auto status = b.admin({"status"});
  CHECK(status.out.find("state:   current") != std::string::npos);
  CHECK(status.out.find(a.address()) != std::string::npos);
  CHECK(b.status_json().find(R"("remoteNodes":1)") != std::string::npos);
  const auto watch_json = run({distflow_binary(), "watch", "--json", "worker", "--until-leave",
                               "--host", b.host, "--port", b.pmd.port_str()},
                              {}, 1s);  // still there: runs until the timeout
  CHECK(watch_json.out.find(R"("event":"peer:present")") != std::string::npos);

  // SIGKILL of the node: the leave is seen on B (its socket closed on A, the key deleted).
  node.signal(SIGKILL);
  REQUIRE(node.wait(5s));
  const auto leave = watch_b.wait_for(R"("event":"peer:leave")", 5s);
  REQUIRE(leave);
  CHECK(leave->find(R"("reason":"cluster")") != std::string::npos);
  CHECK_FALSE(resolves(b, "worker"));
}

TEST_CASE("pmd cluster: an alias is unique across the PMDs, free again when its node leaves",
          "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(1);
  ClusterPmd a("127.0.0.2", etcd), b("127.0.0.3", etcd);
  REQUIRE(eventually([&] { return a.current() && b.current(); }));

  RawClient on_a(a.host, a.port());
  const auto first = on_a.request(register_body("shared", a.host));
  REQUIRE(first);
  CHECK(first->find(R"("success":true)") != std::string::npos);
  REQUIRE(eventually([&] { return resolves(b, "shared"); }));

  // The original's error, exactly; nothing of the refused node is left on B.
  RawClient on_b(b.host, b.port());
  const auto second = on_b.request(register_body("shared", b.host));
  REQUIRE(second);
  CHECK(*second ==
        R"({"type":"response","requestId":1,"payload":{"error":"Alias 'shared' already in use"}})");
  CHECK(b.admin({"list", "--json", "--no-cluster"}).out == "[]\n");
  // The same alias raced on both at once: exactly one wins.
  RawClient race_a(a.host, a.port()), race_b(b.host, b.port());
  race_a.send_frame(register_body("race", a.host));
  race_b.send_frame(register_body("race", b.host));
  const auto ra = race_a.read_frame(), rb = race_b.read_frame();
  REQUIRE(ra);
  REQUIRE(rb);
  const bool a_won = ra->find(R"("success":true)") != std::string::npos;
  const bool b_won = rb->find(R"("success":true)") != std::string::npos;
  CHECK(a_won != b_won);
  CHECK((a_won ? *rb : *ra).find("Alias 'race' already in use") != std::string::npos);

  // Unregister on A: B sees it go, and may take the alias.
  const auto gone =
      on_a.request(R"({"type":"unregister","requestId":2,"payload":{"nodeId":"shared-id"}})");
  REQUIRE(gone);
  REQUIRE(eventually([&] { return !resolves(b, "shared"); }, 5s));
  const auto third = on_b.request(register_body("shared", b.host, 3));
  REQUIRE(third);
  CHECK(third->find(R"("success":true)") != std::string::npos);
  REQUIRE(eventually([&] { return resolves(a, "shared"); }));
}

TEST_CASE("pmd cluster: a PMD killed outright: its nodes leave elsewhere within the lease TTL",
          "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(1);
  ClusterPmd a("127.0.0.2", etcd, "2s"), b("127.0.0.3", etcd, "2s");
  REQUIRE(eventually([&] { return a.current() && b.current(); }));
  Watcher watch_b(b);
  RawClient on_a(a.host, a.port());
  for (int i = 0; i < 3; ++i) {
    const auto reply = on_a.request(register_body("doomed" + std::to_string(i), a.host, i));
    REQUIRE(reply);
    REQUIRE(reply->find(R"("success":true)") != std::string::npos);
  }
  REQUIRE(eventually([&] { return resolves(b, "doomed2"); }));

  const auto killed_at = Clock::now();
  a.pmd.process->signal(SIGKILL);
  REQUIRE(a.pmd.process->wait(5s));
  for (int i = 0; i < 3; ++i) {
    // The lease (2 s) runs out: etcd deletes the keys; a margin for etcd's own timing.
    REQUIRE(watch_b.wait_for(
        R"("event":"peer:leave","peer":{"nodeId":"doomed)" + std::to_string(i) + "-id\"", 8s));
  }
  CHECK(Clock::now() - killed_at < 8s);
  CHECK_FALSE(resolves(b, "doomed0"));
}

TEST_CASE("pmd cluster: etcd stopped: no spurious leave, local traffic goes on, reconcile after",
          "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(1);
  ClusterPmd a("127.0.0.2", etcd, "2s"), b("127.0.0.3", etcd, "2s");
  REQUIRE(eventually([&] { return a.current() && b.current(); }));
  RawClient on_a(a.host, a.port());
  REQUIRE(on_a.request(register_body("alpha", a.host)));
  REQUIRE(eventually([&] { return resolves(b, "alpha"); }));
  ChildProcess local({distflow_binary(), "node", "--alias", "local", "--host", b.host, "--port",
                      b.pmd.port_str(), "--listen", b.host, "--no-auto-pmd"});
  REQUIRE(eventually([&] { return resolves(b, "local", false); }));
  Watcher watch_b(b);

  etcd.stop(0);
  REQUIRE(eventually(
      [&] { return b.status_json().find(R"("state":"stale")") != std::string::npos; }, 15s));
  // Meanwhile: registrations are accepted locally, resolves and messages go on.
  RawClient on_b(b.host, b.port());
  const auto accepted = on_b.request(register_body("beta", b.host));
  REQUIRE(accepted);
  CHECK(accepted->find(R"("success":true)") != std::string::npos);
  CHECK(resolves(b, "alpha"));  // the last view is kept
  const auto sent = run({distflow_binary(), "send", "local", R"({"during":"outage"})", "--host",
                         b.host, "--port", b.pmd.port_str()});
  CHECK(sent.code == 0);
  CHECK(local.wait_for_line(R"("during":"outage")"));
  // Longer than the lease TTL: still no leave for alpha (the outage is not a leave).
  CHECK_FALSE(watch_b.wait_for(R"("event":"peer:leave")", 3s));

  etcd.restart(0);
  REQUIRE(etcd.wait_healthy());
  REQUIRE(eventually([&] { return a.current() && b.current(); }, 20s));
  // Reconciled: what B registered during the outage is published, A kept its own.
  REQUIRE(eventually([&] { return resolves(a, "beta"); }, 10s));
  CHECK(resolves(a, "local"));
  CHECK(resolves(b, "alpha"));
  for (const auto& frame : watch_b.seen)
    CHECK(frame.find(R"("alias":"alpha")") == std::string::npos);
}

TEST_CASE("pmd cluster: one etcd member of three killed: nothing noticed", "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(3);
  ClusterPmd a("127.0.0.2", etcd), b("127.0.0.3", etcd);
  REQUIRE(eventually([&] { return a.current() && b.current(); }));
  RawClient on_a(a.host, a.port());
  REQUIRE(on_a.request(register_body("before", a.host)));
  REQUIRE(eventually([&] { return resolves(b, "before"); }));
  Watcher watch_b(b);

  etcd.kill(0);
  // New registrations still cross over; nothing left, the views stay current.
  REQUIRE(on_a.request(register_body("after", a.host, 2)));
  REQUIRE(eventually([&] { return resolves(b, "after"); }, 15s));
  CHECK(resolves(b, "before"));
  for (const auto& frame : watch_b.seen)
    CHECK(frame.find(R"("event":"peer:leave")") == std::string::npos);
  CHECK(eventually([&] { return a.current() && b.current(); }));
}

TEST_CASE("pmd cluster: 1 000 nodes over 10 PMDs: every view exact", "[pmd_cluster][etcd]") {
  if (!have_etcd())
    return;
  EtcdCluster etcd(1);
  constexpr int kPmds = 10, kPerPmd = 100, kConnections = 4;
  std::vector<std::unique_ptr<ClusterPmd>> pmds;
  for (int i = 0; i < kPmds; ++i)
    pmds.push_back(std::make_unique<ClusterPmd>("127.0.1." + std::to_string(i + 1), etcd, "5s"));
  REQUIRE(eventually(
      [&] {
        for (const auto& p : pmds) {
          if (!p->current())
            return false;
        }
        return true;
      },
      20s));
  // Pipelined raw registrations, a few connections per PMD.
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kPmds; ++i) {
    const ClusterPmd& pmd = *pmds[static_cast<std::size_t>(i)];
    for (int c = 0; c < kConnections; ++c) {
      auto& client = clients.emplace_back(std::make_unique<RawClient>(pmd.host, pmd.port()));
      for (int n = c; n < kPerPmd; n += kConnections) {
        client->send_frame(
            register_body("p" + std::to_string(i) + "n" + std::to_string(n), pmd.host, n));
      }
    }
  }
  int accepted = 0;
  for (std::size_t k = 0; k < clients.size(); ++k) {
    for (int n = static_cast<int>(k % kConnections); n < kPerPmd; n += kConnections) {
      const auto reply = clients[k]->read_frame(20s);
      REQUIRE(reply);
      accepted += reply->find(R"("success":true)") != std::string::npos ? 1 : 0;
    }
  }
  REQUIRE(accepted == kPmds * kPerPmd);
  // Every PMD's view: its 100 local nodes and the 900 others, nothing more.
  for (const auto& pmd : pmds) {
    INFO(pmd->address());
    REQUIRE(eventually(
        [&] {
          RawClient client(pmd->host, pmd->port());
          const auto list = client.request(R"({"type":"list","requestId":1})", 10s);
          if (!list)
            return false;
          std::size_t count = 0;
          for (auto at = list->find("\"nodeId\""); at != std::string::npos;
               at = list->find("\"nodeId\"", at + 1)) {
            ++count;
          }
          return count == kPmds * kPerPmd;
        },
        20s));
  }
}

}  // namespace distflow::test
