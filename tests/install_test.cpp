// What `cmake --install` and `cpack` make of this build (cmake/install.cmake,
// cmake/package.cmake): an install into a temporary prefix, a separate CMake
// project that finds it with find_package(distflow) and runs a node, the .deb
// packages' file lists, the systemd units, and `--version`. The tools run as child
// processes with deadlines; a test whose tool is missing says so and passes.
// With DISTFLOW_TEST_DPKG=1, as root, the packages are also installed and removed.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "support.hpp"

namespace distflow::test {
namespace {

namespace fs = std::filesystem;

/// A fresh directory under $TMPDIR, removed at the end of the test.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& what) {
    static int counter = 0;
    path = fs::temp_directory_path() / ("distflow-" + what + "-" + std::to_string(::getpid()) +
                                        "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return quoted + "'";
}

/// Runs a shell command line with stderr merged into stdout (so neither pipe fills).
RunResult shell(const std::string& command, std::chrono::milliseconds timeout = 60s) {
  return run({"/bin/sh", "-c", "exec 2>&1; " + command}, {}, timeout);
}

/// `name` found on $PATH, or "".
std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const fs::path candidate = fs::path(dir) / name;
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
  }
  return "";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool have_cmake() {
  return fs::exists(DISTFLOW_TEST_CMAKE);
}

/// `cmake --install` of this build into `prefix`.
void install_into(const fs::path& prefix) {
  const auto r =
      shell(quote(DISTFLOW_TEST_CMAKE) + " --install " + quote(DISTFLOW_TEST_BUILD_DIR) +
            " --config " + quote(DISTFLOW_TEST_CONFIG) + " --prefix " + quote(prefix.string()));
  INFO(r.out);
  REQUIRE(r.code == 0);
}

const std::vector<std::string> kModes{"pmd", "node", "send", "call", "stats", "watch", "bench"};

}  // namespace

TEST_CASE("install: --version prints version, git state, compiler and build type", "[install]") {
  const auto r = run({distflow_binary(), "--version"});
  CHECK(r.code == 0);
  const std::regex shape(R"(distflow (\d+\.\d+\.\d+) \(git ([^ ,]+), (g\+\+|clang\+\+|\S+) )"
                         R"((\d+(\.\d+)*), ([A-Za-z]+)\)\n)");
  std::smatch match;
  INFO(r.out);
  REQUIRE(std::regex_match(r.out, match, shape));
  CHECK(match[1] == DISTFLOW_VERSION);
  CHECK(match[6] == DISTFLOW_TEST_CONFIG);
  // The symlinked form and a mode's own --version say the same.
  CHECK(run({distflow_binary(), "pmd", "--version"}).out == r.out);
}

TEST_CASE("install: build_info.cmake describes a clone without tags, and a tree without .git",
          "[install]") {
  if (!have_cmake()) {
    SUCCEED("cmake not found at " DISTFLOW_TEST_CMAKE ": skipped");
    return;
  }
  ScratchDir dir("buildinfo");
  const auto generate = [&](const fs::path& source) {
    const fs::path output = dir.path / "build_info.cpp";
    const auto r = shell(quote(DISTFLOW_TEST_CMAKE) + " -DSOURCE_DIR=" + quote(source.string()) +
                         " -DOUTPUT=" + quote(output.string()) +
                         " '-DCOMPILER=g++ 12.2.0' -DBUILD_TYPE=Debug" + " -P " +
                         quote(std::string(DISTFLOW_SOURCE_DIR) + "/cmake/build_info.cmake"));
    INFO(r.out);
    CHECK(r.code == 0);
    return read_file(output);
  };
  const fs::path tarball = dir.path / "tarball";
  fs::create_directories(tarball);
  CHECK(generate(tarball).find(R"("git unknown, g++ 12.2.0, Debug")") != std::string::npos);

  const std::string git = find_program("git");
  if (git.empty()) {
    SUCCEED("git not found: the clone case is skipped");
    return;
  }
  const fs::path clone = dir.path / "clone";
  fs::create_directories(clone);
  std::ofstream(clone / "file") << "x\n";
  const auto init =
      shell("cd " + quote(clone.string()) + " && git init -q && git add file && " +
            "git -c user.name=t -c user.email=t@t commit -qm x && " + "git rev-parse --short HEAD");
  INFO(init.out);
  REQUIRE(init.code == 0);
  const std::string hash = init.out.substr(0, init.out.find('\n'));
  CHECK(generate(clone).find("\"git " + hash + ", g++ 12.2.0, Debug\"") != std::string::npos);
  std::ofstream(clone / "file") << "changed\n";
  CHECK(generate(clone).find("\"git " + hash + "-dirty, ") != std::string::npos);
}

TEST_CASE("install: cmake --install lays out the binary, links, public headers and units",
          "[install]") {
  if (!have_cmake()) {
    SUCCEED("cmake not found at " DISTFLOW_TEST_CMAKE ": skipped");
    return;
  }
  ScratchDir prefix("prefix");
  install_into(prefix.path);
  const fs::path& p = prefix.path;

  CHECK(fs::is_regular_file(p / "bin/distflow"));
  for (const auto& mode : kModes) {
    INFO(mode);
    const fs::path link = p / "bin" / ("distflow-" + mode);
    if (DISTFLOW_TEST_MODE_LINKS) {
      REQUIRE(fs::is_symlink(link));
      CHECK(fs::read_symlink(link) == "distflow");
    } else {
      CHECK_FALSE(fs::exists(link));
    }
    if (DISTFLOW_TEST_MAN_PAGES) {
      CHECK(fs::exists(p / "share/man/man1" / ("distflow-" + mode + ".1.gz")));
    }
  }
  if (DISTFLOW_TEST_MAN_PAGES) {
    CHECK(fs::exists(p / "share/man/man1/distflow.1.gz"));
  }
  if (DISTFLOW_TEST_MODE_LINKS) {
    const auto help = run({(p / "bin/distflow-send").string(), "--help"});
    CHECK(help.code == 0);
    CHECK(help.out.find("Usage: distflow send") != std::string::npos);
  }

  // Only the library API's headers, and none of them needs a third-party header.
  std::set<std::string> headers;
  for (const auto& entry : fs::directory_iterator(p / "include/distflow")) {
    headers.insert(entry.path().filename().string());
    const std::string text = read_file(entry.path());
    INFO(entry.path());
    CHECK_FALSE(
        std::regex_search(text, std::regex(R"(#\s*include\s*<(asio|spdlog|fmt|nlohmann|CLI))")));
  }
  CHECK(headers.count("node_runtime.hpp") == 1);
  CHECK(headers.count("errors.hpp") == 1);
  for (const char* internal : {"transport.hpp", "pmd_server.hpp", "registry.hpp", "sender.hpp",
                               "node_bridge.hpp", "systemd.hpp"}) {
    INFO(internal);
    CHECK(headers.count(internal) == 0);
  }
  CHECK(fs::exists(p / "share/bash-completion/completions/distflow"));
  CHECK(fs::exists(p / "share/zsh/vendor-completions/_distflow"));

  const std::string service = read_file(p / "lib/systemd/system/distflow-pmd.service");
  CHECK(service.find("\nExecStart=" + (p / "bin/distflow").string() + " pmd\n") !=
        std::string::npos);
  for (const char* setting :
       {"DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
        "PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes", "RuntimeDirectory=distflow"}) {
    CHECK(service.find(std::string("\n") + setting + "\n") != std::string::npos);
  }
  CHECK(read_file(p / "lib/systemd/system/distflow-pmd.socket")
            .find("\nListenStream=127.0.0.1:4369\n") != std::string::npos);
}

TEST_CASE("install: systemd-analyze verify accepts the installed units", "[install]") {
  const std::string analyze = find_program("systemd-analyze");
  if (!have_cmake() || analyze.empty()) {
    SUCCEED("cmake or systemd-analyze not found: skipped");
    return;
  }
  ScratchDir prefix("units");
  install_into(prefix.path);
  const fs::path units = prefix.path / "lib/systemd/system";
  // ExecStart names the installed binary, so verify finds it; Documentation= names
  // the man page, found through MANPATH when it was built.
  const std::string man =
      DISTFLOW_TEST_MAN_PAGES ? "MANPATH=" + quote((prefix.path / "share/man").string()) + " " : "";
  const auto r =
      shell(man + quote(analyze) + " verify" + (DISTFLOW_TEST_MAN_PAGES ? "" : " --man=no") + " " +
            quote((units / "distflow-pmd.service").string()) + " " +
            quote((units / "distflow-pmd.socket").string()));
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out.empty());
}

TEST_CASE("install: a separate project finds the package and runs a node with distflow::core",
          "[install]") {
  if (!have_cmake()) {
    SUCCEED("cmake not found at " DISTFLOW_TEST_CMAKE ": skipped");
    return;
  }
  ScratchDir dir("consumer");
  const fs::path prefix = dir.path / "prefix";
  const fs::path source = dir.path / "src";
  const fs::path build = dir.path / "build";
  install_into(prefix);

  // Every installed header, included on its own terms: none needs a private one.
  std::string includes;
  for (const auto& entry : fs::directory_iterator(prefix / "include/distflow")) {
    includes += "#include <distflow/" + entry.path().filename().string() + ">\n";
  }
  fs::create_directories(source);
  std::ofstream(source / "CMakeLists.txt") << R"(cmake_minimum_required(VERSION 3.24)
project(consumer LANGUAGES CXX)
find_package(distflow 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE distflow::core)
target_compile_definitions(consumer PRIVATE
  DISTFLOW_EXECUTABLE="$<TARGET_FILE:distflow::distflow>")
)";
  std::ofstream(source / "main.cpp") << includes << R"cpp(
#include <cstdio>
#include <cstdlib>

    int main(int argc, char** argv) {
      if (argc != 3)
        return 2;
      distflow::NodeOptions options;
      options.alias = "consumer";
      options.pmd.port = static_cast<std::uint16_t>(std::atoi(argv[1]));
      options.auto_start_pmd = false;
      options.executable = DISTFLOW_EXECUTABLE;
      try {
        auto node = distflow::NodeRuntime::start(options);
        node->send_sync(argv[2], R"({"hello":"from an installed distflow"})");
        node->shutdown();
      } catch (const distflow::Error& e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 1;
      }
      std::printf("sent; distflow is %s\n", DISTFLOW_EXECUTABLE);
      return 0;
    }
  )cpp";
  std::string configure =
      quote(DISTFLOW_TEST_CMAKE) + " -S " + quote(source.string()) + " -B " +
      quote(build.string()) + " -G " + quote(DISTFLOW_TEST_GENERATOR) +
      " -DCMAKE_BUILD_TYPE=Debug -DCMAKE_PREFIX_PATH=" + quote(prefix.string()) +
      " -DCMAKE_CXX_COMPILER=" + quote(DISTFLOW_TEST_CXX);
  if (!std::string(DISTFLOW_TEST_MAKE_PROGRAM).empty())
    configure += " -DCMAKE_MAKE_PROGRAM=" + quote(DISTFLOW_TEST_MAKE_PROGRAM);
  const auto configured = shell(configure, 120s);
  INFO(configured.out);
  REQUIRE(configured.code == 0);
  const auto built = shell(quote(DISTFLOW_TEST_CMAKE) + " --build " + quote(build.string()), 120s);
  INFO(built.out);
  REQUIRE(built.code == 0);

  PmdProcess pmd;
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","payload":{},"requestId":1})"));
  ChildProcess sink(
      {distflow_binary(), "node", "--alias", "sink", "--port", pmd.port_str(), "--no-auto-pmd"});
  bool joined = false;
  while (!joined) {
    const auto frame = watcher.read_frame(10s);
    REQUIRE(frame);
    joined = frame->find("\"peer:join\"") != std::string::npos &&
             frame->find("\"alias\":\"sink\"") != std::string::npos;
  }
  const auto consumer = run({(build / "consumer").string(), pmd.port_str(), "sink"});
  INFO(consumer.err);
  CHECK(consumer.code == 0);
  CHECK(consumer.out == "sent; distflow is " + (prefix / "bin/distflow").string() + "\n");
  const auto line = sink.wait_for_line("from an installed distflow");
  REQUIRE(line);
  CHECK(line->find(R"("payload":{"hello":"from an installed distflow"})") != std::string::npos);
  CHECK(line->find(R"("alias":"consumer")") != std::string::npos);
}

TEST_CASE("install: cpack -G DEB makes the distflow and libdistflow-dev packages", "[install]") {
  const std::string dpkg_deb = find_program("dpkg-deb");
  if (!fs::exists(DISTFLOW_TEST_CPACK) || dpkg_deb.empty()) {
    SUCCEED("cpack or dpkg-deb not found: skipped");
    return;
  }
  ScratchDir dir("deb");
  const auto packed =
      shell(quote(DISTFLOW_TEST_CPACK) + " -G DEB -C " + quote(DISTFLOW_TEST_CONFIG) +
                " --config " + quote(std::string(DISTFLOW_TEST_BUILD_DIR) + "/CPackConfig.cmake") +
                " -B " + quote(dir.path.string()),
            120s);
  INFO(packed.out);
  REQUIRE(packed.code == 0);
  const std::string version = std::string(DISTFLOW_VERSION) + "-1";
  std::string arch = shell("dpkg --print-architecture").out;
  arch = arch.substr(0, arch.find('\n'));
  const fs::path runtime = dir.path / ("distflow_" + version + "_" + arch + ".deb");
  const fs::path dev = dir.path / ("libdistflow-dev_" + version + "_" + arch + ".deb");
  REQUIRE(fs::exists(runtime));
  REQUIRE(fs::exists(dev));

  const auto contents = [&](const fs::path& deb) {
    const auto r = shell(quote(dpkg_deb) + " -c " + quote(deb.string()));
    INFO(r.out);
    CHECK(r.code == 0);
    // "-rwxr-xr-x root/root 3076872 2026-12-04 22:30 ./usr/bin/distflow": the path, and
    // "path -> target" for a symlink.
    std::set<std::string> paths;
    std::stringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      const auto start = line.find(" ./");
      if (start != std::string::npos)
        paths.insert(line.substr(start + 2));
    }
    return paths;
  };
  const auto files = contents(runtime);
  std::vector<std::string> expected{"/usr/bin/distflow",
                                    "/usr/lib/systemd/system/distflow-pmd.service",
                                    "/usr/lib/systemd/system/distflow-pmd.socket",
                                    "/usr/share/bash-completion/completions/distflow",
                                    "/usr/share/zsh/vendor-completions/_distflow"};
  if (DISTFLOW_TEST_MAN_PAGES)
    expected.emplace_back("/usr/share/man/man1/distflow.1.gz");
  for (const auto& mode : kModes) {
    if (DISTFLOW_TEST_MODE_LINKS)
      expected.push_back("/usr/bin/distflow-" + mode + " -> distflow");
    if (DISTFLOW_TEST_MAN_PAGES)
      expected.push_back("/usr/share/man/man1/distflow-" + mode + ".1.gz");
  }
  for (const auto& path : expected) {
    INFO(path);
    CHECK(files.count(path) == 1);
  }
  for (const auto& path : files) {
    INFO(path);
    CHECK(path.find("/include/") == std::string::npos);  // headers are in -dev only
  }
  const auto dev_files = contents(dev);
  for (const char* path :
       {"/usr/include/distflow/node_runtime.hpp", "/usr/include/distflow/errors.hpp",
        "/usr/lib/cmake/distflow/distflow-config.cmake",
        "/usr/lib/cmake/distflow/distflow-targets.cmake"}) {
    INFO(path);
    CHECK(dev_files.count(path) == 1);
  }
  bool has_library = false;
  for (const auto& path : dev_files)
    has_library = has_library || path.ends_with("/libdistflow.a");
  CHECK(has_library);

  const auto depends = shell(quote(dpkg_deb) + " -f " + quote(dev.string()) + " Depends");
  CHECK(depends.out.find("distflow (= " + version + ")") != std::string::npos);
  const auto info = shell(quote(dpkg_deb) + " -I " + quote(runtime.string()));
  INFO(info.out);
  for (const char* script : {"postinst", "prerm", "postrm"})
    CHECK(info.out.find(script) != std::string::npos);

  const char* dpkg_env = std::getenv("DISTFLOW_TEST_DPKG");
  if (::geteuid() != 0 || dpkg_env == nullptr || std::string(dpkg_env) != "1") {
    SUCCEED("dpkg -i/-r not run (needs root and DISTFLOW_TEST_DPKG=1)");
    return;
  }
  // Installs on this machine, then removes and purges: nothing of it may remain.
  const auto installed =
      shell("dpkg -i " + quote(runtime.string()) + " " + quote(dev.string()), 120s);
  INFO(installed.out);
  REQUIRE(installed.code == 0);
  const auto listed = shell("dpkg -L distflow libdistflow-dev");
  const auto version_out = run({"/usr/bin/distflow", "--version"});
  CHECK(version_out.code == 0);
  CHECK(version_out.out.rfind(std::string("distflow ") + DISTFLOW_VERSION, 0) == 0);
  const auto removed = shell("dpkg -r libdistflow-dev distflow && dpkg --purge distflow", 120s);
  INFO(removed.out);
  CHECK(removed.code == 0);
  std::stringstream lines(listed.out);
  std::string path;
  while (std::getline(lines, path)) {
    if (path.find("distflow") != std::string::npos) {
      INFO(path);
      CHECK_FALSE(fs::exists(fs::symlink_status(path)));
    }
  }
  CHECK(shell("dpkg-query -W distflow").code != 0);
}

TEST_CASE("install: bash completion offers modes, flags and flag choices from --help",
          "[install]") {
  const std::string bash = find_program("bash");
  if (bash.empty()) {
    SUCCEED("bash not found: skipped");
    return;
  }
  const auto complete = [&](const std::string& line) {
    // COMP_WORDS as bash splits `line`, the cursor on the last word.
    const std::string script =
        "source " +
        quote(std::string(DISTFLOW_SOURCE_DIR) + "/packaging/completion/distflow.bash") +
        "; read -ra COMP_WORDS <<<\"$1\"; [[ $1 == *' ' ]] && COMP_WORDS+=('');"
        " COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_WORDS[0]=" +
        quote(distflow_binary()) + "; _distflow; echo \"${COMPREPLY[*]}\"";
    const auto r = run({bash, "-c", script, "complete", line});
    INFO(r.err);
    CHECK(r.code == 0);
    return r.out;
  };
  CHECK(complete("distflow w") == "watch\n");
  CHECK(complete("distflow pmd ") == "status list resolve kill\n");
  CHECK(complete("distflow pmd --bi") == "--bind\n");
  CHECK(complete("distflow node --overflow ") == "drop-newest drop-oldest block\n");
  CHECK(complete("distflow --log-level cr") == "critical\n");
  CHECK(complete("distflow pmd list --j") == "--json\n");
}

}  // namespace distflow::test
