#pragma once

// A tiny HTTP endpoint for Prometheus (issue 16): GET /metrics answers 200 with a
// page of metrics.hpp text; any other path 404, any other method 405. One request
// per connection (Connection: close), HTTP/1.0 and 1.1, the request head at most
// 8 KiB, the exchange over within 10 s, at most 8 connections at once. It runs on the
// io_context it is given (the PMD's, a node's I/O thread) and only when a scrape
// comes: nothing of it is on the data path.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include "metrics.hpp"
#include "security_options.hpp"

namespace distflow {

/// Renders the page; runs on the server's io_context thread, once per scrape.
using MetricsRender = std::function<std::string()>;

class MetricsServer {
 public:
  /// Binds `endpoint` (an IP literal or "localhost") and starts serving on `io`.
  /// Beyond loopback the exposure rule applies (exposure.hpp, flag "--metrics",
  /// with `security`'s cookie, TLS and insecure): refused, or warned. Logs the bound
  /// address at info ("metrics: listening on http://127.0.0.1:9100/metrics").
  /// Throws distflow::Error when refused or when the address cannot be bound.
  /// `timeout`: a connection still open this long after it was accepted is closed.
  MetricsServer(asio::io_context& io, const MetricsEndpoint& endpoint,
                const SecurityOptions& security, MetricsRender render,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~MetricsServer();  ///< stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::uint16_t port() const { return port_; }
  /// "127.0.0.1:9100", "[::1]:9100".
  const std::string& address() const { return address_; }
  /// Closes the listener and every open connection; render is not called again.
  /// Idempotent. On the io_context's thread, or while it does not run.
  void stop();

 private:
  struct State;
  struct Connection;
  static asio::awaitable<void> accept_loop(std::shared_ptr<State> state);
  static asio::awaitable<void> serve(std::shared_ptr<State> state,
                                     std::shared_ptr<Connection> connection);

  std::shared_ptr<State> state_;
  std::uint16_t port_ = 0;
  std::string address_;
};

/// The whole response (status line, headers, body) to one request head (the bytes
/// before the blank line). `render` is called only for GET or HEAD /metrics.
std::string metrics_http_response(std::string_view head, const MetricsRender& render);

}  // namespace distflow
