#include "netns.hpp"

#include <cstdlib>
#include <iostream>
#include <string_view>

namespace distflow::test {
namespace {

/// Namespaces unless the loopback fallback is asked for (by `mode` or the environment).
bool try_namespaces(TestHosts::Mode mode) {
  const char* env = std::getenv("DISTFLOW_TEST_NETNS");
  return mode == TestHosts::Mode::automatic && !(env != nullptr && std::string_view(env) == "0");
}

}  // namespace

TestHosts::TestHosts(int count, Mode mode) : hosts_(count, try_namespaces(mode)) {
  if (mode == Mode::automatic && !hosts_.isolated()) {
    static bool said = false;
    if (!said) {
      said = true;
      std::cerr << "netns: network namespaces unavailable (" << hosts_.unavailable_reason()
                << "): simulated hosts are 127.0.0.2, 127.0.0.3, ...; partition tests skipped\n";
    }
  }
}

std::unique_ptr<ChildProcess> TestHosts::start(
    int host, const std::vector<std::string>& argv,
    const std::map<std::string, std::string>& env) const {
  return std::make_unique<ChildProcess>(command(host, argv), env);
}

RunResult TestHosts::run(int host, const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env,
                         std::chrono::milliseconds timeout) const {
  return test::run(command(host, argv), env, timeout);
}

}  // namespace distflow::test
