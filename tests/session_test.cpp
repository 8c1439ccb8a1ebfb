// The one connection shape: frames both ways in order, back-pressure by the
// handler and by unread replies, stall and hello timeouts, a lingering close
// that still delivers the last reply, a reset that still delivers what came
// before it, ticks, and the same over TLS (a foreign CA refused).

#include "session.hpp"

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <asio/write.hpp>
#include <catch2/catch.hpp>

#include "support.hpp"
#include "tls.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

struct Recorder final : SessionHandler {
  std::vector<std::string> frames;
  std::optional<std::string> closed;
  bool hold = false;  // take one frame per call, then ask to wait
  std::function<void(Session&, std::string_view)> on_frame;
  std::uint64_t written = 0;

  bool on_readable(Session& session) override {
    std::error_code ec;
    while (!session.closing()) {
      auto body = session.decoder().next(ec);
      if (!body)
        break;
      frames.emplace_back(*body);
      session.established();
      if (on_frame)
        on_frame(session, *body);
      if (hold)
        return false;
    }
    if (ec)
      session.stop(describe_frame_error(ec, session.decoder()));
    return true;
  }
  void on_written(Session&, std::size_t, std::uint64_t frames_written) override {
    written = frames_written;
  }
  void on_closed(Session&, std::string_view reason) override { closed = std::string(reason); }
};

/// A toy gate: the dialler says its password, the acceptor says "ok" or refuses.
struct PasswordGate final : SessionGate {
  std::string password;
  bool dialler;
  std::string name;
  PasswordGate(std::string pw, bool dial) : password(std::move(pw)), dialler(dial) {}
  std::optional<std::string> opening() override {
    return dialler ? std::optional<std::string>("pw " + password) : std::nullopt;
  }
  Step on_frame(std::string_view body) override {
    if (dialler)
      return {{}, body == "ok" ? State::open : State::refused, std::string(body)};
    if (body == "pw " + password) {
      name = "friend";
      return {"ok", State::open, {}};
    }
    return {"go away", State::refused, "wrong password"};
  }
  const std::string& peer_name() const override { return name; }
};

/// A connected pair of sessions on one io_context.
struct Pair {
  asio::io_context io;
  std::shared_ptr<Recorder> server_handler = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> client_handler = std::make_shared<Recorder>();
  std::shared_ptr<Session> server, client;
  tcp::socket raw_client{io};  // for tests that play a misbehaving peer

  explicit Pair(SessionOptions server_options = {}, SessionOptions client_options = {},
                TlsSide server_tls = {}, TlsSide client_tls = {}, bool raw = false,
                std::unique_ptr<SessionGate> server_gate = nullptr,
                std::unique_ptr<SessionGate> client_gate = nullptr) {
    tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
    tcp::socket near(io);
    near.connect(acceptor.local_endpoint());
    tcp::socket far = acceptor.accept();
    server = std::make_shared<Session>(std::move(far), server_handler, server_options, server_tls,
                                       std::move(server_gate));
    server->start();
    if (raw) {
      raw_client = std::move(near);
      return;
    }
    client = std::make_shared<Session>(std::move(near), client_handler, client_options, client_tls,
                                       std::move(client_gate));
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

TEST_CASE("session: frames both ways, in order, counted as written", "[session]") {
  Pair pair;
  pair.server_handler->on_frame = [](Session& session, std::string_view body) {
    REQUIRE(session.send("echo " + std::string(body)));
  };
  for (int i = 0; i < 1000; ++i)
    REQUIRE(pair.client->send("m" + std::to_string(i)));
  REQUIRE(pair.run_until([&] { return pair.client_handler->frames.size() == 1000; }));
  for (int i = 0; i < 1000; ++i)
    CHECK(pair.client_handler->frames[static_cast<std::size_t>(i)] == "echo m" + std::to_string(i));
  CHECK(pair.client_handler->written == 1000);
  CHECK(pair.client->peer().starts_with("127.0.0.1:"));
  CHECK(pair.client->loopback());
  // One stop, one reason, on both sides.
  pair.client->stop("done");
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(*pair.client_handler->closed == "done");
  CHECK(*pair.server_handler->closed == "closed by the peer");
}

TEST_CASE("session: a handler that says wait gets no more bytes until resume()", "[session]") {
  Pair pair;
  pair.server_handler->hold = true;
  for (int i = 0; i < 3; ++i)
    pair.client->send("m" + std::to_string(i));
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 1; }));
  pair.io.run_for(50ms);
  CHECK(pair.server_handler->frames.size() == 1);  // held
  pair.server->resume();
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 2; }));
  pair.server_handler->hold = false;
  pair.server->resume();
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 3; }));
}

TEST_CASE("session: a peer stopped inside a frame is closed after the stall timeout", "[session]") {
  SessionOptions options;
  options.stall_timeout = 100ms;
  Pair pair(options, {}, {}, {}, true);
  const char half[] = {0, 0, 0, 10, '{'};
  asio::write(pair.raw_client, asio::buffer(half, sizeof half));
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(pair.server_handler->closed->starts_with("stalled 100 ms inside a frame"));
}

TEST_CASE("session: a peer that reads nothing stalls the writer and is closed", "[session]") {
  SessionOptions options;
  options.stall_timeout = 200ms;
  Pair pair(options, {}, {}, {}, true);
  const std::string big(1u << 20, 'x');
  // Far more than the socket buffers hold; the raw peer never reads.
  for (int i = 0; i < 32 && !pair.server_handler->closed; ++i) {
    REQUIRE(pair.server->send(big));
    pair.io.run_for(1ms);
  }
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(pair.server_handler->closed->starts_with("stalled 200 ms writing"));
}

TEST_CASE("session: unread replies hold the reads back (pause mark)", "[session]") {
  SessionOptions options;
  options.pause_reads_above = 64u << 10;
  Pair pair(options, {}, {}, {}, true);
  pair.server_handler->on_frame = [](Session& session, std::string_view) {
    session.send(std::string(16u << 10, 'r'));  // a big reply per request
  };
  std::string requests;
  for (int i = 0; i < 2000; ++i)
    append_frame(requests, "q");
  asio::write(pair.raw_client, asio::buffer(requests));
  pair.io.run_for(200ms);
  // Served until the replies queued up past the mark, far from all 2000.
  const std::size_t served = pair.server_handler->frames.size();
  CHECK(served > 0);
  CHECK(served < 2000);
  // Reading the replies lets the rest be served.
  std::vector<char> sink(1u << 20);
  pair.raw_client.non_blocking(true);
  REQUIRE(pair.run_until(
      [&] {
        std::error_code ec;
        pair.raw_client.read_some(asio::buffer(sink), ec);
        return pair.server_handler->frames.size() == 2000;
      },
      10s));
}

TEST_CASE("session: a connection that sends nothing valid is closed after the hello timeout",
          "[session]") {
  SessionOptions options;
  options.hello_timeout = 100ms;
  Pair pair(options, {}, {}, {}, true);
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(*pair.server_handler->closed == "nothing valid received within 100 ms");
}

TEST_CASE("session: close_after_flush still delivers the queued reply", "[session]") {
  Pair pair;
  pair.server_handler->on_frame = [](Session& session, std::string_view) {
    session.send("last words");
    session.close_after_flush("protocol error");
  };
  pair.client->send("bad");
  pair.client->send("ignored");
  REQUIRE(pair.run_until([&] { return pair.client_handler->closed.has_value(); }));
  REQUIRE(pair.client_handler->frames.size() == 1);
  CHECK(pair.client_handler->frames[0] == "last words");
  CHECK(*pair.server_handler->closed == "protocol error");
  CHECK(pair.server_handler->frames.size() == 1);  // nothing delivered after the close
}

TEST_CASE("session: a reset drawn by our write still delivers what the peer sent before it",
          "[session]") {
  Pair pair({}, {}, {}, {}, true);
  pair.server_handler->hold = true;  // one frame per resume(): the rest stays in the kernel
  std::string frames;
  for (int i = 0; i < 100; ++i)
    append_frame(frames, "m" + std::to_string(i));
  asio::write(pair.raw_client, asio::buffer(frames));
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 1; }));
  pair.raw_client.close();  // gone, with 99 frames unread on our side
  // Our next writes (a tick, say) meet the closed socket: a reset, then a failure.
  REQUIRE(pair.run_until([&] {
    pair.server->send("tick");
    pair.io.run_for(5ms);
    return pair.server_handler->closed.has_value() || pair.server->queued_bytes() > 0;
  }));
  REQUIRE(pair.run_until([&] {
    pair.server->resume();
    return pair.server_handler->frames.size() == 100 || pair.server_handler->closed.has_value();
  }));
  CHECK(pair.server_handler->frames.size() == 100);
  CHECK(pair.server_handler->frames.back() == "m99");
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(pair.server_handler->closed->starts_with("write failed"));
}

TEST_CASE("session: silence while reads are held back is not a partition", "[session]") {
  SessionOptions options;
  options.tick_interval = 20ms;
  options.tick_frame = "tick";
  Pair pair(options);
  pair.server_handler->hold = true;
  for (int i = 0; i < 3; ++i)
    pair.client->send("m" + std::to_string(i));
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 1; }));
  pair.io.run_for(300ms);  // the scenario: held for 15 ticks; the client says nothing more
  CHECK_FALSE(pair.server_handler->closed.has_value());
  pair.server_handler->hold = false;
  pair.server->resume();
  REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 3; }));
  // Reading again, the client's silence counts: 4 ticks later it is taken for gone.
  REQUIRE(pair.run_until([&] { return pair.server_handler->closed.has_value(); }));
  CHECK(pair.server_handler->closed->starts_with("no tick from the peer for 80 ms"));
}

TEST_CASE("session: the same frames over TLS; a certificate from another CA is refused",
          "[session][tls]") {
  test::TestPki pki;
  const auto server_files = pki.issue("server");
  const auto client_files = pki.issue("client");
  TlsContext server_ctx({server_files.cert, server_files.key, server_files.ca});
  TlsContext client_ctx({client_files.cert, client_files.key, client_files.ca});
  {
    Pair pair({}, {}, {&server_ctx, true, {}}, {&client_ctx, false, "localhost"});
    pair.server_handler->on_frame = [](Session& session, std::string_view body) {
      session.send("tls " + std::string(body));
    };
    for (int i = 0; i < 100; ++i)
      pair.client->send(std::string(10000, static_cast<char>('a' + i % 26)));
    REQUIRE(pair.run_until([&] { return pair.client_handler->frames.size() == 100; }));
    CHECK(pair.client_handler->frames[99] == "tls " + std::string(10000, 'v'));
  }
  test::TestPki other("another-ca");
  const auto stranger = other.issue("stranger");
  TlsContext stranger_ctx({stranger.cert, stranger.key, stranger.ca});
  Pair pair({}, {}, {&server_ctx, true, {}}, {&stranger_ctx, false, "localhost"});
  pair.client->send("let me in");
  REQUIRE(pair.run_until([&] {
    return pair.server_handler->closed.has_value() && pair.client_handler->closed.has_value();
  }));
  CHECK(pair.server_handler->closed->starts_with("TLS handshake failed"));
  CHECK(pair.client_handler->closed->starts_with("TLS handshake failed"));
  CHECK(pair.server_handler->frames.empty());
}

}  // namespace distflow

namespace distflow {

TEST_CASE("session: a gate runs first; frames queued meanwhile wait for it to open", "[session]") {
  {
    Pair pair({}, {}, {}, {}, false, std::make_unique<PasswordGate>("s3cret", false),
              std::make_unique<PasswordGate>("s3cret", true));
    // Queued before the handshake is done: written only after it.
    pair.client->send("hello");
    REQUIRE(pair.run_until([&] { return pair.server_handler->frames.size() == 1; }));
    CHECK(pair.server_handler->frames[0] == "hello");
    CHECK(pair.server->authenticated_peer() == "friend");
    CHECK(pair.server->gate_open());
  }
  Pair pair({}, {}, {}, {}, false, std::make_unique<PasswordGate>("s3cret", false),
            std::make_unique<PasswordGate>("guess", true));
  pair.client->send("let me in");
  REQUIRE(pair.run_until([&] {
    return pair.server_handler->closed.has_value() && pair.client_handler->closed.has_value();
  }));
  CHECK(*pair.server_handler->closed == "handshake refused: wrong password");
  CHECK(*pair.client_handler->closed == "handshake refused: go away");
  CHECK(pair.server_handler->frames.empty());  // nothing of that peer was delivered
}

}  // namespace distflow
