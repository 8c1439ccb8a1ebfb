#pragma once

// Prometheus text exposition, format 0.0.4 (issue 16): counters and gauges with
// their HELP and TYPE lines, label values escaped, invalid UTF-8 replaced. Pure:
// the caller adds samples, render() writes the page. Families come out in the
// order they were first added, each family's samples sorted by their labels, so
// two scrapes of the same state are byte-identical.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distflow {

/// One destination a node holds a link to (NodeStats::links, `distflow stats`).
struct OutboundLinkStats {
  std::string node_id;
  std::string alias;
  std::string address;              ///< host:port
  std::uint64_t queued_frames = 0;  ///< accepted, not yet written
  std::uint64_t unwritten_bytes = 0;
};

/// Where a metrics endpoint listens (`--metrics ADDR:PORT`; port 0: any free one).
struct MetricsEndpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

enum class MetricType { counter, gauge };

struct MetricLabel {
  std::string_view name;   ///< [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"
  std::string_view value;  ///< any text: escaped on output
};

class MetricsPage {
 public:
  /// Adds one sample of the family `name` ([a-zA-Z_:][a-zA-Z0-9_:]*). The family's
  /// type and help come from its first sample; a later one with other ones, or an
  /// invalid name, is a bug (asserted). A sample whose labels the family already
  /// has is added to the earlier one (counters) or replaces it (gauges).
  void add(std::string_view name, MetricType type, std::string_view help, std::uint64_t value,
           std::initializer_list<MetricLabel> labels = {});
  void add(std::string_view name, MetricType type, std::string_view help, double value,
           std::initializer_list<MetricLabel> labels = {});
  /// A family with no sample yet (e.g. drops by reason, before the first drop): its
  /// HELP and TYPE lines still appear.
  void declare(std::string_view name, MetricType type, std::string_view help);

  /// The page: `# HELP`, `# TYPE`, then the samples, for each family; '\n' after
  /// every line.
  std::string render() const;

 private:
  struct Value {
    bool integral = true;
    std::uint64_t count = 0;
    double real = 0;
  };
  struct Sample {
    std::string labels;  ///< rendered: `{a="x",b="y"}`, or empty
    Value value;
  };
  struct Family {
    std::string name;
    MetricType type;
    std::string help;
    std::vector<Sample> samples;
  };
  Family& family(std::string_view name, MetricType type, std::string_view help);
  void add_value(std::string_view name, MetricType type, std::string_view help, Value value,
                 std::initializer_list<MetricLabel> labels);

  std::vector<Family> families_;
};

/// `value` as a label value or HELP text needs it: `\` → `\\`, newline → `\n`, and
/// for a label value (`quote`) `"` → `\"`; invalid UTF-8 becomes U+FFFD.
void append_metrics_escaped(std::string& out, std::string_view value, bool quote);

/// The Content-Type of a page: "text/plain; version=0.0.4; charset=utf-8".
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace distflow
