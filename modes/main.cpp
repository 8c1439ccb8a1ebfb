// The only main(): one table of modes, logging setup, exit codes (STYLE.md §5).

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <string_view>
#include <vector>

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "build_info.hpp"
#include "errors.hpp"
#include "json_log.hpp"
#include "modes.hpp"
#include "pmd_protocol.hpp"

namespace distflow::modes {
namespace {

struct Mode {
  std::string_view name;
  std::string_view summary;
  Setup setup;
};

constexpr std::array kModes{
    Mode{"pmd", "run the port mapper daemon, or administer one (status, list, resolve, kill)",
         &setup_pmd},
    Mode{"node", "run a node: received messages out as NDJSON, lines in become sends", &setup_node},
    Mode{"send", "send one message, or NDJSON lines from stdin, to a node", &setup_send},
    Mode{"call", "send a request to a node and print its reply (or many, from stdin)", &setup_call},
    Mode{"stats", "print a running node's counters (once, or --watch)", &setup_stats},
    Mode{"watch", "print the registered peers, then every join and leave", &setup_watch},
    Mode{"bench", "measure mailbox, throughput, latency and PMD speed", &setup_bench},
};

const Mode* find_mode(std::string_view name) {
  for (const Mode& mode : kModes) {
    if (mode.name == name)
      return &mode;
  }
  return nullptr;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// `program`: the symlink name the mode came from, if it came from argv[0].
int unknown_mode(std::string_view name, std::string_view program = {}) {
  const Mode* best = nullptr;
  std::size_t best_distance = 3;  // suggest only near misses, as ninja does
  for (const Mode& mode : kModes) {
    const std::size_t d = edit_distance(name, mode.name);
    if (d < best_distance)
      best = &mode, best_distance = d;
  }
  std::cerr << "distflow: unknown mode '" << name << "'";
  if (!program.empty())
    std::cerr << " (from the program name '" << program << "')";
  if (best)
    std::cerr << ", did you mean '" << best->name << "'?";
  std::cerr << "\nrun 'distflow --help' for the list of modes\n";
  return 2;
}

/// With --log-format json: errors that end the command are log records too, so
/// that every stderr line is one JSON object.
bool g_json_logs = false;

/// The mode the command line runs when only root `--log-*` flags precede
/// its name: then only that mode's subcommand is built (a start builds one
/// CLI11 subcommand, not five). nullptr otherwise (no mode, --help, --version,
/// a bad flag): every mode is built, for the listing and CLI11's own errors.
const Mode* selected_mode(const std::vector<std::string>& args) {
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--log-level" || arg == "--log-format") {
      ++i;
      continue;
    }
    if (arg.starts_with("--log-level=") || arg.starts_with("--log-format="))
      continue;
    return arg.starts_with('-') ? nullptr : find_mode(arg);
  }
  return nullptr;
}

void setup_logging(const GlobalOptions& global) {
  auto logger = spdlog::stderr_logger_mt("distflow");
  if (global.log_format == "json") {
    logger->set_formatter(make_json_log_formatter());
    g_json_logs = true;
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%P] %v");
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::info);
  spdlog::cfg::load_env_levels();
  if (!global.log_level.empty())
    spdlog::set_level(spdlog::level::from_str(global.log_level));
}

int real_main(std::vector<std::string> args) {
  // `distflow-pmd ...` (a symlink) means `distflow pmd ...`: exact basename only.
  const std::string_view argv0 = args[0];
  const std::string_view base = argv0.substr(argv0.find_last_of('/') + 1);
  if (base.starts_with("distflow-")) {
    if (!find_mode(base.substr(9)))
      return unknown_mode(base.substr(9), base);
    args.insert(args.begin() + 1, std::string(base.substr(9)));
  }
  if (args.size() > 1 && !args[1].empty() && args[1][0] != '-' && !find_mode(args[1])) {
    return unknown_mode(args[1]);
  }

  const std::string version =
      std::string("distflow ") + DISTFLOW_VERSION + " (" + std::string(build_info()) + ")";
  if (args.size() == 2 && args[1] == "--version") {  // what CLI11 prints, without building it
    std::cout << version << '\n';
    return 0;
  }

  CLI::App app{"distflow: Erlang-inspired distributed messaging (port mapper, nodes, shell tools)",
               "distflow"};
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  app.fallthrough();
  GlobalOptions global;
  app.add_option("--log-level", global.log_level,
                 "trace|debug|info|warn|error|critical|off (default: $SPDLOG_LEVEL, else info)")
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"}));
  app.add_option("--log-format", global.log_format,
                 "text, or json: one JSON object per line (time, level, pid, message, and the "
                 "message's key=value words as \"fields\")")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  app.footer(
      "Each mode also runs as a symlink named distflow-<mode>.\n"
      "Run 'distflow <mode> --help' for a mode's flags.");

  std::vector<std::pair<CLI::App*, Runner>> runners;
  const Mode* const selected = selected_mode(args);
  for (const Mode& mode : kModes) {
    if (selected != nullptr && selected != &mode)
      continue;
    CLI::App* sub = app.add_subcommand(std::string(mode.name), std::string(mode.summary));
    runners.emplace_back(sub, mode.setup(*sub, global));
  }

  std::vector<const char*> argv;
  for (const auto& a : args)
    argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  setup_logging(global);
  for (auto& [sub, runner] : runners) {
    if (!sub->parsed())
      continue;
    if (auto error = pmd_port_env_error(); error && !port_given(*sub))
      return usage_error(*sub, *error);
    try {
      return runner();
    } catch (const std::exception& e) {
      if (g_json_logs) {
        spdlog::error("distflow {}: error: {}", sub->get_name(), e.what());
      } else {
        std::cerr << "distflow " << sub->get_name() << ": error: " << e.what() << "\n";
      }
      return 1;
    }
  }
  return 2;
}

}  // namespace

namespace {

/// DISTFLOW_PMD_PORT as a port; nullopt when unset or invalid.
std::optional<std::uint16_t> env_pmd_port(bool& invalid) {
  invalid = false;
  const char* env = std::getenv("DISTFLOW_PMD_PORT");
  if (env == nullptr || *env == '\0')
    return std::nullopt;
  const std::string_view text(env);
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || ptr != text.data() + text.size() || port > 65535) {
    invalid = true;
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(port);
}

}  // namespace

std::uint16_t default_pmd_port() {
  bool invalid = false;
  return env_pmd_port(invalid).value_or(kDefaultPmdPort);
}

std::optional<std::string> pmd_port_env_error() {
  bool invalid = false;
  env_pmd_port(invalid);
  if (!invalid)
    return std::nullopt;
  return "invalid DISTFLOW_PMD_PORT '" + std::string(std::getenv("DISTFLOW_PMD_PORT")) +
         "': expected a port number 0-65535 (or give --port)";
}

bool port_given(const CLI::App& mode) {
  bool uses_port = false;
  bool given = false;
  auto visit = [&](const CLI::App& app) {
    for (const char* name : {"--port", "--pmd-port"}) {
      if (const CLI::Option* option = app.get_option_no_throw(name)) {
        uses_port = true;
        given = given || option->count() > 0;
      }
    }
  };
  visit(mode);
  for (const CLI::App* sub : mode.get_subcommands())
    visit(*sub);
  // A mode that never talks to a PMD (bench mailbox) does not care.
  return given || !uses_port;
}

std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  constexpr long long kLimitMs = 366LL * 24 * 3600 * 1000;  // a year: ample, and no overflow
  long long value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || value < 0)
    return std::nullopt;
  const std::string_view unit(ptr, static_cast<std::size_t>(end - ptr));
  long long unit_ms = 0;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m" || unit == "min") {
    unit_ms = 60 * 1000;
  } else if (unit == "h") {
    unit_ms = 3600 * 1000;
  }
  if (unit_ms == 0 || value > kLimitMs / unit_ms)
    return std::nullopt;
  return std::chrono::milliseconds(value * unit_ms);
}

int usage_error(const CLI::App& app, const std::string& message) {
  if (g_json_logs) {
    spdlog::error("distflow {}: {}", app.get_name(), message);
  } else {
    std::cerr << "distflow " << app.get_name() << ": " << message << "\n";
  }
  return 2;
}

}  // namespace distflow::modes

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.empty())
    args.emplace_back("distflow");
  return distflow::modes::real_main(std::move(args));
}
