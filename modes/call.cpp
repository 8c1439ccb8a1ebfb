// `distflow call TARGET [BODY | -]`: flags → CallOptions → call_once() or
// call_stream() (src/caller.hpp) → the replies on stdout, exit code.

#include <cstdio>
#include <iostream>
#include <memory>
#include <unistd.h>

#include "caller.hpp"
#include "errors.hpp"
#include "modes.hpp"

namespace distflow::modes {
namespace {

struct CallFlags {
  CallOptions options;
  std::string body;
  std::string timeout = "5s";
  SecurityFlags security;
};

void print_reply(std::string_view payload) {
  std::fwrite(payload.data(), 1, payload.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace

void add_caller_flags(CLI::App& app, CallOptions& options, SecurityFlags& security) {
  options.pmd.port = default_pmd_port();
  app.add_option("--host", options.pmd.host, "PMD host")->capture_default_str();
  app.add_option("-p,--port", options.pmd.port, "PMD port (default: $DISTFLOW_PMD_PORT, else 4369)")
      ->capture_default_str();
  app.add_option("--listen", options.listen_host,
                 "address the replies come back to (another host's target dials it; beyond "
                 "loopback: needs --cookie-file or --tls-*)")
      ->capture_default_str();
  add_security_flags(app, security, true);
}

int finish_caller_flags(const CLI::App& app, CallOptions& options, const SecurityFlags& security,
                        const std::string& timeout) {
  auto per_call = parse_duration(timeout);
  if (!per_call || per_call->count() == 0) {
    return usage_error(app, "invalid --timeout '" + timeout +
                                "': expected e.g. 5s or 500ms (ms, s, m, h; more than 0)");
  }
  options.timeout = *per_call;
  std::vector<std::string> listen;
  if (int code = parse_listen_hosts(app, {options.listen_host}, "--listen", listen))
    return code;
  options.listen_host = listen.front();
  if (int code = load_security(app, security, options.security, listen, "--listen"))
    return code;
  return normalize_pmd_host(app, options.pmd);
}

Runner setup_call(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<CallFlags>();
  app.footer(
      "Send a request to a node and print its reply's payload (one JSON line) on\n"
      "stdout: exit 0. Exit 1 with the reason on stderr when no reply comes within\n"
      "--timeout, the target is unknown or leaves, or no PMD answers (call never\n"
      "starts one). With BODY '-' or no BODY, each non-blank stdin line is one\n"
      "request; up to --inflight wait at once, and the replies are printed in the\n"
      "order of the requests (a failed one on stderr with its line number; exit 1).\n"
      "A `node --exec` script answers with {\"replyTo\": <the request's ref>, \"payload\": ...}.");
  app.add_option("target", flags->options.target, "alias, node id or alias@host of the receiver")
      ->required();
  app.add_option("body", flags->body, "JSON payload; '-' or absent: NDJSON lines from stdin");
  app.add_option("--timeout", flags->timeout, "per call, e.g. 5s, 500ms")->capture_default_str();
  app.add_option("--inflight", flags->options.inflight, "with stdin: requests waiting at once")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
  app.add_option("--max-line", flags->options.max_line_bytes,
                 "longest stdin line (one request) in bytes")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{64} << 20));
  add_caller_flags(app, flags->options, flags->security);

  return [flags, &app]() -> int {
    if (app.get_option("body")->count() > 0 && flags->body.empty())
      return usage_error(app, "empty BODY: give a JSON value, or '-' to read NDJSON from stdin");
    if (int code = finish_caller_flags(app, flags->options, flags->security, flags->timeout))
      return code;
    if (!flags->body.empty() && flags->body != "-") {
      try {
        print_reply(call_once(flags->options, flags->body));
      } catch (const Error& e) {
        std::cerr << "distflow call: " << e.what() << '\n';
        return 1;
      }
      return 0;
    }
    const auto result = call_stream(
        flags->options, STDIN_FILENO,
        [](std::string_view payload) {
          print_reply(payload);
          std::fflush(stdout);
        },
        [](std::string_view message) { std::cerr << "distflow call: " << message << '\n'; });
    if (result.failed == 0)
      return 0;
    std::cerr << "distflow call: " << result.failed << " request(s) failed, " << result.answered
              << " answered\n";
    return 1;
  };
}

}  // namespace distflow::modes
