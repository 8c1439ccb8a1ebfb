// The exposure rule: beyond loopback only with a cookie or TLS, or --insecure (warned).

#include "exposure.hpp"

#include <string>

#include <catch2/catch.hpp>

namespace distflow {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("exposure: loopback needs nothing", "[exposure]") {
  for (const auto& addresses :
       {std::vector<std::string>{"127.0.0.1"},
        std::vector<std::string>{"127.0.0.2", "::1", "localhost"}, std::vector<std::string>{}}) {
    for (const bool insecure : {false, true}) {
      const auto verdict = check_exposure(addresses, "--bind", false, false, insecure);
      CHECK(verdict.error.empty());
      CHECK(verdict.warning.empty());
    }
  }
}

TEST_CASE("exposure: beyond loopback without cookie or TLS is refused, saying how to fix it",
          "[exposure]") {
  const auto verdict =
      check_exposure({"127.0.0.1", "10.203.0.1", "::"}, "--bind", false, false, false);
  CHECK(verdict.warning.empty());
  CHECK(verdict.error ==
        "refusing to listen on 10.203.0.1, [::] (--bind) without authentication: any host that "
        "can reach it could connect; give --cookie-file FILE (a shared secret, chmod 600) and/or "
        "--tls-cert FILE --tls-key FILE --tls-ca FILE, or --insecure to listen unauthenticated "
        "anyway");
  for (const char* address : {"0.0.0.0", "192.168.1.5", "node-b.example.org", "fe80::1"}) {
    INFO(address);
    const auto v = check_exposure({address}, "--listen", false, false, false);
    CHECK(contains(v.error, "(--listen)"));
  }
}

TEST_CASE("exposure: a cookie or TLS allows it; --insecure allows it with a warning",
          "[exposure]") {
  for (const auto& [cookie, tls] : {std::pair{true, false}, {false, true}, {true, true}}) {
    for (const bool insecure : {false, true}) {
      const auto verdict = check_exposure({"10.203.0.1"}, "--bind", cookie, tls, insecure);
      CHECK(verdict.error.empty());
      CHECK(verdict.warning.empty());
    }
  }
  const auto verdict = check_exposure({"10.203.0.1"}, "--listen", false, false, true);
  CHECK(verdict.error.empty());
  CHECK(verdict.warning ==
        "listening on 10.203.0.1 (--listen) without a cookie or TLS (--insecure): any host that "
        "can reach it can connect unauthenticated");
}

}  // namespace distflow
