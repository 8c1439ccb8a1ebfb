#pragma once

// Shared by the end-to-end node tests: a PMD with a watcher connection, nodes
// started as real processes and waited for, temp dirs for scripts, and numbered
// NDJSON lines to check order and loss.

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "support.hpp"

namespace distflow::test {

namespace fs = std::filesystem;

/// A PMD for one test, and a watcher connection to wait on registrations.
struct Cluster {
  PmdProcess pmd;
  RawClient watcher{"127.0.0.1", pmd.port};
  std::map<std::string, std::string> env{{"DISTFLOW_PMD_PORT", pmd.port_str()}};

  Cluster() {
    auto reply = watcher.request(R"({"type":"watch","payload":{},"requestId":1})");
    REQUIRE(reply);
    REQUIRE(reply->find("\"success\":true") != std::string::npos);
  }

  /// Waits for the PMD's event `kind` ("peer:join"/"peer:leave") about `alias`.
  bool wait_event(const std::string& kind, const std::string& alias,
                  std::chrono::milliseconds timeout = 10s) {
    return wait_event_frame(kind, alias, timeout).has_value();
  }

  /// The same; the event's frame, or nullopt at the deadline.
  std::optional<std::string> wait_event_frame(const std::string& kind, const std::string& alias,
                                              std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto frame = watcher.read_frame(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now()));
      if (!frame)
        return std::nullopt;
      if (frame->find("\"" + kind + "\"") != std::string::npos &&
          frame->find("\"alias\":\"" + alias + "\"") != std::string::npos) {
        return frame;
      }
    }
    return std::nullopt;
  }

  std::vector<std::string> args(std::vector<std::string> rest) const {
    rest.insert(rest.begin(), distflow_binary());
    rest.insert(rest.begin() + 2, {"--port", pmd.port_str()});
    return rest;
  }

  /// Starts `distflow node --alias ALIAS [extra...]` and waits until it is registered.
  std::unique_ptr<ChildProcess> node(const std::string& alias,
                                     const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = args({"node", "--alias", alias});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto child = std::make_unique<ChildProcess>(argv, env);
    if (!wait_event("peer:join", alias)) {
      FAIL("node " << alias << " did not register: " << child->stderr_text());
    }
    return child;
  }

  RunResult send(const std::vector<std::string>& rest, const std::string& stdin_data = {},
                 std::chrono::milliseconds timeout = 20s) {
    std::vector<std::string> argv = args({"send"});
    argv.insert(argv.end(), rest.begin(), rest.end());
    return run(argv, env, timeout, stdin_data);
  }
};

/// A fresh temp dir for scripts, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("distflow-node-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string script(const std::string& name, const std::string& body) const {
    const fs::path file = path / name;
    std::ofstream(file) << "#!/bin/sh\n" << body;
    fs::permissions(file, fs::perms::owner_all);
    return file.string();
  }
};

inline std::string payload_of(const std::string& line) {
  const auto at = line.find("\"payload\":");
  return at == std::string::npos ? "" : line.substr(at + 10, line.size() - at - 11);
}

inline std::string numbered_lines(int count, const std::string& prefix, const std::string& suffix) {
  std::string out;
  for (int i = 0; i < count; ++i)
    out += prefix + std::to_string(i) + suffix + "\n";
  return out;
}

/// Reads `count` lines whose payloads must be {"n":0}, {"n":1}, ... in order;
/// returns what went wrong, or an empty string.
inline std::string read_numbered(ChildProcess& receiver, int count) {
  for (int i = 0; i < count; ++i) {
    auto line = receiver.read_line(20s);
    if (!line)
      return "message " + std::to_string(i) + " never arrived";
    if (payload_of(*line) != "{\"n\":" + std::to_string(i) + "}") {
      return "message " + std::to_string(i) + " out of order or lost: " + *line;
    }
  }
  return {};
}

}  // namespace distflow::test
