#include "bench_child.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <poll.h>
#include <string>
#include <unistd.h>

namespace distflow {
namespace {

SpawnOptions worker_options(const std::vector<std::string>& argv, int cpu) {
  SpawnOptions options;
  options.argv = argv;
  options.in = Stdio::null;
  options.out = Stdio::pipe;
  options.cpu = cpu;
  return options;
}

}  // namespace

std::uint64_t resident_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:"))
      return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

BenchChild::BenchChild(const std::vector<std::string>& argv, int cpu)
    : process_(worker_options(argv, cpu)), out_(process_.take_stdout()) {}

BenchChild::~BenchChild() {
  stop();
}

std::optional<std::string> BenchChild::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (const auto eol = buf_.find('\n'); eol != std::string::npos) {
      std::string line = buf_.substr(0, eol);
      buf_.erase(0, eol + 1);
      return line;
    }
    if (out_ < 0)
      return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0)
      return std::nullopt;
    pollfd pfd{out_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready <= 0)
      return std::nullopt;
    char chunk[4096];
    const ssize_t n = ::read(out_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ::close(out_);
      out_ = -1;
      if (buf_.empty())
        return std::nullopt;
      std::string rest = std::move(buf_);
      buf_.clear();
      return rest;
    }
    buf_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::optional<std::size_t> BenchChild::read_some(char* data, std::size_t n,
                                                 std::chrono::milliseconds timeout) {
  if (!buf_.empty()) {
    const std::size_t take = std::min(n, buf_.size());
    std::memcpy(data, buf_.data(), take);
    buf_.erase(0, take);
    return take;
  }
  if (out_ < 0)
    return 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{out_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready <= 0)
      return std::nullopt;
    const ssize_t got = ::read(out_, data, n);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0) {
      ::close(out_);
      out_ = -1;
      return 0;
    }
    return static_cast<std::size_t>(got);
  }
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  // The shell only merges stderr into stdout; the arguments stay arguments.
  std::vector<std::string> merged{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"};
  merged.insert(merged.end(), argv.begin(), argv.end());
  BenchChild child(merged);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  CommandResult result;
  char chunk[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const auto got =
        child.read_some(chunk, sizeof chunk, std::max(left, std::chrono::milliseconds(0)));
    if (!got || *got == 0)
      break;
    result.output.append(chunk, *got);
  }
  const auto left = deadline - std::chrono::steady_clock::now();
  result.code = left.count() > 0 ? child.wait(std::chrono::milliseconds(2000)).value_or(-1) : -1;
  return result;
}

void BenchChild::stop(std::chrono::milliseconds grace) {
  process_.stop(grace);
  if (out_ >= 0) {
    ::close(out_);
    out_ = -1;
  }
}

}  // namespace distflow
