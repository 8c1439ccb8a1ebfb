#include "metrics.hpp"

#include <limits>

#include <catch2/catch.hpp>

namespace distflow {

TEST_CASE("metrics: HELP and TYPE lines, then the samples, per family", "[metrics]") {
  MetricsPage page;
  page.add("requests_total", MetricType::counter, "Requests read.", std::uint64_t{3},
           {{"type", "resolve"}});
  page.add("nodes", MetricType::gauge, "Nodes now.", std::uint64_t{2});
  page.add("requests_total", MetricType::counter, "Requests read.", std::uint64_t{1},
           {{"type", "heartbeat"}});
  page.add("uptime_seconds", MetricType::gauge, "Up.", 1.5);
  // Families in first-added order; a family's samples sorted by their labels.
  CHECK(page.render() ==
        "# HELP requests_total Requests read.\n"
        "# TYPE requests_total counter\n"
        "requests_total{type=\"heartbeat\"} 1\n"
        "requests_total{type=\"resolve\"} 3\n"
        "# HELP nodes Nodes now.\n"
        "# TYPE nodes gauge\n"
        "nodes 2\n"
        "# HELP uptime_seconds Up.\n"
        "# TYPE uptime_seconds gauge\n"
        "uptime_seconds 1.5\n");
}

TEST_CASE("metrics: label values and help texts are escaped", "[metrics]") {
  struct Row {
    std::string value;
    std::string label;  // as printed between the quotes
    std::string help;   // as printed after the name
  };
  const Row rows[] = {
      {"plain", "plain", "plain"},
      {"a\"b", "a\\\"b", "a\"b"},
      {"back\\slash", "back\\\\slash", "back\\\\slash"},
      {"two\nlines", "two\\nlines", "two\\nlines"},
      {"tab\tand\rcr", "tab\tand\rcr", "tab\tand\rcr"},
      {"caf\xc3\xa9", "caf\xc3\xa9", "caf\xc3\xa9"},
      {"bad\xff\xfe", "bad\xef\xbf\xbd\xef\xbf\xbd", "bad\xef\xbf\xbd\xef\xbf\xbd"},
      {"cut\xe2\x82", "cut\xef\xbf\xbd\xef\xbf\xbd", "cut\xef\xbf\xbd\xef\xbf\xbd"},
      {"", "", ""},
  };
  for (const Row& row : rows) {
    std::string label;
    append_metrics_escaped(label, row.value, true);
    CHECK(label == row.label);
    std::string help;
    append_metrics_escaped(help, row.value, false);
    CHECK(help == row.help);
  }
  MetricsPage page;
  page.add("dropped_total", MetricType::counter, "Dropped\nby \"reason\".", std::uint64_t{7},
           {{"reason", "mailbox full (\"x\")\n"}, {"node", "a\\b"}});
  CHECK(page.render() ==
        "# HELP dropped_total Dropped\\nby \"reason\".\n"
        "# TYPE dropped_total counter\n"
        "dropped_total{reason=\"mailbox full (\\\"x\\\")\\n\",node=\"a\\\\b\"} 7\n");
}

TEST_CASE("metrics: values: integers exact, reals shortest, infinities and NaN", "[metrics]") {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  MetricsPage page;
  page.add("big_total", MetricType::counter, "h", std::uint64_t{18446744073709551615u});
  page.add("ratio", MetricType::gauge, "h", 0.1, {{"k", "a"}});
  page.add("ratio", MetricType::gauge, "h", 1e21, {{"k", "b"}});
  page.add("ratio", MetricType::gauge, "h", kInf, {{"k", "c"}});
  page.add("ratio", MetricType::gauge, "h", -kInf, {{"k", "d"}});
  page.add("ratio", MetricType::gauge, "h", std::numeric_limits<double>::quiet_NaN(), {{"k", "e"}});
  const std::string text = page.render();
  CHECK(text.find("\nbig_total 18446744073709551615\n") != std::string::npos);
  CHECK(text.find("\nratio{k=\"a\"} 0.1\n") != std::string::npos);
  CHECK(text.find("\nratio{k=\"b\"} 1e+21\n") != std::string::npos);
  CHECK(text.find("\nratio{k=\"c\"} +Inf\n") != std::string::npos);
  CHECK(text.find("\nratio{k=\"d\"} -Inf\n") != std::string::npos);
  CHECK(text.find("\nratio{k=\"e\"} NaN\n") != std::string::npos);
}

TEST_CASE("metrics: the same labels again: counters add up, gauges are replaced", "[metrics]") {
  MetricsPage page;
  page.add("c_total", MetricType::counter, "h", std::uint64_t{2}, {{"r", "x"}});
  page.add("c_total", MetricType::counter, "h", std::uint64_t{3}, {{"r", "x"}});
  page.add("g", MetricType::gauge, "h", std::uint64_t{2});
  page.add("g", MetricType::gauge, "h", std::uint64_t{5});
  CHECK(page.render() ==
        "# HELP c_total h\n# TYPE c_total counter\nc_total{r=\"x\"} 5\n"
        "# HELP g h\n# TYPE g gauge\ng 5\n");
}

TEST_CASE("metrics: a declared family without samples still has HELP and TYPE", "[metrics]") {
  MetricsPage page;
  page.declare("dropped_total", MetricType::counter, "Dropped.");
  CHECK(page.render() == "# HELP dropped_total Dropped.\n# TYPE dropped_total counter\n");
  CHECK(MetricsPage().render().empty());
}

TEST_CASE("metrics: two renders of the same page are identical", "[metrics]") {
  MetricsPage page;
  for (const char* reason : {"z", "a", "m", "b"})
    page.add("d_total", MetricType::counter, "h", std::uint64_t{1}, {{"reason", reason}});
  const std::string first = page.render();
  CHECK(first == page.render());
  CHECK(first ==
        "# HELP d_total h\n# TYPE d_total counter\n"
        "d_total{reason=\"a\"} 1\nd_total{reason=\"b\"} 1\n"
        "d_total{reason=\"m\"} 1\nd_total{reason=\"z\"} 1\n");
}

}  // namespace distflow
