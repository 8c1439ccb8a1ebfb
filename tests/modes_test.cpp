// End-to-end tests of the dispatch table in modes/main.cpp: help, version,
// unknown modes, exit codes, and argv[0] (symlink) dispatch.

#include <cstdlib>
#include <filesystem>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "support.hpp"

namespace distflow::test {
namespace {

const std::vector<std::string> kModeNames{"pmd", "node", "send", "call", "stats", "watch", "bench"};

}  // namespace

TEST_CASE("modes: --help lists every mode with a summary and exits 0", "[modes]") {
  const auto r = run({distflow_binary(), "--help"});
  CHECK(r.code == 0);
  for (const auto& mode : kModeNames) {
    INFO(mode);
    CHECK(r.out.find("  " + mode + " ") != std::string::npos);
  }
}

TEST_CASE("modes: --help gives every mode one line, the long texts stay in the mode's help",
          "[modes]") {
  const auto r = run({distflow_binary(), "--help"});
  REQUIRE(r.code == 0);
  const std::string list = r.out.substr(r.out.find("Subcommands:"));
  std::size_t lines = 0;
  for (std::size_t at = 0; (at = list.find('\n', at)) != std::string::npos; ++at) {
    const std::string rest = list.substr(at + 1, list.find('\n', at + 1) - at - 1);
    if (rest.rfind("  ", 0) == 0)
      ++lines;  // an indented line of the listing
  }
  CHECK(lines == kModeNames.size());
  CHECK(r.out.find("NDJSON line on stdout") == std::string::npos);  // node's long text
  CHECK(run({distflow_binary(), "node", "--help"}).out.find("NDJSON line on stdout") !=
        std::string::npos);
}

TEST_CASE("modes: bad input a careless user gives is a usage error naming it (exit 2)", "[modes]") {
  // A typo in DISTFLOW_PMD_PORT never falls back to epmd's port 4369.
  for (const std::string bad : {"abc", "99999", "-1"}) {
    INFO(bad);
    const auto r = run({distflow_binary(), "watch"}, {{"DISTFLOW_PMD_PORT", bad}});
    CHECK(r.code == 2);
    CHECK(r.err.find("invalid DISTFLOW_PMD_PORT '" + bad + "'") != std::string::npos);
    // ...also for a node, which would otherwise auto-start a PMD there.
    CHECK(run({distflow_binary(), "node", "--no-auto-pmd"}, {{"DISTFLOW_PMD_PORT", bad}}).code ==
          2);
  }
  const auto empty_body = run({distflow_binary(), "send", "--port", "1", "x", ""});
  CHECK(empty_body.code == 2);
  CHECK(empty_body.err.find("empty BODY") != std::string::npos);
  const auto empty_alias = run({distflow_binary(), "node", "--port", "1", "--alias", ""});
  CHECK(empty_alias.code == 2);
  CHECK(empty_alias.err.find("invalid --alias '': must not be empty") != std::string::npos);
  const auto bad_utf8 = run({distflow_binary(), "node", "--port", "1", "--alias", "a\xff"});
  CHECK(bad_utf8.code == 2);
  CHECK(bad_utf8.err.find("not valid UTF-8") != std::string::npos);
  const auto control = run({distflow_binary(), "node", "--port", "1", "--alias", "a\x1b[2J"});
  CHECK(control.code == 2);
  CHECK(control.err.find("control character") != std::string::npos);
  CHECK(run({distflow_binary(), "send", "--port", "1", "--from", "", "x", "{}"}).code == 2);
  CHECK(run({distflow_binary(), "node", "--port", "1", "--max-line", "0"}).code == 2);
  CHECK(run({distflow_binary(), "send", "--port", "1", "--max-line", "0", "x"}).code == 2);
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

  // "distflow-sendx" is not a mode name: a usage error that names it (issue 17 #11).
  const auto bogus = run({near_miss.string(), "--help"});
  CHECK(bogus.code == 2);
  CHECK(bogus.err.find("unknown mode 'sendx' (from the program name 'distflow-sendx')") !=
        std::string::npos);
  CHECK(bogus.err.find("did you mean 'send'?") != std::string::npos);
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
