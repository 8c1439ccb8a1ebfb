#include "systemd.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <string>
#include <string_view>
#include <sys/socket.h>

#include "errors.hpp"

namespace distflow {
namespace {

/// A non-negative decimal number, or -1.
long parse_count(std::string_view text) {
  long value = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0)
    return -1;
  return value;
}

int socket_option(int fd, int option) {
  int value = 0;
  socklen_t size = sizeof value;
  if (::getsockopt(fd, SOL_SOCKET, option, &value, &size) != 0)
    return -1;
  return value;
}

int socket_family(int fd) {
  sockaddr_storage address{};
  socklen_t size = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0)
    return -1;
  return address.ss_family;
}

}  // namespace

int systemd_listen_fd(const char* listen_pid, const char* listen_fds, long self_pid) {
  if (listen_pid == nullptr || *listen_pid == '\0' || listen_fds == nullptr || *listen_fds == '\0')
    return -1;
  const long pid = parse_count(listen_pid);
  if (pid <= 0) {
    throw Error(std::string("socket activation: invalid LISTEN_PID '") + listen_pid +
                "': expected a process id");
  }
  if (pid != self_pid)
    return -1;
  const long count = parse_count(listen_fds);
  if (count < 0) {
    throw Error(std::string("socket activation: invalid LISTEN_FDS '") + listen_fds +
                "': expected a number of sockets");
  }
  if (count == 0)
    return -1;
  if (count > 1) {
    throw Error("socket activation: " + std::to_string(count) +
                " sockets passed, expected 1 (one ListenStream= in the socket unit)");
  }
  const int fd = kSystemdListenFd;
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) {
    throw Error("socket activation: fd " + std::to_string(fd) + ": " + std::strerror(errno));
  }
  const int family = socket_family(fd);
  if (socket_option(fd, SO_TYPE) != SOCK_STREAM || socket_option(fd, SO_ACCEPTCONN) != 1 ||
      (family != AF_INET && family != AF_INET6)) {
    throw Error("socket activation: fd " + std::to_string(fd) +
                " is not a listening TCP socket (ListenStream=ADDRESS:PORT in the socket unit)");
  }
  ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  return fd;
}

bool is_ipv6_socket(int fd) {
  return socket_family(fd) == AF_INET6;
}

}  // namespace distflow
