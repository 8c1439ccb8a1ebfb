// etcd's HTTP/JSON gateway encoding: request bodies as etcd 3.4 takes them,
// answers as it sends them (captured from etcd 3.4.23), and malformed input.

#include "etcd_protocol.hpp"

#include <catch2/catch.hpp>

namespace distflow {

TEST_CASE("etcd_protocol: base64 both ways, canonical only", "[etcd_protocol]") {
  const std::vector<std::pair<std::string, std::string>> table{
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"distflow/x/nodes/a", "ZGlzdGZsb3cveC9ub2Rlcy9h"},
      {std::string("\0\xff\x10", 3), "AP8Q"}};
  for (const auto& [bytes, text] : table) {
    CHECK(base64_encode(bytes) == text);
    CHECK(base64_decode(text) == bytes);
  }
  for (const char* bad :
       {"Zg", "Zg=", "Z===", "Zm9v!A==", "Zh==", "Zm9=", "Zg==Zg==", " Zg=", "Zm9vYg=\n"}) {
    INFO(bad);
    CHECK_FALSE(base64_decode(bad).has_value());
  }
}

TEST_CASE("etcd_protocol: prefix range end", "[etcd_protocol]") {
  CHECK(etcd_prefix_end("distflow/c/nodes/") == "distflow/c/nodes0");
  CHECK(etcd_prefix_end("a\xff") == "b");
  CHECK(etcd_prefix_end("\xff\xff") == std::string(1, '\0'));
  CHECK(etcd_prefix_end("") == std::string(1, '\0'));
}

TEST_CASE("etcd_protocol: request paths and bodies", "[etcd_protocol]") {
  CHECK(etcd_path(EtcdLeaseGrant{10}) == "/v3/lease/grant");
  CHECK(etcd_request_body(EtcdLeaseGrant{10}) == R"({"TTL":"10"})");
  CHECK(etcd_path(EtcdLeaseKeepAlive{7}) == "/v3/lease/keepalive");
  CHECK(etcd_request_body(EtcdLeaseKeepAlive{7587869923456}) == R"({"ID":"7587869923456"})");
  CHECK(etcd_path(EtcdLeaseRevoke{7}) == "/v3/lease/revoke");
  CHECK(etcd_request_body(EtcdPut{"k", "v", 0}) == R"({"key":"aw==","value":"dg=="})");
  CHECK(etcd_request_body(EtcdPut{"k", "v", 9}) == R"({"key":"aw==","lease":"9","value":"dg=="})");
  CHECK(etcd_path(EtcdRange{"a", "b"}) == "/v3/kv/range");
  CHECK(etcd_request_body(EtcdRange{"a", "b"}) == R"({"key":"YQ==","range_end":"Yg=="})");
  CHECK(etcd_request_body(EtcdRange{"a", ""}) == R"({"key":"YQ=="})");
  CHECK(etcd_path(EtcdDeleteRange{"a", ""}) == "/v3/kv/deleterange");
  CHECK(etcd_path(EtcdWatch{}) == "/v3/watch");
  CHECK(
      etcd_request_body(EtcdWatch{"a", "b", 42}) ==
      R"({"create_request":{"key":"YQ==","prev_kv":true,"range_end":"Yg==","start_revision":"42"}})");
  CHECK(etcd_path(EtcdAuthenticate{"u", "p"}) == "/v3/auth/authenticate");
  CHECK(etcd_request_body(EtcdAuthenticate{"u", "p\"w"}) == R"({"name":"u","password":"p\"w"})");
  CHECK(etcd_request_body(EtcdCompaction{5}) == R"({"physical":true,"revision":"5"})");
  CHECK(etcd_is_stream(EtcdWatch{}));
  CHECK(etcd_is_stream(EtcdLeaseKeepAlive{}));
  CHECK_FALSE(etcd_is_stream(EtcdTxn{}));

  EtcdTxn txn;
  txn.compare.push_back({"k", EtcdCompare::Target::create, EtcdCompare::Result::equal, 0, {}});
  txn.compare.push_back({"k", EtcdCompare::Target::value, EtcdCompare::Result::not_equal, 0, "v"});
  txn.compare.push_back({"k", EtcdCompare::Target::lease, EtcdCompare::Result::greater, 3, {}});
  txn.success.push_back({EtcdOp::Kind::put, "k", {}, "v", 3});
  txn.failure.push_back({EtcdOp::Kind::range, "k", {}, {}, 0});
  txn.failure.push_back({EtcdOp::Kind::delete_range, "a", "b", {}, 0});
  CHECK(etcd_path(txn) == "/v3/kv/txn");
  CHECK(etcd_request_body(txn) ==
        R"({"compare":[{"create_revision":"0","key":"aw==","result":"EQUAL","target":"CREATE"},)"
        R"({"key":"aw==","result":"NOT_EQUAL","target":"VALUE","value":"dg=="},)"
        R"({"key":"aw==","lease":"3","result":"GREATER","target":"LEASE"}],)"
        R"("failure":[{"request_range":{"key":"aw=="}},)"
        R"({"request_delete_range":{"key":"YQ==","range_end":"Yg=="}}],)"
        R"("success":[{"request_put":{"key":"aw==","lease":"3","value":"dg=="}}]})");
}

TEST_CASE("etcd_protocol: decodes etcd 3.4's answers", "[etcd_protocol]") {
  const std::string header =
      R"("header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"4","raft_term":"2"})";

  auto grant = etcd_decode_response(EtcdLeaseGrant{10}, 200,
                                    "{" + header + R"(,"ID":"4111120444785188614","TTL":"10"})");
  CHECK(grant.status == EtcdStatus::ok);
  CHECK(grant.revision == 4);
  CHECK(grant.lease == 4111120444785188614);
  CHECK(grant.ttl == 10);

  const auto range = etcd_decode_response(
      EtcdRange{}, 200,
      "{" + header +
          R"(,"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy","lease":"77"}],"count":"1"})");
  REQUIRE(range.status == EtcdStatus::ok);
  REQUIRE(range.kvs.size() == 1);
  CHECK(range.kvs[0].key == "foo");
  CHECK(range.kvs[0].value == "bar");
  CHECK(range.kvs[0].create_revision == 2);
  CHECK(range.kvs[0].mod_revision == 3);
  CHECK(range.kvs[0].version == 2);
  CHECK(range.kvs[0].lease == 77);
  CHECK(etcd_decode_response(EtcdRange{}, 200, "{" + header + "}").kvs.empty());

  // A txn that failed: "succeeded" is left out (false), the failure branch's range.
  const auto failed_txn = etcd_decode_response(
      EtcdTxn{}, 200,
      "{" + header +
          R"(,"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}}]})");
  REQUIRE(failed_txn.status == EtcdStatus::ok);
  CHECK_FALSE(failed_txn.succeeded);
  REQUIRE(failed_txn.kvs.size() == 1);
  CHECK(failed_txn.kvs[0].lease == 0);
  const auto put_txn = etcd_decode_response(
      EtcdTxn{}, 200,
      "{" + header +
          R"(,"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}},{"response_delete_range":{"deleted":"2"}}]})");
  CHECK(put_txn.succeeded);
  CHECK(put_txn.deleted == 2);
  CHECK(etcd_decode_response(EtcdDeleteRange{}, 200, "{" + header + R"(,"deleted":"1"})").deleted ==
        1);

  // Keepalive of a lease that is gone: no TTL.
  const auto gone = etcd_decode_stream_message(EtcdLeaseKeepAlive{1},
                                               R"({"result":{)" + header + R"(,"ID":"1"}})");
  CHECK(gone.status == EtcdStatus::ok);
  CHECK(gone.lease == 1);
  CHECK(gone.ttl == 0);
  CHECK(etcd_decode_response(EtcdAuthenticate{}, 200, "{" + header + R"(,"token":"abc.123"})")
            .token == "abc.123");
}

TEST_CASE("etcd_protocol: decodes watch messages", "[etcd_protocol]") {
  const EtcdRequest watch = EtcdWatch{"a", "b", 1};
  const auto created = etcd_decode_stream_message(
      watch,
      R"({"result":{"header":{"cluster_id":"1","member_id":"2","revision":"2","raft_term":"2"},"created":true}})");
  CHECK(created.status == EtcdStatus::ok);
  CHECK(created.created);
  CHECK(created.events.empty());

  const auto events = etcd_decode_stream_message(
      watch,
      R"({"result":{"header":{"revision":"3"},"events":[)"
      R"({"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy","lease":"5"}},)"
      R"({"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"3"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}]}})");
  REQUIRE(events.status == EtcdStatus::ok);
  CHECK(events.revision == 3);
  REQUIRE(events.events.size() == 2);
  CHECK(events.events[0].type == EtcdWatchEvent::Type::put);
  CHECK(events.events[0].kv.value == "bar");
  CHECK(events.events[0].kv.lease == 5);
  CHECK(events.events[1].type == EtcdWatchEvent::Type::del);
  CHECK(events.events[1].kv.key == "foo");
  CHECK(events.events[1].kv.mod_revision == 3);
  CHECK(events.events[1].prev.create_revision == 2);
  CHECK(events.events[1].prev.value == "bar");

  const auto compacted = etcd_decode_stream_message(
      watch,
      R"({"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"4"}})");
  CHECK(compacted.canceled);
  CHECK(compacted.compact_revision == 4);
}

TEST_CASE("etcd_protocol: error answers and their status", "[etcd_protocol]") {
  // Unary: a flat error with the gRPC code.
  const auto invalid = etcd_decode_response(
      EtcdPut{}, 400,
      R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})");
  CHECK(invalid.status == EtcdStatus::failed);
  CHECK(invalid.code == 3);
  CHECK(invalid.error == "etcdserver: key is not provided");
  const auto no_leader = etcd_decode_response(
      EtcdPut{}, 503,
      R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})");
  CHECK(no_leader.status == EtcdStatus::unavailable);
  CHECK(no_leader.code == 14);
  const auto lease = etcd_decode_response(
      EtcdLeaseRevoke{}, 404,
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  CHECK(lease.status == EtcdStatus::failed);
  CHECK(lease.code == 5);
  // Inside a stream: an error object.
  const auto stream = etcd_decode_stream_message(
      EtcdWatch{},
      R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: leader changed","http_status":"Service Unavailable"}})");
  CHECK(stream.status == EtcdStatus::unavailable);
  CHECK(stream.code == 14);
  CHECK(stream.error == "etcdserver: leader changed");
  const auto auth = etcd_decode_response(
      EtcdPut{}, 401,
      R"({"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16})");
  CHECK(auth.status == EtcdStatus::failed);
  CHECK(auth.code == 16);

  CHECK(etcd_decode_response(EtcdPut{}, 502, "<html>bad gateway</html>").status ==
        EtcdStatus::unavailable);
  CHECK(etcd_decode_response(EtcdPut{}, 404, "404 page not found").status == EtcdStatus::failed);
  CHECK(etcd_error_status(500, 0) == EtcdStatus::unavailable);
  CHECK(etcd_error_status(400, 0) == EtcdStatus::failed);
  CHECK(etcd_error_status(200, 4) == EtcdStatus::unavailable);
  CHECK(etcd_error_status(200, 7) == EtcdStatus::failed);
}

TEST_CASE("etcd_protocol: malformed answers are failures, never exceptions", "[etcd_protocol]") {
  const std::vector<std::string> bad{
      "",
      "not json",
      "[1,2]",
      R"({"header":{"revision":"x"}})",
      R"({"header":{"revision":"12a"}})",
      R"({"header":{"revision":""}})",
      R"({"header":"oops"})",
      R"({"kvs":[{"key":"not base64!"}]})",
      R"({"kvs":[{"key":"Zm9v","create_revision":true}]})",
      R"({"kvs":{"key":"Zm9v"}})",
      R"({"kvs":[7]})",
      R"({"header":{"revision":"99999999999999999999"}})",
  };
  for (const auto& body : bad) {
    INFO(body);
    const auto r = etcd_decode_response(EtcdRange{}, 200, body);
    CHECK(r.status == EtcdStatus::failed);
    CHECK(r.error.find("malformed etcd answer") == 0);
  }
  const std::vector<std::string> bad_watch{
      "{}",
      R"({"result":[]})",
      R"({"result":{"events":[{"type":"UPDATE","kv":{"key":"YQ=="}}]}})",
      R"({"result":{"events":{}}})",
      R"({"result":{"created":"yes"}})",
      R"({"result":{"events":[{"kv":{"key":"YQ=","value":"YQ=="}}]}})",
  };
  for (const auto& line : bad_watch) {
    INFO(line);
    CHECK(etcd_decode_stream_message(EtcdWatch{}, line).status == EtcdStatus::failed);
  }
  CHECK(etcd_decode_response(EtcdTxn{}, 200, R"({"succeeded":1})").status == EtcdStatus::failed);
  CHECK(etcd_decode_response(EtcdTxn{}, 200, R"({"responses":[{"response_range":{"kvs":3}}]})")
            .status == EtcdStatus::failed);
  CHECK(etcd_decode_response(EtcdAuthenticate{}, 200, "{}").status == EtcdStatus::failed);
}

}  // namespace distflow
