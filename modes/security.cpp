// The security flags every connecting mode shares (issue 12): declared once here,
// turned into SecurityOptions (cookie loaded, TLS files checked) and, for the modes
// that listen, checked against the exposure rule.

#include <charconv>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "address.hpp"
#include "cookie.hpp"
#include "errors.hpp"
#include "exposure.hpp"
#include "modes.hpp"
#include "tls.hpp"

namespace distflow::modes {

void add_security_flags(CLI::App& app, SecurityFlags& flags, bool listens) {
  app.add_option("--cookie-file", flags.cookie_file,
                 "shared secret for the cookie handshake, a file only its owner may read "
                 "(default: $DISTFLOW_COOKIE_FILE)")
      ->type_name("FILE");
  app.add_option("--tls-cert", flags.tls.cert, "TLS: our certificate chain (PEM)")
      ->type_name("FILE");
  app.add_option("--tls-key", flags.tls.key, "TLS: our private key (PEM)")->type_name("FILE");
  app.add_option("--tls-ca", flags.tls.ca, "TLS: the CA that peers' certificates must chain to")
      ->type_name("FILE");
  if (listens) {
    app.add_flag("--insecure", flags.insecure,
                 "allow listening beyond loopback without --cookie-file or --tls-* (warned)");
  }
}

int load_security(const CLI::App& app, const SecurityFlags& flags, SecurityOptions& out,
                  const std::vector<std::string>& listen, std::string_view listen_flag,
                  const SecurityFlags* fallback) {
  // Each flag from `flags`, else from one level up.
  auto pick = [](const std::string& own, const std::string& up) { return own.empty() ? up : own; };
  const SecurityFlags none;
  const SecurityFlags& parent = fallback != nullptr ? *fallback : none;
  std::string cookie_file = pick(flags.cookie_file, parent.cookie_file);
  if (cookie_file.empty()) {
    if (const char* env = std::getenv("DISTFLOW_COOKIE_FILE"))
      cookie_file = env;
  }
  out.tls = {};
  out.tls.cert = pick(flags.tls.cert, parent.tls.cert);
  out.tls.key = pick(flags.tls.key, parent.tls.key);
  out.tls.ca = pick(flags.tls.ca, parent.tls.ca);
  out.insecure = flags.insecure;
  try {
    if (!cookie_file.empty())
      out.cookie = load_cookie_file(cookie_file);
    if (out.tls.configured())
      TlsContext check(out.tls);  // every file readable and usable, now rather than later
  } catch (const Error& e) {
    return usage_error(app, e.what());
  }
  const ExposureVerdict verdict =
      check_exposure(listen, listen_flag, !out.cookie.empty(), out.tls.configured(), out.insecure);
  if (!verdict.error.empty())
    return usage_error(app, verdict.error);
  if (!verdict.warning.empty())
    spdlog::warn("{}", verdict.warning);
  return 0;
}

int parse_tick(const CLI::App& app, const std::string& value, std::chrono::milliseconds& out) {
  auto tick = parse_duration(value);
  if (!tick) {
    return usage_error(app,
                       "invalid --tick '" + value + "': expected e.g. 1s, 500ms, 0s (ms, s, m, h)");
  }
  out = *tick;
  return 0;
}

int normalize_pmd_host(const CLI::App& app, PmdEndpoint& endpoint) {
  std::string error;
  auto host = parse_host_port(endpoint.host, "--host", error);
  if (!host)
    return usage_error(app, error);
  endpoint.host = host->host;
  const CLI::Option* port = app.get_option_no_throw("--port");
  if (host->port && (port == nullptr || port->count() == 0))
    endpoint.port = *host->port;
  return 0;
}

void add_metrics_flag(CLI::App& app, std::string& value) {
  app.add_option("--metrics", value,
                 "serve Prometheus metrics at http://ADDR:PORT/metrics (port 0: a free one; the "
                 "address is logged); beyond loopback it needs --cookie-file, --tls-* or "
                 "--insecure")
      ->type_name("ADDR:PORT");
}

int parse_metrics_flag(const CLI::App& app, const std::string& value,
                       const SecurityOptions& security, std::optional<MetricsEndpoint>& out) {
  out.reset();
  if (value.empty())
    return 0;
  // ADDR:PORT or [IPv6]:PORT; unlike the other host flags, port 0 (a free one) is fine.
  const std::string expected = "invalid --metrics '" + value +
                               "': expected ADDR:PORT, e.g. 127.0.0.1:9100 (port 0: a free one)";
  const std::size_t colon = value.rfind(':');
  const bool bracketed = value.starts_with('[');
  if (colon == std::string::npos || colon == 0 || (bracketed && value[colon - 1] != ']') ||
      (!bracketed && value.find(':') != colon)) {
    return usage_error(app, expected);
  }
  const std::string_view port_text = std::string_view(value).substr(colon + 1);
  unsigned port = 0;
  const char* const last = port_text.data() + port_text.size();
  const auto [end, ec] = std::from_chars(port_text.data(), last, port);
  if (port_text.empty() || ec != std::errc() || end != last || port > 65535)
    return usage_error(app, expected);
  std::string error;
  auto where = parse_host_port(value.substr(0, colon), "--metrics", error);
  if (!where) {
    // "invalid --metrics 'HOST': WHY; expected ...": WHY, about the whole value.
    const std::size_t why = error.find("': ");
    const std::string reason = why == std::string::npos
                                   ? error
                                   : error.substr(why + 3, error.find("; expected") - why - 3);
    return usage_error(app, "invalid --metrics '" + value + "': " + reason +
                                "; expected ADDR:PORT, e.g. 127.0.0.1:9100");
  }
  const ExposureVerdict verdict =
      check_exposure({where->host}, "--metrics", !security.cookie.empty(),
                     security.tls.configured(), security.insecure);
  if (!verdict.error.empty())
    return usage_error(app, verdict.error);
  out = MetricsEndpoint{where->host, static_cast<std::uint16_t>(port)};
  return 0;
}

int parse_listen_hosts(const CLI::App& app, const std::vector<std::string>& values,
                       std::string_view flag, std::vector<std::string>& out) {
  out.clear();
  for (const std::string& value : values) {
    std::string error;
    auto host = parse_host_port(value, flag, error);
    if (!host)
      return usage_error(app, error);
    if (host->port) {
      return usage_error(app, "invalid " + std::string(flag) + " '" + value +
                                  "': expected an address without a port (the port has a flag "
                                  "of its own)");
    }
    out.push_back(std::move(host->host));
  }
  return 0;
}

}  // namespace distflow::modes
