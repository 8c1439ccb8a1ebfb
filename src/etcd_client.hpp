#pragma once

// A client of etcd v3's HTTP/JSON gateway (etcd_protocol.hpp) on a thread of its
// own, so no etcd wait ever runs on a caller's I/O thread. The boundary: submit()
// and cancel() may be called from any thread; every answer comes back through the
// one Handler, called on the client's thread in the order the answers arrive (a
// PMD wraps it in asio::post to its own io_context). Each request is tried on the
// endpoints in turn, starting from the last one that answered, each try bounded
// by attempt_timeout; when every endpoint failed it is retried with exponential
// backoff and jitter until the request's deadline, then answered `unavailable`.
// HTTP/1.1 (keep-alive connections per endpoint) over TCP or TLS, via Boost.Beast
// and OpenSSL. etcd's user/password auth: a token from /v3/auth/authenticate,
// fetched again when etcd says it is no longer valid.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "etcd_protocol.hpp"

namespace distflow {

struct EtcdEndpoint {
  std::string host;  ///< name or IP literal (IPv6 without brackets)
  std::uint16_t port = 2379;
};

struct EtcdOptions {
  std::vector<EtcdEndpoint> endpoints;
  bool tls = false;       ///< https; the server's certificate is checked against `ca_file`
  std::string ca_file;    ///< PEM; empty: the system's CAs
  std::string cert_file;  ///< PEM client certificate and key, for etcd's --client-cert-auth
  std::string key_file;
  std::string user;  ///< etcd auth; empty: none
  std::string password;
  std::chrono::milliseconds attempt_timeout{1000};  ///< one endpoint: connect, send, answer
  std::chrono::milliseconds request_timeout{5000};  ///< a request's deadline (default)
  std::chrono::milliseconds retry_min{50};          ///< backoff after a round of failures
  std::chrono::milliseconds retry_max{1000};
};

/// Parses `etcd://h1:2379,h2:2379` (`etcds://`: TLS; the port defaults to 2379;
/// IPv6 as `[::1]:2379`) into `options.endpoints` and `options.tls`. Throws
/// distflow::Error naming the bad part.
void parse_etcd_url(std::string_view url, EtcdOptions& options);

class EtcdClient {
 public:
  /// Gets each answer, with the id given to submit(): one for a unary request, the
  /// messages of a watch (the last one with stream_end set). Runs on the client's
  /// thread: it must not block.
  using Handler = std::function<void(std::uint64_t id, EtcdResponse response)>;

  /// Starts the thread. Throws distflow::Error when the TLS files cannot be loaded.
  EtcdClient(EtcdOptions options, Handler handler);
  /// shutdown(0).
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  /// Starts `request`; `id` is the caller's and comes back with its answers.
  /// `timeout` 0: options.request_timeout. A watch's deadline covers its opening
  /// only; once open it runs until it fails or is canceled.
  void submit(std::uint64_t id, EtcdRequest request, std::chrono::milliseconds timeout = {});
  /// Ends request `id` (its last answer says canceled); unknown ids are ignored.
  void cancel(std::uint64_t id);
  /// Lets the requests in flight finish for up to `grace`, then cancels the rest
  /// and stops the thread. The handler is not called after it returns. Idempotent.
  void shutdown(std::chrono::milliseconds grace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distflow
