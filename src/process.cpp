#include "process.hpp"

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "subprocess.hpp"

namespace distflow {
namespace {

bool is_local_host(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.starts_with("127.");
}

}  // namespace

std::string pmd_log_path(std::uint16_t port) {
  // The header's contract: the user's runtime dir, else the temp dir.
  const char* dir = std::getenv("XDG_RUNTIME_DIR");
  if (dir == nullptr || *dir == '\0' || ::access(dir, W_OK) != 0)
    dir = std::getenv("TMPDIR");
  if (dir == nullptr || *dir == '\0' || ::access(dir, W_OK) != 0)
    dir = "/tmp";
  return std::string(dir) + "/distflow-pmd-" + std::to_string(port) + ".log";
}

void ensure_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds deadline,
                const std::string& exe) {
  const auto probe_timeout = std::chrono::milliseconds(1000);
  std::string why;
  switch (probe_pmd(endpoint, probe_timeout, &why)) {
    case PmdProbe::answers:
      return;
    case PmdProbe::not_a_pmd:
      throw Error(why);
    case PmdProbe::refused:
    case PmdProbe::unreachable:
      break;
  }
  if (!is_local_host(endpoint.host)) {
    throw Error(why + " (not auto-starting a PMD on a remote host)");
  }
  if (endpoint.port == 0)
    throw Error("cannot auto-start a PMD on port 0");
  const std::string binary = exe.empty() ? self_executable() : exe;
  const std::string log = pmd_log_path(endpoint.port);
  SpawnOptions daemon;
  daemon.argv = {binary, "pmd", "--port", std::to_string(endpoint.port), "--auto-shutdown", "30s"};
  daemon.in = Stdio::null;
  daemon.out = Stdio::log_file;
  daemon.err = Stdio::log_file;
  daemon.log_file = log;
  const int pid = spawn_detached(daemon);
  spdlog::info("auto-starting a PMD on {} pid={} log={}", endpoint.to_string(), pid, log);

  const auto until = std::chrono::steady_clock::now() + deadline;
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    const auto result =
        probe_pmd(endpoint, std::clamp(left, std::chrono::milliseconds(50), probe_timeout), &why);
    if (result == PmdProbe::answers)
      return;
    if (result == PmdProbe::not_a_pmd)
      throw Error(why);
    if (std::chrono::steady_clock::now() + pause >= until) {
      throw Error("auto-started PMD did not answer on " + endpoint.to_string() + " within " +
                  std::to_string(deadline.count()) + " ms (" + why + "; see " + log + ")");
    }
    std::this_thread::sleep_for(pause);  // polling for readiness, bounded by the deadline
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

}  // namespace distflow
