#pragma once

// How a process proves itself to its peers and checks them (issue 12): the shared
// cookie, the TLS files, and whether it may listen beyond loopback without either.

#include <string>

#include "tls.hpp"

namespace distflow {

struct SecurityOptions {
  std::string cookie;     ///< the shared secret (load_cookie_file); empty: none
  TlsFiles tls;           ///< PEM files; none configured: plain TCP
  bool insecure = false;  ///< listening beyond loopback without cookie or TLS is allowed
  bool authenticated() const { return !cookie.empty() || tls.configured(); }
};

}  // namespace distflow
