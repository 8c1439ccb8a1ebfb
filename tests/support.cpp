#include "support.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace distflow::test {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Blocks SIGPIPE on this thread while it writes to a child's pipe, so a child
// that has exited makes write() fail with EPIPE (and the test fail cleanly)
// instead of killing the test binary. A SIGPIPE raised meanwhile is consumed.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    const timespec zero{0, 0};
    while (::sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
};

void write_all(int fd, const char* data, std::size_t size) {
  SigpipeBlocked blocked;
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error(std::string("write to a child's stdin: ") + std::strerror(errno));
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

std::string distflow_binary() {
  return DISTFLOW_BINARY;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::map<std::string, std::string>& env) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) {
    throw std::runtime_error("pipe failed");
  }
  pid_ = ::fork();
  if (pid_ < 0)
    throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    for (const auto& [key, value] : env)
      ::setenv(key.c_str(), value.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  in_ = in[1];
  out_ = out[0];
  err_ = err[0];
  ::fcntl(err_, F_SETFL, O_NONBLOCK);
}

ChildProcess::~ChildProcess() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  for (int fd : {in_, out_, err_}) {
    if (fd >= 0)
      ::close(fd);
  }
}

bool ChildProcess::fill(Clock::time_point deadline) {
  if (out_ < 0)
    return false;
  pollfd p{out_, POLLIN, 0};
  const int ready = ::poll(&p, 1, remaining_ms(deadline));
  if (ready <= 0)
    return false;
  char chunk[65536];
  const ssize_t n = ::read(out_, chunk, sizeof chunk);
  if (n <= 0) {
    ::close(out_);
    out_ = -1;
    return false;
  }
  out_buf_.append(chunk, static_cast<std::size_t>(n));
  return true;
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return line;
    }
    if (!fill(deadline))
      return std::nullopt;
  }
}

std::optional<std::string> ChildProcess::wait_for_line(const std::string& needle,
                                                       std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto line = read_line(std::chrono::milliseconds(remaining_ms(deadline)));
    if (!line)
      return std::nullopt;
    if (line->find(needle) != std::string::npos)
      return line;
  }
  return std::nullopt;
}

std::string ChildProcess::read_all(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (fill(deadline)) {
  }
  return std::exchange(out_buf_, {});
}

void ChildProcess::drain_stderr(int timeout_ms) {
  if (err_ < 0)
    return;
  char chunk[65536];
  for (;;) {
    pollfd p{err_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0)
      return;
    const ssize_t n = ::read(err_, chunk, sizeof chunk);
    if (n <= 0) {
      ::close(err_);
      err_ = -1;
      return;
    }
    err_buf_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::string ChildProcess::stderr_text() {
  drain_stderr(status_ ? 200 : 0);
  return err_buf_;
}

void ChildProcess::write(const std::string& data) {
  write_all(in_, data.data(), data.size());
}

void ChildProcess::close_stdin() {
  if (in_ >= 0)
    ::close(in_);
  in_ = -1;
}

void ChildProcess::signal(int sig) {
  if (!status_)
    ::kill(pid_, sig);
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_)
    return status_;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return status_;
    }
    if (Clock::now() >= deadline)
      return std::nullopt;
    // Keep the child's stderr pipe from filling while we wait for it.
    drain_stderr(5);
    ::usleep(2000);
  }
}

RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              std::chrono::milliseconds timeout, const std::string& stdin_data) {
  ChildProcess child(argv, env);
  if (!stdin_data.empty()) {
    try {
      child.write(stdin_data);
    } catch (const std::exception&) {
      // It stopped reading its input (it ended early): its exit code and stderr say why.
    }
  }
  child.close_stdin();
  RunResult result;
  result.out = child.read_all(timeout);
  const auto code = child.wait(timeout);
  result.code = code.value_or(-1);
  result.err = child.stderr_text();
  return result;
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

PmdProcess::PmdProcess(const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv{distflow_binary(), "pmd", "--port", "0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  process = std::make_unique<ChildProcess>(argv);
  auto line = process->read_line(10s);
  if (!line)
    throw std::runtime_error("pmd did not print its address: " + process->stderr_text());
  const auto colon = line->rfind(':');
  port = static_cast<std::uint16_t>(std::stoi(line->substr(colon + 1)));
}

RawClient::RawClient(const std::string& host, std::uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error("connect " + host + ":" + std::to_string(port) + ": " + why);
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawClient::~RawClient() {
  if (fd_ >= 0)
    ::close(fd_);
}

void RawClient::send_raw(const std::string& bytes) {
  write_all(fd_, bytes.data(), bytes.size());
}

void RawClient::send_frame(const std::string& body) {
  const auto n = static_cast<std::uint32_t>(body.size());
  std::string frame{static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                    static_cast<char>(n >> 8), static_cast<char>(n)};
  send_raw(frame + body);
}

bool RawClient::fill(Clock::time_point deadline) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, remaining_ms(deadline)) <= 0)
    return false;
  char chunk[65536];
  const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0)
    return false;
  buf_.append(chunk, static_cast<std::size_t>(n));
  return true;
}

std::optional<std::string> RawClient::read_frame(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (buf_.size() >= 4) {
      const auto* u = reinterpret_cast<const unsigned char*>(buf_.data());
      const std::size_t n = (std::size_t{u[0]} << 24) | (std::size_t{u[1]} << 16) |
                            (std::size_t{u[2]} << 8) | std::size_t{u[3]};
      if (buf_.size() >= 4 + n) {
        std::string body = buf_.substr(4, n);
        buf_.erase(0, 4 + n);
        return body;
      }
    }
    if (!fill(deadline))
      return std::nullopt;
  }
}

std::optional<std::string> RawClient::request(const std::string& body,
                                              std::chrono::milliseconds timeout) {
  send_frame(body);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto frame = read_frame(std::chrono::milliseconds(remaining_ms(deadline)));
    if (!frame || frame->find("\"type\":\"event\"") == std::string::npos)
      return frame;
  }
}

bool RawClient::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0)
      return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0)
      return true;  // EOF or reset
  }
}

void RawClient::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

bool process_gone(int pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!stat || !std::getline(stat, text) || text.find(") Z ") != std::string::npos)
      return true;
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling, bounded
  }
}

std::vector<int> auto_started_daemons(std::uint16_t port) {
  std::vector<int> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::vector<std::string> args;
    for (std::string arg; std::getline(cmdline, arg, '\0');)
      args.push_back(arg);
    std::ifstream stat(entry.path() / "stat");
    std::string stat_text;
    std::getline(stat, stat_text);
    if (stat_text.find(") Z ") != std::string::npos)
      continue;  // a zombie is not a daemon
    const std::vector<std::string> want{"pmd", "--port", std::to_string(port), "--auto-shutdown"};
    if (args.size() >= 5 && std::equal(want.begin(), want.end(), args.begin() + 1))
      pids.push_back(std::stoi(name));
  }
  return pids;
}

std::optional<std::string> http_exchange(std::uint16_t port, const std::string& request,
                                         std::chrono::milliseconds timeout) {
  RawClient client("127.0.0.1", port);
  client.send_raw(request);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string out;
  char buffer[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    pollfd p{client.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      continue;
    const ssize_t n = ::read(client.fd(), buffer, sizeof buffer);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      return out;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return out;
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

std::string scrape_metrics(std::uint16_t port) {
  auto response =
      http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
  if (!response)
    throw std::runtime_error("scrape of port " + std::to_string(port) + ": no answer");
  if (!response->starts_with("HTTP/1.1 200 OK\r\n"))
    throw std::runtime_error("scrape of port " + std::to_string(port) + ": " + *response);
  const auto body = response->find("\r\n\r\n");
  return response->substr(body + 4);
}

std::optional<double> metric_value(const std::string& page, const std::string& series) {
  std::size_t at = 0;
  while (at < page.size()) {
    std::size_t end = page.find('\n', at);
    if (end == std::string::npos)
      end = page.size();
    const std::string_view line(page.data() + at, end - at);
    if (line.size() > series.size() && line.starts_with(series) && line[series.size()] == ' ')
      return std::stod(std::string(line.substr(series.size() + 1)));
    at = end + 1;
  }
  return std::nullopt;
}

std::uint16_t metrics_port_from_log(ChildProcess& child, std::string& log,
                                    std::chrono::milliseconds timeout) {
  const std::string needle = "metrics: listening on http://";
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    log = child.stderr_text();
    if (const auto at = log.find(needle); at != std::string::npos) {
      const auto slash = log.find("/metrics", at + needle.size());
      const auto colon = log.rfind(':', slash);
      if (slash != std::string::npos && colon != std::string::npos && colon > at)
        return static_cast<std::uint16_t>(std::stoi(log.substr(colon + 1, slash - colon - 1)));
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace distflow::test
