#pragma once

// Statistics and report formatting for `distflow bench` (pure: no I/O beyond the
// std::ostream the caller hands in). Output in the manner of `nats bench`: a
// banner with the parameters, then `msgs/sec ~ MB/sec` lines with the spread
// across repetitions; or one JSON document; or CSV rows.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distflow {

/// Spread of one figure across repetitions.
struct Summary {
  std::size_t n = 0;
  double min = 0, avg = 0, max = 0, stddev = 0, median = 0;
};
/// Sample standard deviation (n - 1); all zero for an empty span.
Summary summarize(std::span<const double> values);

/// Percentiles of one run's round-trip times, in nanoseconds.
struct LatencySummary {
  std::size_t samples = 0;
  double min = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, avg = 0;
};
/// Sorts `ns` in place; nearest-rank percentiles.
LatencySummary summarize_latencies(std::vector<std::uint64_t>& ns);
/// Nearest-rank percentile (0 < p <= 100) of ascending `sorted`; 0 when empty.
double percentile(std::span<const std::uint64_t> sorted, double p);

/// One repetition of a rate measurement.
struct RateSample {
  std::uint64_t msgs = 0;
  double seconds = 0;
  double rate() const { return seconds > 0 ? static_cast<double>(msgs) / seconds : 0; }
};

/// A measured series: msgs/sec per repetition, or round-trip percentiles per repetition.
struct RateSeries {
  std::string name;
  std::size_t msg_bytes = 0;  ///< for the MB/sec column; 0 hides it
  std::vector<RateSample> reps;
  std::string note;           ///< printed after the figure, e.g. "lost=0 reordered=0"
  std::string unit = "msgs";  ///< what is counted: "msgs/sec" in the text report
};
struct LatencySeries {
  std::string name;
  std::vector<LatencySummary> reps;
};
/// A single derived figure (ratio, a time) with its unit.
struct Figure {
  std::string name;
  double value = 0;
  std::string unit;  ///< "x", "ms", "us"...
};

struct BenchReport {
  std::string bench;                                        ///< "mailbox", "throughput"...
  std::vector<std::pair<std::string, std::string>> params;  ///< the banner
  std::vector<RateSeries> rates;
  std::vector<LatencySeries> latencies;
  std::vector<Figure> figures;
};

/// Median across repetitions of one percentile of a latency series (e.g. &LatencySummary::p99).
double median_of(const LatencySeries& series, double LatencySummary::*field);
/// Median msgs/sec of a series.
double median_rate(const RateSeries& series);
/// Median of the per-repetition ratios a[i] / b[i] (alternating runs share their noise).
double median_ratio(const RateSeries& a, const RateSeries& b);

/// "Starting distflow bench mailbox [producers=1, size=100 B, ...]".
void write_banner(std::ostream& out, const BenchReport& report);
/// The human report (banner excluded): one block per series, then the figures.
void write_text(std::ostream& out, const BenchReport& report);
/// One JSON document (with a trailing newline): params, per-rep raw figures, summaries.
void write_json(std::ostream& out, const BenchReport& report);
/// Long-form CSV: header `bench,series,rep,metric,value`, one row per raw figure.
void write_csv(std::ostream& out, const BenchReport& report);

/// 1234567.8 -> "1,234,568".
std::string format_count(double value);
/// Bytes per second in the binary units nats uses: "95.37 MB/sec".
std::string format_byte_rate(double bytes_per_sec);
/// Nanoseconds as the most readable unit: "850 ns", "12.3 us", "4.56 ms".
std::string format_ns(double ns);
/// "[=========>          ]  45%" with `width` cells inside the brackets.
std::string render_progress(double fraction, std::size_t width);

/// A progress bar on a terminal stream: drawn only when enabled (the caller
/// checked isatty), only once the run has lasted a second, at most 10 times a
/// second. Not thread-safe: update it from one thread.
class ProgressBar {
 public:
  ProgressBar(std::ostream& out, bool enabled, std::string label);
  ~ProgressBar();  ///< clears the line if drawn
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::uint64_t done, std::uint64_t total);
  void finish();

 private:
  std::ostream& out_;
  bool enabled_;
  bool drawn_ = false;
  std::string label_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace distflow
