// EtcdClient against a real etcd (tests/etcd_cluster.hpp; skipped without it):
// every gateway call distflow makes, watch streams, endpoint failover, deadlines,
// TLS with client certificates, user/password auth, shutdown.

#include "etcd_client.hpp"

#include <arpa/inet.h>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "etcd_cluster.hpp"
#include "support.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using test::EtcdCluster;

/// Collects the client's answers for blocking tests.
class Answers {
 public:
  EtcdClient::Handler handler() {
    return [this](std::uint64_t id, EtcdResponse r) {
      std::lock_guard lock(mutex_);
      answers_.emplace_back(id, std::move(r));
      changed_.notify_all();
    };
  }
  /// The next answer for `id` within `timeout`.
  std::optional<EtcdResponse> next(std::uint64_t id, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    std::optional<EtcdResponse> out;
    changed_.wait_for(lock, timeout, [&] {
      for (auto it = answers_.begin(); it != answers_.end(); ++it) {
        if (it->first == id) {
          out = std::move(it->second);
          answers_.erase(it);
          return true;
        }
      }
      return false;
    });
    return out;
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return answers_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<std::uint64_t, EtcdResponse>> answers_;
};

EtcdOptions options_for(const std::string& url) {
  EtcdOptions o;
  parse_etcd_url(url, o);
  o.attempt_timeout = 1000ms;
  o.request_timeout = 5000ms;
  return o;
}

/// One request, answered.
EtcdResponse call(EtcdClient& client, Answers& answers, EtcdRequest request) {
  static std::uint64_t next_id = 1000;
  const auto id = next_id++;
  client.submit(id, std::move(request));
  auto r = answers.next(id);
  REQUIRE(r.has_value());
  return *r;
}

EtcdRequest put_if_absent(const std::string& key, const std::string& value, std::int64_t lease) {
  EtcdTxn txn;
  txn.compare.push_back({key, EtcdCompare::Target::create, EtcdCompare::Result::equal, 0, {}});
  txn.success.push_back({EtcdOp::Kind::put, key, {}, value, lease});
  txn.failure.push_back({EtcdOp::Kind::range, key, {}, {}, 0});
  return txn;
}

}  // namespace

TEST_CASE("etcd_client: parses etcd:// endpoint lists", "[etcd_client]") {
  EtcdOptions o;
  parse_etcd_url("etcd://h1:2379,10.0.0.2:32379,[::1]:2380,h4", o);
  REQUIRE(o.endpoints.size() == 4);
  CHECK(o.endpoints[0].host == "h1");
  CHECK(o.endpoints[0].port == 2379);
  CHECK(o.endpoints[1].host == "10.0.0.2");
  CHECK(o.endpoints[1].port == 32379);
  CHECK(o.endpoints[2].host == "::1");
  CHECK(o.endpoints[2].port == 2380);
  CHECK(o.endpoints[3].host == "h4");
  CHECK(o.endpoints[3].port == 2379);
  CHECK_FALSE(o.tls);
  parse_etcd_url("etcds://secure:443", o);
  CHECK(o.tls);
  REQUIRE(o.endpoints.size() == 1);

  const auto error = [](const std::string& url) {
    EtcdOptions x;
    try {
      parse_etcd_url(url, x);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(error("http://h:2379") ==
        "invalid cluster address 'http://h:2379': expected etcd://host:port[,host:port...] (or "
        "etcds:// for TLS)");
  CHECK(error("etcd://") == "invalid etcd address '' in 'etcd://': empty host");
  CHECK(error("etcd://h1:2379,") == "invalid etcd address '' in 'etcd://h1:2379,': empty host");
  CHECK(error("etcd://h1:0") ==
        "invalid etcd address 'h1:0' in 'etcd://h1:0': port must be 1-65535");
  CHECK(error("etcd://h1:99999") ==
        "invalid etcd address 'h1:99999' in 'etcd://h1:99999': port must be 1-65535");
  CHECK(error("etcd://h1:") == "invalid etcd address 'h1:' in 'etcd://h1:': port must be 1-65535");
  CHECK(error("etcd://[::1") ==
        "invalid etcd address '[::1' in 'etcd://[::1': expected [ipv6]:port");
  CHECK(error("etcd://h/x:1") ==
        "invalid etcd address 'h/x:1' in 'etcd://h/x:1': expected host[:port]");
}

TEST_CASE("etcd_client: lease, put-if-absent txn, range, delete on a real etcd",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  EtcdCluster etcd(1);
  Answers answers;
  EtcdClient client(options_for(etcd.url()), answers.handler());

  const auto grant = call(client, answers, EtcdLeaseGrant{10});
  REQUIRE(grant.status == EtcdStatus::ok);
  CHECK(grant.ttl == 10);
  REQUIRE(grant.lease != 0);

  // Bytes of every value survive base64 both ways.
  const std::string value("{\"alias\":\"w\"}\0\xff\n", 17);
  const auto first = call(client, answers, put_if_absent("distflow/t/nodes/w", value, grant.lease));
  REQUIRE(first.status == EtcdStatus::ok);
  CHECK(first.succeeded);
  CHECK(first.revision > 0);

  const auto second = call(client, answers, put_if_absent("distflow/t/nodes/w", "other", 0));
  REQUIRE(second.status == EtcdStatus::ok);
  CHECK_FALSE(second.succeeded);
  REQUIRE(second.kvs.size() == 1);
  CHECK(second.kvs[0].value == value);
  CHECK(second.kvs[0].lease == grant.lease);
  CHECK(second.kvs[0].create_revision == first.revision);

  CHECK(call(client, answers, EtcdPut{"distflow/t/nodes/x", "x", 0}).status == EtcdStatus::ok);
  CHECK(call(client, answers, EtcdPut{"distflow/u/nodes/y", "y", 0}).status == EtcdStatus::ok);
  const std::string prefix = "distflow/t/nodes/";
  const auto range = call(client, answers, EtcdRange{prefix, etcd_prefix_end(prefix)});
  REQUIRE(range.status == EtcdStatus::ok);
  REQUIRE(range.kvs.size() == 2);
  CHECK(range.kvs[0].key == "distflow/t/nodes/w");
  CHECK(range.kvs[1].key == "distflow/t/nodes/x");
  CHECK(range.revision >= first.revision + 2);

  const auto keepalive = call(client, answers, EtcdLeaseKeepAlive{grant.lease});
  REQUIRE(keepalive.status == EtcdStatus::ok);
  CHECK(keepalive.lease == grant.lease);
  CHECK(keepalive.ttl > 0);
  const auto unknown = call(client, answers, EtcdLeaseKeepAlive{grant.lease + 12345});
  REQUIRE(unknown.status == EtcdStatus::ok);
  CHECK(unknown.ttl == 0);  // the lease is gone

  CHECK(call(client, answers, EtcdDeleteRange{"distflow/t/nodes/x", {}}).deleted == 1);
  CHECK(call(client, answers, EtcdLeaseRevoke{grant.lease}).status == EtcdStatus::ok);
  const auto after = call(client, answers, EtcdRange{prefix, etcd_prefix_end(prefix)});
  CHECK(after.kvs.empty());  // the revoke took the leased key with it

  const auto bad = call(client, answers, EtcdPut{"", "no key", 0});
  CHECK(bad.status == EtcdStatus::failed);
  CHECK(bad.code == 3);
  CHECK(bad.error == "etcdserver: key is not provided");
}

TEST_CASE("etcd_client: a watch streams events in order from a revision; cancel ends it",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  EtcdCluster etcd(1);
  Answers answers;
  EtcdClient client(options_for(etcd.url()), answers.handler());
  const std::string prefix = "distflow/w/nodes/";

  const auto a = call(client, answers, EtcdPut{prefix + "a", "1", 0});
  REQUIRE(a.status == EtcdStatus::ok);
  call(client, answers, EtcdPut{prefix + "b", "2", 0});
  call(client, answers, EtcdDeleteRange{prefix + "a", {}});

  client.submit(7, EtcdWatch{prefix, etcd_prefix_end(prefix), a.revision});
  std::vector<EtcdWatchEvent> events;
  bool created = false;
  while (events.size() < 4) {
    const auto m = answers.next(7);
    REQUIRE(m.has_value());
    REQUIRE(m->status == EtcdStatus::ok);
    REQUIRE_FALSE(m->stream_end);
    created = created || m->created;
    events.insert(events.end(), m->events.begin(), m->events.end());
    if (events.size() == 3)
      call(client, answers, EtcdPut{prefix + "c", "3", 0});  // a live one after the history
  }
  CHECK(created);
  REQUIRE(events.size() == 4);
  CHECK(events[0].type == EtcdWatchEvent::Type::put);
  CHECK(events[0].kv.key == prefix + "a");
  CHECK(events[0].kv.value == "1");
  CHECK(events[0].kv.mod_revision == a.revision);
  CHECK(events[1].kv.key == prefix + "b");
  CHECK(events[2].type == EtcdWatchEvent::Type::del);
  CHECK(events[2].kv.key == prefix + "a");
  CHECK(events[2].prev.value == "1");  // prev_kv: what was deleted
  CHECK(events[2].prev.create_revision == a.revision);
  CHECK(events[3].kv.key == prefix + "c");
  for (std::size_t i = 1; i < events.size(); ++i)
    CHECK(events[i].kv.mod_revision > events[i - 1].kv.mod_revision);

  client.cancel(7);
  const auto end = answers.next(7);
  REQUIRE(end.has_value());
  CHECK(end->stream_end);
  CHECK(end->status == EtcdStatus::canceled);

  // From a compacted revision: etcd cancels the watch and names the compaction.
  const auto d = call(client, answers, EtcdPut{prefix + "d", "4", 0});
  REQUIRE(call(client, answers, EtcdCompaction{d.revision}).status == EtcdStatus::ok);
  client.submit(8, EtcdWatch{prefix, etcd_prefix_end(prefix), a.revision});
  std::optional<EtcdResponse> last;
  do {
    last = answers.next(8);
    REQUIRE(last.has_value());
  } while (!last->stream_end);
  CHECK(last->canceled);
  CHECK(last->compact_revision == d.revision);
}

TEST_CASE("etcd_client: fails over past a refusing and a silent endpoint, within deadlines",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  EtcdCluster etcd(1);
  // A listener that accepts and never answers (the kernel completes the handshake).
  const int silent = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(silent, 16) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&addr), &len);
  const auto silent_port = ntohs(addr.sin_port);
  const auto refused_port = test::free_port();

  EtcdOptions o;
  o.endpoints = {EtcdEndpoint{"127.0.0.1", refused_port}, EtcdEndpoint{"127.0.0.1", silent_port},
                 EtcdEndpoint{"127.0.0.1", etcd.client_port(0)}};
  o.attempt_timeout = 300ms;
  o.request_timeout = 5000ms;
  Answers answers;
  {
    EtcdClient client(o, answers.handler());
    const auto r = call(client, answers, EtcdPut{"k", "v", 0});
    CHECK(r.status == EtcdStatus::ok);
    // A watch fails over the same way.
    client.submit(3, EtcdWatch{"k", {}, 0});
    const auto created = answers.next(3);
    REQUIRE(created.has_value());
    CHECK(created->created);
  }

  // Nothing answers: unavailable once the deadline has passed, naming an endpoint.
  o.endpoints = {EtcdEndpoint{"127.0.0.1", refused_port}, EtcdEndpoint{"127.0.0.1", silent_port}};
  o.request_timeout = 1000ms;
  EtcdClient client(o, answers.handler());
  const auto started = std::chrono::steady_clock::now();
  client.submit(9, EtcdRange{"k", {}});
  const auto r = answers.next(9, 10s);
  REQUIRE(r.has_value());
  CHECK(r->status == EtcdStatus::unavailable);
  CHECK(r->error.find("etcd 127.0.0.1:") == 0);
  CHECK(std::chrono::steady_clock::now() - started < 5s);  // bounded by the deadline
  ::close(silent);
}

TEST_CASE("etcd_client: TLS with client certificates; a server from another CA is refused",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  test::TestPki pki;
  const auto server = pki.issue("etcd-server");
  const auto client_cert = pki.issue("distflow-pmd");
  EtcdCluster etcd(1, {server.cert, server.key, pki.ca()});
  Answers answers;

  auto o = options_for(etcd.url());
  CHECK(o.tls);
  o.ca_file = pki.ca();
  o.cert_file = client_cert.cert;
  o.key_file = client_cert.key;
  {
    EtcdClient client(o, answers.handler());
    const auto r = call(client, answers, EtcdPut{"secure", "yes", 0});
    CHECK(r.status == EtcdStatus::ok);
    client.submit(4, EtcdWatch{"secure", {}, r.revision});
    const auto created = answers.next(4);
    REQUIRE(created.has_value());
    CHECK(created->status == EtcdStatus::ok);
  }

  test::TestPki other("another-ca");
  o.ca_file = other.ca();
  o.request_timeout = 1000ms;
  EtcdClient refused(o, answers.handler());
  const auto r = call(refused, answers, EtcdRange{"secure", {}});
  CHECK(r.status == EtcdStatus::unavailable);
  CHECK(r.error.find("TLS handshake") != std::string::npos);

  o.ca_file = "/nonexistent/ca.pem";
  CHECK_THROWS_WITH(EtcdClient(o, answers.handler()),
                    Catch::Contains("cannot load the cluster CA '/nonexistent/ca.pem'"));
}

TEST_CASE("etcd_client: user and password, a token fetched again when it is refused",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  EtcdCluster etcd(1);
  const std::string endpoint = "127.0.0.1:" + std::to_string(etcd.client_port(0));
  const auto etcdctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {"/usr/bin/env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoint});
    return test::run(args, {}, 20s);
  };
  const auto added = etcdctl({"user", "add", "root", "--new-user-password", "s3cret"});
  if (added.code == 127) {
    WARN("etcdctl not installed (Debian etcd-client): skipped");
    return;
  }
  REQUIRE(added.code == 0);
  REQUIRE(etcdctl({"auth", "enable"}).code == 0);

  Answers answers;
  auto o = options_for(etcd.url());
  {
    EtcdClient anonymous(o, answers.handler());
    const auto r = call(anonymous, answers, EtcdPut{"a", "b", 0});
    CHECK(r.status == EtcdStatus::failed);
    CHECK(r.error.find("user name is empty") != std::string::npos);
  }
  {
    o.user = "root";
    o.password = "wrong";
    EtcdClient wrong(o, answers.handler());
    const auto r = call(wrong, answers, EtcdPut{"a", "b", 0});
    CHECK(r.status == EtcdStatus::failed);
    CHECK(r.error.find("etcd authentication as 'root' failed") == 0);
  }
  o.password = "s3cret";
  EtcdClient client(o, answers.handler());
  CHECK(call(client, answers, EtcdPut{"a", "b", 0}).status == EtcdStatus::ok);
  client.submit(5, EtcdWatch{"a", {}, 0});
  const auto created = answers.next(5);
  REQUIRE(created.has_value());
  CHECK(created->created);
}

TEST_CASE("etcd_client: shutdown with a watch open ends it and calls nothing after",
          "[etcd_client][etcd]") {
  if (test::etcd_binary().empty()) {
    WARN(test::kNoEtcd);
    return;
  }
  EtcdCluster etcd(1);
  Answers answers;
  auto client = std::make_unique<EtcdClient>(options_for(etcd.url()), answers.handler());
  client->submit(1, EtcdWatch{"x", {}, 0});
  REQUIRE(answers.next(1).has_value());  // created
  client->shutdown(1000ms);
  const auto end = answers.next(1, 1s);
  REQUIRE(end.has_value());
  CHECK(end->stream_end);
  CHECK(end->status == EtcdStatus::canceled);
  client->submit(2, EtcdRange{"x", {}});  // after shutdown: never answered
  client.reset();
  CHECK_FALSE(answers.next(2, 200ms).has_value());

  // A request submitted just before shutdown(grace) is answered, even while other
  // requests finish around it (the PMD's lease revoke at exit).
  for (std::uint64_t round = 0; round < 20; ++round) {
    EtcdClient c(options_for(etcd.url()), answers.handler());
    const std::uint64_t base = 100 + round * 10;
    c.submit(base, EtcdWatch{"x", {}, 0});
    for (std::uint64_t k = 1; k <= 3; ++k)
      c.submit(base + k, EtcdRange{"x", {}});
    c.submit(base + 9, EtcdPut{"last-word", std::to_string(round), 0});
    c.shutdown(5s);
    const auto put = answers.next(base + 9, 1s);
    REQUIRE(put.has_value());
    CHECK(put->status == EtcdStatus::ok);
  }
}

}  // namespace distflow
