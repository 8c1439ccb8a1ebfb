#pragma once

// The PMD auto-start: a detached `<exe> pmd` (subprocess.hpp) when none answers.

#include <chrono>
#include <cstdint>
#include <string>

#include "pmd_client.hpp"

namespace distflow {

/// Ensures a PMD answers on `endpoint`. If none does, runs
/// `<exe> pmd --port P --auto-shutdown 30s` detached (exe defaults to
/// self_executable()), then polls until it answers or `deadline` passes
/// (throws distflow::Error). Safe when many processes race: the port is the lock.
void ensure_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds deadline,
                const std::string& exe = {});

/// Where an auto-started PMD logs: $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp.
std::string pmd_log_path(std::uint16_t port);

}  // namespace distflow
