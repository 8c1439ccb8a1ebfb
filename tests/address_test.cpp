// Targets (alias, alias@host, alias@host:port, IPv6 in brackets), host flag values
// and port ranges: what parses, what it renders back to, and the error for the rest.

#include "address.hpp"

#include <optional>
#include <string>

#include <catch2/catch.hpp>

namespace distflow {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("address: targets parse into name, host and PMD port, and render back", "[address]") {
  struct Case {
    std::string text;
    std::string name;
    std::optional<std::string> host;
    std::optional<std::uint16_t> port;
    std::string rendered;  // with default port 4369
  };
  const Case cases[] = {
      {"worker", "worker", {}, {}, "worker"},
      {"worker-4242-00c0de", "worker-4242-00c0de", {}, {}, "worker-4242-00c0de"},
      {"my worker", "my worker", {}, {}, "my worker"},  // the node-name rule allows spaces
      {"w@host-b", "w", "host-b", {}, "w@host-b"},
      {"w@db1.example.org", "w", "db1.example.org", {}, "w@db1.example.org"},
      {"w@db1.example.org.", "w", "db1.example.org.", {}, "w@db1.example.org."},
      {"w@10.203.0.2", "w", "10.203.0.2", {}, "w@10.203.0.2"},
      {"w@10.203.0.2:4370", "w", "10.203.0.2", 4370, "w@10.203.0.2:4370"},
      {"w@10.203.0.2:4369", "w", "10.203.0.2", 4369, "w@10.203.0.2"},  // default: left out
      {"w@h:1", "w", "h", 1, "w@h:1"},
      {"w@h:65535", "w", "h", 65535, "w@h:65535"},
      {"w@[::1]", "w", "::1", {}, "w@[::1]"},
      {"w@[::1]:4370", "w", "::1", 4370, "w@[::1]:4370"},
      {"w@[fe80::1%eth0]:9", "w", "fe80::1%eth0", 9, "w@[fe80::1%eth0]:9"},
      {"w@[::ffff:10.0.0.1]", "w", "::ffff:10.0.0.1", {}, "w@[::ffff:10.0.0.1]"},
      {"a@b@host", "a@b", "host", {}, "a@b@host"},  // the host starts at the last '@'
      {"ünïcødé@h", "ünïcødé", "h", {}, "ünïcødé@h"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    std::string error;
    const auto parsed = parse_node_address(c.text, error);
    REQUIRE(parsed);
    CHECK(error.empty());
    CHECK(parsed->name == c.name);
    CHECK(parsed->host == c.host);
    CHECK(parsed->pmd_port == c.port);
    CHECK(format_node_address(*parsed, 4369) == c.rendered);
  }
}

TEST_CASE("address: malformed targets are refused with the input and the expected form",
          "[address]") {
  struct Case {
    std::string text;
    std::string why;
  };
  const Case cases[] = {
      {"", "empty name"},
      {"@h", "empty name"},
      {"a@", "empty host"},
      {"a@:4369", "empty host"},
      {"a@h:", "empty port"},
      {"a@h:0", "port 0 is out of range (1 to 65535)"},
      {"a@h:99999", "port 99999 is out of range (1 to 65535)"},
      {"a@h:123456", "port '123456' is not a number from 1 to 65535"},
      {"a@h:-1", "port '-1' is not a number from 1 to 65535"},
      {"a@h:+1", "port '+1' is not a number from 1 to 65535"},
      {"a@h:http", "port 'http' is not a number from 1 to 65535"},
      {"a@h:1:2", "IPv6 address 'h:1:2' needs brackets"},
      {"a@::1", "IPv6 address '::1' needs brackets"},
      {"a@[::1", "'[' without ']'"},
      {"a@[]", "empty IPv6 address in brackets"},
      {"a@[::1]x", "unexpected 'x' after ']'"},
      {"a@[::1]:", "empty port"},
      {"a@[::1]:0", "port 0 is out of range"},
      {"a@[10.0.0.1]", "'10.0.0.1' is not an IPv6 address"},
      {"a@[::g]", "'::g' is not an IPv6 address"},
      {"a@[fe80::1%]", "'fe80::1%' is not an IPv6 address"},
      {"a@ho st", "space in host at byte 2"},
      {"a@host :1", "space in host at byte 4"},
      {"a@h: 1", "port ' 1' is not a number"},
      {"a@h:1 ", "port '1 ' is not a number"},
      {"a@h\tx", "control character in host at byte 1"},
      {"a@h\nx", "control character in host at byte 1"},
      {std::string("a@h\0x", 5), "control character in host at byte 1"},
      {"a\n@h", "control character in name at byte 1"},
      {std::string("a\0b", 3), "control character in name at byte 1"},
      {"a\x7f", "control character in name at byte 1"},
      {"a\xc2\x85", "control character in name at byte 1"},  // U+0085, a C1 control
      {"a\xff", "name is not valid UTF-8 (byte 1)"},
      {"a\xed\xa0\x80", "name is not valid UTF-8"},  // an encoded surrogate
      {std::string(129, 'n'), "name longer than 128 bytes"},
      {"a@h..example", "empty label in host 'h..example'"},
      {"a@.h", "empty label"},
      {"a@h/x", "character '/' not allowed in a host name"},
      {"a@h\xc3\xa9", "not allowed in a host name"},
      {"a@" + std::string(64, 'x') + ".org", "label longer than 63 bytes"},
      {"a@" + std::string(254, 'x'), "host longer than 253 bytes"},
      {"a@10.203.0.300", "'10.203.0.300' is not an IPv4 address"},
      {"a@1.2.3", "'1.2.3' is not an IPv4 address"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    std::string error;
    CHECK_FALSE(parse_node_address(c.text, error));
    INFO(error);
    CHECK(contains(error, c.why));
    CHECK(error.starts_with("invalid address '"));
    CHECK(
        contains(error, "expected alias, alias@host or alias@host:port (IPv6: alias@[::1]:port)"));
    // Control characters are never echoed raw.
    CHECK(error.find_first_of(std::string("\n\t\0", 3)) == std::string::npos);
  }
  std::string error;
  parse_node_address("a@h\n", error);
  CHECK(contains(error, "'a@h\\x0a'"));
}

TEST_CASE("address: host flag values, with an optional port; bare IPv6 without one", "[address]") {
  struct Case {
    std::string text;
    std::string host;
    std::optional<std::uint16_t> port;
    std::string rendered;
  };
  const Case cases[] = {
      {"10.203.0.1", "10.203.0.1", {}, "10.203.0.1"},
      {"10.203.0.1:4370", "10.203.0.1", 4370, "10.203.0.1:4370"},
      {"localhost", "localhost", {}, "localhost"},
      {"::1", "::1", {}, "[::1]"},
      {"::", "::", {}, "[::]"},
      {"[::1]", "::1", {}, "[::1]"},
      {"[::1]:80", "::1", 80, "[::1]:80"},
      {"0.0.0.0", "0.0.0.0", {}, "0.0.0.0"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    std::string error;
    const auto parsed = parse_host_port(c.text, "--host", error);
    REQUIRE(parsed);
    CHECK(parsed->host == c.host);
    CHECK(parsed->port == c.port);
    CHECK(format_host_port(*parsed, 4369) == c.rendered);
  }
  for (const char* bad : {"", ":1", "h:", "h:0", "h:99999", "[::1", "::g", "h st", "h\x01"}) {
    INFO(bad);
    std::string error;
    CHECK_FALSE(parse_host_port(bad, "--bind", error));
    CHECK(error.starts_with("invalid --bind '"));
    CHECK(contains(error, "expected host, host:port, [IPv6] or [IPv6]:port"));
  }
}

TEST_CASE("address: port ranges", "[address]") {
  std::string error;
  auto one = parse_port_range("9100", "--listen-port", error);
  REQUIRE(one);
  CHECK((one->first == 9100 && one->last == 9100));
  auto any = parse_port_range("0", "--listen-port", error);
  REQUIRE(any);
  CHECK((any->first == 0 && any->last == 0));
  auto range = parse_port_range("9100-9199", "--listen-port", error);
  REQUIRE(range);
  CHECK((range->first == 9100 && range->last == 9199));
  auto single = parse_port_range("1-1", "--listen-port", error);
  REQUIRE(single);
  CHECK((single->first == 1 && single->last == 1));
  struct Case {
    std::string text, why;
  };
  const Case bad[] = {
      {"", "empty port"},
      {"9199-9100", "first port above the last"},
      {"0-10", "port 0 is out of range"},
      {"10-", "empty port"},
      {"-10", "empty port"},
      {"1-2-3", "port '2-3' is not a number"},
      {"70000", "port 70000 is out of range"},
      {"9100 - 9199", "is not a number"},
      {"x", "port 'x' is not a number"},
  };
  for (const Case& c : bad) {
    INFO(c.text);
    CHECK_FALSE(parse_port_range(c.text, "--listen-port", error));
    CHECK(error.starts_with("invalid --listen-port '" + c.text + "': "));
    CHECK(contains(error, c.why));
    CHECK(contains(error, "expected PORT or FIRST-LAST, e.g. 9100-9199"));
  }
}

TEST_CASE("address: loopback hosts", "[address]") {
  for (const char* host :
       {"127.0.0.1", "127.0.0.2", "127.255.255.254", "localhost", "::1", "::ffff:127.0.0.1"}) {
    INFO(host);
    CHECK(is_loopback_host(host));
  }
  for (const char* host : {"10.203.0.1", "0.0.0.0", "::", "192.168.1.1", "::ffff:10.0.0.1",
                           "example.org", "localhost.example.org", "128.0.0.1", "fe80::1", ""}) {
    INFO(host);
    CHECK_FALSE(is_loopback_host(host));
  }
}

}  // namespace distflow
