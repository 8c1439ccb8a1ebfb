// `distflow pmd status|list|resolve NAME|kill [--force]`: administers a running PMD.

#include <algorithm>
#include <array>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <unistd.h>

#include "address.hpp"
#include "credentials.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "modes.hpp"
#include "pmd_client.hpp"

namespace distflow::modes {
namespace {

struct AdminFlags {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  bool json = false;
  bool force = false;
  std::optional<bool> cluster;  // list/status of a clustered PMD; unset: its default
  std::string name;
  SecurityFlags security;
  SecurityOptions security_options;
};

std::string format_time(std::int64_t ms) {
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string nodes_json(const std::vector<NodeInfo>& nodes) {
  std::string out = "[";
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (i)
      out += ',';
    append_node_info(out, nodes[i]);
  }
  return out + "]";
}

std::string endpoint_json(const PmdEndpoint& endpoint) {
  std::string out;
  append_json_string(out, endpoint.to_string());
  return out;
}

/// Text output: every name from the PMD goes through printable(), so that no
/// entry can move the cursor, clear the screen or forge a row. A clustered PMD's
/// list gets a column saying where each node is registered.
void print_nodes(const std::vector<NodeInfo>& nodes) {
  std::cout << "Registered nodes: " << nodes.size() << "\n";
  if (nodes.empty())
    return;
  const bool cluster =
      std::any_of(nodes.begin(), nodes.end(), [](const NodeInfo& n) { return n.remote; });
  std::vector<std::array<std::string, 5>> rows{
      {"ALIAS", "NODE ID", "ADDRESS", "LAST HEARTBEAT", cluster ? "PMD" : ""}};
  for (const auto& n : nodes) {
    rows.push_back({n.alias.empty() ? "-" : printable(n.alias), printable(n.node_id),
                    printable(n.host) + ":" + std::to_string(n.port), format_time(n.last_heartbeat),
                    !cluster   ? ""
                    : n.remote ? printable(n.pmd)
                               : "(this one)"});
  }
  std::array<std::size_t, 5> width{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::cout << " ";
    const std::size_t columns = cluster ? row.size() : row.size() - 1;
    for (std::size_t i = 0; i < columns; ++i) {
      std::cout << " " << row[i];
      if (i + 1 < columns)
        std::cout << std::string(width[i] - row[i].size() + 1, ' ');
    }
    std::cout << "\n";
  }
}

/// The cluster part of `status` (the "cluster" member of a clustered PMD's list).
void print_cluster(const std::string& json) {
  const auto field = [&json](std::string_view key) -> std::string {
    const std::string needle = "\"" + std::string(key) + "\":";
    const auto at = json.find(needle);
    if (at == std::string::npos)
      return {};
    std::size_t begin = at + needle.size(), end = begin;
    if (json[begin] == '"') {
      ++begin;
      end = begin;
      while (end < json.size() && json[end] != '"')
        end += json[end] == '\\' ? 2u : 1u;
    } else if (json[begin] == '[') {
      end = json.find(']', begin) + 1;
    } else {
      end = json.find_first_of(",}", begin);
    }
    return printable(json.substr(begin, end - begin));
  };
  std::cout << "  cluster: " << field("name") << " via " << field("etcd")
            << "\n  state:   " << field("state");
  if (const auto why = field("staleReason"); !why.empty())
    std::cout << " (" << why << ")";
  std::cout << "\n  revision: " << field("revision") << "\n  members: " << field("members")
            << "\n  remote nodes: " << field("remoteNodes") << "\n";
}

}  // namespace

std::function<Runner()> add_pmd_admin(CLI::App& pmd,
                                      std::shared_ptr<const SecurityFlags> pmd_security) {
  auto flags = std::make_shared<AdminFlags>();
  auto common = [&pmd, flags](CLI::App* sub) {
    sub->add_option("--host", flags->host, "PMD host")->capture_default_str();
    sub->add_option("-p,--port", flags->port, "PMD port (default: $DISTFLOW_PMD_PORT, else 4369)");
    sub->add_flag("--json", flags->json, "print one JSON document instead of text");
    add_security_flags(*sub, flags->security, false);
    (void)pmd;
  };
  CLI::App* status = pmd.add_subcommand("status", "show whether a PMD answers, and its nodes");
  CLI::App* list = pmd.add_subcommand("list", "list the registered nodes");
  CLI::App* resolve =
      pmd.add_subcommand("resolve", "show the node registered under an alias or id");
  CLI::App* kill = pmd.add_subcommand("kill", "stop the PMD (refused while nodes are registered)");
  for (CLI::App* sub : {status, list, resolve, kill})
    common(sub);
  resolve->add_option("name", flags->name, "alias or node id")->required();
  kill->add_flag("--force", flags->force, "stop even when nodes are registered");
  for (CLI::App* sub : {status, list}) {
    sub->add_flag_callback(
        "--cluster", [flags] { flags->cluster = true; },
        "a clustered PMD: every node of the cluster, remote ones marked (the default)");
    sub->add_flag_callback(
        "--no-cluster", [flags] { flags->cluster = false; },
        "a clustered PMD: only the nodes registered with it");
  }

  return [&pmd, flags, pmd_security, status, list, resolve, kill]() -> Runner {
    CLI::App* chosen = nullptr;
    for (CLI::App* sub : {status, list, resolve, kill}) {
      if (sub->parsed())
        chosen = sub;
    }
    if (chosen == nullptr)
      return Runner{};
    return [&pmd, flags, pmd_security, chosen, status, list, resolve]() -> int {
      if (int code = load_security(pmd, flags->security, flags->security_options, {}, {},
                                   pmd_security.get())) {
        return code;
      }
      PmdEndpoint endpoint;
      std::string error;
      auto host = parse_host_port(flags->host, "--host", error);
      if (!host)
        return usage_error(*chosen, error);
      endpoint.host = host->host;
      // `pmd --port P list` and `pmd list --port P` both work.
      const CLI::Option* own = chosen->get_option("--port");
      const CLI::Option* parent = pmd.get_option_no_throw("--port");
      if (own->count() > 0) {
        endpoint.port = flags->port;
      } else if (parent != nullptr && parent->count() > 0) {
        endpoint.port = parent->as<std::uint16_t>();
      } else {
        endpoint.port = host->port.value_or(default_pmd_port());
      }
      std::string name = flags->name;
      if (chosen == resolve && name.find('@') != std::string::npos) {
        // `pmd resolve alias@host[:port]`: that host's PMD (issue 12).
        auto address = parse_node_address(name, error);
        if (!address)
          return usage_error(*chosen, error);
        if (address->host)
          endpoint = {*address->host, address->pmd_port.value_or(endpoint.port)};
        name = address->name;
      }
      const Credentials credentials(flags->security_options);
      auto client = PmdClient::connect(endpoint, std::chrono::seconds(2), &credentials,
                                       "admin-" + std::to_string(::getpid()));
      if (chosen == status || chosen == list) {
        auto reply = client->request("list", !flags->cluster   ? "{}"
                                             : *flags->cluster ? R"({"cluster":true})"
                                                               : R"({"cluster":false})");
        if (!reply.error.empty())
          throw Error("pmd " + endpoint.to_string() + ": " + printable(reply.error));
        const auto nodes = reply.nodes ? std::move(*reply.nodes) : std::vector<NodeInfo>{};
        if (flags->json) {
          if (chosen == status) {
            std::cout << "{\"pmd\":" << endpoint_json(endpoint)
                      << ",\"running\":true,\"nodes\":" << nodes_json(nodes)
                      << (reply.cluster.empty() ? "" : ",\"cluster\":" + reply.cluster) << "}\n";
          } else {
            std::cout << nodes_json(nodes) << "\n";
          }
          return 0;
        }
        if (chosen == status) {
          std::cout << "PMD Status:\n  address: " << endpoint.to_string() << "\n  running: yes\n";
          if (!reply.cluster.empty())
            print_cluster(reply.cluster);
        }
        print_nodes(nodes);
        return 0;
      }
      if (chosen == resolve) {
        auto node = client->resolve(name);
        if (!node)
          throw Error("'" + flags->name + "' not found on PMD " + endpoint.to_string());
        if (flags->json) {
          std::string out;
          append_node_info(out, *node);
          std::cout << out << "\n";
        } else {
          std::cout << "alias:          " << (node->alias.empty() ? "-" : printable(node->alias))
                    << "\nnode id:        " << printable(node->node_id)
                    << "\naddress:        " << printable(node->host) << ":" << node->port
                    << "\nlast heartbeat: " << format_time(node->last_heartbeat) << "\n";
        }
        return 0;
      }
      auto reply = client->request("shutdown", flags->force ? R"({"force":true})" : "{}");
      if (!reply.error.empty()) {
        if (reply.error.ends_with("use force")) {
          const std::string count = reply.error.substr(0, reply.error.find(' '));
          throw Error("PMD " + endpoint.to_string() + " refused to stop: " + count +
                      (count == "1" ? " node is" : " nodes are") +
                      " registered; use --force to stop it anyway");
        }
        throw Error("PMD " + endpoint.to_string() + " refused to stop: " + printable(reply.error));
      }
      if (flags->json) {
        std::cout << "{\"pmd\":" << endpoint_json(endpoint) << ",\"stopped\":true}\n";
      } else {
        std::cout << "PMD on " << endpoint.to_string() << " stopped\n";
      }
      return 0;
    };
  };
}

}  // namespace distflow::modes
