// Fuzzes the PMD's request handling as the daemon runs it: bytes from several
// connections, cut into arbitrary chunks, go through FrameDecoder and the real
// Registry (next_outcome, as the server's read loop does), interleaved with
// connection closes and TTL sweeps. The input is a little program:
//
//   byte 0      frame limit selector and TTL selector
//   then ops    op byte: low 2 bits pick the connection, the rest the action
//               (raw chunk of the input's bytes, a well-formed request built
//               from the next bytes, close, clock step + expire)
//
// Every frame is also read by the DOM reading of tests/pmd_oracle.hpp and handled
// by a second registry: replies, events and flags must be the same, byte for byte
// (for a body that is not JSON, the reason after "malformed JSON: " may differ).
//
// Checked after every step: each reply is one JSON object
// {"type":"response",...,"payload":{...}} that survives framing; each event is
// a peer:join/peer:leave with a NodeInfo; joins minus leaves equals the
// registry's size; aliases are unique; every node is owned by an open
// connection; no alias is another node's nodeId; a protocol error closes only
// its connection; closing every connection empties the registry.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "framing.hpp"
#include "pmd_oracle.hpp"
#include "registry.hpp"

namespace {

using distflow::ConnectionId;
using distflow::FrameDecoder;
using distflow::PmdOutcome;
using distflow::Registry;
using nlohmann::json;

constexpr std::size_t kConnections = 4;
constexpr std::int64_t kT0 = 1'700'000'000'000;

[[noreturn]] void fail() {
  __builtin_trap();
}

void check(bool ok) {
  if (!ok)
    fail();
}

struct Input {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t at = 0;
  bool empty() const { return at >= size; }
  std::uint8_t byte() { return at < size ? data[at++] : 0; }
  std::string_view bytes(std::size_t n) {
    n = std::min(n, size - std::min(at, size));
    const std::string_view out(reinterpret_cast<const char*>(data) + at, n);
    at += n;
    return out;
  }
};

struct Connection {
  ConnectionId id = 0;
  std::unique_ptr<FrameDecoder> decoder;
  std::unique_ptr<FrameDecoder> reference;  // the same bytes, for the oracle
};

class Harness {
 public:
  Harness(std::size_t limit, std::chrono::milliseconds ttl)
      : limit_(limit), registry_(ttl), reference_(ttl) {
    for (auto& conn : conns_)
      open(conn);
  }

  void feed(std::size_t c, std::string_view bytes, bool loopback) {
    Connection& conn = conns_[c];
    conn.decoder->feed(bytes);
    conn.reference->feed(bytes);
    while (auto outcome =
               distflow::next_outcome(registry_, conn.id, *conn.decoder, now_, loopback)) {
      compare(conn, *outcome, loopback);
      apply(*outcome);
      if (outcome->shutdown) {
        close_all();
        return;
      }
      if (outcome->close) {
        close(c);
        return;
      }
    }
  }

  void close(std::size_t c) {
    Connection& conn = conns_[c];
    const auto left = registry_.connection_closed(conn.id);
    check(left == reference_.connection_closed(conn.id));
    events(left);
    check(registry_.owned_by(conn.id) == 0);
    check(registry_.watchers().count(conn.id) == 0);
    open(conn);
    invariants();
  }

  void close_all() {
    for (std::size_t c = 0; c < kConnections; ++c)
      close(c);
    // Every registration belongs to a connection: none left, none stuck.
    check(registry_.size() == 0);
    check(registry_.nodes().empty());
    check(registry_.watchers().empty());
    check(live_ == 0);
  }

  void tick(std::int64_t ms) {
    now_ += ms;
    const auto expired = registry_.expire(now_);
    check(expired == reference_.expire(now_));
    events(expired);
    invariants();
  }

 private:
  void open(Connection& conn) {
    conn.id = next_id_++;
    conn.decoder = std::make_unique<FrameDecoder>(limit_);
    conn.reference = std::make_unique<FrameDecoder>(limit_);
  }

  /// The same frame through the oracle's reading and the reference registry.
  void compare(Connection& conn, const PmdOutcome& outcome, bool loopback) {
    using Verdict = distflow_test::OracleRequest::Verdict;
    std::error_code ec;
    const auto body = conn.reference->next(ec);
    if (!body) {  // a framing error, on both
      check(ec && outcome.close);
      return;
    }
    distflow_test::oracle_read(*body, oracle_);
    PmdOutcome expected;
    switch (oracle_.verdict) {
      case Verdict::ok:
        reference_.handle_request(conn.id, oracle_.request, now_, loopback, expected.reply,
                                  expected);
        check(outcome.reply == expected.reply);
        break;
      case Verdict::bad_json:
        check(outcome.reply.rfind(R"({"type":"response","payload":{"error":"malformed JSON: )",
                                  0) == 0);
        break;
      case Verdict::not_an_object:
        check(outcome.reply ==
              R"({"type":"response","payload":{"error":"malformed JSON: not an object"}})");
        break;
    }
    check(outcome.events == expected.events && outcome.close == expected.close &&
          outcome.shutdown == expected.shutdown);
  }

  void apply(const PmdOutcome& outcome) {
    if (!outcome.reply.empty()) {
      // What the server writes: one frame that decodes back to the reply.
      std::string framed;
      distflow::append_frame(framed, outcome.reply);
      FrameDecoder back(framed.size());
      back.feed(framed);
      std::error_code ec;
      const auto body = back.next(ec);
      check(body && *body == outcome.reply && !ec);
      // (A copied requestId may be a number beyond double's range: valid JSON.)
      check(distflow_test::oracle_parse(outcome.reply).object);
      const json reply = distflow_test::oracle_detail::dom(outcome.reply);
      check(reply.is_object() && reply.value("type", "") == "response");
      check(reply.contains("payload") && reply["payload"].is_object());
    } else {
      check(!outcome.close);  // a protocol error is always answered
    }
    if (outcome.close)
      check(!outcome.problem.empty());
    events(outcome.events);
    invariants();
  }

  void events(const std::vector<std::string>& bodies) {
    for (const auto& body : bodies) {
      const json event = json::parse(body, nullptr, false);
      check(event.is_object() && event.value("type", "") == "event");
      const json& payload = event.at("payload");
      const std::string kind = payload.at("event").get<std::string>();
      const json& peer = payload.at("peer");
      check(peer.at("nodeId").is_string() && peer.at("host").is_string() &&
            peer.at("port").is_number_integer());
      if (kind == "peer:join") {
        ++live_;
      } else {
        check(kind == "peer:leave");
        check(live_ > 0);
        --live_;
      }
    }
  }

  void invariants() const {
    const auto nodes = registry_.nodes();
    check(nodes.size() == registry_.size());
    check(static_cast<long>(nodes.size()) == live_);
    std::set<std::string> ids, aliases;
    for (const auto& node : nodes) {
      check(ids.insert(node.node_id).second);
      if (!node.alias.empty())
        check(aliases.insert(node.alias).second);
    }
    for (const auto& node : nodes) {
      if (!node.alias.empty() && node.alias != node.node_id)
        check(ids.count(node.alias) == 0);
    }
    check(reference_.size() == registry_.size() && reference_.stats() == registry_.stats());
    std::size_t owned = 0;
    for (const auto& conn : conns_)
      owned += registry_.owned_by(conn.id);
    check(owned == registry_.size());
    for (ConnectionId w : registry_.watchers()) {
      bool open = false;
      for (const auto& conn : conns_)
        open = open || conn.id == w;
      check(open);
    }
  }

  std::size_t limit_;
  Registry registry_;
  Registry reference_;  // fed the oracle's reading of every frame
  distflow_test::OracleRequest oracle_;
  std::array<Connection, kConnections> conns_;
  ConnectionId next_id_ = 1;
  std::int64_t now_ = kT0;
  long live_ = 0;
};

/// A well-formed request from a few input bytes: small id/alias spaces so that
/// clashes, re-registers, owner checks and releases all happen.
std::string request(Input& in) {
  const std::uint8_t kind = in.byte();
  const std::string id = "n" + std::to_string(in.byte() % 6);
  const std::string alias = "a" + std::to_string(in.byte() % 4);
  std::string rid;
  switch (in.byte() % 4) {
    case 0:
      break;
    case 1:
      rid = R"(,"requestId":"req_)" + std::to_string(in.byte()) + "\"";
      break;
    case 2:
      rid = ",\"requestId\":" + std::to_string(in.byte());
      break;
    default:
      rid = R"(,"requestId":{"k":[1,null]})";
      break;
  }
  switch (kind % 9) {
    case 0: {
      const std::uint8_t extension = in.byte();
      std::string extra;
      if (extension & 1)
        extra += R"(,"heartbeatMs":)" + std::to_string(90 + (extension >> 1) * 4);
      if (extension & 2)
        extra += R"(,"maxFrame":)" + std::to_string(extension);
      return R"({"type":"register","payload":{"nodeId":")" + id + R"(","alias":")" + alias +
             R"(","host":"127.0.0.1","port":)" + std::to_string(1 + in.byte()) + extra + "}" + rid +
             "}";
    }
    case 1:
      return R"({"type":"register","payload":{"nodeId":")" + id +
             R"(","host":"localhost","port":4000})" + rid + "}";
    case 2:
      return R"({"type":"unregister","payload":{"nodeId":")" + id + "\"}" + rid + "}";
    case 3:
      return R"({"type":"resolve","payload":{"alias":")" + alias + "\"}" + rid + "}";
    case 4:  // an alias that is a nodeId, or the reverse, spelt with escaped keys
      return R"({"type":"register","payload":{"node\u0049d":")" + alias + R"(","\u0061lias":")" +
             id + R"(","host":"h","port":9})" + rid + "}";
    case 5:
      return R"({"type":"list","payload":{})" + rid + "}";
    case 6:
      return R"({"type":"heartbeat","payload":{"nodeId":")" + id + "\"}" + rid + "}";
    case 7:
      return std::string(R"({"type":"watch","payload":{"snapshot":)") +
             (in.byte() % 2 ? "true" : "false") + "}" + rid + "}";
    default:
      return std::string(R"({"type":"shutdown","payload":{"force":)") +
             (in.byte() % 2 ? "true" : "false") + "}" + rid + "}";
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  Input in{data, size};
  const std::uint8_t setup = in.byte();
  const std::size_t limit = std::size_t{16} << (setup % 16);  // 16 B .. 512 KiB
  const std::chrono::milliseconds ttl((setup >> 4) % 4 * 50);
  Harness harness(limit, ttl);

  while (!in.empty()) {
    const std::uint8_t op = in.byte();
    const std::size_t c = op % kConnections;
    const bool loopback = (op & 0x80) == 0;
    switch ((op >> 2) % 8) {
      case 0:
      case 1:
      case 2:  // raw bytes, any chunk size: frames split and merged arbitrarily
        harness.feed(c, in.bytes(1 + in.byte()), loopback);
        break;
      case 3:
      case 4: {  // one well-formed frame, maybe cut in two
        std::string frame;
        distflow::append_frame(frame, request(in));
        const std::size_t cut = std::min<std::size_t>(in.byte(), frame.size());
        harness.feed(c, std::string_view(frame).substr(0, cut), loopback);
        harness.feed(c, std::string_view(frame).substr(cut), loopback);
        break;
      }
      case 5:
        harness.close(c);
        break;
      case 6:
        harness.tick(in.byte());
        break;
      default: {  // a batch of pipelined requests in one read
        std::string batch;
        const int n = 1 + in.byte() % 8;
        for (int i = 0; i < n; ++i)
          distflow::append_frame(batch, request(in));
        harness.feed(c, batch, loopback);
        break;
      }
    }
  }
  harness.close_all();
  return 0;
}
