#include "calls.hpp"

#include <catch2/catch.hpp>

#include "errors.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;

// A reply envelope as a peer would send it, answering `ref`.
Envelope reply_to(const std::string& ref, const std::string& payload) {
  EnvelopeParser parser;
  Envelope out;
  const std::string body = R"({"from":"kv-1","to":"me","timestamp":1,"inReplyTo":")" + ref +
                           R"(","payload":)" + payload + "}";
  REQUIRE_FALSE(parser.parse(body, out));
  return out;
}

std::string ref_of(const std::string& members) {
  // "ref":"<tag>.<n>"
  REQUIRE(members.starts_with(R"("ref":")"));
  return members.substr(7, members.size() - 8);
}

struct Outcome {
  int runs = 0;
  std::error_code ec;
  std::string payload;
  std::string error;
  ReplyCallback callback() {
    return [this](std::error_code e, const Envelope& reply, const std::string& why) {
      ++runs;
      ec = e;
      payload = std::string(reply.payload());
      error = why;
    };
  }
};

}  // namespace

TEST_CASE("calls: refs are unique per caller and a reply ends its call once", "[calls]") {
  CallTable table("t0");
  Outcome a, b;
  std::string members_a, members_b;
  table.open("kv", 5s, a.callback(), members_a);
  table.open("kv", 5s, b.callback(), members_b);
  CHECK(members_a == R"("ref":"t0.1")");
  CHECK(members_b == R"("ref":"t0.2")");
  CHECK(table.in_flight() == 2);

  // Out of order: matched by ref, not by position.
  CHECK(table.complete(reply_to(ref_of(members_b), R"({"v":2})")));
  CHECK(table.complete(reply_to(ref_of(members_a), R"({"v":1})")));
  CHECK(a.runs == 1);
  CHECK(a.payload == R"({"v":1})");
  CHECK(b.payload == R"({"v":2})");
  CHECK_FALSE(a.ec);
  CHECK(table.in_flight() == 0);

  // A second answer, or one that is not ours, is late: counted, nothing runs.
  CHECK_FALSE(table.complete(reply_to(ref_of(members_a), "1")));
  CHECK_FALSE(table.complete(reply_to("other.1", "1")));
  CHECK_FALSE(table.complete(reply_to("t0.x", "1")));
  CHECK(a.runs == 1);
  CHECK(table.late_replies() == 3);
}

TEST_CASE("calls: deadlines end calls with the target and the time waited", "[calls]") {
  CallTable table("t1");
  Outcome fast, slow;
  std::string members;
  table.open("kv", 100ms, fast.callback(), members);
  const std::string fast_ref = ref_of(members);
  table.open("store", 10s, slow.callback(), members);

  const auto now = CallTable::Clock::now();
  auto next = table.expire(now);
  REQUIRE(next);  // nothing due yet
  CHECK(fast.runs == 0);

  next = table.expire(now + 200ms);
  CHECK(fast.runs == 1);
  CHECK(fast.ec == errc::timed_out);
  CHECK(fast.error == "call to 'kv': no reply within 100 ms");
  REQUIRE(next);  // the slow call is still waiting
  CHECK(slow.runs == 0);
  CHECK(table.timeouts() == 1);

  // Its reply, now late, is dropped and counted.
  CHECK_FALSE(table.complete(reply_to(fast_ref, "null")));
  CHECK(table.late_replies() == 1);

  table.fail_all(make_error_code(errc::closed), "the node stopped");
  CHECK(slow.runs == 1);
  CHECK(slow.error == "call to 'store' failed: the node stopped");
  CHECK_FALSE(table.expire(now + 1h));
}

TEST_CASE("calls: a target that goes fails only its own calls, at once", "[calls]") {
  CallTable table("t2");
  Outcome to_kv, to_other, failed_send;
  std::string members;
  table.open("kv", 10s, to_kv.callback(), members);
  table.open("other", 10s, to_other.callback(), members);
  const auto [id, deadline] = table.open("kv@10.203.0.2", 10s, failed_send.callback(), members);

  table.fail_target("kv", make_error_code(errc::peer_gone), "'kv' left (socket closed)");
  CHECK(to_kv.runs == 1);
  CHECK(to_kv.ec == errc::peer_gone);
  CHECK(to_kv.error == "call to 'kv' failed: 'kv' left (socket closed)");
  CHECK(to_other.runs == 0);

  table.fail(id, make_error_code(errc::unknown_node), "unknown target 'kv@10.203.0.2'");
  table.fail(id, make_error_code(errc::unknown_node), "twice");  // ended already: no-op
  CHECK(failed_send.runs == 1);
  CHECK(failed_send.error == "unknown target 'kv@10.203.0.2'");
  CHECK(table.in_flight() == 1);
}

}  // namespace distflow
