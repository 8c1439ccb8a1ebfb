#pragma once

// Process-level helpers: the running executable, detached re-exec, and the PMD
// auto-start built on them.

#include <chrono>
#include <string>
#include <vector>

#include "pmd_client.hpp"

namespace distflow {

/// Absolute path of the running executable (/proc/self/exe).
std::string self_executable();

/// Starts `argv` detached from the caller: own session, stdin from /dev/null,
/// stdout and stderr appended to `log_path`. Returns the child's pid.
int spawn_detached(const std::vector<std::string>& argv, const std::string& log_path);

/// Ensures a PMD answers on `endpoint`. If none does, runs
/// `<exe> pmd --port P --auto-shutdown 30s` detached (exe defaults to
/// self_executable()), then polls until it answers or `deadline` passes
/// (throws distflow::Error). Safe when many processes race: the port is the lock.
void ensure_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds deadline,
                const std::string& exe = {});

/// A waitpid() status as a shell reports it: the exit code, or 128 + the signal.
/// Anything else (stopped, continued) is 1.
int exit_code_of(int wait_status);

/// Where an auto-started PMD logs: $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp.
std::string pmd_log_path(std::uint16_t port);

}  // namespace distflow
