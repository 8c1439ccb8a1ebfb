#include "metrics_server.hpp"

#include <algorithm>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "address.hpp"
#include "errors.hpp"
#include "exposure.hpp"
#include "session.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;
constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxHead = 8u << 10;
constexpr std::size_t kMaxConnections = 8;

std::string response(std::string_view status, std::string_view content_type,
                     std::string_view extra_headers, std::string_view body, bool with_body) {
  std::string out = "HTTP/1.1 ";
  out += status;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nConnection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  if (with_body)
    out += body;
  return out;
}

std::string plain(std::string_view status, std::string_view extra_headers = {}) {
  std::string body(status.substr(status.find(' ') + 1));
  body += '\n';
  return response(status, "text/plain; charset=utf-8", extra_headers, body, true);
}

/// Where the head ends (the index of its blank line's first byte), or npos.
std::size_t head_end(std::string_view bytes) {
  const std::size_t crlf = bytes.find("\r\n\r\n");
  const std::size_t lf = bytes.find("\n\n");
  return std::min(crlf, lf);
}

}  // namespace

std::string metrics_http_response(std::string_view head, const MetricsRender& render) {
  const std::string_view line = head.substr(0, head.find('\n'));
  const std::string_view request = line.ends_with('\r') ? line.substr(0, line.size() - 1) : line;
  const std::size_t first = request.find(' ');
  const std::size_t second = first == std::string_view::npos ? first : request.find(' ', first + 1);
  if (second == std::string_view::npos || request.find(' ', second + 1) != std::string_view::npos)
    return plain("400 Bad Request");
  const std::string_view method = request.substr(0, first);
  const std::string_view target = request.substr(first + 1, second - first - 1);
  const std::string_view version = request.substr(second + 1);
  if (method.empty() || target.empty() || !version.starts_with("HTTP/"))
    return plain("400 Bad Request");
  if (version != "HTTP/1.0" && version != "HTTP/1.1")
    return plain("505 HTTP Version Not Supported");
  if (target.substr(0, target.find('?')) != "/metrics")
    return plain("404 Not Found");
  if (method != "GET" && method != "HEAD")
    return plain("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
  return response("200 OK", kMetricsContentType, {}, render(), method == "GET");
}

struct MetricsServer::Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)), deadline(socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer deadline;
  void close() {
    std::error_code ignored;
    socket.close(ignored);
    deadline.cancel();
  }
};

struct MetricsServer::State {
  State(asio::io_context& io, MetricsRender r, std::chrono::milliseconds t)
      : acceptor(io), render(std::move(r)), timeout(t) {}
  tcp::acceptor acceptor;
  MetricsRender render;
  // The whole exchange: the request head in, the page out, the peer's close.
  std::chrono::milliseconds timeout;
  std::vector<std::shared_ptr<Connection>> open;
  bool stopped = false;

  void forget(const std::shared_ptr<Connection>& connection) {
    connection->close();
    std::erase(open, connection);
  }
};

MetricsServer::MetricsServer(asio::io_context& io, const MetricsEndpoint& endpoint,
                             const SecurityOptions& security, MetricsRender render,
                             std::chrono::milliseconds timeout)
    : state_(std::make_shared<State>(io, std::move(render), timeout)) {
  const ExposureVerdict verdict =
      check_exposure({endpoint.host}, "--metrics", !security.cookie.empty(),
                     security.tls.configured(), security.insecure);
  if (!verdict.error.empty())
    throw Error(verdict.error);
  std::error_code ec;
  const std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  const auto ip = asio::ip::make_address(host, ec);
  const std::string where = format_host(endpoint.host) + ":" + std::to_string(endpoint.port);
  if (ec)
    throw Error("invalid metrics address '" + endpoint.host + "': expected an IP address");
  const tcp::endpoint at(ip, endpoint.port);
  auto& acceptor = state_->acceptor;
  acceptor.open(at.protocol(), ec);
  if (!ec)
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    acceptor.bind(at, ec);
  if (!ec)
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec)
    port_ = acceptor.local_endpoint(ec).port();
  if (ec)
    throw Error("cannot serve metrics on " + where + ": " + ec.message());
  address_ = format_host(host) + ":" + std::to_string(port_);
  if (!verdict.warning.empty()) {
    spdlog::warn("metrics: {}", verdict.warning);
  } else if (!is_loopback_host(host)) {
    spdlog::info("metrics: {} is plain HTTP without authentication (read-only counters)", address_);
  }
  spawn_logged(io, accept_loop(state_), "metrics accept loop");
  spdlog::info("metrics: listening on http://{}/metrics", address_);
}

MetricsServer::~MetricsServer() {
  stop();
}

void MetricsServer::stop() {
  if (!state_ || state_->stopped)
    return;
  state_->stopped = true;
  std::error_code ignored;
  state_->acceptor.close(ignored);
  auto open = std::move(state_->open);
  state_->open.clear();
  for (auto& connection : open)
    connection->close();
}

asio::awaitable<void> MetricsServer::accept_loop(std::shared_ptr<State> state) {
  while (!state->stopped) {
    auto [ec, socket] = co_await state->acceptor.async_accept(kAwait);
    if (state->stopped || ec == asio::error::operation_aborted)
      co_return;
    if (ec) {
      // Out of descriptors and the like: breathe instead of spinning.
      spdlog::debug("metrics: accept failed: {}", ec.message());
      asio::steady_timer pause(state->acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(kAwait);
      continue;
    }
    if (state->open.size() >= kMaxConnections) {
      std::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto connection = std::make_shared<Connection>(std::move(socket));
    state->open.push_back(connection);
    spawn_logged(state->acceptor.get_executor(), serve(state, connection), "metrics connection");
  }
}

asio::awaitable<void> MetricsServer::serve(std::shared_ptr<State> state,
                                           std::shared_ptr<Connection> connection) {
  auto& socket = connection->socket;
  connection->deadline.expires_after(state->timeout);
  connection->deadline.async_wait([connection](std::error_code ec) {
    if (!ec)
      connection->close();  // the pending read or write ends with an error
  });
  std::string buffer(kMaxHead, '\0');
  std::size_t used = 0;
  std::size_t end = std::string::npos;
  while (end == std::string::npos && used < kMaxHead) {
    auto [ec, n] = co_await socket.async_read_some(
        asio::buffer(buffer.data() + used, kMaxHead - used), kAwait);
    if (ec || state->stopped) {
      state->forget(connection);
      co_return;
    }
    // The blank line may straddle two reads: look back three bytes.
    const std::size_t from = used > 3 ? used - 3 : 0;
    used += n;
    if (const std::size_t at = head_end(std::string_view(buffer).substr(from, used - from));
        at != std::string::npos) {
      end = from + at;
    }
  }
  const std::string reply =
      end == std::string::npos
          ? plain("431 Request Header Fields Too Large")
          : metrics_http_response(std::string_view(buffer).substr(0, end), state->render);
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string line(std::string_view(buffer).substr(0, std::min({end, used, std::size_t{64}})));
    line.resize(std::min(line.size(), line.find_first_of("\r\n")));
    std::replace_if(
        line.begin(), line.end(), [](char c) { return c < 0x20 || c == 0x7f; }, '?');
    spdlog::debug("metrics: request '{}' -> {}", line,
                  std::string_view(reply).substr(0, reply.find('\r')));
  }
  auto [ec, n] = co_await asio::async_write(socket, asio::buffer(reply), kAwait);
  (void)n;
  if (!ec && !state->stopped) {
    // Half-close, then wait for the peer's close: a reset (request bytes still
    // unread at our close) could otherwise discard the response before it is read.
    std::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    for (;;) {
      auto [read_ec, got] = co_await socket.async_read_some(asio::buffer(buffer), kAwait);
      (void)got;
      if (read_ec || state->stopped)
        break;
    }
  }
  state->forget(connection);
}

}  // namespace distflow
