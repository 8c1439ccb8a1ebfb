#pragma once

// Socket activation (systemd.socket(5), sd_listen_fds(3)) without libsystemd: the
// listening socket a service manager passed to this process, if any. The caller
// reads the environment (src/ never does) and hands the values in.

namespace distflow {

/// The first descriptor socket activation passes (SD_LISTEN_FDS_START).
inline constexpr int kSystemdListenFd = 3;

/// The listening TCP socket passed by socket activation: fd 3 when `listen_pid`
/// (LISTEN_PID) is `self_pid` and `listen_fds` (LISTEN_FDS) is "1"; it is made
/// close-on-exec. -1 when either variable is null or empty, LISTEN_FDS is "0", or
/// LISTEN_PID names another process (inherited, not meant for this one). Throws
/// distflow::Error when a value is malformed, more than one socket is passed, or
/// fd 3 is not a listening TCP socket.
int systemd_listen_fd(const char* listen_pid, const char* listen_fds, long self_pid);

/// Whether the socket `fd` has an IPv6 address (else IPv4, or not a socket).
bool is_ipv6_socket(int fd);

}  // namespace distflow
