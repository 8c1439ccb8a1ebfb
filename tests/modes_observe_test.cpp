// End-to-end tests of what a running system shows (issue 16): the PMD's and a
// node's /metrics, scraped over HTTP from the real binary with --metrics on port
// 0 (the bound address read from the log), and --log-format json. Every wait has
// a deadline; every process is stopped by its PID.

#include <regex>
#include <signal.h>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "node_cluster.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

using json = nlohmann::json;

double value(const std::string& page, const std::string& series) {
  auto v = metric_value(page, series);
  INFO(series << " in\n" << page);
  REQUIRE(v);
  return *v;
}

double delta(const std::string& before, const std::string& after, const std::string& series) {
  return value(after, series) - value(before, series);
}

std::uint16_t metrics_port(ChildProcess& child) {
  std::string log;
  const std::uint16_t port = metrics_port_from_log(child, log);
  INFO(log);
  REQUIRE(port != 0);
  return port;
}

/// Scrapes until `series` has moved by `expected` from `before` (the counter is
/// bumped once the bytes are on the wire, which the receiver may see first).
std::string scrape_until(std::uint16_t port, const std::string& before, const std::string& series,
                         double expected, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string page = scrape_metrics(port);
  while (delta(before, page, series) < expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    page = scrape_metrics(port);
  }
  return page;
}

/// Every line of `text` is one JSON object with time, level, pid (== `pid`) and message.
void check_json_lines(const std::string& text, int pid) {
  std::istringstream lines(text);
  std::string line;
  const std::regex time(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  int count = 0;
  while (std::getline(lines, line)) {
    INFO(line);
    json record;
    REQUIRE_NOTHROW(record = json::parse(line));
    REQUIRE(record.is_object());
    CHECK(record["time"].is_string());
    CHECK(std::regex_match(record["time"].get<std::string>(), time));
    CHECK(record["level"].is_string());
    CHECK(record["pid"] == pid);
    CHECK(record["message"].is_string());
    ++count;
  }
  CHECK(count > 0);
}

}  // namespace

TEST_CASE("modes_observe: a node's /metrics counters move by exactly the messages sent",
          "[modes_observe]") {
  Cluster cluster;
  auto receiver = cluster.node("r", {"--metrics", "127.0.0.1:0"});
  auto sender = cluster.node("s", {"--metrics", "127.0.0.1:0"});
  const std::uint16_t r_port = metrics_port(*receiver);
  const std::uint16_t s_port = metrics_port(*sender);
  const std::string r0 = scrape_metrics(r_port);
  const std::string s0 = scrape_metrics(s_port);
  CHECK(value(r0, "distflow_node_mailbox_capacity") == 1000);
  CHECK(value(r0, "distflow_node_uptime_seconds") > 0);

  // 1 000 messages from `distflow send r -`.
  const RunResult sent = cluster.send({"r", "-"}, numbered_lines(1000, R"({"n":)", "}"));
  REQUIRE(sent.code == 0);
  REQUIRE(read_numbered(*receiver, 1000).empty());
  const std::string r1 = scrape_metrics(r_port);
  CHECK(delta(r0, r1, "distflow_node_messages_received_total") == 1000);
  CHECK(delta(r0, r1, "distflow_node_mailbox_accepted_total") == 1000);
  CHECK(delta(r0, r1, "distflow_node_mailbox_delivered_total") == 1000);
  CHECK(delta(r0, r1, "distflow_node_bad_frames_total") == 0);
  CHECK(value(r1, "distflow_node_mailbox_depth") == 0);
  CHECK(value(r1, "distflow_node_mailbox_high_water") >= 1);
  CHECK(value(r1, "distflow_node_mailbox_high_water") <= 1000);
  CHECK(r1.find("distflow_node_info{node_id=\"r-") != std::string::npos);
  CHECK(r1.find(",alias=\"r\"} 1\n") != std::string::npos);

  // 500 more from node s, through its stdin: s counts them as sent.
  sender->write(numbered_lines(500, R"({"to":"r","payload":{"n":)", "}}"));
  REQUIRE(read_numbered(*receiver, 500).empty());
  const std::string s1 = scrape_until(s_port, s0, "distflow_node_messages_sent_total", 500);
  CHECK(delta(s0, s1, "distflow_node_messages_sent_total") == 500);
  CHECK(delta(s0, s1, "distflow_node_send_failures_total") == 0);
  CHECK(delta(s0, s1, "distflow_node_messages_received_total") == 0);
  CHECK(value(s1, R"(distflow_node_links{direction="outbound"})") == 1);
  const std::string r2 = scrape_metrics(r_port);
  CHECK(delta(r0, r2, "distflow_node_messages_received_total") == 1500);
  CHECK(delta(r0, r2, "distflow_node_messages_sent_total") == 0);
  CHECK(value(r2, R"(distflow_node_links{direction="inbound"})") >= 1);
  // Nothing moves without traffic.
  const std::string r3 = scrape_metrics(r_port);
  CHECK(delta(r2, r3, "distflow_node_messages_received_total") == 0);

  for (auto* node : {receiver.get(), sender.get()}) {
    node->close_stdin();
    CHECK(node->wait(10s) == 0);
  }
}

TEST_CASE("modes_observe: the PMD's /metrics count requests, errors, joins, leaves exactly",
          "[modes_observe]") {
  PmdProcess pmd({"--metrics", "127.0.0.1:0"});
  const std::uint16_t port = metrics_port(*pmd.process);
  const std::string p0 = scrape_metrics(port);
  CHECK(value(p0, "distflow_pmd_nodes") == 0);
  CHECK(value(p0, "distflow_pmd_connections") == 0);

  auto client = std::make_unique<RawClient>("127.0.0.1", pmd.port);
  REQUIRE(client->request(R"({"type":"register","requestId":1,"payload":{"nodeId":"n1",)"
                          R"("alias":"a","host":"127.0.0.1","port":5000}})"));
  for (int i = 0; i < 3; ++i)
    REQUIRE(client->request(R"({"type":"resolve","payload":{"alias":"a"}})"));
  REQUIRE(client->request(R"({"type":"resolve","payload":{"alias":"zz"}})"));
  REQUIRE(client->request(R"({"type":"frobnicate"})"));
  REQUIRE(client->request(R"({"type":)"));
  RawClient watcher("127.0.0.1", pmd.port);
  REQUIRE(watcher.request(R"({"type":"watch","payload":{}})"));
  const std::string p1 = scrape_metrics(port);
  const auto requests = [&](const char* type) {
    return delta(p0, p1, std::string("distflow_pmd_requests_total{type=\"") + type + "\"}");
  };
  const auto errors = [&](const std::string& page, const char* kind) {
    return delta(p0, page, std::string("distflow_pmd_errors_total{kind=\"") + kind + "\"}");
  };
  CHECK(requests("register") == 1);
  CHECK(requests("resolve") == 4);
  CHECK(requests("watch") == 1);
  CHECK(requests("other") == 1);
  CHECK(requests("heartbeat") == 0);
  CHECK(errors(p1, "not_found") == 1);
  CHECK(errors(p1, "unknown_type") == 1);
  CHECK(errors(p1, "malformed_json") == 1);
  CHECK(errors(p1, "frame") == 0);
  CHECK(value(p1, "distflow_pmd_nodes") == 1);
  CHECK(value(p1, "distflow_pmd_watchers") == 1);
  CHECK(value(p1, "distflow_pmd_connections") == 2);
  CHECK(delta(p0, p1, "distflow_pmd_connections_accepted_total") == 2);
  CHECK(delta(p0, p1, "distflow_pmd_joins_total") == 1);

  // The owner goes away: one leave, socket_closed; a bad frame: one frame error.
  client.reset();
  REQUIRE(watcher.read_frame(5s));  // peer:leave
  RawClient bad("127.0.0.1", pmd.port);
  bad.send_raw(std::string("\x7f\x00\x00\x00", 4));
  CHECK(bad.wait_closed(5s));
  const std::string p2 =
      scrape_until(port, p0, "distflow_pmd_connections_closed_total{reason=\"other\"}", 2);
  CHECK(delta(p0, p2, R"(distflow_pmd_leaves_total{reason="socket_closed"})") == 1);
  CHECK(delta(p0, p2, R"(distflow_pmd_leaves_total{reason="unregister"})") == 0);
  CHECK(errors(p2, "frame") == 1);
  CHECK(value(p2, "distflow_pmd_nodes") == 0);
  CHECK(value(p2, "distflow_pmd_connections") == 1);
  CHECK(delta(p0, p2, "distflow_pmd_connections_accepted_total") == 3);
  CHECK(delta(p0, p2, "distflow_pmd_connections_closed_total{reason=\"other\"}") == 2);

  pmd.process->signal(SIGTERM);
  CHECK(pmd.process->wait(10s) == 0);
}

TEST_CASE("modes_observe: /metrics answers 404 elsewhere, 405 to other methods",
          "[modes_observe]") {
  PmdProcess pmd({"--metrics", "127.0.0.1:0"});
  const std::uint16_t port = metrics_port(*pmd.process);
  for (const char* request : {"GET / HTTP/1.1\r\n\r\n", "GET /metric HTTP/1.0\r\n\r\n"}) {
    auto response = http_exchange(port, request);
    REQUIRE(response);
    CHECK(response->starts_with("HTTP/1.1 404 Not Found\r\n"));
  }
  auto post = http_exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(post);
  CHECK(post->starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
  // The daemon is not disturbed: still serving requests and scrapes.
  RawClient client("127.0.0.1", pmd.port);
  CHECK(client.request(R"({"type":"list"})"));
  CHECK(value(scrape_metrics(port), R"(distflow_pmd_requests_total{type="list"})") == 1);
  pmd.process->signal(SIGTERM);
  CHECK(pmd.process->wait(10s) == 0);
}

TEST_CASE("modes_observe: --metrics flag errors and the exposure rule", "[modes_observe]") {
  const std::string bin = distflow_binary();
  const RunResult no_port = run({bin, "pmd", "--port", "0", "--metrics", "127.0.0.1"});
  CHECK(no_port.code == 2);
  CHECK_THAT(no_port.err, Catch::Contains("invalid --metrics '127.0.0.1': expected ADDR:PORT"));
  const RunResult bad = run({bin, "pmd", "--port", "0", "--metrics", "a b:1"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("invalid --metrics 'a b:1': space in host at byte 1; "
                                      "expected ADDR:PORT"));
  const RunResult exposed = run({bin, "pmd", "--port", "0", "--metrics", "0.0.0.0:0"});
  CHECK(exposed.code == 2);
  CHECK_THAT(exposed.err, Catch::Contains("refusing to listen on 0.0.0.0 (--metrics)"));
  const RunResult node_exposed =
      run({bin, "node", "--no-auto-pmd", "--port", "1", "--metrics", "0.0.0.0:0"});
  CHECK(node_exposed.code == 2);
  CHECK_THAT(node_exposed.err, Catch::Contains("refusing to listen on 0.0.0.0 (--metrics)"));

  // --insecure: warned, and served (scraped here through loopback).
  PmdProcess pmd({"--metrics", "0.0.0.0:0", "--insecure"});
  const std::uint16_t port = metrics_port(*pmd.process);
  CHECK_THAT(pmd.process->stderr_text(),
             Catch::Contains("listening on 0.0.0.0 (--metrics) without a cookie or TLS"));
  CHECK(value(scrape_metrics(port), "distflow_pmd_nodes") == 0);
  pmd.process->signal(SIGTERM);
  CHECK(pmd.process->wait(10s) == 0);
}

TEST_CASE("modes_observe: --log-format json: every stderr line is one JSON object",
          "[modes_observe]") {
  const std::string bin = distflow_binary();
  ChildProcess pmd({bin, "--log-format", "json", "pmd", "--port", "0", "--metrics", "127.0.0.1:0"});
  auto address = pmd.read_line(10s);
  REQUIRE(address);
  const std::string pmd_port = address->substr(address->rfind(':') + 1);
  ChildProcess node({bin, "--log-format=json", "--log-level", "debug", "node", "--alias", "j",
                     "--no-auto-pmd", "--port", pmd_port, "--metrics", "127.0.0.1:0"});
  const std::uint16_t port = metrics_port(node);
  const RunResult sent = run({bin, "--log-format", "json", "send", "--port", pmd_port, "j",
                              R"({"hello":"wörld \"quoted\""})"});
  CHECK(sent.code == 0);
  auto line = node.read_line(10s);
  REQUIRE(line);
  CHECK(value(scrape_metrics(port), "distflow_node_messages_received_total") == 1);
  node.close_stdin();
  CHECK(node.wait(10s) == 0);
  pmd.signal(SIGTERM);
  CHECK(pmd.wait(10s) == 0);

  const std::string node_log = node.stderr_text();
  check_json_lines(node_log, node.pid());
  check_json_lines(pmd.stderr_text(), pmd.pid());
  // key=value words become fields: "node started node_id=... alias=j port=..."
  bool started = false;
  std::istringstream lines(node_log);
  for (std::string text; std::getline(lines, text);) {
    const json record = json::parse(text);
    if (record["level"] == "info" &&
        record["message"].get<std::string>().starts_with("node started")) {
      started = true;
      CHECK(record["fields"]["alias"] == "j");
      CHECK(record["fields"]["port"].is_number_integer());
    }
  }
  CHECK(started);

  // A command that fails: its error is a JSON record too.
  const RunResult failed = run({bin, "--log-format", "json", "node", "--alias", "x",
                                "--no-auto-pmd", "--port", std::to_string(free_port())});
  CHECK(failed.code == 1);
  std::istringstream failed_lines(failed.err);
  std::string last;
  for (std::string text; std::getline(failed_lines, text);)
    last = text;
  REQUIRE_FALSE(last.empty());
  const json error = json::parse(last);
  CHECK(error["level"] == "error");
  CHECK_THAT(error["message"].get<std::string>(), Catch::StartsWith("distflow node: error: "));
  // Text stays the default.
  const RunResult text =
      run({bin, "node", "--alias", "x", "--no-auto-pmd", "--port", std::to_string(free_port())});
  CHECK(text.code == 1);
  CHECK_THAT(text.err, Catch::Contains("distflow node: error: "));
  CHECK(text.err.find("{\"time\"") == std::string::npos);
  const RunResult bad_format = run({bin, "--log-format", "xml", "pmd", "status"});
  CHECK(bad_format.code == 2);
}

}  // namespace distflow::test
