#include "bench_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

#include <nlohmann/json.hpp>

namespace distflow {
namespace {

using Json = nlohmann::ordered_json;

double median_sorted(const std::vector<double>& sorted) {
  if (sorted.empty())
    return 0;
  const std::size_t mid = sorted.size() / 2;
  return sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

std::vector<double> rates_of(const RateSeries& series) {
  std::vector<double> rates;
  rates.reserve(series.reps.size());
  for (const RateSample& sample : series.reps)
    rates.push_back(sample.rate());
  return rates;
}

std::string format_fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

Json latency_json(const LatencySummary& s) {
  return Json{{"samples", s.samples}, {"min_ns", s.min},   {"p50_ns", s.p50}, {"p90_ns", s.p90},
              {"p99_ns", s.p99},      {"p999_ns", s.p999}, {"max_ns", s.max}, {"avg_ns", s.avg}};
}

Json summary_json(const Summary& s) {
  return Json{
      {"min", s.min}, {"avg", s.avg}, {"max", s.max}, {"stddev", s.stddev}, {"median", s.median}};
}

constexpr std::pair<const char*, double LatencySummary::*> kPercentiles[] = {
    {"p50", &LatencySummary::p50},
    {"p90", &LatencySummary::p90},
    {"p99", &LatencySummary::p99},
    {"p99.9", &LatencySummary::p999},
    {"max", &LatencySummary::max}};

}  // namespace

Summary summarize(std::span<const double> values) {
  Summary s;
  s.n = values.size();
  if (values.empty())
    return s;
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  s.min = sorted.front();
  s.max = sorted.back();
  double sum = 0;
  for (double v : sorted)
    sum += v;
  s.avg = sum / static_cast<double>(s.n);
  if (s.n > 1) {
    double squares = 0;
    for (double v : sorted)
      squares += (v - s.avg) * (v - s.avg);
    s.stddev = std::sqrt(squares / static_cast<double>(s.n - 1));
  }
  s.median = median_sorted(sorted);
  return s;
}

double percentile(std::span<const std::uint64_t> sorted, double p) {
  if (sorted.empty())
    return 0;
  // The epsilon keeps 99.9 % of 1000 at rank 999: 99.9 / 100 is a hair above 0.999.
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()) - 1e-9);
  const std::size_t index =
      std::min(sorted.size(), static_cast<std::size_t>(std::max(rank, 1.0))) - 1;
  return static_cast<double>(sorted[index]);
}

LatencySummary summarize_latencies(std::vector<std::uint64_t>& ns) {
  LatencySummary s;
  s.samples = ns.size();
  if (ns.empty())
    return s;
  std::sort(ns.begin(), ns.end());
  s.min = static_cast<double>(ns.front());
  s.max = static_cast<double>(ns.back());
  s.p50 = percentile(ns, 50);
  s.p90 = percentile(ns, 90);
  s.p99 = percentile(ns, 99);
  s.p999 = percentile(ns, 99.9);
  double sum = 0;
  for (std::uint64_t v : ns)
    sum += static_cast<double>(v);
  s.avg = sum / static_cast<double>(ns.size());
  return s;
}

double median_of(const LatencySeries& series, double LatencySummary::*field) {
  std::vector<double> values;
  for (const LatencySummary& rep : series.reps)
    values.push_back(rep.*field);
  return summarize(values).median;
}

double median_rate(const RateSeries& series) {
  return summarize(rates_of(series)).median;
}

double median_ratio(const RateSeries& a, const RateSeries& b) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < std::min(a.reps.size(), b.reps.size()); ++i) {
    if (b.reps[i].rate() > 0)
      ratios.push_back(a.reps[i].rate() / b.reps[i].rate());
  }
  return summarize(ratios).median;
}

std::string format_count(double value) {
  const auto rounded = static_cast<long long>(std::llround(value));
  std::string digits = std::to_string(rounded < 0 ? -rounded : rounded);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return rounded < 0 ? "-" + out : out;
}

std::string format_byte_rate(double bytes_per_sec) {
  constexpr const char* kUnits[] = {"B", "KB", "MB", "GB", "TB"};
  std::size_t unit = 0;
  while (bytes_per_sec >= 1024 && unit + 1 < std::size(kUnits)) {
    bytes_per_sec /= 1024;
    ++unit;
  }
  return format_fixed(bytes_per_sec, 2) + " " + kUnits[unit] + "/sec";
}

std::string format_ns(double ns) {
  if (ns < 1e3)
    return format_fixed(ns, 0) + " ns";
  if (ns < 1e6)
    return format_fixed(ns / 1e3, ns < 1e4 ? 2 : 1) + " us";
  if (ns < 1e9)
    return format_fixed(ns / 1e6, 2) + " ms";
  return format_fixed(ns / 1e9, 2) + " s";
}

std::string render_progress(double fraction, std::size_t width) {
  fraction = std::clamp(std::isnan(fraction) ? 0.0 : fraction, 0.0, 1.0);
  const auto filled = static_cast<std::size_t>(fraction * static_cast<double>(width));
  std::string bar = "[";
  for (std::size_t i = 0; i < width; ++i) {
    bar += i < filled ? '=' : (i == filled ? '>' : ' ');
  }
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100));
  return bar + "] " + pct;
}

void write_banner(std::ostream& out, const BenchReport& report) {
  out << "Starting distflow bench " << report.bench << " [";
  for (std::size_t i = 0; i < report.params.size(); ++i) {
    out << (i ? ", " : "") << report.params[i].first << "=" << report.params[i].second;
  }
  out << "]\n";
}

void write_text(std::ostream& out, const BenchReport& report) {
  for (const RateSeries& series : report.rates) {
    const std::vector<double> rates = rates_of(series);
    const Summary s = summarize(rates);
    const std::string per_sec = " " + series.unit + "/sec";
    out << series.name << " stats: " << format_count(s.median) << per_sec;
    if (series.msg_bytes) {
      out << " ~ " << format_byte_rate(s.median * static_cast<double>(series.msg_bytes));
    }
    out << (s.n > 1 ? "  (median of " + std::to_string(s.n) + ")" : "");
    if (!series.note.empty())
      out << "  " << series.note;
    out << "\n";
    if (s.n > 1) {
      for (std::size_t i = 0; i < rates.size(); ++i) {
        out << " [" << i + 1 << "] " << format_count(rates[i]) << per_sec << " ("
            << format_count(static_cast<double>(series.reps[i].msgs)) << " " << series.unit
            << " in " << format_fixed(series.reps[i].seconds, 3) << " s)\n";
      }
      out << " min " << format_count(s.min) << " | avg " << format_count(s.avg) << " | max "
          << format_count(s.max) << " | stddev " << format_count(s.stddev) << per_sec << "\n";
    }
  }
  for (const LatencySeries& series : report.latencies) {
    out << series.name << " round trip";
    if (series.reps.size() > 1)
      out << " (median of " << series.reps.size() << ")";
    out << ":";
    for (const auto& [label, field] : kPercentiles) {
      out << " " << label << " " << format_ns(median_of(series, field));
      if (field != &LatencySummary::max)
        out << " |";
    }
    std::size_t samples = 0;
    for (const LatencySummary& rep : series.reps)
      samples += rep.samples;
    out << "  (" << format_count(static_cast<double>(samples)) << " samples)\n";
  }
  for (const Figure& figure : report.figures) {
    out << figure.name << ": " << format_fixed(figure.value, figure.unit == "x" ? 2 : 3)
        << (figure.unit == "x" ? "" : " ") << figure.unit << "\n";
  }
}

void write_json(std::ostream& out, const BenchReport& report) {
  Json doc;
  doc["bench"] = report.bench;
  Json params = Json::object();
  for (const auto& [key, value] : report.params)
    params[key] = value;
  doc["params"] = params;
  Json rates = Json::array();
  for (const RateSeries& series : report.rates) {
    Json reps = Json::array();
    for (const RateSample& sample : series.reps) {
      reps.push_back({{"msgs", sample.msgs},
                      {"seconds", sample.seconds},
                      {"msgs_per_sec", sample.rate()},
                      {"bytes_per_sec", sample.rate() * static_cast<double>(series.msg_bytes)}});
    }
    Json entry{{"name", series.name},
               {"unit", series.unit},
               {"msg_bytes", series.msg_bytes},
               {"msgs_per_sec", summary_json(summarize(rates_of(series)))},
               {"reps", reps}};
    if (!series.note.empty())
      entry["note"] = series.note;
    rates.push_back(entry);
  }
  doc["rates"] = rates;
  Json latencies = Json::array();
  for (const LatencySeries& series : report.latencies) {
    Json median = Json::object();
    for (const auto& [label, field] : kPercentiles) {
      median[std::string(label) + "_ns"] = median_of(series, field);
    }
    Json reps = Json::array();
    for (const LatencySummary& rep : series.reps)
      reps.push_back(latency_json(rep));
    latencies.push_back({{"name", series.name}, {"median", median}, {"reps", reps}});
  }
  doc["latencies"] = latencies;
  Json figures = Json::object();
  for (const Figure& figure : report.figures) {
    figures[figure.name] = {{"value", figure.value}, {"unit", figure.unit}};
  }
  doc["figures"] = figures;
  out << doc.dump(2) << "\n";
}

void write_csv(std::ostream& out, const BenchReport& report) {
  out << "bench,series,rep,metric,value\n";
  auto row = [&](std::string_view series, std::size_t rep, std::string_view metric, double value) {
    out << report.bench << "," << series << "," << rep << "," << metric << ","
        << format_fixed(value, value == std::floor(value) ? 0 : 3) << "\n";
  };
  for (const RateSeries& series : report.rates) {
    for (std::size_t i = 0; i < series.reps.size(); ++i) {
      const RateSample& sample = series.reps[i];
      row(series.name, i + 1, "msgs", static_cast<double>(sample.msgs));
      row(series.name, i + 1, "seconds", sample.seconds);
      row(series.name, i + 1, "msgs_per_sec", sample.rate());
      if (series.msg_bytes) {
        row(series.name, i + 1, "bytes_per_sec",
            sample.rate() * static_cast<double>(series.msg_bytes));
      }
    }
  }
  for (const LatencySeries& series : report.latencies) {
    for (std::size_t i = 0; i < series.reps.size(); ++i) {
      const LatencySummary& rep = series.reps[i];
      row(series.name, i + 1, "samples", static_cast<double>(rep.samples));
      for (const auto& [label, field] : kPercentiles) {
        row(series.name, i + 1, std::string(label) + "_ns", rep.*field);
      }
    }
  }
  for (const Figure& figure : report.figures)
    row(figure.name, 0, figure.unit, figure.value);
}

ProgressBar::ProgressBar(std::ostream& out, bool enabled, std::string label)
    : out_(out),
      enabled_(enabled),
      label_(std::move(label)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  if (!enabled_)
    return;
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < std::chrono::seconds(1) || now - last_draw_ < std::chrono::milliseconds(100)) {
    return;
  }
  last_draw_ = now;
  drawn_ = true;
  const double fraction = total ? static_cast<double>(done) / static_cast<double>(total) : 0;
  out_ << "\r" << label_ << " " << render_progress(fraction, 40) << std::flush;
}

void ProgressBar::finish() {
  if (!drawn_)
    return;
  drawn_ = false;
  out_ << "\r" << std::string(label_.size() + 48, ' ') << "\r" << std::flush;
}

}  // namespace distflow
