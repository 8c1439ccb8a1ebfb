// `distflow pmd`: runs the port mapper daemon, or (with a subcommand) administers one.

#include <cstdlib>
#include <iostream>
#include <optional>
#include <unistd.h>
#include <vector>

#include "cluster_service.hpp"
#include "errors.hpp"
#include "modes.hpp"
#include "pmd_server.hpp"
#include "systemd.hpp"

namespace distflow::modes {
namespace {

struct PmdFlags {
  PmdConfig config;
  std::string ttl = "15s";
  std::string auto_shutdown = "0s";
  std::string stall_timeout = "30s";
  std::vector<std::string> binds{"127.0.0.1"};
  SecurityFlags security;
  std::string metrics;
  // --cluster (issue 15)
  std::string cluster, cluster_name = "default", cluster_ttl = "10s";
  std::string cluster_ca, cluster_cert, cluster_key, cluster_user;
};

/// --cluster* into the agent's factory (PmdConfig::cluster); 0, or the usage error's code.
int cluster_config(CLI::App& app, const PmdFlags& flags, PmdConfig& config) {
  if (flags.cluster.empty())
    return 0;
  ClusterServiceOptions options;
  try {
    parse_etcd_url(flags.cluster, options.etcd);
  } catch (const Error& e) {
    return usage_error(app, std::string("--cluster: ") + e.what());
  }
  auto ttl = parse_duration(flags.cluster_ttl);
  if (!ttl || *ttl < std::chrono::seconds(2)) {
    return usage_error(app, "invalid --cluster-ttl '" + flags.cluster_ttl +
                                "': expected at least 2s (etcd leases count whole seconds)");
  }
  if (flags.cluster_name.empty() || flags.cluster_name.size() > 64 ||
      flags.cluster_name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789_.-") != std::string::npos) {
    return usage_error(
        app, "invalid --cluster-name '" + flags.cluster_name + "': expected [A-Za-z0-9_.-]{1,64}");
  }
  options.cluster.name = flags.cluster_name;
  options.cluster.ttl = *ttl;
  options.cluster.retry_max =
      std::min<std::chrono::milliseconds>(options.cluster.retry_max, *ttl / 3);
  options.etcd.ca_file = flags.cluster_ca;
  options.etcd.cert_file = flags.cluster_cert;
  options.etcd.key_file = flags.cluster_key;
  if ((options.etcd.cert_file.empty()) != (options.etcd.key_file.empty()))
    return usage_error(app, "--cluster-cert and --cluster-key go together");
  if (!flags.cluster_user.empty()) {
    const auto colon = flags.cluster_user.find(':');
    options.etcd.user = flags.cluster_user.substr(0, colon);
    if (colon != std::string::npos) {
      options.etcd.password = flags.cluster_user.substr(colon + 1);
    } else if (const char* password = std::getenv("DISTFLOW_CLUSTER_PASSWORD")) {
      options.etcd.password = password;
    }
  }
  config.cluster_name = flags.cluster_name;
  config.cluster_etcd = flags.cluster;
  config.cluster = cluster_service_factory(std::move(options));
  return 0;
}

}  // namespace

Runner setup_pmd(CLI::App& app, const GlobalOptions&) {
  auto flags = std::make_shared<PmdFlags>();
  PmdConfig& config = flags->config;
  config.port = default_pmd_port();
  app.require_subcommand(0, 1);
  app.add_option("-p,--port", config.port,
                 "TCP port (default: $DISTFLOW_PMD_PORT, else 4369; 0 picks a free port)")
      ->capture_default_str();
  app.add_option("--bind", flags->binds,
                 "address to listen on, repeatable (loopback unless told otherwise; beyond it "
                 "needs --cookie-file, --tls-* or --insecure)")
      ->capture_default_str()
      ->allow_extra_args(false);
  app.add_option("--ttl", flags->ttl,
                 "drop a node that heartbeats without announcing its interval (the TypeScript "
                 "original, every 5 s) once it is silent this long (e.g. 15s, 500ms; 0s: "
                 "never expire any node)")
      ->capture_default_str();
  app.add_option("--missed-heartbeats", config.missed_heartbeats,
                 "drop a node that announced its heartbeat interval (distflow's: 500 ms) after "
                 "this many intervals without one, counted from its registration")
      ->capture_default_str()
      ->check(CLI::Range(2u, 1000u));
  app.add_option("--auto-shutdown", flags->auto_shutdown,
                 "exit once no node has been registered for this long, e.g. 30s (0s: never); "
                 "set by auto-start, it also makes a daemon that finds its port taken exit 0 "
                 "quietly")
      ->capture_default_str();
  app.add_option("--max-frame", config.max_frame_bytes,
                 "largest request frame accepted, in bytes (larger: error, then close)")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-connections", config.max_connections,
                 "connections served at once; more are closed on accept")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-write-queue", config.max_write_queue_bytes,
                 "bytes queued for one connection before it is dropped as a slow reader")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--stall-timeout", flags->stall_timeout,
                 "close a connection that makes no progress this long: stopped in the middle "
                 "of a frame, or not reading its replies (0s: never)")
      ->capture_default_str();
  add_security_flags(app, flags->security, true);
  add_metrics_flag(app, flags->metrics);
  app.add_option("--cluster", flags->cluster,
                 "share the registry with the other PMDs of a cluster through etcd: "
                 "etcd://h1:2379,h2:2379 (etcds:// for TLS); aliases become unique and "
                 "resolvable across hosts")
      ->envname("DISTFLOW_CLUSTER");
  app.add_option("--cluster-name", flags->cluster_name,
                 "the cluster's name (its etcd keys: distflow/NAME/nodes/ALIAS)")
      ->capture_default_str();
  app.add_option("--cluster-ttl", flags->cluster_ttl,
                 "this PMD's etcd lease: when the whole PMD dies, its nodes leave the other "
                 "hosts' views this long after")
      ->capture_default_str();
  app.add_option("--cluster-ca", flags->cluster_ca, "PEM CA that signed etcd's certificate")
      ->check(CLI::ExistingFile);
  app.add_option("--cluster-cert", flags->cluster_cert,
                 "PEM client certificate for etcd (with --cluster-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--cluster-key", flags->cluster_key, "PEM key of --cluster-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--cluster-user", flags->cluster_user,
                 "etcd user, USER[:PASSWORD] (else the password from $DISTFLOW_CLUSTER_PASSWORD)");
  auto admin = add_pmd_admin(app, std::shared_ptr<const SecurityFlags>(flags, &flags->security));
  return [admin, flags, &app]() -> int {
    if (auto runner = admin())
      return runner();
    auto ttl = parse_duration(flags->ttl);
    if (!ttl)
      return usage_error(app, "invalid --ttl '" + flags->ttl +
                                  "': expected e.g. 2s or 500ms (ms, s, m, h; at most 366 days)");
    auto auto_shutdown = parse_duration(flags->auto_shutdown);
    if (!auto_shutdown) {
      return usage_error(app, "invalid --auto-shutdown '" + flags->auto_shutdown +
                                  "': expected e.g. 30s or 500ms (ms, s, m, h; at most 366 days)");
    }
    auto stall_timeout = parse_duration(flags->stall_timeout);
    if (!stall_timeout) {
      return usage_error(app, "invalid --stall-timeout '" + flags->stall_timeout +
                                  "': expected e.g. 30s or 500ms (ms, s, m, h; at most 366 days)");
    }
    if (flags->config.max_frame_bytes < 16 || flags->config.max_frame_bytes > (1u << 30)) {
      return usage_error(app, "invalid --max-frame: expected 16 bytes to 1 GiB");
    }
    PmdConfig run_config = flags->config;
    if (int code = parse_listen_hosts(app, flags->binds, "--bind", run_config.binds))
      return code;
    run_config.bind = run_config.binds.front();
    run_config.ttl = *ttl;
    run_config.auto_shutdown = *auto_shutdown;
    run_config.stall_timeout = *stall_timeout;
    // An auto-started daemon that loses the bind race steps aside: the winner serves.
    run_config.quiet_if_port_in_use = run_config.auto_shutdown.count() > 0;
    run_config.listen_fd =
        systemd_listen_fd(std::getenv("LISTEN_PID"), std::getenv("LISTEN_FDS"), ::getpid());
    // A socket from systemd is where its unit says: --bind does not apply.
    const auto exposed = run_config.listen_fd < 0 ? run_config.binds : std::vector<std::string>{};
    if (int code = load_security(app, flags->security, run_config.security, exposed, "--bind"))
      return code;
    if (int code = parse_metrics_flag(app, flags->metrics, run_config.security, run_config.metrics))
      return code;
    if (int code = cluster_config(app, *flags, run_config))
      return code;
    run_pmd(run_config, [&run_config](std::uint16_t port) {
      const bool v6 = run_config.bind.find(':') != std::string::npos;
      std::cout << (v6 ? "[" + run_config.bind + "]" : run_config.bind) << ":" << port << std::endl;
    });
    return 0;
  };
}

}  // namespace distflow::modes
