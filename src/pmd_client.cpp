#include "pmd_client.hpp"

#include <deque>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/ip/tcp.hpp>
#include <spdlog/spdlog.h>

#include "credentials.hpp"
#include "errors.hpp"
#include "framing.hpp"
#include "json.hpp"
#include "session.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
// Replies can be large (a list of many nodes); still bounded.
constexpr std::size_t kMaxReplyBytes = 64u << 20;

std::string not_a_pmd(const PmdEndpoint& endpoint, std::string_view detail) {
  return endpoint.to_string() + " is not a distflow PMD (" + std::string(detail) +
         "); another service holds the port (Erlang's epmd also uses 4369): run distflow's PMD "
         "on another port and select it with DISTFLOW_PMD_PORT or --port";
}

std::string describe_dial_error(const std::error_code& ec) {
  if (ec == asio::error::connection_refused)
    return "connection refused";
  if (ec == asio::error::timed_out)
    return "connection timed out";
  return ec.message();
}

/// An Error that also says what kind of failure it was (for probe_pmd).
class ClientError : public Error {
 public:
  ClientError(PmdProbe kind, const std::string& message) : Error(message), kind_(kind) {}
  PmdProbe kind() const { return kind_; }

 private:
  PmdProbe kind_;
};

}  // namespace

// ---- the connection ----------------------------------------------------------------

class PmdConnection::Handler final : public SessionHandler {
 public:
  explicit Handler(std::weak_ptr<PmdConnection> owner) : owner_(std::move(owner)) {}
  bool on_readable(Session& session) override {
    auto owner = owner_.lock();
    std::error_code ec;
    while (owner && !session.closing()) {
      auto body = session.decoder().next(ec);
      if (!body)
        break;
      owner->handle_frame(*body);
    }
    if (ec && owner) {
      owner->handle_closed("it sent " + describe_frame_error(ec, session.decoder()), true);
      session.stop("protocol error");
    }
    return true;
  }
  void on_closed(Session&, std::string_view reason) override {
    if (auto owner = owner_.lock())
      owner->handle_closed(reason, false);
  }

 private:
  std::weak_ptr<PmdConnection> owner_;
};

PmdConnection::PmdConnection(asio::io_context& io, PmdEndpoint endpoint)
    : io_(io), endpoint_(std::move(endpoint)) {}

PmdConnection::~PmdConnection() {
  if (session_)
    session_->stop("client gone");
}

asio::awaitable<std::shared_ptr<PmdConnection>> PmdConnection::open(
    asio::io_context& io, PmdEndpoint endpoint, std::chrono::milliseconds timeout,
    std::string& error, PmdProbe& kind, const Credentials* credentials, std::string our_name) {
  tcp::socket socket(io);
  const std::error_code ec = co_await dial(socket, endpoint.host, endpoint.port, timeout);
  if (ec) {
    kind = ec == asio::error::connection_refused ? PmdProbe::refused : PmdProbe::unreachable;
    if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again) {
      error = "cannot resolve PMD host '" + endpoint.host + "': " + ec.message();
    } else {
      error = "no distflow PMD on " + endpoint.to_string() + ": " + describe_dial_error(ec);
    }
    co_return nullptr;
  }
  std::shared_ptr<PmdConnection> connection(new PmdConnection(io, std::move(endpoint)));
  SessionOptions options;
  options.max_frame_bytes = kMaxReplyBytes;
  options.max_queue_bytes = 64u << 20;
  // A PMD beyond loopback takes remote clients only with proof (PROTOCOL.md §3.4).
  std::error_code ignored;
  const bool remote = !is_loopback(socket.remote_endpoint(ignored).address());
  TlsSide tls;
  std::unique_ptr<SessionGate> gate;
  if (remote && credentials != nullptr) {
    tls = credentials->dial_tls(endpoint.host);
    gate = credentials->dial_gate(our_name.empty() ? "pmd-client" : our_name, "pmd");
    options.hello_timeout = kHandshakeTimeout;
  }
  connection->session_ = std::make_shared<Session>(
      std::move(socket), std::make_shared<Handler>(connection->weak_from_this()), options, tls,
      std::move(gate));
  connection->session_->start();
  co_return connection;
}

void PmdConnection::request(std::string_view type, std::string_view payload_json,
                            ReplyHandler done) {
  if (closed_) {
    // Always asynchronous: callers never see their callback run inside the call.
    asio::post(io_, [done = std::move(done), why = close_reason_] {
      if (done)
        done(nullptr, why);
    });
    return;
  }
  const std::uint64_t id = next_id_++;
  if (!session_->send(encode_request(type, payload_json, id))) {
    asio::post(io_, [done = std::move(done), ep = endpoint_.to_string()] {
      if (done)
        done(nullptr, "too many requests queued for pmd " + ep);
    });
    return;
  }
  if (done)
    pending_.emplace(id, std::move(done));
}

void PmdConnection::handle_frame(std::string_view body) {
  std::string why;
  auto reply = parse_reply(body, &why);
  if (!reply) {
    if (!answered_) {
      handle_closed(not_a_pmd(endpoint_, why), true);
      session_->stop("not a PMD");
      return;
    }
    spdlog::info("bad frame from pmd {}: {}", endpoint_.to_string(), why);
    return;  // tolerate one odd frame from a real PMD
  }
  answered_ = true;
  if (!refused_checked_ && !reply->is_event && !reply->request_id && !reply->error.empty()) {
    // The first frame, an error answering no request: the PMD refused us in words.
    refused_checked_ = true;
    refusal_ = "pmd " + endpoint_.to_string() + " refused the connection: " + reply->error;
    handle_closed(refusal_, false);
    session_->stop("refused");
    return;
  }
  refused_checked_ = true;
  if (reply->is_event) {
    if (on_event_)
      on_event_(*reply);
    return;
  }
  if (!reply->request_id)
    return;
  auto it = pending_.find(*reply->request_id);
  if (it == pending_.end())
    return;  // a stale answer
  auto done = std::move(it->second);
  pending_.erase(it);
  done(&*reply, {});
}

void PmdConnection::handle_closed(std::string_view reason, bool framing_error) {
  if (closed_)
    return;
  closed_ = true;
  const bool handshake = reason.starts_with("handshake refused") ||
                         reason.starts_with("TLS handshake failed") ||
                         reason.starts_with("nothing valid received");
  if (handshake) {
    // Cookie or TLS: not the PMD's protocol failing, the proof.
    close_reason_ = "pmd " + endpoint_.to_string() + ": " + std::string(reason);
    close_kind_ = PmdProbe::unreachable;
  } else if (!answered_ && framing_error) {
    close_reason_ = std::string(reason).find("is not a distflow PMD") != std::string::npos
                        ? std::string(reason)
                        : not_a_pmd(endpoint_, reason);
    close_kind_ = PmdProbe::not_a_pmd;
  } else if (!answered_ && !pending_.empty()) {
    close_reason_ = not_a_pmd(endpoint_, "it closed the connection without answering");
    close_kind_ = PmdProbe::not_a_pmd;
  } else if (!refusal_.empty()) {
    close_reason_ = refusal_;
    close_kind_ = PmdProbe::unreachable;
  } else {
    close_reason_ = "connection to pmd " + endpoint_.to_string() + " lost: " + std::string(reason);
    close_kind_ = PmdProbe::unreachable;
  }
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, done] : pending)
    done(nullptr, close_reason_);
  if (on_closed_)
    on_closed_(close_reason_);
}

void PmdConnection::close() {
  if (session_)
    session_->stop("closed");
  handle_closed("closed", false);
}

// ---- the blocking facade -------------------------------------------------------------

struct PmdClient::State {
  asio::io_context io{1};
  PmdEndpoint endpoint;
  std::chrono::milliseconds timeout{};
  std::shared_ptr<PmdConnection> connection;
  std::deque<PmdReply> events;

  /// Runs the io_context until `done()` or `deadline`; false at the deadline.
  template <class Done>
  bool run_until(Done done, Clock::time_point deadline) {
    while (!done()) {
      const auto now = Clock::now();
      if (now >= deadline)
        return false;
      if (io.stopped())
        io.restart();
      io.run_one_for(deadline - now);
    }
    return true;
  }

  [[noreturn]] void fail_closed() {
    const std::string& why = connection->close_reason();
    const bool refused = why.find("refused the connection") != std::string::npos;
    throw ClientError(connection->close_kind(),
                      connection->answered() && !refused
                          ? "the PMD on " + endpoint.to_string() + " closed the connection"
                          : why);
  }
};

PmdClient::PmdClient(std::unique_ptr<State> state) : state_(std::move(state)) {}

PmdClient::~PmdClient() {
  if (state_->connection)
    state_->connection->close();
  // Let the session's coroutines see the close before the io_context goes.
  state_->io.restart();
  state_->io.poll();
}

std::unique_ptr<PmdClient> PmdClient::connect(const PmdEndpoint& endpoint,
                                              std::chrono::milliseconds timeout,
                                              const Credentials* credentials,
                                              const std::string& our_name) {
  auto state = std::make_unique<State>();
  state->endpoint = endpoint;
  state->timeout = timeout;
  std::string error;
  PmdProbe kind = PmdProbe::unreachable;
  bool finished = false;
  asio::co_spawn(
      state->io,
      [&]() -> asio::awaitable<void> {
        state->connection = co_await PmdConnection::open(state->io, endpoint, timeout, error, kind,
                                                         credentials, our_name);
        finished = true;
      },
      [](const std::exception_ptr& e) {
        if (e)
          std::rethrow_exception(e);
      });
  state->run_until([&] { return finished; }, Clock::now() + timeout + std::chrono::seconds(1));
  if (!state->connection) {
    throw ClientError(kind, error.empty() ? "no distflow PMD on " + endpoint.to_string() +
                                                ": connection timed out"
                                          : error);
  }
  State* raw = state.get();
  state->connection->on_event([raw](const PmdReply& event) { raw->events.push_back(event); });
  return std::unique_ptr<PmdClient>(new PmdClient(std::move(state)));
}

PmdReply PmdClient::request(std::string_view type, std::string_view payload_json) {
  State& s = *state_;
  std::optional<PmdReply> answer;
  std::string error;
  bool done = false;
  s.connection->request(type, payload_json, [&](const PmdReply* reply, const std::string& why) {
    if (reply)
      answer = *reply;
    error = why;
    done = true;
  });
  if (!s.run_until([&] { return done; }, Clock::now() + s.timeout)) {
    // Nobody must touch the locals above once we return: the request is abandoned.
    s.connection->close();
    s.run_until([&] { return done; }, Clock::now() + std::chrono::milliseconds(100));
    const bool answered = s.connection->answered();
    throw ClientError(answered ? PmdProbe::unreachable : PmdProbe::not_a_pmd,
                      "no answer from " + s.endpoint.to_string() + " within " +
                          std::to_string(s.timeout.count()) + " ms" +
                          (answered ? "" : "; is it a distflow PMD?"));
  }
  if (!answer)
    s.fail_closed();
  return std::move(*answer);
}

std::optional<NodeInfo> PmdClient::resolve(std::string_view alias_or_id) {
  std::string payload = "{\"alias\":";
  append_json_string(payload, alias_or_id);
  payload += '}';
  auto reply = request("resolve", payload);
  if (reply.error == "Node not found")
    return std::nullopt;
  if (!reply.error.empty())
    throw Error("pmd " + state_->endpoint.to_string() + ": " + reply.error);
  if (!reply.node)
    throw Error("pmd " + state_->endpoint.to_string() + ": resolve answer without node");
  return reply.node;
}

std::vector<NodeInfo> PmdClient::list() {
  auto reply = request("list", "{}");
  if (!reply.error.empty())
    throw Error("pmd " + state_->endpoint.to_string() + ": " + reply.error);
  return reply.nodes ? std::move(*reply.nodes) : std::vector<NodeInfo>{};
}

std::vector<NodeInfo> PmdClient::watch(std::optional<bool> cluster) {
  auto reply = request("watch", !cluster   ? R"({"snapshot":true})"
                                : *cluster ? R"({"snapshot":true,"cluster":true})"
                                           : R"({"snapshot":true,"cluster":false})");
  if (!reply.error.empty())
    throw Error("pmd " + state_->endpoint.to_string() + ": " + reply.error);
  if (reply.nodes)
    return std::move(*reply.nodes);
  return list();  // the original PMD ignores the snapshot extension
}

std::optional<PmdReply> PmdClient::next_event(std::chrono::milliseconds timeout) {
  State& s = *state_;
  s.run_until([&] { return !s.events.empty() || s.connection->closed(); }, Clock::now() + timeout);
  if (!s.events.empty()) {
    PmdReply event = std::move(s.events.front());
    s.events.pop_front();
    return event;
  }
  if (s.connection->closed())
    s.fail_closed();
  return std::nullopt;
}

PmdProbe probe_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout,
                   std::string* why) {
  try {
    auto client = PmdClient::connect(endpoint, timeout);
    auto reply = client->request("list", "{}");
    if (!reply.nodes && reply.error.empty()) {
      if (why)
        *why = "unexpected answer to 'list' from " + endpoint.to_string();
      return PmdProbe::not_a_pmd;
    }
    return PmdProbe::answers;
  } catch (const ClientError& e) {
    if (why)
      *why = e.what();
    return e.kind();
  } catch (const Error& e) {
    if (why)
      *why = e.what();
    return PmdProbe::unreachable;
  }
}

bool pmd_answers(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout) {
  return probe_pmd(endpoint, timeout) == PmdProbe::answers;
}

}  // namespace distflow
