// End-to-end tests of the dispatch table in modes/main.cpp: help, version,
// unknown modes, exit codes, and argv[0] (symlink) dispatch.

#include <cstdlib>
#include <filesystem>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "support.hpp"

namespace distflow::test {
namespace {

const std::vector<std::string> kModeNames{"pmd", "node", "send", "watch", "bench"};

}  // namespace

TEST_CASE("modes: --help lists every mode with a summary and exits 0", "[modes]") {
  const auto r = run({distflow_binary(), "--help"});
  CHECK(r.code == 0);
  for (const auto& mode : kModeNames) {
    INFO(mode);
    CHECK(r.out.find("  " + mode + " ") != std::string::npos);
  }
}

TEST_CASE("modes: every mode has its own --help", "[modes]") {
  for (const auto& mode : kModeNames) {
    INFO(mode);
    const auto r = run({distflow_binary(), mode, "--help"});
    CHECK(r.code == 0);
    CHECK(r.out.find("Usage:") != std::string::npos);
  }
}

TEST_CASE("modes: --version prints the version and exits 0", "[modes]") {
  const auto r = run({distflow_binary(), "--version"});
  CHECK(r.code == 0);
  CHECK(r.out.rfind("distflow ", 0) == 0);
}

TEST_CASE("modes: an unknown mode suggests the closest one and exits 2", "[modes]") {
  const auto r = run({distflow_binary(), "sned"});
  CHECK(r.code == 2);
  CHECK(r.err.find("unknown mode 'sned', did you mean 'send'?") != std::string::npos);

  const auto far = run({distflow_binary(), "frobnicate"});
  CHECK(far.code == 2);
  CHECK(far.err.find("unknown mode 'frobnicate'") != std::string::npos);
  CHECK(far.err.find("did you mean") == std::string::npos);
}

TEST_CASE("modes: no mode and bad flags are usage errors (exit 2)", "[modes]") {
  CHECK(run({distflow_binary()}).code == 2);
  CHECK(run({distflow_binary(), "--no-such-flag"}).code == 2);
  CHECK(run({distflow_binary(), "send", "--no-such-flag", "x"}).code == 2);
  CHECK(run({distflow_binary(), "--log-level", "loud", "watch"}).code == 2);
  // Durations as the pmd mode parses them (checked before anything starts).
  const auto stall = run({distflow_binary(), "node", "--stall-timeout", "5x"});
  CHECK(stall.code == 2);
  CHECK(stall.err.find("invalid --stall-timeout '5x'") != std::string::npos);
  CHECK(run({distflow_binary(), "node", "--help"}).out.find("--stall-timeout") !=
        std::string::npos);
  // A duration that would overflow is refused with the limit, not wrapped around.
  const auto huge = run({distflow_binary(), "pmd", "--port", "0", "--ttl", "1000000000000h"});
  CHECK(huge.code == 2);
  CHECK(huge.err.find("at most 366 days") != std::string::npos);
}

TEST_CASE("modes: the exact basename of argv[0] selects the mode", "[modes]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("distflow-links-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto link = dir / "distflow-send";
  const auto near_miss = dir / "distflow-sendx";
  std::filesystem::create_symlink(distflow_binary(), link);
  std::filesystem::create_symlink(distflow_binary(), near_miss);

  const auto r = run({link.string(), "--help"});
  CHECK(r.code == 0);
  CHECK(r.out.find("send") != std::string::npos);
  CHECK(r.out.find("Subcommands:") == std::string::npos);  // the mode's help, not the root's

  // "distflow-sendx" is not a mode name: it behaves as plain `distflow`.
  const auto plain = run({near_miss.string(), "--help"});
  CHECK(plain.code == 0);
  CHECK(plain.out.find("Subcommands:") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("support: writing to a child that has exited fails with EPIPE, not SIGPIPE",
          "[support]") {
  ChildProcess child({"/bin/sh", "-c", "exit 0"});
  REQUIRE(child.wait(std::chrono::seconds(10)) == 0);
  // More than a pipe holds, so the write cannot just sit in the buffer.
  const std::string bytes(1 << 20, 'x');
  CHECK_THROWS_WITH(child.write(bytes), Catch::Contains("Broken pipe"));
}

}  // namespace distflow::test
