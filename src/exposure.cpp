#include "exposure.hpp"

#include "address.hpp"

namespace distflow {

ExposureVerdict check_exposure(const std::vector<std::string>& addresses, std::string_view flag,
                               bool cookie, bool tls, bool insecure) {
  std::string exposed;
  for (const std::string& address : addresses) {
    if (is_loopback_host(address))
      continue;
    if (!exposed.empty())
      exposed += ", ";
    exposed += format_host(address);
  }
  ExposureVerdict verdict;
  if (exposed.empty() || cookie || tls)
    return verdict;
  const std::string where = exposed + " (" + std::string(flag) + ")";
  if (insecure) {
    verdict.warning = "listening on " + where +
                      " without a cookie or TLS (--insecure): any host that can reach it can "
                      "connect unauthenticated";
  } else {
    verdict.error = "refusing to listen on " + where +
                    " without authentication: any host that can reach it could connect; give "
                    "--cookie-file FILE (a shared secret, chmod 600) and/or --tls-cert FILE "
                    "--tls-key FILE --tls-ca FILE, or --insecure to listen unauthenticated anyway";
  }
  return verdict;
}

}  // namespace distflow
