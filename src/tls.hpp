#pragma once

// TLS for sessions (issue 12): one context per process, loaded from PEM files,
// TLS 1.3 only, both sides verify the peer's certificate against the CA. Kept
// behind a pointer so that only session.cpp and tls.cpp see OpenSSL's headers.

#include <memory>
#include <string>

namespace asio::ssl {
class context;
}

namespace distflow {

/// The PEM files of one side: its certificate chain, its key, the CA it trusts.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  bool configured() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

class TlsContext {
 public:
  /// Loads and checks the files (all three are needed). Throws distflow::Error
  /// naming the file and OpenSSL's reason.
  explicit TlsContext(const TlsFiles& files);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  asio::ssl::context& native();

 private:
  std::unique_ptr<asio::ssl::context> context_;
};

}  // namespace distflow
