// `distflow watch [--json] [NODE] [--until-leave]`: flags → WatchOptions →
// watch_peers() (src/peer_watch.hpp) → exit code.

#include <memory>
#include <unistd.h>

#include "modes.hpp"
#include "peer_watch.hpp"

namespace distflow::modes {

namespace {

struct WatchFlags {
  WatchOptions options;
  SecurityFlags security;
};

}  // namespace

Runner setup_watch(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<WatchFlags>();
  WatchOptions* options = &flags->options;
  options->pmd.port = default_pmd_port();
  app.footer(
      "Print the registered peers, then every join and leave as it happens, one line\n"
      "each, flushed per event. Text lines are 'present|join|leave  ALIAS  id=ID  HOST:PORT\n"
      "[reason=R]'; with --json each line is {\"event\":\"peer:present|peer:join|peer:leave\",\n"
      "\"peer\":NodeInfo[,\"reason\":R]}. Exit 1 when no PMD answers or it goes away.");
  app.add_option("node", options->node, "follow only this alias or node id");
  app.add_flag("--json", options->json, "NDJSON output");
  app.add_flag("--until-leave", options->until_leave,
               "exit 0 once NODE leaves (at once if it is not registered)");
  app.add_option("--host", options->pmd.host, "PMD host")->capture_default_str();
  app.add_option("-p,--port", options->pmd.port,
                 "PMD port (default: $DISTFLOW_PMD_PORT, else 4369)")
      ->capture_default_str();
  add_security_flags(app, flags->security, false);
  app.add_flag_callback(
      "--cluster", [options] { options->cluster = true; },
      "a clustered PMD: every node of the cluster, marked \"remote\" when elsewhere (the "
      "default)");
  app.add_flag_callback(
      "--no-cluster", [options] { options->cluster = false; },
      "a clustered PMD: only the nodes registered with it");

  return [flags, options, &app]() -> int {
    if (options->until_leave && options->node.empty()) {
      return usage_error(app, "--until-leave needs a NODE to follow");
    }
    if (int code = load_security(app, flags->security, options->security))
      return code;
    if (int code = normalize_pmd_host(app, options->pmd))
      return code;
    return watch_peers(*options, STDOUT_FILENO);
  };
}

}  // namespace distflow::modes
