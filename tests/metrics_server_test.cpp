#include "metrics_server.hpp"

#include <atomic>
#include <thread>

#include <asio/post.hpp>
#include <catch2/catch.hpp>

#include "errors.hpp"
#include "support.hpp"

namespace distflow {
namespace {

using namespace std::chrono_literals;
using test::http_exchange;

constexpr std::string_view kPage = "# HELP up Up.\n# TYPE up gauge\nup 1\n";

/// A server on its own io_context thread, stopped (on that thread) at the end.
struct Served {
  explicit Served(std::chrono::milliseconds timeout = 10s)
      : server(
            io, MetricsEndpoint{"127.0.0.1", 0}, SecurityOptions{},
            [this] {
              ++renders;
              return std::string(kPage);
            },
            timeout),
        thread([this] { io.run(); }) {}
  ~Served() {
    asio::post(io, [this] { server.stop(); });
    thread.join();
  }
  asio::io_context io;
  std::atomic<int> renders{0};
  MetricsServer server;
  std::thread thread;
};

std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

}  // namespace

TEST_CASE("metrics_server: GET /metrics is the page, HTTP/1.1 and 1.0", "[metrics_server]") {
  Served served;
  CHECK(served.server.address() == "127.0.0.1:" + std::to_string(served.server.port()));
  for (const char* request :
       {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metrics HTTP/1.0\r\n\r\n",
        "GET /metrics?name[]=up HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.0\n\n"}) {
    INFO(request);
    auto response = http_exchange(served.server.port(), request);
    REQUIRE(response);
    CHECK(*response ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
          "Content-Length: " +
              std::to_string(kPage.size()) +
              "\r\n"
              "Connection: close\r\n\r\n" +
              std::string(kPage));
  }
  CHECK(served.renders == 4);
}

TEST_CASE("metrics_server: HEAD has the headers only; other paths 404, methods 405",
          "[metrics_server]") {
  Served served;
  const auto port = served.server.port();
  auto head = http_exchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  REQUIRE(head);
  CHECK(status_line(*head) == "HTTP/1.1 200 OK");
  CHECK(head->find("Content-Length: " + std::to_string(kPage.size()) + "\r\n") !=
        std::string::npos);
  CHECK(body_of(*head).empty());
  CHECK(served.renders == 1);

  for (const char* request : {"GET / HTTP/1.1\r\n\r\n", "GET /metricsx HTTP/1.1\r\n\r\n",
                              "GET /favicon.ico HTTP/1.0\r\n\r\n", "POST / HTTP/1.1\r\n\r\n"}) {
    auto response = http_exchange(port, request);
    REQUIRE(response);
    CHECK(status_line(*response) == "HTTP/1.1 404 Not Found");
    CHECK(body_of(*response) == "Not Found\n");
  }
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    auto response = http_exchange(port, std::string(method) + " /metrics HTTP/1.1\r\n\r\n");
    REQUIRE(response);
    CHECK(status_line(*response) == "HTTP/1.1 405 Method Not Allowed");
    CHECK(response->find("\r\nAllow: GET, HEAD\r\n") != std::string::npos);
  }
  CHECK(served.renders == 1);  // never rendered for an error
}

TEST_CASE("metrics_server: malformed requests: 400, 505, 431 for a head over 8 KiB",
          "[metrics_server]") {
  Served served;
  const auto port = served.server.port();
  for (const char* request :
       {"GARBAGE\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics FTP/1.0\r\n\r\n", "\r\n\r\n"}) {
    INFO(request);
    auto response = http_exchange(port, request);
    REQUIRE(response);
    CHECK(status_line(*response) == "HTTP/1.1 400 Bad Request");
  }
  auto v2 = http_exchange(port, "GET /metrics HTTP/2.0\r\n\r\n");
  REQUIRE(v2);
  CHECK(status_line(*v2) == "HTTP/1.1 505 HTTP Version Not Supported");

  std::string huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(9000, 'a');
  auto too_large = http_exchange(port, huge);
  REQUIRE(too_large);
  CHECK(status_line(*too_large) == "HTTP/1.1 431 Request Header Fields Too Large");
  // Just under the limit, it is served.
  std::string fits = "GET /metrics HTTP/1.1\r\nX-Filler: ";
  fits += std::string(8192 - fits.size() - 4, 'a') + "\r\n\r\n";
  REQUIRE(fits.size() == 8192);
  auto served_ok = http_exchange(port, fits);
  REQUIRE(served_ok);
  CHECK(status_line(*served_ok) == "HTTP/1.1 200 OK");
  CHECK(served.renders == 1);
}

TEST_CASE("metrics_server: a request in pieces, and a silent client closed at the timeout",
          "[metrics_server]") {
  Served served(500ms);
  const auto port = served.server.port();
  {
    test::RawClient client("127.0.0.1", port);
    for (char c : std::string("GET /metrics HTTP/1.1\r\n\r"))
      client.send_raw(std::string(1, c));
    client.send_raw("\n");
    CHECK(client.wait_closed(5s));
  }
  CHECK(served.renders == 1);
  test::RawClient silent("127.0.0.1", port);
  const auto start = std::chrono::steady_clock::now();
  CHECK(silent.wait_closed(5s));
  CHECK(std::chrono::steady_clock::now() - start >= 400ms);
  CHECK(served.renders == 1);
}

TEST_CASE("metrics_server: exposure rule beyond loopback, bind errors, stop", "[metrics_server]") {
  asio::io_context io;
  auto render = [] { return std::string(); };
  try {
    MetricsServer refused(io, MetricsEndpoint{"0.0.0.0", 0}, SecurityOptions{}, render);
    FAIL("a wildcard address without cookie, TLS or insecure was accepted");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("refusing to listen on 0.0.0.0 (--metrics)"));
  }
  SecurityOptions insecure;
  insecure.insecure = true;
  CHECK_NOTHROW(MetricsServer(io, MetricsEndpoint{"0.0.0.0", 0}, insecure, render));
  CHECK_NOTHROW(MetricsServer(io, MetricsEndpoint{"localhost", 0}, SecurityOptions{}, render));
  CHECK_THROWS_WITH(MetricsServer(io, MetricsEndpoint{"not-an-ip", 0}, insecure, render),
                    Catch::Contains("invalid metrics address 'not-an-ip'"));

  MetricsServer first(io, MetricsEndpoint{"127.0.0.1", 0}, SecurityOptions{}, render);
  CHECK_THROWS_WITH(
      MetricsServer(io, MetricsEndpoint{"127.0.0.1", first.port()}, SecurityOptions{}, render),
      Catch::Contains("cannot serve metrics on 127.0.0.1:" + std::to_string(first.port())));
  first.stop();
  first.stop();  // idempotent
  io.run_for(100ms);
  CHECK_THROWS(test::RawClient("127.0.0.1", first.port()));
}

TEST_CASE("metrics_server: responses to request heads", "[metrics_server]") {
  int renders = 0;
  const MetricsRender render = [&renders] {
    ++renders;
    return std::string("x 1\n");
  };
  struct Row {
    const char* head;
    const char* status;
  };
  const Row rows[] = {
      {"GET /metrics HTTP/1.1\r\nHost: a", "200 OK"},
      {"GET /metrics HTTP/1.0", "200 OK"},
      {"HEAD /metrics HTTP/1.1", "200 OK"},
      {"GET /metrics/ HTTP/1.1", "404 Not Found"},
      {"GET http://x/metrics HTTP/1.1", "404 Not Found"},
      {"PATCH /metrics HTTP/1.1", "405 Method Not Allowed"},
      {"GET /metrics HTTP/1.2", "505 HTTP Version Not Supported"},
      {"GET /metrics", "400 Bad Request"},
      {"", "400 Bad Request"},
      {"GET /metrics HTTP/1.1 extra", "400 Bad Request"},
  };
  for (const Row& row : rows) {
    INFO(row.head);
    const std::string response = metrics_http_response(row.head, render);
    CHECK(response.substr(0, response.find("\r\n")) == std::string("HTTP/1.1 ") + row.status);
    CHECK(response.find("\r\nConnection: close\r\n") != std::string::npos);
  }
  CHECK(renders == 3);
}

}  // namespace distflow
