#pragma once

// The modes of the distflow executable. Each declares its flags on a CLI11
// subcommand and returns the closure that runs it (STYLE.md §5).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "caller.hpp"
#include "metrics.hpp"
#include "pmd_protocol.hpp"
#include "security_options.hpp"

namespace distflow::modes {

/// Flags on the root app, shared by every mode.
struct GlobalOptions {
  std::string log_level;            ///< empty: SPDLOG_LEVEL, else info
  std::string log_format = "text";  ///< text | json (one JSON object per line)
};

/// Runs the parsed mode; returns the exit code (0 ok, 1 runtime failure, 2 usage).
using Runner = std::function<int()>;
using Setup = Runner (*)(CLI::App& app, const GlobalOptions& global);

Runner setup_pmd(CLI::App& app, const GlobalOptions& global);
Runner setup_node(CLI::App& app, const GlobalOptions& global);
Runner setup_send(CLI::App& app, const GlobalOptions& global);
Runner setup_call(CLI::App& app, const GlobalOptions& global);
Runner setup_stats(CLI::App& app, const GlobalOptions& global);
Runner setup_watch(CLI::App& app, const GlobalOptions& global);
Runner setup_bench(CLI::App& app, const GlobalOptions& global);

/// The security flags as given (security.cpp); empty: not given.
struct SecurityFlags {
  std::string cookie_file;
  TlsFiles tls;
  bool insecure = false;
};

/// Declares --cookie-file FILE (default: $DISTFLOW_COOKIE_FILE), --tls-cert, --tls-key,
/// --tls-ca and, for a mode that listens, --insecure.
void add_security_flags(CLI::App& app, SecurityFlags& flags, bool listens);

/// Normalises a `--host` value in place (`H`, `H:P`, `[v6]`, `[v6]:P`): the host
/// without brackets, and its port into `port` unless --port/-p was given. Returns 0,
/// or 2 after printing the usage error.
int normalize_pmd_host(const CLI::App& app, PmdEndpoint& endpoint);

/// After parsing: loads the cookie and checks the TLS files into `out`; with `listen`
/// addresses (set by `listen_flag`), applies the exposure rule (refused, or a warning
/// logged). `fallback`: flags given one level up (`pmd --cookie-file F list`), used
/// where `flags` has none. Returns 0, or 2 once the usage error is printed.
int load_security(const CLI::App& app, const SecurityFlags& flags, SecurityOptions& out,
                  const std::vector<std::string>& listen = {}, std::string_view listen_flag = {},
                  const SecurityFlags* fallback = nullptr);

/// After parsing: `--tick`'s `value` (1s, 500ms, 0s) into `out`. Returns 0, or 2
/// once the usage error is printed.
int parse_tick(const CLI::App& app, const std::string& value, std::chrono::milliseconds& out);

/// `call` and `stats` (call.cpp): --host, -p/--port, --listen and the security
/// flags into `options`; after parsing, --timeout's value and those checked
/// (returns 0, or 2 once the usage error is printed).
void add_caller_flags(CLI::App& app, CallOptions& options, SecurityFlags& security);
int finish_caller_flags(const CLI::App& app, CallOptions& options, const SecurityFlags& security,
                        const std::string& timeout);

/// Declares `--metrics ADDR:PORT` into `value`.
void add_metrics_flag(CLI::App& app, std::string& value);
/// After load_security(): `value` (empty: not given) as an endpoint in `out`, the
/// exposure rule applied to it with `security`. Returns 0, or 2 once the usage
/// error is printed.
int parse_metrics_flag(const CLI::App& app, const std::string& value,
                       const SecurityOptions& security, std::optional<MetricsEndpoint>& out);

/// The values of `flag` (--bind, --listen): hosts without a port, IPv6 with or without
/// brackets. Returns 0 with the bare hosts in `out`, or 2 once the usage error is printed.
int parse_listen_hosts(const CLI::App& app, const std::vector<std::string>& values,
                       std::string_view flag, std::vector<std::string>& out);

/// Adds `status`, `list`, `resolve`, `kill` under the `pmd` subcommand (admin.cpp).
/// Returns the runner of whichever was parsed, or an empty Runner if none was.
/// `pmd_security`: the security flags given to `pmd` itself (they apply too).
std::function<Runner()> add_pmd_admin(CLI::App& pmd,
                                      std::shared_ptr<const SecurityFlags> pmd_security);

/// The PMD port from DISTFLOW_PMD_PORT, else 4369 (used as every --port default).
std::uint16_t default_pmd_port();
/// The usage error for a DISTFLOW_PMD_PORT that is set but not a port; nullopt when fine.
std::optional<std::string> pmd_port_env_error();
/// True when the parsed `mode` (or its parsed subcommand) got an explicit --port or
/// --pmd-port, or has no such option: then DISTFLOW_PMD_PORT does not matter.
bool port_given(const CLI::App& mode);

/// "30s", "500ms", "2m", "1h" (flags such as --stall-timeout), at most 366 days; nullopt
/// for anything else.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text);

/// Usage error for a bad flag combination found after parsing: prints
/// "distflow <mode>: <message>" and returns 2.
int usage_error(const CLI::App& app, const std::string& message);

}  // namespace distflow::modes
