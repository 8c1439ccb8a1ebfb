#pragma once

// Where a node or a PMD is (issue 12): `alias`, `alias@host`, `alias@host:pmdport`,
// IPv6 literals in brackets (`alias@[::1]:4369`), and the host values of flags
// (`--host H`, `--bind ADDR`, with an optional port). Pure: nothing is resolved
// here; a DNS name is only checked for its form.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace distflow {

/// A target: a node's alias or id, and the host whose PMD knows it (none: ours).
struct NodeAddress {
  std::string name;
  std::optional<std::string> host;        ///< IPv6 without brackets
  std::optional<std::uint16_t> pmd_port;  ///< only with a host; none: the default PMD port
};

/// A host with an optional port (`H`, `H:P`, `[v6]`, `[v6]:P`, or a bare `v6` without port).
struct HostPort {
  std::string host;  ///< IPv6 without brackets
  std::optional<std::uint16_t> port;
};

/// Ports first..last; first == last for one port (0: any free port).
struct PortRange {
  std::uint16_t first = 0;
  std::uint16_t last = 0;
};

/// Parses a target. On failure: nullopt and `error` names the input, the fault and
/// the expected form ("invalid address 'a@': empty host; expected alias, ...").
/// The host part starts at the last '@'. A name follows the node-name rule (1-128
/// bytes of UTF-8, no control characters); a port is 1-65535.
std::optional<NodeAddress> parse_node_address(std::string_view text, std::string& error);

/// Parses a host flag's value (`--host`, `--bind`); IPv6 may be bare when it has no
/// port. `flag` names the flag in the error ("invalid --bind '...': ...").
std::optional<HostPort> parse_host_port(std::string_view text, std::string_view flag,
                                        std::string& error);

/// Parses `PORT` or `FIRST-LAST` (1 <= FIRST <= LAST); a lone 0 means any free port.
std::optional<PortRange> parse_port_range(std::string_view text, std::string_view flag,
                                          std::string& error);

/// `host`, in brackets when it is an IPv6 literal (for `host:port` text).
std::string format_host(std::string_view host);
/// `alias`, `alias@host`, or `alias@host:port` when the port is not `default_port`.
std::string format_node_address(const NodeAddress& address, std::uint16_t default_port);
/// `host` or `host:port` (brackets for IPv6), the port left out when it is `default_port`.
std::string format_host_port(const HostPort& address, std::uint16_t default_port);

/// Where a node registered with the PMD on `pmd_host` as `registered_host` is
/// reached from elsewhere: at `pmd_host` when it registered a loopback or wildcard
/// address (it is on the PMD's host, PROTOCOL.md §3.2), else as registered.
std::string node_host_via(const std::string& registered_host, const std::string& pmd_host);

/// True for `localhost`, 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 (no resolution:
/// any other name counts as not loopback).
bool is_loopback_host(std::string_view host);

/// Why `name` cannot be a node name (empty, over 128 bytes, not UTF-8, control
/// characters), or empty when it can.
std::string node_name_error(std::string_view name);

}  // namespace distflow
