// The security flags of every connecting mode, end to end: --cookie-file (and
// DISTFLOW_COOKIE_FILE) loaded at start, bad files and incomplete TLS as usage errors,
// the exposure rule for pmd --bind and node --listen, node --listen-port ranges.

#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "netns.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

/// Cookie files in a temp dir: `good` (0600), `open` (0644), `empty` (0600).
struct Cookies {
  std::filesystem::path dir;
  std::string good, open, empty;
  Cookies() {
    dir =
        std::filesystem::temp_directory_path() / ("distflow-cookies-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    good = write("good", "s3cret\n", 0600);
    open = write("open", "s3cret\n", 0644);
    empty = write("empty", "", 0600);
  }
  ~Cookies() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::string write(const std::string& name, const std::string& text, mode_t mode) {
    const std::string path = (dir / name).string();
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
};

/// Every connecting mode, as a command that would otherwise try to connect.
std::vector<std::vector<std::string>> connecting_modes(const std::string& port) {
  const std::string bin = distflow_binary();
  return {{bin, "pmd", "--port", "0"},          {bin, "pmd", "status", "--port", port},
          {bin, "pmd", "list", "--port", port}, {bin, "pmd", "resolve", "x", "--port", port},
          {bin, "pmd", "kill", "--port", port}, {bin, "node", "--port", port, "--no-auto-pmd"},
          {bin, "send", "x", "{}", "-p", port}, {bin, "watch", "--port", port}};
}

std::vector<std::string> with(std::vector<std::string> argv, const std::vector<std::string>& more) {
  argv.insert(argv.end(), more.begin(), more.end());
  return argv;
}

}  // namespace

TEST_CASE("modes_security: a cookie file open to others is refused by every mode",
          "[modes_security]") {
  Cookies cookies;
  const std::string too_open = "permissions 0644 for '" + cookies.open +
                               "' are too open: it must not be accessible by group or others "
                               "(chmod 600 " +
                               cookies.open + ")";
  const std::string port = std::to_string(free_port());
  for (const auto& argv : connecting_modes(port)) {
    INFO(argv[1] << " " << argv[2]);
    const RunResult flag = run(with(argv, {"--cookie-file", cookies.open}));
    CHECK(flag.code == 2);
    CHECK(contains(flag.err, "distflow " + argv[1] + ": " + too_open));
    const RunResult env = run(argv, {{"DISTFLOW_COOKIE_FILE", cookies.open}});
    CHECK(env.code == 2);
    CHECK(contains(env.err, too_open));
  }
  // Given to `pmd` itself, it applies to the admin subcommand too.
  const RunResult parent = run({distflow_binary(), "pmd", "--cookie-file", cookies.open, "list"});
  CHECK(parent.code == 2);
  CHECK(contains(parent.err, too_open));
}

TEST_CASE("modes_security: missing or empty cookie files and incomplete TLS are usage errors",
          "[modes_security]") {
  Cookies cookies;
  TestPki pki;
  const auto files = pki.issue("node");
  const std::string port = std::to_string(free_port());
  for (const auto& argv : connecting_modes(port)) {
    INFO(argv[1] << " " << argv[2]);
    const RunResult missing = run(with(argv, {"--cookie-file", cookies.dir.string() + "/none"}));
    CHECK(missing.code == 2);
    CHECK(contains(missing.err, "cannot read cookie file '" + cookies.dir.string() +
                                    "/none': No such file or directory"));
    const RunResult empty = run(with(argv, {"--cookie-file", cookies.empty}));
    CHECK(empty.code == 2);
    CHECK(contains(empty.err, "cookie file '" + cookies.empty + "' is empty"));
    const RunResult partial = run(with(argv, {"--tls-cert", files.cert}));
    CHECK(partial.code == 2);
    CHECK(contains(partial.err, "TLS needs --tls-cert, --tls-key and --tls-ca together"));
    const RunResult unreadable = run(
        with(argv, {"--tls-cert", files.cert, "--tls-key", cookies.good, "--tls-ca", files.ca}));
    CHECK(unreadable.code == 2);
    CHECK(contains(unreadable.err, "cannot load TLS key '" + cookies.good + "'"));
  }
}

TEST_CASE("modes_security: beyond loopback needs a cookie, TLS or --insecure", "[modes_security]") {
  const std::string bin = distflow_binary();
  const RunResult pmd = run({bin, "pmd", "--bind", "10.203.0.1", "--port", "0"});
  CHECK(pmd.code == 2);
  CHECK(contains(pmd.err,
                 "distflow pmd: refusing to listen on 10.203.0.1 (--bind) without "
                 "authentication: any host that can reach it could connect; give --cookie-file "
                 "FILE (a shared secret, chmod 600) and/or --tls-cert FILE --tls-key FILE "
                 "--tls-ca FILE, or --insecure to listen unauthenticated anyway"));
  const RunResult pmd2 = run({bin, "pmd", "--bind", "127.0.0.1", "--bind", "[::]", "--port", "0"});
  CHECK(pmd2.code == 2);
  CHECK(contains(pmd2.err, "refusing to listen on [::] (--bind)"));
  const RunResult node =
      run({bin, "node", "--listen", "10.203.0.1", "--no-auto-pmd", "--port", "1"});
  CHECK(node.code == 2);
  CHECK(contains(node.err, "distflow node: refusing to listen on 10.203.0.1 (--listen)"));
  for (const char* bad : {"10.203.0.1:80", "[::1]:4369", "[::1", "a b"}) {
    INFO(bad);
    const RunResult r = run({bin, "pmd", "--bind", bad, "--port", "0"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "distflow pmd: invalid --bind '" + std::string(bad) + "'"));
  }

  // On a simulated host, the same PMD starts with a cookie (and says nothing of it).
  TestHosts hosts(1);
  if (!hosts.isolated())
    return;
  Cookies cookies;
  auto daemon = hosts.start(
      0, {bin, "pmd", "--bind", hosts.address(0), "--port", "0", "--cookie-file", cookies.good});
  const auto line = daemon->read_line(10s);
  INFO(daemon->stderr_text());
  REQUIRE(line);
  CHECK(line->starts_with(hosts.address(0) + ":"));
  CHECK_FALSE(contains(daemon->stderr_text(), "--insecure"));
}

TEST_CASE("modes_security: valid flags are accepted by every mode", "[modes_security]") {
  Cookies cookies;
  TestPki pki;
  const auto files = pki.issue("node");
  const std::vector<std::string> security{"--cookie-file", cookies.good, "--tls-cert", files.cert,
                                          "--tls-key",     files.key,    "--tls-ca",   files.ca};
  // TODO(#12): until the runtime uses them, both ends talk plain TCP.
  PmdProcess pmd(with({"--bind", "127.0.0.1", "--bind", "127.0.0.2", "--insecure"}, security));
  const std::string bin = distflow_binary();
  const RunResult list = run(with({bin, "pmd", "list", "--port", pmd.port_str()}, security));
  INFO(list.err);
  CHECK(list.code == 0);
  CHECK(contains(list.out, "Registered nodes: 0"));
  const RunResult env = run({bin, "pmd", "status", "--port", pmd.port_str()},
                            {{"DISTFLOW_COOKIE_FILE", cookies.good}});
  CHECK(env.code == 0);
  const RunResult send =
      run(with({bin, "send", "nobody", "{}", "--port", pmd.port_str()}, security));
  CHECK(send.code == 1);  // got as far as asking the PMD
  CHECK(contains(send.err, "unknown target 'nobody'"));
  const RunResult watch =
      run(with({bin, "watch", "nobody", "--until-leave", "--port", pmd.port_str()}, security));
  CHECK(watch.code == 0);
  const RunResult node = run(with({bin, "node", "--alias", "secure", "--no-auto-pmd", "--port",
                                   pmd.port_str(), "--listen-port", "0"},
                                  security),
                             {}, 20s, "");
  INFO(node.err);
  CHECK(node.code == 0);
}

TEST_CASE("modes_security: node --listen-port takes a port or a range", "[modes_security]") {
  const std::string bin = distflow_binary();
  for (const char* bad : {"9199-9100", "0-10", "x", "70000", "9100-"}) {
    INFO(bad);
    const RunResult r = run({bin, "node", "--listen-port", bad, "--no-auto-pmd", "--port", "1"});
    CHECK(r.code == 2);
    CHECK(contains(r.err, "distflow node: invalid --listen-port '" + std::string(bad) + "': "));
    CHECK(contains(r.err, "expected PORT or FIRST-LAST, e.g. 9100-9199"));
  }
}

TEST_CASE("modes_security: --help shows the security flags", "[modes_security]") {
  const std::string bin = distflow_binary();
  const std::vector<std::vector<std::string>> modes{{"pmd"},  {"pmd", "list"}, {"pmd", "kill"},
                                                    {"node"}, {"send"},        {"watch"}};
  for (const auto& mode : modes) {
    INFO(mode.back());
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), mode.begin(), mode.end());
    argv.push_back("--help");
    const RunResult help = run(argv);
    CHECK(help.code == 0);
    for (const char* flag : {"--cookie-file", "--tls-cert", "--tls-key", "--tls-ca"})
      CHECK(contains(help.out, flag));
    const bool listens = mode.size() == 1 && (mode[0] == "pmd" || mode[0] == "node");
    CHECK(contains(help.out, "--insecure") == listens);
  }
}

}  // namespace distflow::test
