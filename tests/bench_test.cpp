// bench_stats (pure) and the bench payload helpers; `distflow bench` smoke runs
// through the real binary with tiny counts. No timing assertions anywhere.

#include <cstdio>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "bench_runner.hpp"
#include "bench_stats.hpp"
#include "support.hpp"

using namespace distflow;

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
}

TEST_CASE("bench_stats: JSON and CSV carry the raw figures", "[bench]") {
  const BenchReport report = sample_report();
  std::ostringstream json, csv;
  write_json(json, report);
  const auto doc = nlohmann::json::parse(json.str());
  CHECK(doc["bench"] == "demo");
  CHECK(doc["params"]["size"] == "100 B");
  CHECK(doc["rates"][0]["reps"].size() == 3);
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

TEST_CASE("bench: throughput smoke run through the binary", "[bench][modes]") {
  const auto throughput =
      test::run({test::distflow_binary(), "bench", "throughput", "--msgs", "2000", "--senders", "2",
                 "--reps", "1", "--json", "--timeout", "30"});
  INFO(throughput.err);
  REQUIRE(throughput.code == 0);
  const auto doc = nlohmann::json::parse(throughput.out);
  CHECK(doc["rates"][0]["reps"][0]["msgs"] == 2000);
  CHECK(doc["rates"][0]["note"] == "lost=0 reordered=0 send_failures=0");
}

TEST_CASE("bench: throughput with an inline receiver counts every message", "[bench][modes]") {
  const auto throughput =
      test::run({test::distflow_binary(), "bench", "throughput", "--msgs", "2000", "--inline",
                 "--reps", "1", "--json", "--timeout", "30"});
  INFO(throughput.err);
  REQUIRE(throughput.code == 0);
  const auto doc = nlohmann::json::parse(throughput.out);
  CHECK(doc["params"]["receiver"] == "inline");
  CHECK(doc["rates"][0]["reps"][0]["msgs"] == 2000);
  CHECK(doc["rates"][0]["note"] == "lost=0 reordered=0 send_failures=0");
}

TEST_CASE("bench: latency smoke run through the binary", "[bench][modes]") {
  const auto latency =
      test::run({test::distflow_binary(), "bench", "latency", "--msgs", "200", "--reps", "1",
                 "--json", "--pin", "different", "--timeout", "30"});
  INFO(latency.err);
  REQUIRE(latency.code == 0);
  CHECK(nlohmann::json::parse(latency.out)["latencies"].size() == 2);
}

TEST_CASE("bench: latency smoke run of the regular API path", "[bench][modes]") {
  const auto latency =
      test::run({test::distflow_binary(), "bench", "latency", "--msgs", "200", "--reps", "1",
                 "--json", "--regular", "--no-raw", "--timeout", "30"});
  INFO(latency.err);
  REQUIRE(latency.code == 0);
  const auto doc = nlohmann::json::parse(latency.out);
  CHECK(doc["latencies"].size() == 1);
  CHECK(doc["params"]["path"] == "regular");
}
