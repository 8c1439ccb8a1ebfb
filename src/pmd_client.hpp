#pragma once

// A blocking PMD client for one-shot commands (admin, send, watch): connect,
// ask, read the answer. Nodes use the asynchronous link in node_runtime instead.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pmd_protocol.hpp"

namespace distflow {

struct PmdEndpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = kDefaultPmdPort;
  std::string to_string() const;  ///< "host:port"
};

/// One connection to a PMD. Every call throws distflow::Error with a complete
/// message ("no distflow PMD on 127.0.0.1:4369: connection refused", or, for a
/// port held by something else, a hint at DISTFLOW_PMD_PORT).
class PmdClient {
 public:
  static std::unique_ptr<PmdClient> connect(
      const PmdEndpoint& endpoint, std::chrono::milliseconds timeout = std::chrono::seconds(2));
  virtual ~PmdClient() = default;

  /// Sends one request and waits for its response (events arriving meanwhile are queued).
  virtual PmdReply request(std::string_view type, std::string_view payload_json) = 0;
  /// resolve: the node, or nullopt for "Node not found".
  virtual std::optional<NodeInfo> resolve(std::string_view alias_or_id) = 0;
  virtual std::vector<NodeInfo> list() = 0;
  /// Subscribes to events; returns the snapshot (from the reply, else from list()).
  virtual std::vector<NodeInfo> watch() = 0;
  /// Blocks up to `timeout` for the next event; nullopt on timeout. Throws when the PMD goes away.
  virtual std::optional<PmdReply> next_event(std::chrono::milliseconds timeout) = 0;
};

/// Outcome of connect_tcp(): the connected socket, or why there is none.
struct TcpConnection {
  int fd = -1;                ///< blocking, TCP_NODELAY, close-on-exec; -1 on failure
  int error = 0;              ///< errno of the last attempt when fd < 0 (ETIMEDOUT at the deadline)
  std::string resolve_error;  ///< set instead when `host` does not resolve
};

/// A TCP connection to host:port within `timeout`. An IP literal (and
/// "localhost": 127.0.0.1, then ::1) is used as is, without the resolver;
/// other names go through getaddrinfo(). The caller owns (closes) `fd`.
TcpConnection connect_tcp(const std::string& host, std::uint16_t port,
                          std::chrono::milliseconds timeout);

/// True when something answers the PMD protocol on `endpoint` within `timeout`.
bool pmd_answers(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout);

/// What is on a PMD endpoint: a distflow PMD, nothing (refused), or something else.
enum class PmdProbe { answers, refused, not_a_pmd, unreachable };
/// Connects and asks `list`; `why` gets the complete error message when not `answers`.
PmdProbe probe_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout,
                   std::string* why = nullptr);

}  // namespace distflow
