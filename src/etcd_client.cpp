#include "etcd_client.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <optional>
#include <random>
#include <sys/socket.h>
#include <thread>
#include <utility>  // before Boost 1.74's awaitable.hpp, which uses std::exchange without it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <spdlog/spdlog.h>

#include "errors.hpp"

namespace distflow {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using ErrorCode = boost::system::error_code;

constexpr std::uint64_t kMaxBody = 64ULL << 20;  // a range of the whole prefix, a watch line
constexpr std::size_t kMaxIdle = 4;              // idle keep-alive connections per endpoint

auto use(ErrorCode& ec) {
  return net::redirect_error(net::use_awaitable, ec);
}

EtcdResponse unavailable(std::string why) {
  EtcdResponse r;
  r.status = EtcdStatus::unavailable;
  r.error = std::move(why);
  return r;
}

EtcdResponse canceled_response() {
  EtcdResponse r;
  r.status = EtcdStatus::canceled;
  r.error = "canceled";
  return r;
}

/// Idle watch streams are quiet for long: TCP keepalive finds a peer host that is gone.
void keep_alive_probes(tcp::socket& socket) {
  const int fd = socket.native_handle();
  int on = 1, idle = 5, interval = 2, count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

struct Connection {
  Connection(net::io_context& io, ssl::context* tls) {
    if (tls != nullptr)
      tls_stream.emplace(io, *tls);
    else
      tcp_stream.emplace(io);
  }
  beast::tcp_stream& lowest() {
    return tls_stream ? beast::get_lowest_layer(*tls_stream) : *tcp_stream;
  }
  void close() {
    ErrorCode ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }
  std::optional<beast::tcp_stream> tcp_stream;
  std::optional<TlsStream> tls_stream;
  beast::flat_buffer buffer;
};

struct Call {
  std::uint64_t id = 0;
  EtcdRequest request;
  Clock::time_point deadline;
  bool canceled = false;
  bool reauthenticated = false;
  std::shared_ptr<Connection> active;          // closed by cancel()
  std::shared_ptr<net::steady_timer> backoff;  // canceled by cancel()
};

/// What one exchange on a connection gave.
struct Exchange {
  EtcdResponse response;
  bool transport_error = false;  // nothing usable came back (retry elsewhere)
  bool reusable = false;         // the connection may serve the next request
  bool opened = false;           // a watch stream was accepted (its end is final)
};

}  // namespace

struct EtcdClient::Impl {
  Impl(EtcdOptions o, Handler h) : options(std::move(o)), handler(std::move(h)) {}

  EtcdOptions options;
  Handler handler;
  net::io_context io{1};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work{
      net::make_work_guard(io)};
  std::optional<ssl::context> tls;
  std::thread thread;

  // Owned by the client's thread.
  std::size_t preferred = 0;
  std::string token;
  std::map<std::uint64_t, std::shared_ptr<Call>> calls;
  std::vector<std::vector<std::shared_ptr<Connection>>> idle;
  std::mt19937_64 rng{std::random_device{}()};
  bool stopping = false;
  bool draining = false;  // shutdown() waits for the unary requests in flight

  // Shutdown hand-shake with the caller's thread.
  std::mutex mutex;
  std::condition_variable changed;
  bool shut = false;
  bool drained = false;
  bool finished = false;

  std::string endpoint_name(std::size_t idx) const {
    const auto& ep = options.endpoints[idx];
    return ep.host.find(':') != std::string::npos ? "[" + ep.host + "]:" + std::to_string(ep.port)
                                                  : ep.host + ":" + std::to_string(ep.port);
  }

  void deliver(const Call& call, EtcdResponse response) {
    try {
      handler(call.id, std::move(response));
    } catch (const std::exception& e) {
      spdlog::error("etcd client: answer handler threw: {}", e.what());
    }
  }

  void start(std::uint64_t id, EtcdRequest request, std::chrono::milliseconds timeout) {
    auto call = std::make_shared<Call>();
    call->id = id;
    call->request = std::move(request);
    call->deadline = Clock::now() + timeout;
    if (stopping) {
      auto r = canceled_response();
      r.stream_end = std::holds_alternative<EtcdWatch>(call->request);
      deliver(*call, std::move(r));
      return;
    }
    calls[id] = call;
    net::co_spawn(io, run(call), [](std::exception_ptr e) {
      if (!e)
        return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("etcd client: request failed with an exception: {}", ex.what());
      }
    });
  }

  void cancel(std::uint64_t id) {
    const auto it = calls.find(id);
    if (it == calls.end())
      return;
    Call& call = *it->second;
    call.canceled = true;
    if (call.active)
      call.active->close();
    if (call.backoff)
      call.backoff->cancel();
  }

  void finish(const std::shared_ptr<Call>& call) {
    const auto it = calls.find(call->id);
    if (it != calls.end() && it->second == call)
      calls.erase(it);
    check_drained();
  }

  void check_drained() {
    if (!draining)
      return;  // only once shutdown() began, after the requests submitted before it
    const bool only_watches = std::all_of(calls.begin(), calls.end(), [](const auto& entry) {
      return std::holds_alternative<EtcdWatch>(entry.second->request);
    });
    if (!only_watches)
      return;
    std::lock_guard lock(mutex);
    drained = true;
    changed.notify_all();
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds backoff) {
    const auto half = backoff.count() / 2;
    std::uniform_int_distribution<long long> pick(0, std::max<long long>(half, 0));
    return std::chrono::milliseconds(half + pick(rng));
  }

  /// Sleeps before the next round; false when canceled or past the deadline.
  net::awaitable<bool> pause(Call& call, std::chrono::milliseconds& backoff) {
    const auto wait = jittered(backoff);
    if (call.canceled || Clock::now() + wait >= call.deadline)
      co_return false;
    call.backoff = std::make_shared<net::steady_timer>(io, wait);
    ErrorCode ec;
    co_await call.backoff->async_wait(use(ec));
    call.backoff.reset();
    backoff = std::min(backoff * 2, options.retry_max);
    co_return !call.canceled;
  }

  net::awaitable<void> run(std::shared_ptr<Call> call) {
    if (std::holds_alternative<EtcdWatch>(call->request))
      co_await run_stream(call);
    else
      co_await run_unary(call);
    finish(call);
  }

  net::awaitable<void> run_unary(std::shared_ptr<Call> call) {
    EtcdResponse last = unavailable("no etcd endpoint configured");
    auto backoff = options.retry_min;
    const std::size_t n = options.endpoints.size();
    // (GCC 12: no co_await inside conditions or ?: , which it miscompiles.)
    for (bool again = true; again;) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t idx = (preferred + k) % n;
        if (call->canceled)
          break;
        if (Clock::now() >= call->deadline)
          break;
        const bool ready = co_await authenticated(*call, idx, last);
        if (!ready && last.status == EtcdStatus::failed) {
          deliver(*call, std::move(last));  // refused credentials: no retry helps
          co_return;
        }
        if (!ready)
          continue;
        Exchange ex = co_await attempt(*call, idx, call->request);
        if (ex.transport_error || ex.response.status == EtcdStatus::unavailable) {
          last = std::move(ex.response);
          continue;
        }
        if (reauthenticate(*call, ex.response)) {
          --k;  // the same endpoint again, with a new token
          continue;
        }
        if (ex.response.status == EtcdStatus::ok)
          preferred = idx;
        deliver(*call, std::move(ex.response));
        co_return;
      }
      again = co_await pause(*call, backoff);
    }
    if (call->canceled)
      last = canceled_response();
    else
      last.status = EtcdStatus::unavailable;
    deliver(*call, std::move(last));
  }

  net::awaitable<void> run_stream(std::shared_ptr<Call> call) {
    EtcdResponse last = unavailable("no etcd endpoint configured");
    auto backoff = options.retry_min;
    const std::size_t n = options.endpoints.size();
    for (bool again = true; again;) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t idx = (preferred + k) % n;
        if (call->canceled || Clock::now() >= call->deadline)
          break;
        const bool ready = co_await authenticated(*call, idx, last);
        if (!ready && last.status == EtcdStatus::failed) {
          last.stream_end = true;
          deliver(*call, std::move(last));
          co_return;
        }
        if (!ready)
          continue;
        Exchange ex = co_await attempt(*call, idx, call->request);
        if (!ex.opened && (ex.transport_error || ex.response.status == EtcdStatus::unavailable)) {
          last = std::move(ex.response);
          continue;
        }
        if (!ex.opened && reauthenticate(*call, ex.response)) {
          --k;
          continue;
        }
        if (call->canceled)
          ex.response = canceled_response();
        ex.response.stream_end = true;
        deliver(*call, std::move(ex.response));
        co_return;
      }
      again = co_await pause(*call, backoff);
    }
    if (call->canceled)
      last = canceled_response();
    else
      last.status = EtcdStatus::unavailable;
    last.stream_end = true;
    deliver(*call, std::move(last));
  }

  /// With etcd auth configured, makes sure a token is held (asking `idx` for one).
  net::awaitable<bool> authenticated(Call& call, std::size_t idx, EtcdResponse& last) {
    if (options.user.empty() || !token.empty())
      co_return true;
    const EtcdRequest login = EtcdAuthenticate{options.user, options.password};
    Exchange ex = co_await attempt(call, idx, login);
    if (ex.transport_error || ex.response.status != EtcdStatus::ok) {
      last = std::move(ex.response);
      if (last.status == EtcdStatus::failed)
        last.error = "etcd authentication as '" + options.user + "' failed: " + last.error;
      co_return false;
    }
    token = std::move(ex.response.token);
    co_return true;
  }

  /// True when `response` says the token expired and a new one should be tried (once).
  bool reauthenticate(Call& call, const EtcdResponse& response) {
    if (response.code != 16 || options.user.empty() || call.reauthenticated)
      return false;
    call.reauthenticated = true;
    token.clear();
    return true;
  }

  std::shared_ptr<Connection> take_idle(std::size_t idx) {
    auto& pool = idle[idx];
    if (pool.empty())
      return nullptr;
    auto conn = std::move(pool.back());
    pool.pop_back();
    return conn;
  }

  void give_back(std::size_t idx, std::shared_ptr<Connection> conn) {
    if (stopping || idle[idx].size() >= kMaxIdle)
      return;
    conn->lowest().expires_never();
    idle[idx].push_back(std::move(conn));
  }

  Clock::time_point attempt_deadline(const Call& call) const {
    return std::min(Clock::now() + options.attempt_timeout, call.deadline);
  }

  /// One try of `request` on endpoint `idx`: an idle connection if there is one (and
  /// a fresh one if the server had closed it), else a new one.
  net::awaitable<Exchange> attempt(Call& call, std::size_t idx, const EtcdRequest& request) {
    auto conn = take_idle(idx);
    const bool reused = conn != nullptr;
    for (int round = 0; round < 2; ++round) {
      const auto deadline = attempt_deadline(call);
      if (!conn) {
        std::string why;
        conn = co_await open(call, idx, deadline, why);
        if (!conn) {
          call.active.reset();
          Exchange ex;
          ex.transport_error = true;
          ex.response = unavailable("etcd " + endpoint_name(idx) + ": " + why);
          co_return ex;
        }
      }
      call.active = conn;
      Exchange ex;
      if (conn->tls_stream)
        ex = co_await exchange(*conn->tls_stream, *conn, call, idx, request, deadline);
      else
        ex = co_await exchange(*conn->tcp_stream, *conn, call, idx, request, deadline);
      call.active.reset();
      if (!ex.transport_error || ex.opened) {
        if (ex.reusable && !call.canceled)
          give_back(idx, std::move(conn));
        co_return ex;
      }
      if (!reused || round > 0 || call.canceled)
        co_return ex;
      conn.reset();  // the idle connection was closed by the server: once more on a new one
    }
    co_return Exchange{};
  }

  net::awaitable<std::shared_ptr<Connection>> open(Call& call, std::size_t idx,
                                                   Clock::time_point deadline, std::string& why) {
    const auto& ep = options.endpoints[idx];
    auto conn = std::make_shared<Connection>(io, tls ? &*tls : nullptr);
    call.active = conn;
    // A resolver has no deadline of its own: a timer cancels it.
    auto resolver = std::make_shared<tcp::resolver>(io);
    auto timer = std::make_shared<net::steady_timer>(io, deadline);
    timer->async_wait([resolver](ErrorCode ec) {
      if (!ec)
        resolver->cancel();
    });
    ErrorCode ec;
    const auto results =
        co_await resolver->async_resolve(ep.host, std::to_string(ep.port), use(ec));
    timer->cancel();
    if (ec || call.canceled) {
      why = ec == net::error::operation_aborted ? "name resolution timed out" : ec.message();
      co_return nullptr;
    }
    conn->lowest().expires_at(deadline);
    co_await conn->lowest().async_connect(results, use(ec));
    if (ec || call.canceled) {
      why = ec == beast::error::timeout ? "connect timed out" : ec.message();
      co_return nullptr;
    }
    conn->lowest().socket().set_option(tcp::no_delay(true), ec);
    if (conn->tls_stream) {
      // SNI (SSL_set_tlsext_host_name, a macro with a C cast).
      if (SSL_ctrl(conn->tls_stream->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                   TLSEXT_NAMETYPE_host_name, const_cast<char*>(ep.host.c_str())) != 1) {
        why = "cannot set the TLS server name";
        co_return nullptr;
      }
      conn->tls_stream->set_verify_callback(ssl::host_name_verification(ep.host));
      co_await conn->tls_stream->async_handshake(ssl::stream_base::client, use(ec));
      if (ec || call.canceled) {
        why = "TLS handshake: " + ec.message();
        co_return nullptr;
      }
    }
    co_return conn;
  }

  template <class Stream>
  net::awaitable<Exchange> exchange(Stream& stream, Connection& conn, Call& call, std::size_t idx,
                                    const EtcdRequest& request, Clock::time_point deadline) {
    Exchange ex;
    http::request<http::string_body> req{http::verb::post, std::string(etcd_path(request)), 11};
    req.set(http::field::host, endpoint_name(idx));
    req.set(http::field::content_type, "application/json");
    if (!token.empty() && !std::holds_alternative<EtcdAuthenticate>(request))
      req.set(http::field::authorization, token);
    req.keep_alive(true);
    req.body() = etcd_request_body(request);
    req.prepare_payload();

    ErrorCode ec;
    conn.lowest().expires_at(deadline);
    co_await http::async_write(stream, req, use(ec));
    if (ec) {
      ex.transport_error = true;
      ex.response = unavailable(transport_error(idx, "send", ec, call));
      co_return ex;
    }
    if (!etcd_is_stream(request)) {
      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxBody);
      co_await http::async_read(stream, conn.buffer, parser, use(ec));
      if (ec) {
        ex.transport_error = true;
        ex.response = unavailable(transport_error(idx, "answer", ec, call));
        co_return ex;
      }
      const auto& res = parser.get();
      ex.response = etcd_decode_response(request, res.result_int(), res.body());
      ex.reusable = res.keep_alive();
      co_return ex;
    }
    Exchange streamed = co_await read_stream(stream, conn, call, idx, request);
    co_return streamed;
  }

  /// A stream answer: the messages one per line. A keepalive takes the first message
  /// and drops the connection; a watch delivers each message until the stream ends.
  template <class Stream>
  net::awaitable<Exchange> read_stream(Stream& stream, Connection& conn, Call& call,
                                       std::size_t idx, const EtcdRequest& request) {
    Exchange ex;
    const bool watch = std::holds_alternative<EtcdWatch>(request);
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    ErrorCode ec;
    co_await http::async_read_header(stream, conn.buffer, parser, use(ec));
    if (ec) {
      ex.transport_error = true;
      ex.response = unavailable(transport_error(idx, "answer", ec, call));
      co_return ex;
    }
    const unsigned status = parser.get().result_int();
    if (status == 200 && watch) {
      ex.opened = true;
      preferred = idx;
      conn.lowest().expires_never();
      keep_alive_probes(conn.lowest().socket());
    }
    std::string pending;  // bytes of the line being read
    std::array<char, 16384> chunk{};
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      co_await http::async_read_some(stream, conn.buffer, parser, use(ec));
      if (ec == http::error::need_buffer)
        ec = {};
      if (ec)
        break;
      pending.append(chunk.data(), chunk.size() - parser.get().body().size);
      if (status != 200) {
        if (pending.size() > kMaxBody)
          break;
        continue;
      }
      std::size_t start = 0;
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n', start)) {
        const std::string_view line(pending.data() + start, nl - start);
        start = nl + 1;
        if (line.find_first_not_of(" \r\t") == std::string_view::npos)
          continue;
        auto message = etcd_decode_stream_message(request, line);
        if (!watch || message.status != EtcdStatus::ok || message.canceled) {
          ex.response = std::move(message);
          co_return ex;  // the connection is dropped with the exchange
        }
        deliver(call, std::move(message));
      }
      pending.erase(0, start);
      if (pending.size() > kMaxBody) {
        ex.response.status = EtcdStatus::failed;
        ex.response.error = "etcd stream message exceeds the limit";
        co_return ex;
      }
    }
    if (status != 200) {
      ex.response = etcd_decode_response(request, status, pending);
      if (ec && !call.canceled) {
        ex.transport_error = true;
        ex.response = unavailable(transport_error(idx, "answer", ec, call));
      }
      co_return ex;
    }
    if (!pending.empty() && !ec) {
      ex.response = etcd_decode_stream_message(request, pending);
      if (ex.response.status == EtcdStatus::ok && !watch)
        co_return ex;
    }
    ex.transport_error = true;
    ex.response = unavailable(ec ? transport_error(idx, "stream", ec, call)
                                 : "etcd " + endpoint_name(idx) + ": the stream ended");
    co_return ex;
  }

  std::string transport_error(std::size_t idx, const char* what, ErrorCode ec, const Call& call) {
    if (call.canceled)
      return "canceled";
    const std::string reason = ec == beast::error::timeout ? "timed out" : ec.message();
    return "etcd " + endpoint_name(idx) + ": " + what + ": " + reason;
  }

  void cancel_everything() {
    stopping = true;
    for (auto& [id, call] : calls) {
      call->canceled = true;
      if (call->active)
        call->active->close();
      if (call->backoff)
        call->backoff->cancel();
    }
    for (auto& pool : idle) {
      for (auto& conn : pool)
        conn->close();
      pool.clear();
    }
  }
};

void parse_etcd_url(std::string_view url, EtcdOptions& options) {
  const auto bad = [&](std::string_view part, std::string_view why) {
    return Error("invalid etcd address '" + std::string(part) + "' in '" + std::string(url) +
                 "': " + std::string(why));
  };
  std::string_view rest;
  if (url.rfind("etcd://", 0) == 0) {
    options.tls = false;
    rest = url.substr(7);
  } else if (url.rfind("etcds://", 0) == 0) {
    options.tls = true;
    rest = url.substr(8);
  } else {
    throw Error("invalid cluster address '" + std::string(url) +
                "': expected etcd://host:port[,host:port...] (or etcds:// for TLS)");
  }
  options.endpoints.clear();
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view part = rest.substr(0, comma);
    EtcdEndpoint ep;
    std::string_view port;
    if (part.empty())
      throw bad(part, "empty host");
    if (part.front() == '[') {
      const auto close = part.find(']');
      if (close == std::string_view::npos)
        throw bad(part, "expected [ipv6]:port");
      ep.host = std::string(part.substr(1, close - 1));
      const auto after = part.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':')
          throw bad(part, "expected [ipv6]:port");
        port = after.substr(1);
      }
    } else {
      const auto colon = part.find(':');
      ep.host = std::string(part.substr(0, colon));
      if (colon != std::string_view::npos)
        port = part.substr(colon + 1);
    }
    if (ep.host.empty() || ep.host.find_first_of("/?#@ ") != std::string::npos)
      throw bad(part, "expected host[:port]");
    if (!port.empty() || (part.back() == ':')) {
      unsigned value = 0;
      const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
      if (ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535)
        throw bad(part, "port must be 1-65535");
      ep.port = static_cast<std::uint16_t>(value);
    }
    options.endpoints.push_back(std::move(ep));
    if (comma == std::string_view::npos)
      break;
    rest = rest.substr(comma + 1);
  }
}

EtcdClient::EtcdClient(EtcdOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {
  auto& d = *impl_;
  if (d.options.endpoints.empty())
    throw Error("no etcd endpoint given");
  d.idle.resize(d.options.endpoints.size());
  if (d.options.tls || !d.options.ca_file.empty() || !d.options.cert_file.empty()) {
    d.options.tls = true;
    d.tls.emplace(ssl::context::tls_client);
    auto& ctx = *d.tls;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    ctx.set_verify_mode(ssl::verify_peer);
    ErrorCode ec;
    const auto load = [&](const std::string& what, const std::string& file) {
      if (ec)
        throw Error("cannot load the cluster " + what + " '" + file + "': " + ec.message());
    };
    if (d.options.ca_file.empty()) {
      ctx.set_default_verify_paths(ec);
      load("CA paths", "default");
    } else {
      ctx.load_verify_file(d.options.ca_file, ec);
      load("CA", d.options.ca_file);
    }
    if (!d.options.cert_file.empty()) {
      ctx.use_certificate_chain_file(d.options.cert_file, ec);
      load("certificate", d.options.cert_file);
      ctx.use_private_key_file(
          d.options.key_file.empty() ? d.options.cert_file : d.options.key_file, ssl::context::pem,
          ec);
      load("key", d.options.key_file);
    }
  }
  d.thread = std::thread([&d] {
    d.io.run();
    std::lock_guard lock(d.mutex);
    d.finished = true;
    d.changed.notify_all();
  });
}

EtcdClient::~EtcdClient() {
  shutdown(std::chrono::milliseconds(0));
}

void EtcdClient::submit(std::uint64_t id, EtcdRequest request, std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  const auto t = timeout.count() > 0 ? timeout : d.options.request_timeout;
  net::post(d.io, [&d, id, request = std::move(request), t]() mutable {
    d.start(id, std::move(request), t);
  });
}

void EtcdClient::cancel(std::uint64_t id) {
  auto& d = *impl_;
  net::post(d.io, [&d, id] { d.cancel(id); });
}

void EtcdClient::shutdown(std::chrono::milliseconds grace) {
  auto& d = *impl_;
  {
    std::lock_guard lock(d.mutex);
    if (d.shut)
      return;
    d.shut = true;
  }
  if (grace.count() > 0) {
    // Posted after every submit() that came before: those requests are in `calls`.
    net::post(d.io, [&d] {
      d.draining = true;
      d.check_drained();
    });
    std::unique_lock lock(d.mutex);
    d.changed.wait_for(lock, grace, [&d] { return d.drained || d.finished; });
  }
  net::post(d.io, [&d] { d.cancel_everything(); });
  d.work.reset();
  {
    // Canceled operations finish at once; a name resolution in progress cannot be
    // interrupted, so the loop is stopped if it is still busy after a second.
    std::unique_lock lock(d.mutex);
    if (!d.changed.wait_for(lock, std::chrono::seconds(1), [&d] { return d.finished; }))
      d.io.stop();
  }
  if (d.thread.joinable())
    d.thread.join();
}

}  // namespace distflow
