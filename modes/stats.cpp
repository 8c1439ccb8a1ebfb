// `distflow stats TARGET [--json] [--watch 1s]`: flags → watch_stats()
// (src/caller.hpp) → one answer, or one per interval, on stdout.

#include <cstdio>
#include <iostream>
#include <memory>

#include "caller.hpp"
#include "errors.hpp"
#include "modes.hpp"

namespace distflow::modes {
namespace {

struct StatsFlags {
  CallOptions options;
  bool json = false;
  std::string watch;
  std::string timeout = "5s";
  SecurityFlags security;
};

}  // namespace

Runner setup_stats(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<StatsFlags>();
  app.footer(
      "Ask a running node for its counters: messages and bytes in and out, drops by\n"
      "reason, mailbox depth and high-water mark, links and their queues, send\n"
      "failures, calls, uptime. The question travels over the node's own link as a\n"
      "reserved request its application never sees. Exit 1 when the node does not\n"
      "answer within --timeout, is unknown, or no PMD answers.");
  app.add_option("target", flags->options.target, "alias, node id or alias@host of the node")
      ->required();
  app.add_flag("--json", flags->json, "one JSON object per answer (NDJSON with --watch)");
  app.add_option("--watch", flags->watch, "ask again every interval (e.g. 1s) until interrupted");
  app.add_option("--timeout", flags->timeout, "per answer, e.g. 5s, 500ms")->capture_default_str();
  add_caller_flags(app, flags->options, flags->security);

  return [flags, &app]() -> int {
    if (int code = finish_caller_flags(app, flags->options, flags->security, flags->timeout))
      return code;
    std::chrono::milliseconds interval{0};
    if (!flags->watch.empty()) {
      auto every = parse_duration(flags->watch);
      if (!every || every->count() < 10) {
        return usage_error(app, "invalid --watch '" + flags->watch +
                                    "': expected an interval of at least 10ms, e.g. 1s");
      }
      interval = *every;
    }
    const bool json = flags->json;
    try {
      watch_stats(flags->options, interval, [json, interval](std::string_view answer) {
        if (json) {
          std::fwrite(answer.data(), 1, answer.size(), stdout);
          std::fputc('\n', stdout);
        } else {
          const std::string text = render_stats_text(answer);
          std::fwrite(text.data(), 1, text.size(), stdout);
          if (interval.count() > 0)
            std::fputc('\n', stdout);
        }
        return std::fflush(stdout) == 0;  // a closed stdout (| head) ends the watch
      });
    } catch (const Error& e) {
      std::cerr << "distflow stats: " << e.what() << '\n';
      return 1;
    }
    return 0;
  };
}

}  // namespace distflow::modes
