#include "credentials.hpp"

#include "cookie_gate.hpp"
#include "tls.hpp"

namespace distflow {

Credentials::Credentials(const SecurityOptions& options)
    : cookie_(options.cookie),
      tls_(options.tls.configured() ? std::make_unique<TlsContext>(options.tls) : nullptr) {}

Credentials::~Credentials() = default;

TlsSide Credentials::dial_tls(const std::string& host) const {
  if (!tls_)
    return {};
  return {tls_.get(), false, host};
}

TlsSide Credentials::accept_tls() const {
  if (!tls_)
    return {};
  return {tls_.get(), true, {}};
}

std::unique_ptr<SessionGate> Credentials::dial_gate(const std::string& our_name,
                                                    const std::string& peer_name) const {
  if (cookie_.empty())
    return nullptr;
  return std::make_unique<CookieGate>(CookieGate::Role::dialler, cookie_, our_name, peer_name);
}

std::unique_ptr<SessionGate> Credentials::accept_gate(const std::string& our_name) const {
  if (cookie_.empty())
    return nullptr;
  return std::make_unique<CookieGate>(CookieGate::Role::acceptor, cookie_, our_name);
}

}  // namespace distflow
