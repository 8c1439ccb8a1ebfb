// `distflow send TARGET [BODY | -]`: flags → SendOptions → send_message() or
// send_stream() (src/sender.hpp) → exit code.

#include <iostream>
#include <memory>
#include <unistd.h>

#include "modes.hpp"
#include "node_runtime.hpp"
#include "sender.hpp"

namespace distflow::modes {
namespace {

struct SendFlags {
  SendOptions options;
  std::string body;
  std::string timeout = "10s";
  std::string tick = "1s";
  SecurityFlags security;
};

}  // namespace

Runner setup_send(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<SendFlags>();
  flags->options.pmd.port = default_pmd_port();
  app.footer(
      "Send one JSON message, or one per line of stdin, to a node (alias or node id).\n"
      "With BODY '-' or no BODY, stdin is NDJSON: each non-blank line is one payload,\n"
      "sent in order over one connection. send exits once the receiver's host has\n"
      "acknowledged every byte; a receiver that takes nothing for --timeout fails the\n"
      "send with exit 1, saying how far it got.\n"
      "An invalid line is reported on stderr with its line number and parse error and\n"
      "skipped; the valid lines are still sent, and the exit code is then 1. Exit 1\n"
      "also when no PMD answers or the target is unknown (send never starts a PMD).");
  app.add_option("target", flags->options.target, "alias or node id of the receiver")->required();
  app.add_option("body", flags->body, "JSON payload; '-' or absent: NDJSON lines from stdin");
  app.add_option("-n,--count", flags->options.count,
                 "send every body N times (each stdin line too)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  app.add_option("--host", flags->options.pmd.host, "PMD host")->capture_default_str();
  app.add_option("-p,--port", flags->options.pmd.port,
                 "PMD port (default: $DISTFLOW_PMD_PORT, else 4369)")
      ->capture_default_str();
  app.add_option("--from", flags->options.from, "sender node id (default: send-<pid>)");
  app.add_option("--timeout", flags->timeout,
                 "fail when the receiver takes no bytes for this long (frozen or stuck), "
                 "e.g. 10s, 500ms; 0s: wait for ever")
      ->capture_default_str();
  app.add_option("--max-line", flags->options.max_line_bytes,
                 "longest stdin line (one payload) in bytes")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, max_send_payload_bytes()));
  app.add_option("--tick", flags->tick,
                 "with --cookie-file or --tls-*: while stdin is idle the connection carries a "
                 "tick this often, so that the receiver (whose --tick should be the same) does "
                 "not take the pause for a partition; 0s: no ticks")
      ->capture_default_str();
  add_security_flags(app, flags->security, false);

  return [flags, &app]() -> int {
    if (app.get_option("body")->count() > 0 && flags->body.empty())
      return usage_error(app, "empty BODY: give a JSON value, or '-' to read NDJSON from stdin");
    auto timeout = parse_duration(flags->timeout);
    if (!timeout) {
      return usage_error(app, "invalid --timeout '" + flags->timeout +
                                  "': expected e.g. 10s or 500ms (ms, s, m, h; at most 366 days)");
    }
    flags->options.write_timeout = *timeout;
    if (int code = parse_tick(app, flags->tick, flags->options.tick_interval))
      return code;
    if (app.get_option("--from")->count() > 0) {
      if (std::string why = invalid_name_reason(flags->options.from); !why.empty())
        return usage_error(app, "invalid --from '" + flags->options.from + "': " + why);
    }
    if (int code = load_security(app, flags->security, flags->options.security))
      return code;
    if (int code = normalize_pmd_host(app, flags->options.pmd))
      return code;
    if (!flags->body.empty() && flags->body != "-") {
      send_message(flags->options, flags->body);
      return 0;
    }
    const auto result = send_stream(flags->options, STDIN_FILENO, [](std::string_view message) {
      std::cerr << "distflow send: " << message << '\n';
    });
    if (result.invalid == 0)
      return 0;
    std::cerr << "distflow send: " << result.invalid << " invalid line(s) skipped, " << result.sent
              << " message(s) sent\n";
    return 1;
  };
}

}  // namespace distflow::modes
