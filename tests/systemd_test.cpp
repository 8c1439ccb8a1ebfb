// systemd_listen_fd(): which descriptor socket activation passed, and when to
// ignore or refuse what the environment claims. Sockets are put on fd 3 the way
// systemd does; whatever the test process had there is restored afterwards.

#include "systemd.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "errors.hpp"
#include "support.hpp"

namespace distflow {
namespace {

/// Puts `fd` on descriptor 3 for the scope's lifetime (closing `fd` itself), then
/// restores what was there.
class OnFd3 {
 public:
  explicit OnFd3(int fd) {
    if (fd == kSystemdListenFd)
      return;  // the lowest free descriptor: nothing was there
    saved_ = ::fcntl(kSystemdListenFd, F_DUPFD_CLOEXEC, 10);  // -1 when nothing is there
    REQUIRE(::dup2(fd, kSystemdListenFd) == kSystemdListenFd);
    ::close(fd);
  }
  ~OnFd3() {
    if (saved_ >= 0) {
      ::dup2(saved_, kSystemdListenFd);
      ::close(saved_);
    } else {
      ::close(kSystemdListenFd);
    }
  }
  OnFd3(const OnFd3&) = delete;
  OnFd3& operator=(const OnFd3&) = delete;

 private:
  int saved_ = -1;
};

/// A TCP socket bound to the loopback address (port 0), listening if asked.
int tcp_socket(int family, bool listening) {
  const int fd = ::socket(family, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  int bound = -1;
  if (family == AF_INET6) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_loopback;
    bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  } else {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  }
  REQUIRE(bound == 0);
  if (listening)
    REQUIRE(::listen(fd, 8) == 0);
  return fd;
}

const std::string kSelf = std::to_string(::getpid());

}  // namespace

TEST_CASE("systemd: no activation without both variables, or for another process", "[systemd]") {
  CHECK(systemd_listen_fd(nullptr, nullptr, ::getpid()) == -1);
  CHECK(systemd_listen_fd(kSelf.c_str(), nullptr, ::getpid()) == -1);
  CHECK(systemd_listen_fd(nullptr, "1", ::getpid()) == -1);
  CHECK(systemd_listen_fd("", "", ::getpid()) == -1);
  // Inherited from a parent that was activated: not ours, fd 3 untouched.
  CHECK(systemd_listen_fd("1", "1", ::getpid()) == -1);
  CHECK(systemd_listen_fd(kSelf.c_str(), "0", ::getpid()) == -1);
}

TEST_CASE("systemd: malformed variables and more than one socket are errors", "[systemd]") {
  CHECK_THROWS_WITH(systemd_listen_fd("12x", "1", ::getpid()),
                    "socket activation: invalid LISTEN_PID '12x': expected a process id");
  CHECK_THROWS_WITH(systemd_listen_fd(kSelf.c_str(), "-1", ::getpid()),
                    "socket activation: invalid LISTEN_FDS '-1': expected a number of sockets");
  CHECK_THROWS_WITH(
      systemd_listen_fd(kSelf.c_str(), "2", ::getpid()),
      "socket activation: 2 sockets passed, expected 1 (one ListenStream= in the socket unit)");
}

TEST_CASE("systemd: adopts a listening TCP socket on fd 3, close-on-exec", "[systemd]") {
  for (const int family : {AF_INET, AF_INET6}) {
    const int fd = ::socket(family, SOCK_STREAM, 0);
    if (fd < 0)
      continue;  // no IPv6 here
    ::close(fd);
    INFO("family " << family);
    OnFd3 passed(tcp_socket(family, true));
    ::fcntl(kSystemdListenFd, F_SETFD, 0);  // systemd passes it without FD_CLOEXEC
    CHECK(systemd_listen_fd(kSelf.c_str(), "1", ::getpid()) == kSystemdListenFd);
    CHECK((::fcntl(kSystemdListenFd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(is_ipv6_socket(kSystemdListenFd) == (family == AF_INET6));
  }
}

TEST_CASE("systemd: refuses fd 3 when it is not a listening TCP socket", "[systemd]") {
  const std::string message =
      "socket activation: fd 3 is not a listening TCP socket (ListenStream=ADDRESS:PORT in the "
      "socket unit)";
  {
    OnFd3 passed(tcp_socket(AF_INET, false));  // bound, never listened on
    CHECK_THROWS_WITH(systemd_listen_fd(kSelf.c_str(), "1", ::getpid()), message);
  }
  {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::close(fds[1]);
    OnFd3 passed(fds[0]);
    CHECK_THROWS_WITH(systemd_listen_fd(kSelf.c_str(), "1", ::getpid()), message);
  }
  {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::close(fds[1]);
    OnFd3 passed(fds[0]);
    ::close(kSystemdListenFd);  // LISTEN_FDS=1, and nothing there
    CHECK_THROWS_WITH(systemd_listen_fd(kSelf.c_str(), "1", ::getpid()),
                      "socket activation: fd 3: Bad file descriptor");
  }
  {
    const int unix_socket = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(unix_socket >= 0);
    OnFd3 passed(unix_socket);
    CHECK_THROWS_WITH(systemd_listen_fd(kSelf.c_str(), "1", ::getpid()), message);
  }
}

TEST_CASE("systemd: distflow pmd serves the socket that socket activation passes it", "[systemd]") {
  const char* activate = "/usr/bin/systemd-socket-activate";  // Debian's systemd package
  if (::access(activate, X_OK) != 0) {
    SUCCEED("systemd-socket-activate not found: skipped");
    return;
  }
  using namespace distflow::test;
  const std::string port = std::to_string(free_port());
  // As systemd does: listen, then run the daemon on the first connection with the
  // socket as fd 3. --port 0: the daemon's own port must not be the one served.
  ChildProcess pmd(
      {activate, "--listen=127.0.0.1:" + port, distflow_binary(), "pmd", "--port", "0"});
  std::optional<RunResult> status;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {  // until it listens
    status = run({distflow_binary(), "pmd", "status", "--port", port});
    if (status->code == 0)
      break;
  }
  REQUIRE(status);
  INFO(status->out << status->err << pmd.stderr_text());
  CHECK(status->code == 0);
  CHECK(status->out.find("running: yes") != std::string::npos);
  const auto listening = pmd.read_line();  // the daemon's first line: its address
  REQUIRE(listening);
  CHECK(*listening == "127.0.0.1:" + port);
  pmd.signal(SIGTERM);
  CHECK(pmd.wait() == 0);
}

}  // namespace distflow
