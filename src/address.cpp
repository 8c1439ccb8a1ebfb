#include "address.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <cstdio>
#include <netinet/in.h>

namespace distflow {
namespace {

constexpr std::size_t kMaxNameBytes = 128;  // the PMD's limit for aliases and ids
constexpr std::size_t kMaxHostBytes = 253;  // a DNS name
constexpr std::size_t kMaxLabelBytes = 63;
constexpr std::string_view kNodeForm =
    "expected alias, alias@host or alias@host:port (IPv6: alias@[::1]:port)";
constexpr std::string_view kHostForm = "expected host, host:port, [IPv6] or [IPv6]:port";

/// The input as it may be shown in an error: control bytes as \xNN.
std::string shown(std::string_view text) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += ch;
    }
  }
  return out;
}

/// Length of the UTF-8 sequence at the start of `text`, 0 when it is malformed.
std::size_t utf8_sequence(std::string_view text) {
  const auto c = static_cast<unsigned char>(text[0]);
  if (c < 0x80)
    return 1;
  std::size_t n = 0;
  unsigned min = 0;
  unsigned code = 0;
  if ((c & 0xe0) == 0xc0) {
    n = 2, min = 0x80, code = c & 0x1fu;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, min = 0x800, code = c & 0x0fu;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, min = 0x10000, code = c & 0x07u;
  } else {
    return 0;
  }
  if (text.size() < n)
    return 0;
  for (std::size_t i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if ((b & 0xc0) != 0x80)
      return 0;
    code = (code << 6) | (b & 0x3fu);
  }
  if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
    return 0;
  return n;
}

bool is_digits(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

/// A port 1-65535 (`allow_zero`: also 0); empty string when fine, else why not.
std::string port_error(std::string_view text, std::uint16_t& port, bool allow_zero = false) {
  if (text.empty())
    return "empty port";
  unsigned value = 0;
  if (!is_digits(text) || text.size() > 5)
    return "port '" + shown(text) + "' is not a number from 1 to 65535";
  std::from_chars(text.data(), text.data() + text.size(), value);
  if (value > 65535 || (value == 0 && !allow_zero))
    return "port " + std::string(text) + " is out of range (1 to 65535)";
  port = static_cast<std::uint16_t>(value);
  return {};
}

bool is_ipv6(std::string_view text) {
  // A zone (fe80::1%eth0) names an interface: letters, digits, . _ -
  const std::size_t percent = text.find('%');
  if (percent != std::string_view::npos) {
    const std::string_view zone = text.substr(percent + 1);
    if (zone.empty() || zone.size() > 15 ||
        zone.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            std::string_view::npos) {
      return false;
    }
    text = text.substr(0, percent);
  }
  in6_addr out{};
  return ::inet_pton(AF_INET6, std::string(text).c_str(), &out) == 1;
}

/// Why `host` (no brackets, no port) cannot be a DNS name or IPv4 literal; empty when it can.
std::string dns_host_error(std::string_view host) {
  if (host.empty())
    return "empty host";
  if (host.size() > kMaxHostBytes)
    return "host longer than " + std::to_string(kMaxHostBytes) + " bytes";
  for (std::size_t i = 0; i < host.size(); ++i) {
    const auto c = static_cast<unsigned char>(host[i]);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
    if (!ok) {
      if (c < 0x20 || c == 0x7f)
        return "control character in host at byte " + std::to_string(i);
      if (c == ' ')
        return "space in host at byte " + std::to_string(i);
      return "character '" + shown(host.substr(i, 1)) + "' not allowed in a host name";
    }
  }
  // Labels: none empty (a final dot is allowed: "host.example."), none over 63 bytes.
  const std::string_view labels = host.back() == '.' ? host.substr(0, host.size() - 1) : host;
  bool numeric = true;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = labels.find('.', start);
    const std::string_view label = labels.substr(start, dot - start);
    if (label.empty())
      return "empty label in host '" + std::string(host) + "'";
    if (label.size() > kMaxLabelBytes)
      return "label longer than 63 bytes in host";
    numeric = numeric && is_digits(label);
    if (dot == std::string_view::npos)
      break;
    start = dot + 1;
  }
  if (numeric) {
    in_addr out{};
    if (::inet_pton(AF_INET, std::string(labels).c_str(), &out) != 1)
      return "'" + std::string(host) + "' is not an IPv4 address";
  }
  return {};
}

/// Splits `[v6]`, `[v6]:port`, `host`, `host:port`. `bare_v6`: more than one colon
/// without brackets is an IPv6 literal with no port. Empty string when fine.
std::string split_host_port(std::string_view text, bool bare_v6, HostPort& out) {
  if (text.empty())
    return "empty host";
  std::string_view port_text;
  bool has_port = false;
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos)
      return "'[' without ']'";
    const std::string_view inside = text.substr(1, close - 1);
    if (inside.empty())
      return "empty IPv6 address in brackets";
    if (!is_ipv6(inside))
      return "'" + shown(inside) + "' is not an IPv6 address";
    out.host = std::string(inside);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return "unexpected '" + shown(rest) + "' after ']'";
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t colons = static_cast<std::size_t>(std::count(text.begin(), text.end(), ':'));
    if (colons > 1) {
      if (!bare_v6)
        return "IPv6 address '" + shown(text) + "' needs brackets";
      if (!is_ipv6(text))
        return "'" + shown(text) + "' is not an IPv6 address";
      out.host = std::string(text);
      return {};
    }
    const std::size_t colon = text.find(':');
    const std::string_view host = text.substr(0, colon);
    if (std::string why = dns_host_error(host); !why.empty())
      return why;
    out.host = std::string(host);
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      has_port = true;
    }
  }
  if (has_port) {
    std::uint16_t port = 0;
    if (std::string why = port_error(port_text, port); !why.empty())
      return why;
    out.port = port;
  }
  return {};
}

}  // namespace

std::string node_name_error(std::string_view name) {
  if (name.empty())
    return "empty name";
  if (name.size() > kMaxNameBytes)
    return "name longer than " + std::to_string(kMaxNameBytes) + " bytes";
  for (std::size_t at = 0; at < name.size();) {
    const std::size_t n = utf8_sequence(name.substr(at));
    if (n == 0)
      return "name is not valid UTF-8 (byte " + std::to_string(at) + ")";
    const auto c = static_cast<unsigned char>(name[at]);
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(name[at + 1]) < 0xa0;
    if (c < 0x20 || c == 0x7f || c1)
      return "control character in name at byte " + std::to_string(at);
    at += n;
  }
  return {};
}

std::optional<NodeAddress> parse_node_address(std::string_view text, std::string& error) {
  auto fail = [&](const std::string& why) {
    error = "invalid address '" + shown(text) + "': " + why + "; " + std::string(kNodeForm);
    return std::nullopt;
  };
  NodeAddress out;
  const std::size_t at = text.rfind('@');
  const std::string_view name = text.substr(0, at);
  if (std::string why = node_name_error(name); !why.empty())
    return fail(why);
  out.name = std::string(name);
  if (at == std::string_view::npos)
    return out;
  HostPort host;
  if (std::string why = split_host_port(text.substr(at + 1), false, host); !why.empty())
    return fail(why);
  out.host = std::move(host.host);
  out.pmd_port = host.port;
  return out;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::string_view flag,
                                        std::string& error) {
  HostPort out;
  if (std::string why = split_host_port(text, true, out); !why.empty()) {
    error = "invalid " + std::string(flag) + " '" + shown(text) + "': " + why + "; " +
            std::string(kHostForm);
    return std::nullopt;
  }
  return out;
}

std::optional<PortRange> parse_port_range(std::string_view text, std::string_view flag,
                                          std::string& error) {
  auto fail = [&](const std::string& why) {
    error = "invalid " + std::string(flag) + " '" + shown(text) + "': " + why +
            "; expected PORT or FIRST-LAST, e.g. 9100-9199 (0: any free port)";
    return std::nullopt;
  };
  const std::size_t dash = text.find('-');
  PortRange range;
  if (dash == std::string_view::npos) {
    if (std::string why = port_error(text, range.first, true); !why.empty())
      return fail(why);
    range.last = range.first;
    return range;
  }
  if (std::string why = port_error(text.substr(0, dash), range.first); !why.empty())
    return fail(why);
  if (std::string why = port_error(text.substr(dash + 1), range.last); !why.empty())
    return fail(why);
  if (range.first > range.last)
    return fail("first port above the last");
  return range;
}

std::string format_host(std::string_view host) {
  if (host.find(':') != std::string_view::npos)
    return "[" + std::string(host) + "]";
  return std::string(host);
}

std::string format_host_port(const HostPort& address, std::uint16_t default_port) {
  std::string out = format_host(address.host);
  if (address.port && *address.port != default_port)
    out += ":" + std::to_string(*address.port);
  return out;
}

std::string format_node_address(const NodeAddress& address, std::uint16_t default_port) {
  if (!address.host)
    return address.name;
  return address.name + "@" + format_host_port({*address.host, address.pmd_port}, default_port);
}

std::string node_host_via(const std::string& registered_host, const std::string& pmd_host) {
  const bool wildcard = registered_host == "0.0.0.0" || registered_host == "::" ||
                        registered_host == "[::]" || registered_host.empty();
  if ((wildcard || is_loopback_host(registered_host)) && !is_loopback_host(pmd_host))
    return pmd_host;
  return registered_host;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "localhost.")
    return true;
  const std::string text(host);
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) != 1)
    return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6))
    return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

}  // namespace distflow
