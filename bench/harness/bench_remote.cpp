#include "bench_remote.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <memory>
#include <ostream>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_child.hpp"
#include "errors.hpp"
#include "sim_hosts.hpp"
#include "subprocess.hpp"
#include "throwaway_pki.hpp"

namespace distflow {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

constexpr milliseconds kStartTimeout{10000};
constexpr int kReceiverHost = 0;
constexpr int kSenderHost = 1;

enum class Security { plain, cookie, tls };
constexpr std::array kModes{Security::plain, Security::cookie, Security::tls};

const char* mode_name(Security mode) {
  switch (mode) {
    case Security::plain:
      return "plain";
    case Security::cookie:
      return "cookie";
    case Security::tls:
      return "TLS";
  }
  return "?";
}

/// A cookie nobody else has: 32 random bytes as hex, in a 0600 file.
std::string write_throwaway_cookie(const std::string& dir) {
  std::array<unsigned char, 32> random{};
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  if (!urandom.read(reinterpret_cast<char*>(random.data()), random.size()))
    throw Error("remote bench: cannot read /dev/urandom for a throwaway cookie");
  std::string hex;
  for (unsigned char byte : random) {
    constexpr char kDigits[] = "0123456789abcdef";
    hex += kDigits[byte >> 4];
    hex += kDigits[byte & 15];
  }
  const std::string path = dir + "/cookie";
  {
    std::ofstream file(path);
    ::chmod(path.c_str(), 0600);
    file << hex << "\n";
    if (!file)
      throw Error("remote bench: cannot write '" + path + "'");
  }
  return path;
}

/// Everything two hosts need for each security mode: the flags of a process on a
/// host, and a PMD per mode on every host.
class RemoteSetup {
 public:
  RemoteSetup(const BenchCommon& common, const SimHosts& hosts)
      : common_(common),
        hosts_(hosts),
        // The keys and the cookie go even after a SIGKILL, one that comes while
        // openssl is still making the CA too.
        pki_("distflow-bench-ca", [&hosts](const std::string& dir) { hosts.remove_on_exit(dir); }) {
    cookie_ = write_throwaway_cookie(pki_.dir());
    for (int h = 0; h < hosts_.count(); ++h)
      certs_.push_back(pki_.issue("host-" + std::to_string(h), "IP:" + hosts_.address(h)));
    for (Security mode : kModes) {
      for (int h = 0; h < hosts_.count(); ++h)
        start_pmd(mode, h);
    }
  }

  /// Where host `h`'s processes find their PMD: its loopback inside a namespace.
  std::string local_pmd(int h) const { return hosts_.isolated() ? "127.0.0.1" : hosts_.address(h); }
  std::uint16_t pmd_port(Security mode, int h) const {
    return ports_[static_cast<std::size_t>(mode)][static_cast<std::size_t>(h)];
  }

  std::vector<std::string> security_flags(Security mode, int h) const {
    switch (mode) {
      case Security::plain:
        return {"--insecure"};
      case Security::cookie:
        return {"--cookie-file", cookie_};
      case Security::tls: {
        const auto& files = certs_[static_cast<std::size_t>(h)];
        return {"--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", files.ca};
      }
    }
    return {};
  }

  std::string executable() const {
    return common_.executable.empty() ? self_executable() : common_.executable;
  }

  /// `bench worker` on host `h` for `mode`, listening on the host's address.
  std::vector<std::string> worker(Security mode, int h, std::string_view role,
                                  std::initializer_list<std::string> extra) const {
    std::vector<std::string> argv{executable(),
                                  "--log-level",
                                  "warn",
                                  "bench",
                                  "worker",
                                  "--role",
                                  std::string(role),
                                  "--pmd-host",
                                  local_pmd(h),
                                  "--pmd-port",
                                  std::to_string(pmd_port(mode, h)),
                                  "--listen",
                                  hosts_.address(h),
                                  "--timeout",
                                  std::to_string(common_.timeout.count())};
    argv.insert(argv.end(), extra);
    const auto security = security_flags(mode, h);
    argv.insert(argv.end(), security.begin(), security.end());
    return hosts_.command(h, argv);
  }

 private:
  void start_pmd(Security mode, int h) {
    const auto m = static_cast<std::size_t>(mode);
    // In a namespace any port is free (a network stack of its own); on the shared
    // loopback each PMD binds only its host's address, on a port the system picks.
    const std::uint16_t wanted =
        hosts_.isolated() ? static_cast<std::uint16_t>(24370 + static_cast<int>(m)) : 0;
    // Errors only: in plain mode it warns, rightly, at every start about --insecure.
    std::vector<std::string> argv{executable(), "--log-level", "error",
                                  "pmd",        "--port",      std::to_string(wanted)};
    if (hosts_.isolated())
      argv.insert(argv.end(), {"--bind", "127.0.0.1"});
    argv.insert(argv.end(), {"--bind", hosts_.address(h)});
    const auto security = security_flags(mode, h);
    argv.insert(argv.end(), security.begin(), security.end());
    pmds_.push_back(std::make_unique<BenchChild>(hosts_.command(h, argv)));
    const auto line = pmds_.back()->read_line(kStartTimeout);
    const auto colon = line ? line->rfind(':') : std::string::npos;
    unsigned port = 0;
    if (colon != std::string::npos)
      std::from_chars(line->data() + colon + 1, line->data() + line->size(), port);
    if (port == 0 || port > 65535) {
      throw Error("remote bench: the " + std::string(mode_name(mode)) + " pmd on " +
                  hosts_.address(h) + " did not start (its error is above; first line '" +
                  line.value_or("<nothing>") + "')");
    }
    ports_[m].resize(static_cast<std::size_t>(hosts_.count()));
    ports_[m][static_cast<std::size_t>(h)] = static_cast<std::uint16_t>(port);
  }

  const BenchCommon& common_;
  const SimHosts& hosts_;
  ThrowawayPki pki_;  // first made, last removed: the processes below use its files
  std::string cookie_;
  std::vector<ThrowawayPki::Files> certs_;
  std::array<std::vector<std::uint16_t>, kModes.size()> ports_;
  std::vector<std::unique_ptr<BenchChild>> pmds_;
};

std::string expect_ready(BenchChild& child, std::string_view what) {
  const auto line = child.read_line(kStartTimeout);
  if (!line || !line->starts_with("ready")) {
    std::string why = line ? "'" + *line + "'" : "no output within 10 s";
    if (const auto code = child.wait(milliseconds(200)); code && !line)
      why = "exited with code " + std::to_string(*code) + " (its error is above)";
    throw Error("remote bench: " + std::string(what) + " (pid " + std::to_string(child.pid()) +
                ") did not start: " + why);
  }
  return line->size() > 6 ? line->substr(6) : std::string();
}

Json expect_json(BenchChild& child, std::string_view what, std::chrono::seconds timeout) {
  const auto line = child.read_line(timeout + std::chrono::seconds(10));
  Json result = line ? Json::parse(*line, nullptr, false) : Json();
  if (!line || result.is_discarded() || !result.is_object()) {
    throw Error("remote bench: " + std::string(what) + " (pid " + std::to_string(child.pid()) +
                ") gave no result" + (line ? ": '" + *line + "'" : ""));
  }
  return result;
}

struct RemoteFlow {
  RateSample received;
  std::uint64_t lost = 0, reordered = 0, failures = 0;
};

/// One receiver on host A, one sender on host B to `alias@A:pmdport`.
RemoteFlow remote_flow(const ThroughputBenchConfig& config, const RemoteSetup& setup,
                       const SimHosts& hosts, Security mode, unsigned rep) {
  const std::string tag = std::string(mode == Security::tls ? "tls" : mode_name(mode)) + "-" +
                          std::to_string(::getpid()) + "-" + std::to_string(rep);
  const std::string rx_alias = "bench-remote-rx-" + tag;
  BenchChild rx(setup.worker(mode, kReceiverHost, "rx",
                             {"--alias", rx_alias, "--msgs", std::to_string(config.msgs)}));
  expect_ready(rx, std::string(mode_name(mode)) + " receiver");
  const std::string target = rx_alias + "@" + hosts.address(kReceiverHost) + ":" +
                             std::to_string(setup.pmd_port(mode, kReceiverHost));
  BenchChild tx(
      setup.worker(mode, kSenderHost, "tx",
                   {"--alias", "bench-remote-tx-" + tag, "--msgs", std::to_string(config.msgs),
                    "--size", std::to_string(config.size), "--id", "0", "--target", target}));
  expect_ready(tx, std::string(mode_name(mode)) + " sender");
  const Json sent = expect_json(tx, "sender", config.common.timeout);
  const Json got = expect_json(rx, "receiver", config.common.timeout);
  tx.stop();
  rx.stop();
  const auto start = sent.value("start_ns", std::uint64_t{0});
  const auto last = got.value("last_ns", std::uint64_t{0});
  RemoteFlow flow;
  flow.received = {got.value("received", std::uint64_t{0}),
                   last > start ? static_cast<double>(last - start) / 1e9 : 0};
  flow.lost = got.value("lost", std::uint64_t{0});
  flow.reordered = got.value("reordered", std::uint64_t{0});
  flow.failures = sent.value("failures", std::uint64_t{0});
  return flow;
}

}  // namespace

BenchReport run_remote_throughput_bench(const ThroughputBenchConfig& config, std::ostream& out,
                                        std::ostream& err) {
  if (config.via_cli || !config.target.empty() || config.senders > 1 || config.receivers > 1)
    throw Error("throughput bench: --remote is one sender to one receiver of its own");
  if (config.common.reps == 0 || config.msgs == 0)
    throw Error("throughput bench: need --reps >= 1 and --msgs >= 1");
  // Declared first, removed last: every process below runs inside these hosts.
  const SimHosts hosts(2, true);
  BenchReport report;
  report.bench = "throughput";
  report.params = {{"msgs", format_count(static_cast<double>(config.msgs))},
                   {"size", std::to_string(config.size) + " B"},
                   {"path", "node (host B) -> alias@hostA:pmdport -> node (host A)"}};
  report.params.emplace_back(
      "hosts",
      hosts.address(kSenderHost) + " -> " + hosts.address(kReceiverHost) +
          (hosts.isolated()
               ? " (network namespaces on a bridge)"
               : " (loopback: namespaces unavailable: " + hosts.unavailable_reason() + ")"));
  report.params.emplace_back("security", "plain (--insecure), cookie, TLS 1.3; order alternates");
  report.params.emplace_back("reps", std::to_string(config.common.reps));
  if (!config.common.json) {
    write_banner(out, report);
    out.flush();
  }
  RemoteSetup setup(config.common, hosts);
  hosts.verify();  // the namespaces and their addresses, again, right before traffic

  std::vector<RateSeries> series;
  std::vector<RemoteFlow> totals(kModes.size());
  for (Security mode : kModes)
    series.push_back(
        {std::string("node->node across hosts, ") + mode_name(mode), config.size, {}, ""});
  std::vector<Security> order(kModes.begin(), kModes.end());
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "remote rep " + std::to_string(rep + 1));
    for (std::size_t i = 0; i < order.size(); ++i) {
      const Security mode = order[i];
      const RemoteFlow flow = remote_flow(config, setup, hosts, mode, rep);
      const auto m = static_cast<std::size_t>(mode);
      series[m].reps.push_back(flow.received);
      totals[m].lost += flow.lost;
      totals[m].reordered += flow.reordered;
      totals[m].failures += flow.failures;
      progress.update(rep * order.size() + i + 1, config.common.reps * order.size());
    }
    std::reverse(order.begin(), order.end());  // no mode always goes first
  }
  for (Security mode : kModes) {
    const auto m = static_cast<std::size_t>(mode);
    series[m].note = "lost=" + std::to_string(totals[m].lost) +
                     " reordered=" + std::to_string(totals[m].reordered) +
                     " send_failures=" + std::to_string(totals[m].failures);
    report.rates.push_back(series[m]);
  }
  const RateSeries& plain = series[static_cast<std::size_t>(Security::plain)];
  report.figures.push_back({"ratio cookie/plain (median of per-rep ratios; target >= 0.95)",
                            median_ratio(series[static_cast<std::size_t>(Security::cookie)], plain),
                            "x"});
  report.figures.push_back({"ratio TLS/plain (median of per-rep ratios; target >= 0.7)",
                            median_ratio(series[static_cast<std::size_t>(Security::tls)], plain),
                            "x"});
  if (config.common.json) {
    write_json(out, report);
  } else {
    write_text(out, report);
  }
  if (!config.common.csv_path.empty()) {
    std::ofstream csv(config.common.csv_path);
    if (!csv)
      throw Error("cannot write csv file '" + config.common.csv_path + "'");
    write_csv(csv, report);
  }
  return report;
}

}  // namespace distflow
