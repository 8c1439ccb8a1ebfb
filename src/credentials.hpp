#pragma once

// What a process applies to the connections it makes and accepts (issue 12),
// built once from its SecurityOptions: the TLS context (loaded once) and the
// shared cookie. It hands out the pieces a Session takes: the TLS side and the
// cookie gate for either end of a connection.

#include <memory>
#include <string>

#include "gate.hpp"
#include "security_options.hpp"
#include "session.hpp"

namespace distflow {

class TlsContext;

class Credentials {
 public:
  /// Loads the TLS files if any; throws distflow::Error naming a file that is not usable.
  explicit Credentials(const SecurityOptions& options);
  ~Credentials();
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  bool tls() const { return tls_ != nullptr; }
  bool cookie() const { return !cookie_.empty(); }
  /// Cookie or TLS: the peers prove themselves.
  bool authenticated() const { return tls() || cookie(); }

  /// The TLS side of a connection we dial to `host` (its certificate must name
  /// it); none without TLS.
  TlsSide dial_tls(const std::string& host) const;
  /// The TLS side of a connection we accept; none without TLS.
  TlsSide accept_tls() const;
  /// The cookie handshake as the dialling side, proving `our_name` (and checking
  /// that the peer proves `peer_name`, when given); nullptr without a cookie.
  std::unique_ptr<SessionGate> dial_gate(const std::string& our_name,
                                         const std::string& peer_name = {}) const;
  /// The cookie handshake as the accepting side; nullptr without a cookie.
  std::unique_ptr<SessionGate> accept_gate(const std::string& our_name) const;

 private:
  std::string cookie_;
  std::unique_ptr<TlsContext> tls_;
};

/// How long a handshake (TLS, then the cookie) may take before the connection is closed.
inline constexpr std::chrono::milliseconds kHandshakeTimeout{2000};

}  // namespace distflow
