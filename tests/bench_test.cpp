// bench_stats (pure) and the bench payload helpers; `distflow bench` smoke runs
// through the real binary with tiny counts. No timing assertions anywhere.

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "bench_runner.hpp"
#include "bench_stats.hpp"
#include "sim_hosts.hpp"
#include "support.hpp"

using namespace distflow;
using namespace std::chrono_literals;

TEST_CASE("bench_stats: summarize gives min avg max stddev median", "[bench]") {
  const std::vector<double> values{4, 1, 3, 2};
  const Summary s = summarize(values);
  CHECK(s.n == 4);
  CHECK(s.min == 1);
  CHECK(s.max == 4);
  CHECK(s.avg == Approx(2.5));
  CHECK(s.median == Approx(2.5));
  CHECK(s.stddev == Approx(1.29099).epsilon(1e-4));
  const std::vector<double> odd{5, 1, 9};
  CHECK(summarize(odd).median == 5);
  CHECK(summarize(std::vector<double>{7}).stddev == 0);
  CHECK(summarize(std::vector<double>{}).n == 0);
}

TEST_CASE("bench_stats: nearest-rank percentiles", "[bench]") {
  std::vector<std::uint64_t> ns;
  for (std::uint64_t i = 1000; i >= 1; --i)
    ns.push_back(i);
  const LatencySummary s = summarize_latencies(ns);
  CHECK(s.samples == 1000);
  CHECK(s.min == 1);
  CHECK(s.p50 == 500);
  CHECK(s.p90 == 900);
  CHECK(s.p99 == 990);
  CHECK(s.p999 == 999);
  CHECK(s.max == 1000);
  CHECK(s.avg == Approx(500.5));
  std::vector<std::uint64_t> one{42};
  CHECK(summarize_latencies(one).p999 == 42);
  std::vector<std::uint64_t> none;
  CHECK(summarize_latencies(none).p50 == 0);
}

TEST_CASE("bench_stats: number and rate formatting", "[bench]") {
  CHECK(format_count(0) == "0");
  CHECK(format_count(999) == "999");
  CHECK(format_count(1000) == "1,000");
  CHECK(format_count(1234567.6) == "1,234,568");
  CHECK(format_byte_rate(512) == "512.00 B/sec");
  CHECK(format_byte_rate(100.0 * 1024 * 1024) == "100.00 MB/sec");
  CHECK(format_ns(850) == "850 ns");
  CHECK(format_ns(4500) == "4.50 us");
  CHECK(format_ns(12345) == "12.3 us");
  CHECK(format_ns(2.5e6) == "2.50 ms");
}

TEST_CASE("bench_stats: progress bar rendering", "[bench]") {
  CHECK(render_progress(0, 10) == "[>         ]   0%");
  CHECK(render_progress(0.5, 10) == "[=====>    ]  50%");
  CHECK(render_progress(1, 10) == "[==========] 100%");
  CHECK(render_progress(7, 4) == "[====] 100%");  // clamped
  std::ostringstream out;
  {
    ProgressBar bar(out, false, "x");
    bar.update(1, 2);
  }
  CHECK(out.str().empty());  // disabled: never drawn
}

namespace {

BenchReport sample_report() {
  BenchReport report;
  report.bench = "demo";
  report.params = {{"msgs", "1,000"}, {"size", "100 B"}};
  report.rates.push_back({"fast", 100, {{1000, 0.001}, {1000, 0.002}, {1000, 0.0005}}, "lost=0"});
  LatencySummary rep;
  rep.samples = 10;
  rep.p50 = 5000;
  rep.p99 = 9000;
  rep.max = 20000;
  report.latencies.push_back({"rtt", {rep}});
  report.figures.push_back({"ratio", 6.5, "x"});
  return report;
}

}  // namespace

TEST_CASE("bench_stats: text report in the nats manner", "[bench]") {
  const BenchReport report = sample_report();
  std::ostringstream banner, text;
  write_banner(banner, report);
  CHECK(banner.str() == "Starting distflow bench demo [msgs=1,000, size=100 B]\n");
  write_text(text, report);
  const std::string s = text.str();
  CHECK_THAT(s, Catch::Contains("fast stats: 1,000,000 msgs/sec ~ 95.37 MB/sec  (median of 3)"));
  CHECK_THAT(s, Catch::Contains("lost=0"));
  CHECK_THAT(s, Catch::Contains(" min 500,000 | avg 1,166,667 | max 2,000,000 | stddev"));
  CHECK_THAT(s, Catch::Contains("rtt round trip: p50 5.00 us | p90 0 ns | p99 9.00 us"));
  CHECK_THAT(s, Catch::Contains("ratio: 6.50x"));
  BenchReport lines;
  lines.rates.push_back({"cli", 0, {{3000, 0.001}}, "lost=0", "lines"});
  std::ostringstream cli;
  write_text(cli, lines);
  CHECK(cli.str() == "cli stats: 3,000,000 lines/sec  lost=0\n");
}

TEST_CASE("bench_stats: JSON and CSV carry the raw figures", "[bench]") {
  const BenchReport report = sample_report();
  std::ostringstream json, csv;
  write_json(json, report);
  const auto doc = nlohmann::json::parse(json.str());
  CHECK(doc["bench"] == "demo");
  CHECK(doc["params"]["size"] == "100 B");
  CHECK(doc["rates"][0]["reps"].size() == 3);
  CHECK(doc["rates"][0]["unit"] == "msgs");
  CHECK(doc["rates"][0]["msgs_per_sec"]["median"].get<double>() == Approx(1e6));
  CHECK(doc["latencies"][0]["median"]["p99_ns"].get<double>() == 9000);
  CHECK(doc["figures"]["ratio"]["value"].get<double>() == 6.5);
  write_csv(csv, report);
  const std::string s = csv.str();
  CHECK(s.starts_with("bench,series,rep,metric,value\n"));
  CHECK_THAT(s, Catch::Contains("demo,fast,2,msgs_per_sec,500000\n"));
  CHECK_THAT(s, Catch::Contains("demo,rtt,1,p99_ns,9000\n"));
  CHECK_THAT(s, Catch::Contains("demo,ratio,0,x,6.500\n"));
}

TEST_CASE("bench: payloads have the requested size and round-trip id and seq", "[bench]") {
  std::string payload;
  for (std::size_t size : {0u, 10u, 30u, 100u, 1000u}) {
    make_bench_payload(payload, 3, 123456789, size);
    CHECK(nlohmann::json::accept(payload));
    if (size >= 30)
      CHECK(payload.size() == size);
    unsigned id = 0;
    std::uint64_t seq = 0;
    REQUIRE(parse_bench_payload(payload, id, seq));
    CHECK(id == 3);
    CHECK(seq == 123456789);
  }
  unsigned id = 0;
  std::uint64_t seq = 0;
  CHECK_FALSE(parse_bench_payload(R"({"x":1})", id, seq));
  CHECK_FALSE(parse_bench_payload(R"({"s":1})", id, seq));
}

TEST_CASE("bench: latency paths parse", "[bench]") {
  using P = LatencyPath;
  CHECK(parse_latency_paths("inline") == std::vector<P>{P::inline_handler});
  CHECK(parse_latency_paths("regular") == std::vector<P>{P::regular});
  CHECK(parse_latency_paths("inline,regular") == std::vector<P>{P::inline_handler, P::regular});
  CHECK(parse_latency_paths("regular,inline") == std::vector<P>{P::regular, P::inline_handler});
  CHECK_FALSE(parse_latency_paths(""));
  CHECK_FALSE(parse_latency_paths("inline,"));
  CHECK_FALSE(parse_latency_paths("both"));
}

TEST_CASE("bench: pin modes parse", "[bench]") {
  CHECK(parse_pin_mode("same") == PinMode::same);
  CHECK(parse_pin_mode("different") == PinMode::different);
  CHECK(parse_pin_mode("none") == PinMode::none);
  CHECK_FALSE(parse_pin_mode("left"));
}

TEST_CASE("bench: mailbox bench runs in-process and reports both queues", "[bench]") {
  for (std::size_t size : {0u, 100u}) {
    MailboxBenchConfig config;
    config.common.reps = 2;
    config.msgs = 5000;
    config.size = size;
    config.producers = 2;
    config.capacity = 64;
    std::ostringstream out, err;
    const BenchReport report = run_mailbox_bench(config, out, err);
    REQUIRE(report.rates.size() == 2);
    CHECK(report.rates[0].reps.size() == 2);
    CHECK(report.rates[0].reps[0].msgs == 5000);
    CHECK_THAT(out.str(), Catch::Contains("Starting distflow bench mailbox"));
    CHECK_THAT(out.str(), Catch::Contains("ratio mailbox/mutex+deque"));
    CHECK(err.str().empty());
  }
  for (auto policy :
       {OverflowPolicy::block, OverflowPolicy::drop_newest, OverflowPolicy::drop_oldest}) {
    for (std::size_t batch : {1u, 7u}) {
      MailboxBenchConfig config;
      config.common.reps = 1;
      config.msgs = 20000;
      config.capacity = 8;
      config.producers = 2;
      config.policy = policy;
      config.batch = batch;
      std::ostringstream out, err;
      CHECK(run_mailbox_bench(config, out, err).rates.size() == 2);
    }
  }
}

TEST_CASE("bench: distflow bench mailbox --json through the binary", "[bench][modes]") {
  const auto result = test::run({test::distflow_binary(), "bench", "mailbox", "--msgs", "2000",
                                 "--reps", "2", "--json", "--producers", "2"});
  REQUIRE(result.code == 0);
  const auto doc = nlohmann::json::parse(result.out);
  CHECK(doc["bench"] == "mailbox");
  CHECK(doc["rates"].size() == 2);
  CHECK(doc["figures"].contains("ratio mailbox/mutex+deque"));
}

TEST_CASE("bench: usage errors exit 2", "[bench][modes]") {
  CHECK(test::run({test::distflow_binary(), "bench"}).code == 2);
  CHECK(test::run({test::distflow_binary(), "bench", "mailbox", "--policy", "nope"}).code == 2);
  CHECK(test::run({test::distflow_binary(), "bench", "latency", "--pin", "left"}).code == 2);
  CHECK(test::run({test::distflow_binary(), "bench", "latency", "--paths", "fast"}).code == 2);
  CHECK(test::run({test::distflow_binary(), "bench", "latency", "--paths", "inline,"}).code == 2);
}

TEST_CASE("bench: csv file through the binary", "[bench][modes]") {
  const std::string path = "/tmp/distflow-bench-test-" + std::to_string(::getpid()) + ".csv";
  const auto result = test::run({test::distflow_binary(), "bench", "mailbox", "--msgs", "1000",
                                 "--reps", "1", "--csv", path});
  REQUIRE(result.code == 0);
  CHECK_THAT(result.out, Catch::Contains("mailbox stats:"));
  std::ifstream csv(path);
  std::stringstream text;
  text << csv.rdbuf();
  CHECK_THAT(text.str(), Catch::Contains("mailbox,mailbox,1,msgs_per_sec,"));
  std::remove(path.c_str());
}

TEST_CASE("bench: pmd smoke run through the binary", "[bench][modes]") {
  const auto pmd = test::run({test::distflow_binary(), "bench", "pmd", "--resolves", "200",
                              "--churn", "20", "--reps", "1", "--json", "--timeout", "30"});
  INFO(pmd.err);
  REQUIRE(pmd.code == 0);
  const auto doc = nlohmann::json::parse(pmd.out);
  CHECK(doc["figures"].contains("SIGKILL -> peer:leave median"));
  CHECK(doc["figures"].contains("idle RSS pmd"));
  CHECK(doc["rates"].size() == 3);
}

namespace {

/// The rate series of a `bench throughput --json` document by name; null when absent.
nlohmann::json rate_named(const nlohmann::json& doc, const std::string& name) {
  for (const auto& series : doc["rates"]) {
    if (series["name"] == name)
      return series;
  }
  return nullptr;
}

nlohmann::json run_bench_json(const std::vector<std::string>& args) {
  std::vector<std::string> argv{test::distflow_binary(), "bench"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--json", "--timeout", "30"});
  const auto result = test::run(argv);
  INFO(result.err);
  REQUIRE(result.code == 0);
  return nlohmann::json::parse(result.out);
}

}  // namespace

TEST_CASE("bench: throughput measures node, raw limit and fan-in in one run", "[bench][modes]") {
  const auto doc =
      run_bench_json({"throughput", "--msgs", "2000", "--senders", "2", "--reps", "2"});
  CHECK(doc["params"]["senders"] == "2");
  CHECK(doc["params"]["raw"] == "yes");
  const auto one = rate_named(doc, "node->node");
  REQUIRE(one.is_object());
  CHECK(one["reps"].size() == 2);
  CHECK(one["reps"][0]["msgs"] == 2000);
  CHECK(one["note"] == "lost=0 reordered=0 send_failures=0");
  const auto raw = rate_named(doc, "raw TCP (same frames, no parsing)");
  REQUIRE(raw.is_object());
  CHECK(raw["reps"].size() == 2);
  CHECK(raw["reps"][1]["msgs"] == 2000);
  CHECK(raw["note"] == "lost=0");
  const auto fan_in = rate_named(doc, "node->node 2 senders -> 1 receiver");
  REQUIRE(fan_in.is_object());
  CHECK(fan_in["reps"][0]["msgs"] == 2000);
  CHECK(fan_in["note"] == "lost=0 reordered=0 send_failures=0");
  CHECK(rate_named(doc, "sender (written to socket)").is_object());
  CHECK(doc["figures"]["ratio node/raw (median of per-rep ratios)"]["value"].get<double>() > 0);
  CHECK(
      doc["figures"]["ratio 2 senders/1 sender (median of per-rep ratios)"]["value"].get<double>() >
      0);
}

TEST_CASE("bench: throughput with an inline receiver counts every message", "[bench][modes]") {
  const auto doc =
      run_bench_json({"throughput", "--msgs", "2000", "--inline", "--no-raw", "--reps", "1"});
  CHECK(doc["params"]["receiver"] == "inline");
  CHECK(doc["params"]["raw"] == "no");
  CHECK(doc["rates"].size() == 2);  // node->node and the sender's own rate
  CHECK(doc["rates"][0]["reps"][0]["msgs"] == 2000);
  CHECK(doc["rates"][0]["note"] == "lost=0 reordered=0 send_failures=0");
  CHECK_FALSE(doc["figures"].contains("ratio node/raw (median of per-rep ratios)"));
}

TEST_CASE("bench: throughput fan-out counts every receiver", "[bench][modes]") {
  const auto doc = run_bench_json(
      {"throughput", "--msgs", "2001", "--receivers", "4", "--no-raw", "--reps", "2"});
  CHECK(doc["params"]["receivers"] == "4");
  const auto fan_out = rate_named(doc, "node->node 1 sender -> 4 receivers");
  REQUIRE(fan_out.is_object());
  CHECK(fan_out["reps"].size() == 2);
  CHECK(fan_out["reps"][0]["msgs"] == 2001);
  // 2001 round-robin: 501 to the first, 500 to each other, per rep; summed over 2 reps.
  CHECK(fan_out["note"] ==
        "lost=0 reordered=0 send_failures=0 | per receiver: received=1002/1000/1000/1000 "
        "lost=0/0/0/0 reordered=0/0/0/0");
  CHECK(rate_named(doc, "node->node")["reps"][0]["msgs"] == 2001);
  CHECK(doc["figures"].contains("ratio 4 receivers/1 receiver (median of per-rep ratios)"));
}

TEST_CASE("bench: throughput through the CLI counts the node's stdout lines", "[bench][modes]") {
  const auto doc = run_bench_json({"throughput", "--via-cli", "--msgs", "3000", "--reps", "2"});
  CHECK(doc["params"]["path"] == "send - < FILE -> node > pipe");
  REQUIRE(doc["rates"].size() == 1);
  const auto& cli = doc["rates"][0];
  CHECK(cli["unit"] == "lines");
  CHECK(cli["reps"].size() == 2);
  CHECK(cli["reps"][0]["msgs"] == 3000);
  CHECK(cli["reps"][1]["msgs"] == 3000);
  CHECK(cli["note"] == "lost=0 last_line_out_of_order=0");
}

TEST_CASE("bench: throughput flag combinations it cannot run", "[bench][modes]") {
  for (const auto& extra :
       std::vector<std::vector<std::string>>{{"--senders", "2", "--receivers", "2"},
                                             {"--via-cli", "--senders", "2"},
                                             {"--receivers", "0"}}) {
    std::vector<std::string> argv{test::distflow_binary(),
                                  "bench",
                                  "throughput",
                                  "--msgs",
                                  "10",
                                  "--reps",
                                  "1",
                                  "--timeout",
                                  "10"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const auto result = test::run(argv);
    INFO(extra[0] << " " << extra[1]);
    CHECK(result.code == 1);
    CHECK_THAT(result.err, Catch::Contains("throughput bench:"));
  }
}

TEST_CASE("bench: latency measures both node paths and raw TCP in one run", "[bench][modes]") {
  const auto doc = run_bench_json({"latency", "--msgs", "200", "--reps", "2", "--pin", "same"});
  CHECK(doc["params"]["path"] == "inline,regular");
  REQUIRE(doc["latencies"].size() == 4);
  CHECK(doc["latencies"][0]["name"] == "node<->node inline");
  CHECK(doc["latencies"][1]["name"] == "node<->node regular");
  CHECK(doc["latencies"][2]["name"] == "raw TCP");
  // The shape of two nodes' links: a one-way connection each way.
  CHECK(doc["latencies"][3]["name"] == "raw TCP, two one-way connections");
  for (const auto& series : doc["latencies"]) {
    CHECK(series["reps"].size() == 2);
    CHECK(series["reps"][0]["samples"] == 200);
  }
  for (const char* figure :
       {"ratio p50 inline/raw", "ratio p99 inline/raw", "ratio p50 regular/raw",
        "ratio p99 regular/raw", "ratio p50 raw two one-way/raw",
        "ratio p50 inline/raw two one-way", "ratio p50 regular/raw two one-way"}) {
    INFO(figure);
    CHECK(doc["figures"][figure]["value"].get<double>() > 0);
  }
}

TEST_CASE("bench: call measures call() against raw TCP and calls/s in flight", "[bench][modes]") {
  const auto doc = run_bench_json(
      {"call", "--msgs", "300", "--reps", "2", "--inflight", "1,8", "--pin", "none"});
  REQUIRE(doc["latencies"].size() == 3);
  CHECK(doc["latencies"][0]["name"] == "call() callback");
  CHECK(doc["latencies"][1]["name"] == "call() future");
  CHECK(doc["latencies"][2]["name"] == "raw TCP");
  for (const auto& series : doc["latencies"]) {
    CHECK(series["reps"].size() == 2);
    CHECK(series["reps"][0]["samples"] == 300);
  }
  REQUIRE(doc["rates"].size() == 2);
  CHECK(doc["rates"][0]["name"] == "calls, 1 in flight");
  CHECK(doc["rates"][1]["name"] == "calls, 8 in flight");
  CHECK(doc["rates"][1]["reps"][0]["msgs"] == 1200);  // every call answered
  for (const char* figure : {"ratio p50 call() callback/raw", "ratio p99 call() future/raw"}) {
    INFO(figure);
    CHECK(doc["figures"][figure]["value"].get<double>() > 0);
  }
}

TEST_CASE("bench: latency of one chosen path", "[bench][modes]") {
  const auto regular = run_bench_json(
      {"latency", "--msgs", "200", "--reps", "1", "--regular", "--no-raw", "--pin", "different"});
  CHECK(regular["params"]["path"] == "regular");
  REQUIRE(regular["latencies"].size() == 1);
  CHECK(regular["latencies"][0]["name"] == "node<->node regular");
  const auto inline_only =
      run_bench_json({"latency", "--msgs", "200", "--reps", "1", "--paths", "inline"});
  CHECK(inline_only["params"]["path"] == "inline");
  REQUIRE(inline_only["latencies"].size() == 3);
  CHECK(inline_only["figures"].contains("ratio p50 inline/raw"));
  CHECK(inline_only["figures"].contains("ratio p50 inline/raw two one-way"));
  CHECK_FALSE(inline_only["figures"].contains("ratio p50 regular/raw"));
}

TEST_CASE("bench: throughput --remote runs plain, cookie and TLS across two hosts",
          "[bench][modes][multihost]") {
  const auto doc = run_bench_json({"throughput", "--remote", "--msgs", "3000", "--reps", "2"});
  CHECK_THAT(doc["params"]["hosts"].get<std::string>(), Catch::Contains(" -> "));
  for (const char* mode : {"plain", "cookie", "TLS"}) {
    const auto series = rate_named(doc, std::string("node->node across hosts, ") + mode);
    INFO(mode);
    REQUIRE(series.is_object());
    CHECK(series["reps"].size() == 2);
    CHECK(series["reps"][0]["msgs"] == 3000);
    CHECK(series["reps"][1]["msgs"] == 3000);
    CHECK(series["note"] == "lost=0 reordered=0 send_failures=0");
  }
  CHECK(doc["figures"].contains("ratio cookie/plain (median of per-rep ratios; target >= 0.95)"));
  CHECK(doc["figures"].contains("ratio TLS/plain (median of per-rep ratios; target >= 0.7)"));
}

TEST_CASE("bench: a remote bench killed with SIGKILL leaves no namespace behind",
          "[bench][modes][multihost]") {
  if (SimHosts::ip_binary().empty() || ::geteuid() != 0) {
    WARN("no network namespaces here (not root, or no ip): nothing to clean");
    return;
  }
  test::ChildProcess bench({test::distflow_binary(), "bench", "throughput", "--remote", "--msgs",
                            "100000000", "--reps", "1", "--timeout", "60"});
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (SimHosts::namespaces_of(bench.pid()).size() < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);  // polling, bounded by the deadline
  }
  INFO(bench.stderr_text());
  REQUIRE(SimHosts::namespaces_of(bench.pid()).size() == 3);  // two hosts and the switch
  bench.signal(SIGKILL);
  REQUIRE(bench.wait(10s) == 128 + SIGKILL);
  // Its guardian removes them (and kills what ran inside) once it is gone.
  const auto cleaned = std::chrono::steady_clock::now() + 20s;
  while (!SimHosts::namespaces_of(bench.pid()).empty() &&
         std::chrono::steady_clock::now() < cleaned) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(SimHosts::namespaces_of(bench.pid()).empty());
  // And the throwaway cookie and keys.
  const auto pki = std::filesystem::temp_directory_path() /
                   ("distflow-pki-" + std::to_string(bench.pid()) + "-0");
  while (std::filesystem::exists(pki) && std::chrono::steady_clock::now() < cleaned)
    std::this_thread::sleep_for(20ms);
  CHECK_FALSE(std::filesystem::exists(pki));
}
