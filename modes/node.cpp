// `distflow node [--alias NAME] [--exec CMD [ARGS...]]`: flags → NodeBridgeOptions →
// run_node_bridge() (src/node_bridge.hpp) → exit code.

#include <memory>
#include <unistd.h>

#include "address.hpp"
#include "modes.hpp"
#include "node_bridge.hpp"

namespace distflow::modes {
namespace {

struct NodeFlags {
  NodeBridgeOptions options;
  std::string overflow = "block";  // lossless, as a pipe: the library keeps drop-newest
  std::string restart = "never";
  double restart_window_s = 10;
  double stop_timeout_s = 5;
  std::string stall_timeout = "30s";
  std::string tick = "1s";
  bool exec = false;
  bool no_auto_pmd = false;
  std::string listen_port = "0";
  SecurityFlags security;
  std::string metrics;
};

}  // namespace

Runner setup_node(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<NodeFlags>();
  NodeOptions& node = flags->options.node;
  node.pmd.port = default_pmd_port();
  app.footer(
      "Run a node. Each received message is one NDJSON line on stdout:\n"
      "  {\"from\":ID,\"alias\":A,\"to\":ID,\"timestamp\":MS,\"payload\":<exact JSON>}\n"
      "Each stdin line {\"to\":\"ALIAS-OR-ID\",\"payload\":<JSON>} is sent. A bad line is\n"
      "reported on stderr with its number and skipped. stdin EOF: outbound messages\n"
      "are flushed and the node exits 0. With --exec (the last flag: everything after\n"
      "it is the command), the child's stdin and stdout replace ours, its stderr is\n"
      "ours, and it gets DISTFLOW_NODE_ID, DISTFLOW_ALIAS and DISTFLOW_PMD_PORT.\n"
      "SIGTERM/SIGINT/SIGHUP go to its process group, then the node unregisters and\n"
      "exits 0; it dies with the node. Otherwise its exit code is the node's, once\n"
      "restarts are exhausted.\n"
      "Nothing is lost by default: when the output is slower than the senders, the\n"
      "mailbox fills and the node stops reading its peers, which slows them down\n"
      "(--overflow block). If the output goes away (EPIPE), the node reports how many\n"
      "messages it could not write, unregisters and exits 1.");
  app.add_option("-a,--alias", node.alias, "alias to register (unique per PMD)");
  app.add_option("--node-id", node.node_id, "node id (default: generated from the alias)");
  // Everything after --exec is the command, dashes included: from there on the
  // subcommand keeps its arguments (no fall-through to the root) as extras.
  app.add_flag_callback(
         "--exec",
         [flags, &app] {
           flags->exec = true;
           app.fallthrough(false);
           app.prefix_command();
         },
         "run CMD [ARGS...] (the rest of the line) as the child")
      ->trigger_on_parse();
  app.add_option("--mailbox-size", node.mailbox_size, "mailbox capacity")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--overflow", flags->overflow,
                 "policy for a full mailbox: block (lossless: senders are slowed by TCP "
                 "back-pressure), drop-newest or drop-oldest (counted, reported once a second)")
      ->capture_default_str()
      ->check(CLI::IsMember({"drop-newest", "drop-oldest", "block"}));
  app.add_option("--restart", flags->restart, "restart the --exec child: never|on-failure|always")
      ->capture_default_str()
      ->check(CLI::IsMember({"never", "on-failure", "always"}));
  app.add_option("--restart-limit", flags->options.restart_limit,
                 "at most this many restarts within --restart-window")
      ->capture_default_str();
  app.add_option("--restart-window", flags->restart_window_s, "seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--stop-timeout", flags->stop_timeout_s,
                 "seconds the child gets after a forwarded signal, before SIGKILL")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--host", node.pmd.host, "PMD host")->capture_default_str();
  app.add_option("-p,--port", node.pmd.port, "PMD port (default: $DISTFLOW_PMD_PORT, else 4369)")
      ->capture_default_str();
  app.add_flag("--no-auto-pmd", flags->no_auto_pmd, "fail instead of starting a PMD");
  app.add_option("--listen", node.listen_host,
                 "address to listen on (beyond loopback: needs --cookie-file, --tls-* or "
                 "--insecure)")
      ->capture_default_str();
  app.add_option("--listen-port", flags->listen_port,
                 "port to listen on, or the first free one of a range FIRST-LAST (0: ephemeral)")
      ->capture_default_str();
  app.add_option("--advertise", node.advertise_host,
                 "host registered with the PMD (default: the listen address)");
  app.add_option("--max-line", flags->options.max_line_bytes, "longest input line in bytes")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--max-frame", node.max_frame_bytes,
                 "largest frame accepted from a peer, in bytes (larger: logged, connection closed)")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-connections", node.max_connections,
                 "inbound peer connections served at once; more are closed on accept")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--stall-timeout", flags->stall_timeout,
                 "close an inbound peer that stops inside a frame this long (e.g. 30s, 500ms; "
                 "0s: never)")
      ->capture_default_str();
  app.add_option("--tick", flags->tick,
                 "with --cookie-file or --tls-*: an idle link to another node carries a tick "
                 "this often, and 4 silent ticks mean the peer is down (partition, frozen); "
                 "0s: no ticks")
      ->capture_default_str();
  app.add_option("--max-outbox", node.max_outbox_bytes,
                 "bytes queued and unwritten for one destination: beyond them, sends to it wait "
                 "(5 s), then fail")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  add_security_flags(app, flags->security, true);
  add_metrics_flag(app, flags->metrics);

  return [flags, &app]() -> int {
    NodeBridgeOptions& options = flags->options;
    options.exec = app.remaining();
    if (flags->exec && options.exec.empty())
      return usage_error(app, "--exec needs a command");
    if (!flags->exec && !options.exec.empty()) {
      return usage_error(app, "unexpected argument '" + options.exec[0] + "'");
    }
    for (auto [flag, value] : {std::pair{"--alias", &options.node.alias},
                               std::pair{"--node-id", &options.node.node_id}}) {
      if (app.get_option(flag)->count() == 0)
        continue;
      if (std::string why = invalid_name_reason(*value); !why.empty())
        return usage_error(app, std::string("invalid ") + flag + " '" + *value + "': " + why);
    }
    if (options.node.max_frame_bytes < 16 || options.node.max_frame_bytes > (1u << 30))
      return usage_error(app, "invalid --max-frame: expected 16 bytes to 1 GiB");
    if (options.node.max_outbox_bytes < 1024)
      return usage_error(app, "invalid --max-outbox: expected at least 1 KiB");
    auto stall_timeout = parse_duration(flags->stall_timeout);
    if (!stall_timeout) {
      return usage_error(app,
                         "invalid --stall-timeout '" + flags->stall_timeout +
                             "': expected e.g. 30s, 500ms, 0s (ms, s, m, h; at most 366 days)");
    }
    options.node.stall_timeout = *stall_timeout;
    if (int code = parse_tick(app, flags->tick, options.node.tick_interval))
      return code;
    std::string error;
    const auto ports = parse_port_range(flags->listen_port, "--listen-port", error);
    if (!ports)
      return usage_error(app, error);
    options.node.listen_port = ports->first;
    options.node.listen_port_last = ports->last == ports->first ? 0 : ports->last;
    std::vector<std::string> listen;
    if (int code = parse_listen_hosts(app, {options.node.listen_host}, "--listen", listen))
      return code;
    options.node.listen_host = listen.front();
    if (int code = load_security(app, flags->security, options.node.security, listen, "--listen"))
      return code;
    if (int code = normalize_pmd_host(app, options.node.pmd))
      return code;
    if (int code =
            parse_metrics_flag(app, flags->metrics, options.node.security, options.node.metrics))
      return code;
    options.node.overflow = *parse_overflow_policy(flags->overflow);
    options.node.auto_start_pmd = !flags->no_auto_pmd;
    options.restart = *parse_restart_policy(flags->restart);
    options.restart_window =
        std::chrono::milliseconds(static_cast<std::int64_t>(flags->restart_window_s * 1000));
    options.stop_timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(flags->stop_timeout_s * 1000));
    options.input_fd = STDIN_FILENO;
    options.output_fd = STDOUT_FILENO;
    return run_node_bridge(options);
  };
}

}  // namespace distflow::modes
