// The cookie handshake: the exact bytes of PROTOCOL.md §3.4's worked example, success
// in both roles, wrong cookies, tampered and replayed frames, versions and garbage as
// pure frame exchanges; then the same gate on two real sessions over loopback (plain
// and TLS), where a wrong cookie is refused on both sides with nothing delivered.

#include "cookie_gate.hpp"

#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "session.hpp"
#include "support.hpp"
#include "tls.hpp"

namespace distflow {
namespace {

using State = SessionGate::State;
using Role = CookieGate::Role;

constexpr const char* kCookie = "chocolate-chip";
constexpr const char* kNonceC = "00112233445566778899aabbccddeeff";
constexpr const char* kNonceS = "ffeeddccbbaa99887766554433221100";
constexpr const char* kNameC = "ui-77-c0ffee";
constexpr const char* kNameS = "worker-4242-00c0de";
// Computed independently (Python's hmac, and `openssl dgst -sha256 -hmac`).
constexpr const char* kServerProof =
    "9c5a1a37aecd206f347450dd2a7bcce0b31cb11e6d6c3b8648054ea77be6837e";
constexpr const char* kClientProof =
    "84f4627c439cfd58630d4780c47b0b2e12089f8a9175d3c2266bc8957c3ad85e";

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

std::string error_frame(const std::string& error) {
  return R"({"type":"handshake_error","error":")" + error + "\"}";
}

/// Everything one handshake put on the wire, and where each side ended.
struct Exchange {
  std::string hello, challenge, reply;  // reply: the dialler's proof or its refusal
  SessionGate::Step acceptor_first, dialler, acceptor_last;
};

/// Carries the frames between two gates, as two sessions would.
Exchange run_handshake(CookieGate& dialler, CookieGate& acceptor) {
  Exchange x;
  x.hello = *dialler.opening();
  CHECK_FALSE(acceptor.opening());
  x.acceptor_first = acceptor.on_frame(x.hello);
  if (x.acceptor_first.state != State::pending)
    return x;
  x.challenge = x.acceptor_first.reply.value();
  x.dialler = dialler.on_frame(x.challenge);
  if (!x.dialler.reply)
    return x;
  x.reply = *x.dialler.reply;
  x.acceptor_last = acceptor.on_frame(x.reply);
  return x;
}

/// `frame` with the first occurrence of `from` replaced by `to`.
std::string tampered(std::string frame, const std::string& from, const std::string& to) {
  const auto at = frame.find(from);
  REQUIRE(at != std::string::npos);
  return frame.replace(at, from.size(), to);
}

std::string construct_error(std::string_view cookie, const std::string& name,
                            const std::string& nonce) {
  try {
    CookieGate gate(Role::dialler, cookie, name, {}, nonce);
  } catch (const Error& e) {
    return e.what();
  }
  return "(constructed)";
}

}  // namespace

TEST_CASE("cookie_gate: the worked example of PROTOCOL.md, byte for byte", "[cookie_gate]") {
  CHECK(handshake_proof(kCookie, true, kNonceC, kNonceS, kNameC, kNameS) == kServerProof);
  CHECK(handshake_proof(kCookie, false, kNonceC, kNonceS, kNameC, kNameS) == kClientProof);
  CookieGate dialler(Role::dialler, kCookie, kNameC, {}, kNonceC);
  CookieGate acceptor(Role::acceptor, kCookie, kNameS, {}, kNonceS);
  const Exchange x = run_handshake(dialler, acceptor);
  CHECK(
      x.hello ==
      R"({"type":"hello","v":1,"name":"ui-77-c0ffee","nonce":"00112233445566778899aabbccddeeff"})");
  CHECK(x.challenge == std::string(R"({"type":"challenge","v":1,"name":"worker-4242-00c0de",)") +
                           R"("nonce":"ffeeddccbbaa99887766554433221100","proof":")" +
                           kServerProof + "\"}");
  CHECK(x.reply == std::string(R"({"type":"proof","proof":")") + kClientProof + "\"}");
  CHECK(x.acceptor_first.state == State::pending);
  CHECK(x.dialler.state == State::open);
  CHECK(x.acceptor_last.state == State::open);
  CHECK_FALSE(x.acceptor_last.reply);  // the acceptor opens silently
  CHECK(dialler.peer_name() == kNameS);
  CHECK(acceptor.peer_name() == kNameC);
  // The example's wrong cookie: same challenge, refused by the dialler.
  CookieGate chop(Role::dialler, "chocolate-chop", kNameC, {}, kNonceC);
  chop.opening();
  const auto refused = chop.on_frame(x.challenge);
  CHECK(refused.reply == R"({"type":"handshake_error","error":"cookie mismatch"})");
  CHECK(refused.reply->size() == 52);
  // Names are escaped in the frames, and the HMAC covers their unescaped bytes.
  CookieGate quoted_d(Role::dialler, kCookie, "say \"hi\"/é", {}, kNonceC);
  CookieGate quoted_a(Role::acceptor, kCookie, "pmd", {}, kNonceS);
  const Exchange q = run_handshake(quoted_d, quoted_a);
  CHECK(contains(q.hello, R"("name":"say \"hi\"/é")"));
  CHECK(q.acceptor_last.state == State::open);
  CHECK(quoted_a.peer_name() == "say \"hi\"/é");
}

TEST_CASE("cookie_gate: random nonces; either node can dial the other", "[cookie_gate]") {
  std::vector<std::string> nonces;
  for (const auto& [a, b] : {std::pair{"node-a", "node-b"}, {"node-b", "node-a"}}) {
    CookieGate dialler(Role::dialler, "shared", a);
    CookieGate acceptor(Role::acceptor, "shared", b);
    CHECK(dialler.peer_name().empty());  // nothing proven yet
    const Exchange x = run_handshake(dialler, acceptor);
    CHECK(x.dialler.state == State::open);
    CHECK(x.acceptor_last.state == State::open);
    CHECK(dialler.peer_name() == b);
    CHECK(acceptor.peer_name() == a);
    nonces.push_back(x.hello.substr(x.hello.find("\"nonce\":") + 9, 32));
    nonces.push_back(x.challenge.substr(x.challenge.find("\"nonce\":") + 9, 32));
  }
  for (std::size_t i = 0; i < nonces.size(); ++i) {
    CHECK(nonces[i].find_first_not_of("0123456789abcdef") == std::string::npos);
    for (std::size_t j = 0; j < i; ++j)
      CHECK(nonces[i] != nonces[j]);
  }
}

TEST_CASE("cookie_gate: a wrong cookie is refused on both sides, either way round",
          "[cookie_gate]") {
  for (const auto& [dialler_cookie, acceptor_cookie] :
       {std::pair{"right", "wrong"}, {"wrong", "right"}}) {
    CookieGate dialler(Role::dialler, dialler_cookie, "node-a");
    CookieGate acceptor(Role::acceptor, acceptor_cookie, "node-b");
    const Exchange x = run_handshake(dialler, acceptor);
    // The dialler checks first: it refuses and says why; the acceptor learns it.
    CHECK(x.dialler.state == State::refused);
    CHECK(x.dialler.error == "cookie mismatch");
    CHECK(x.reply == error_frame("cookie mismatch"));
    CHECK(x.acceptor_last.state == State::refused);
    CHECK(x.acceptor_last.error == "peer refused: cookie mismatch");
    CHECK_FALSE(x.acceptor_last.reply);
    CHECK(dialler.peer_name().empty());
    CHECK(acceptor.peer_name().empty());
  }
  // A dialler without the cookie that answers anyway: the acceptor checks the proof.
  CookieGate acceptor(Role::acceptor, "right", "node-b", {}, kNonceS);
  acceptor.on_frame(
      R"({"type":"hello","v":1,"name":"mallory","nonce":"00112233445566778899aabbccddeeff"})");
  const auto guess = handshake_proof("guess", false, kNonceC, kNonceS, "mallory", "node-b");
  const auto step = acceptor.on_frame(R"({"type":"proof","proof":")" + guess + "\"}");
  CHECK(step.state == State::refused);
  CHECK(step.error == "cookie mismatch");
  CHECK(step.reply == error_frame("cookie mismatch"));
  CHECK(acceptor.peer_name().empty());
}

TEST_CASE("cookie_gate: tampered nonces, names and proofs are a cookie mismatch", "[cookie_gate]") {
  struct Tamper {
    const char* what;
    std::string from, to;
    int frame;  // 0: hello (seen by the acceptor), 1: challenge, 2: proof
  };
  const Tamper cases[] = {
      {"hello nonce", kNonceC, "00112233445566778899aabbccddeef0", 0},
      {"hello name", kNameC, "ui-77-c0ffef", 0},
      {"challenge nonce", kNonceS, "ffeeddccbbaa99887766554433221101", 1},
      {"challenge name", kNameS, "worker-4242-00c0df", 1},
      {"challenge proof", kServerProof,
       "9c5a1a37aecd206f347450dd2a7bcce0b31cb11e6d6c3b8648054ea77be6837f", 1},
      {"client proof", kClientProof,
       "04f4627c439cfd58630d4780c47b0b2e12089f8a9175d3c2266bc8957c3ad85e", 2},
  };
  for (const Tamper& t : cases) {
    INFO(t.what);
    CookieGate dialler(Role::dialler, kCookie, kNameC, {}, kNonceC);
    CookieGate acceptor(Role::acceptor, kCookie, kNameS, {}, kNonceS);
    std::string hello = *dialler.opening();
    if (t.frame == 0)
      hello = tampered(hello, t.from, t.to);
    auto challenge = acceptor.on_frame(hello).reply.value();
    if (t.frame == 1)
      challenge = tampered(challenge, t.from, t.to);
    const auto d = dialler.on_frame(challenge);
    if (t.frame < 2) {
      CHECK(d.state == State::refused);
      CHECK(d.error == "cookie mismatch");
      continue;
    }
    REQUIRE(d.state == State::open);
    const auto a = acceptor.on_frame(tampered(*d.reply, t.from, t.to));
    CHECK(a.state == State::refused);
    CHECK(a.error == "cookie mismatch");
  }
}

TEST_CASE("cookie_gate: a replayed challenge or proof is refused", "[cookie_gate]") {
  CookieGate first_d(Role::dialler, "shared", "node-a");
  CookieGate first_a(Role::acceptor, "shared", "node-b");
  const Exchange recorded = run_handshake(first_d, first_a);
  REQUIRE(recorded.acceptor_last.state == State::open);
  // An impostor acceptor replays the old challenge to a new dialler (new nonce).
  CookieGate dialler(Role::dialler, "shared", "node-a");
  dialler.opening();
  const auto d = dialler.on_frame(recorded.challenge);
  CHECK(d.state == State::refused);
  CHECK(d.error == "cookie mismatch");
  // An impostor dialler replays the old hello and proof to a new acceptor (new nonce).
  CookieGate acceptor(Role::acceptor, "shared", "node-b");
  REQUIRE(acceptor.on_frame(recorded.hello).state == State::pending);
  const auto a = acceptor.on_frame(recorded.reply);
  CHECK(a.state == State::refused);
  CHECK(a.error == "cookie mismatch");
  // A reflected challenge (the acceptor's proof sent back as a client proof).
  CookieGate reflected(Role::acceptor, kCookie, kNameS, {}, kNonceS);
  reflected.on_frame(R"({"type":"hello","v":1,"name":"ui-77-c0ffee","nonce":")" +
                     std::string(kNonceC) + "\"}");
  CHECK(reflected.on_frame(R"({"type":"proof","proof":")" + std::string(kServerProof) + "\"}")
            .error == "cookie mismatch");
}

TEST_CASE("cookie_gate: unknown versions are refused with the version", "[cookie_gate]") {
  CookieGate acceptor(Role::acceptor, "shared", "node-b");
  const auto a = acceptor.on_frame(R"({"type":"hello","v":2,"name":"n","nonce":")" +
                                   std::string(kNonceC) + "\"}");
  CHECK(a.state == State::refused);
  CHECK(a.error == "unsupported version 2");
  CHECK(a.reply == error_frame("unsupported version 2"));

  CookieGate dialler(Role::dialler, "shared", "node-a");
  dialler.opening();
  const auto d = dialler.on_frame(R"({"type":"challenge","v":3,"name":"n","nonce":")" +
                                  std::string(kNonceS) + R"(","proof":")" + kServerProof + "\"}");
  CHECK(d.state == State::refused);
  CHECK(d.error == "unsupported version 3");
  CHECK(d.reply == error_frame("unsupported version 3"));
}

TEST_CASE("cookie_gate: garbage frames are refused with the precise reason", "[cookie_gate]") {
  const std::string nonce = kNonceC;
  struct Case {
    std::string frame, error;
  };
  const Case acceptor_cases[] = {
      {"not json", "bad handshake frame: "},
      {"[]", "bad handshake frame: "},
      {"{}", "bad handshake frame: expected 'hello', got no 'type'"},
      {R"({"from":"x","payload":{}})",
       "bad handshake frame: expected 'hello', got no 'type' "
       "(is the peer configured without a cookie?)"},
      {R"({"type":"resolve","payload":{"alias":"w"},"requestId":1})",
       "bad handshake frame: expected 'hello', got 'resolve'"},
      {R"({"type":"proof","proof":"00"})", "bad handshake frame: expected 'hello', got 'proof'"},
      {R"({"type":7})", "bad handshake frame: 'type' is not a string"},
      {R"({"type":"hello"})", "bad handshake frame: missing 'v'"},
      {R"({"type":"hello","v":"1"})", "bad handshake frame: 'v' is not a number"},
      {R"({"type":"hello","v":1.0,"name":"n","nonce":")" + nonce + "\"}",
       "unsupported version 1.0"},
      {R"({"type":"hello","v":1,"nonce":")" + nonce + "\"}", "bad handshake frame: missing 'name'"},
      {R"({"type":"hello","v":1,"name":"","nonce":")" + nonce + "\"}",
       "invalid peer name: empty name"},
      {R"({"type":"hello","v":1,"name":"a\u0000b","nonce":")" + nonce + "\"}",
       "invalid peer name: control character in name at byte 1"},
      {R"({"type":"hello","v":1,"name":"a\nb","nonce":")" + nonce + "\"}",
       "invalid peer name: control character in name at byte 1"},
      {R"({"type":"hello","v":1,"name":["n"],"nonce":")" + nonce + "\"}",
       "bad handshake frame: 'name' is not a string"},
      {R"({"type":"hello","v":1,"name":"n"})", "bad handshake frame: missing 'nonce'"},
      {R"({"type":"hello","v":1,"name":"n","nonce":"00112233445566778899AABBCCDDEEFF"})",
       "bad handshake frame: 'nonce' is not 32 lowercase hex digits"},
      {R"({"type":"hello","v":1,"name":"n","nonce":"0011"})",
       "bad handshake frame: 'nonce' is not 32 lowercase hex digits"},
      {R"({"type":"hello","v":1,"name":"n","nonce":12})",
       "bad handshake frame: 'nonce' is not a string"},
  };
  for (const Case& c : acceptor_cases) {
    INFO(c.frame);
    CookieGate acceptor(Role::acceptor, "shared", "node-b");
    const auto step = acceptor.on_frame(c.frame);
    CHECK(step.state == State::refused);
    CHECK(step.error.starts_with(c.error));
    REQUIRE(step.reply);
    CHECK(step.reply->starts_with(R"({"type":"handshake_error","error":")" + c.error));
    CHECK(acceptor.peer_name().empty());
    // Over: whatever comes next is not looked at.
    const auto after = acceptor.on_frame(R"({"type":"hello"})");
    CHECK(after.state == State::refused);
    CHECK_FALSE(after.reply);
  }
  // A handshake frame out of turn gets no hint about a missing cookie.
  CookieGate turned(Role::acceptor, "shared", "node-b");
  CHECK(turned.on_frame(R"({"type":"challenge"})").error ==
        "bad handshake frame: expected 'hello', got 'challenge'");
  const Case dialler_cases[] = {
      {R"({"type":"response","payload":{"error":"Unknown message type"}})",
       "bad handshake frame: expected 'challenge', got 'response' (is the peer configured "
       "without a cookie?)"},
      {R"({"type":"challenge","v":1,"name":"n","nonce":")" + std::string(kNonceS) + "\"}",
       "bad handshake frame: missing 'proof'"},
      {R"({"type":"challenge","v":1,"name":"n","nonce":")" + std::string(kNonceS) +
           R"(","proof":"abc"})",
       "bad handshake frame: 'proof' is not 64 lowercase hex digits"},
      {R"({"type":"challenge","v":1,"name":"n\u001b[31m","nonce":")" + std::string(kNonceS) +
           R"(","proof":")" + kServerProof + "\"}",
       "invalid peer name: control character in name at byte 1"},
  };
  for (const Case& c : dialler_cases) {
    INFO(c.frame);
    CookieGate dialler(Role::dialler, "shared", "node-a");
    dialler.opening();
    const auto step = dialler.on_frame(c.frame);
    CHECK(step.state == State::refused);
    CHECK(step.error == c.error);
    CHECK(step.reply == error_frame(c.error));
  }
}

TEST_CASE("cookie_gate: a refusal from the peer ends the handshake without a reply",
          "[cookie_gate]") {
  CookieGate dialler(Role::dialler, "shared", "node-a");
  dialler.opening();
  auto d = dialler.on_frame(R"({"type":"handshake_error","error":"unsupported version 1"})");
  CHECK(d.state == State::refused);
  CHECK(d.error == "peer refused: unsupported version 1");
  CHECK_FALSE(d.reply);
  CookieGate acceptor(Role::acceptor, "shared", "node-b");
  auto a = acceptor.on_frame(R"({"type":"handshake_error","error":"bell\u0007"})");
  CHECK(a.error == "peer refused: bell?");  // a peer's text is sanitised
  CHECK_FALSE(a.reply);
  CookieGate silent(Role::acceptor, "shared", "node-b");
  CHECK(silent.on_frame(R"({"type":"handshake_error"})").error == "peer refused: no reason given");
}

TEST_CASE("cookie_gate: a dialler can insist on the acceptor's name", "[cookie_gate]") {
  CookieGate dialler(Role::dialler, "shared", "node-a", "node-b");
  CookieGate impostor(Role::acceptor, "shared", "node-c");
  const Exchange x = run_handshake(dialler, impostor);
  CHECK(x.dialler.state == State::refused);
  CHECK(x.dialler.error == "unexpected peer 'node-c' (expected 'node-b')");
  CHECK(x.acceptor_last.error == "peer refused: unexpected peer 'node-c' (expected 'node-b')");
  CookieGate again(Role::dialler, "shared", "node-a", "node-b");
  CookieGate right(Role::acceptor, "shared", "node-b");
  CHECK(run_handshake(again, right).acceptor_last.state == State::open);
}

TEST_CASE("cookie_gate: bad construction is an error", "[cookie_gate]") {
  CHECK(construct_error("", "n", {}) == "cannot start a cookie handshake: the cookie is empty");
  CHECK(construct_error("c", "", {}) == "cannot start a cookie handshake as '': empty name");
  CHECK(construct_error("c", "a\tb", {}) ==
        "cannot start a cookie handshake as 'a?b': control character in name at byte 1");
  CHECK(construct_error("c", "n", "XYZ") ==
        "cannot start a cookie handshake: the nonce is not 32 lowercase hex digits");
  CHECK(construct_error("c", "n", kNonceC) == "(constructed)");
}

// ---- on real sessions ------------------------------------------------------------

namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

struct Recorder final : SessionHandler {
  std::vector<std::string> frames;
  std::optional<std::string> closed;
  bool on_readable(Session& session) override {
    std::error_code ec;
    while (!session.closing()) {
      auto body = session.decoder().next(ec);
      if (!body)
        break;
      frames.emplace_back(*body);
    }
    return true;
  }
  void on_closed(Session&, std::string_view reason) override { closed = std::string(reason); }
};

/// Two sessions over loopback, each with a cookie gate (and optionally TLS).
struct GatedPair {
  asio::io_context io;
  std::shared_ptr<Recorder> server_handler = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> client_handler = std::make_shared<Recorder>();
  std::shared_ptr<Session> server, client;

  GatedPair(std::string_view server_cookie, std::string_view client_cookie, TlsSide server_tls = {},
            TlsSide client_tls = {}) {
    tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
    tcp::socket near(io);
    near.connect(acceptor.local_endpoint());
    tcp::socket far = acceptor.accept();
    SessionOptions options;
    options.hello_timeout = 2s;  // issue 12: a handshake not done in 2 s is closed
    server = std::make_shared<Session>(
        std::move(far), server_handler, options, server_tls,
        std::make_unique<CookieGate>(Role::acceptor, server_cookie, "worker-1"));
    client = std::make_shared<Session>(
        std::move(near), client_handler, options, client_tls,
        std::make_unique<CookieGate>(Role::dialler, client_cookie, "send-42"));
    server->start();
    client->start();
  }

  template <class Predicate>
  bool run_until(Predicate done, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline)
      io.run_for(5ms);
    return done();
  }
};

}  // namespace

TEST_CASE("cookie_gate: two sessions with the same cookie open and carry frames",
          "[cookie_gate][session]") {
  GatedPair pair("shared secret", "shared secret");
  for (int i = 0; i < 100; ++i)  // queued before the handshake: sent after it, in order
    REQUIRE(pair.client->send(R"({"from":"send-42","payload":)" + std::to_string(i) + "}"));
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 100; }));
  CHECK(pair.server_handler->frames[0] == R"({"from":"send-42","payload":0})");
  CHECK(pair.server_handler->frames[99] == R"({"from":"send-42","payload":99})");
  CHECK(pair.server->authenticated_peer() == "send-42");
  CHECK(pair.client->authenticated_peer() == "worker-1");
  CHECK(pair.client_handler->frames.empty());  // the handshake's frames are not delivered
  CHECK_FALSE(pair.server_handler->closed);
  CHECK_FALSE(pair.client_handler->closed);
}

TEST_CASE("cookie_gate: sessions with different cookies are refused on both sides",
          "[cookie_gate][session]") {
  GatedPair pair("shared secret", "a guess");
  REQUIRE(pair.client->send(R"({"from":"send-42","payload":"let me in"})"));
  REQUIRE(pair.run_until([&] {
    return pair.server_handler->closed.has_value() && pair.client_handler->closed.has_value();
  }));
  CHECK(*pair.client_handler->closed == "handshake refused: cookie mismatch");
  CHECK(*pair.server_handler->closed == "handshake refused: peer refused: cookie mismatch");
  CHECK(pair.server_handler->frames.empty());  // nothing of that peer was delivered
  CHECK(pair.client_handler->frames.empty());
  CHECK(pair.server->authenticated_peer().empty());
  CHECK(pair.client->authenticated_peer().empty());
}

TEST_CASE("cookie_gate: the handshake runs inside TLS", "[cookie_gate][session][tls]") {
  test::TestPki pki;
  const auto server_files = pki.issue("server");
  const auto client_files = pki.issue("client");
  TlsContext server_ctx({server_files.cert, server_files.key, server_files.ca});
  TlsContext client_ctx({client_files.cert, client_files.key, client_files.ca});
  {
    GatedPair pair("shared", "shared", {&server_ctx, true, {}}, {&client_ctx, false, "localhost"});
    REQUIRE(pair.client->send(R"({"from":"send-42","payload":1})"));
    REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 1; }));
    CHECK(pair.server->authenticated_peer() == "send-42");
  }
  GatedPair pair("shared", "other", {&server_ctx, true, {}}, {&client_ctx, false, "localhost"});
  REQUIRE(pair.client->send(R"({"from":"send-42","payload":1})"));
  REQUIRE(pair.run_until([&] {
    return pair.server_handler->closed.has_value() && pair.client_handler->closed.has_value();
  }));
  CHECK(*pair.server_handler->closed == "handshake refused: peer refused: cookie mismatch");
  CHECK(pair.server_handler->frames.empty());
}

}  // namespace distflow
