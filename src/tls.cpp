#include "tls.hpp"

#include <asio/ssl/context.hpp>

#include "errors.hpp"

namespace distflow {

TlsContext::TlsContext(const TlsFiles& files)
    : context_(std::make_unique<asio::ssl::context>(asio::ssl::context::tls)) {
  if (files.cert.empty() || files.key.empty() || files.ca.empty())
    throw Error("TLS needs --tls-cert, --tls-key and --tls-ca together");
  auto& ctx = *context_;
  std::error_code ec;
  // TLS 1.3 only: no renegotiation, no legacy ciphers to configure.
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_tlsv1_2,
                  ec);
  auto check = [&](const char* what, const std::string& file) {
    if (ec)
      throw Error("cannot load TLS " + std::string(what) + " '" + file + "': " + ec.message());
  };
  ctx.use_certificate_chain_file(files.cert, ec);
  check("certificate", files.cert);
  ctx.use_private_key_file(files.key, asio::ssl::context::pem, ec);
  check("key", files.key);
  ctx.load_verify_file(files.ca, ec);
  check("CA", files.ca);
  ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
  check("verify mode for", files.ca);
}

TlsContext::~TlsContext() = default;

asio::ssl::context& TlsContext::native() {
  return *context_;
}

}  // namespace distflow
