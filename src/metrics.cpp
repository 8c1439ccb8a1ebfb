#include "metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "errors.hpp"

namespace distflow {
namespace {

bool name_start(char c, bool colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

bool valid_name(std::string_view name, bool colon) {
  if (name.empty() || !name_start(name[0], colon))
    return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [colon](char c) { return name_start(c, colon) || (c >= '0' && c <= '9'); });
}

/// Length of the well-formed UTF-8 sequence at the start of `text`, 0 when none is.
std::size_t utf8_length(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80)
    return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the second byte's range (no overlongs, surrogates)
  if (lead >= 0xc2 && lead <= 0xdf) {
    n = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    n = 3;
    lo = lead == 0xe0 ? 0xa0 : 0x80;
    hi = lead == 0xed ? 0x9f : 0xbf;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    n = 4;
    lo = lead == 0xf0 ? 0x90 : 0x80;
    hi = lead == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (text.size() < n || byte(1) < lo || byte(1) > hi)
    return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf)
      return 0;
  }
  return n;
}

void append_labels(std::string& out, std::initializer_list<MetricLabel> labels) {
  if (labels.size() == 0)
    return;
  out += '{';
  bool first = true;
  for (const MetricLabel& label : labels) {
    DISTFLOW_ASSERT(valid_name(label.name, false) && !label.name.starts_with("__"));
    if (!first)
      out += ',';
    first = false;
    out += label.name;
    out += "=\"";
    append_metrics_escaped(out, label.value, true);
    out += '"';
  }
  out += '}';
}

}  // namespace

void append_metrics_escaped(std::string& out, std::string_view value, bool quote) {
  for (std::size_t at = 0; at < value.size();) {
    const char c = value[at];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else if (const std::size_t n = utf8_length(value.substr(at)); n == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD, one per invalid byte
    } else {
      out.append(value.substr(at, n));
      at += n;
      continue;
    }
    ++at;
  }
}

MetricsPage::Family& MetricsPage::family(std::string_view name, MetricType type,
                                         std::string_view help) {
  for (Family& family : families_) {
    if (family.name == name) {
      DISTFLOW_ASSERT(family.type == type && family.help == help);
      return family;
    }
  }
  DISTFLOW_ASSERT(valid_name(name, true));
  return families_.emplace_back(Family{std::string(name), type, std::string(help), {}});
}

void MetricsPage::declare(std::string_view name, MetricType type, std::string_view help) {
  family(name, type, help);
}

void MetricsPage::add_value(std::string_view name, MetricType type, std::string_view help,
                            Value value, std::initializer_list<MetricLabel> labels) {
  Family& into = family(name, type, help);
  std::string rendered;
  append_labels(rendered, labels);
  for (Sample& sample : into.samples) {
    if (sample.labels != rendered)
      continue;
    if (type == MetricType::gauge) {
      sample.value = value;
    } else if (sample.value.integral && value.integral) {
      sample.value.count += value.count;
    } else {
      const auto real = [](const Value& v) {
        return v.integral ? static_cast<double>(v.count) : v.real;
      };
      sample.value = Value{false, 0, real(sample.value) + real(value)};
    }
    return;
  }
  into.samples.push_back(Sample{std::move(rendered), value});
}

void MetricsPage::add(std::string_view name, MetricType type, std::string_view help,
                      std::uint64_t value, std::initializer_list<MetricLabel> labels) {
  add_value(name, type, help, Value{true, value, 0}, labels);
}

void MetricsPage::add(std::string_view name, MetricType type, std::string_view help, double value,
                      std::initializer_list<MetricLabel> labels) {
  add_value(name, type, help, Value{false, 0, value}, labels);
}

std::string MetricsPage::render() const {
  std::string out;
  char number[32];
  for (const Family& family : families_) {
    out += "# HELP ";
    out += family.name;
    out += ' ';
    append_metrics_escaped(out, family.help, false);
    out += "\n# TYPE ";
    out += family.name;
    out += family.type == MetricType::counter ? " counter\n" : " gauge\n";
    std::vector<const Sample*> samples;
    samples.reserve(family.samples.size());
    for (const Sample& sample : family.samples)
      samples.push_back(&sample);
    std::sort(samples.begin(), samples.end(),
              [](const Sample* a, const Sample* b) { return a->labels < b->labels; });
    for (const Sample* sample : samples) {
      out += family.name;
      out += sample->labels;
      out += ' ';
      const Value& v = sample->value;
      if (v.integral) {
        out.append(number, std::to_chars(number, number + sizeof number, v.count).ptr);
      } else if (std::isnan(v.real)) {
        out += "NaN";
      } else if (std::isinf(v.real)) {
        out += v.real > 0 ? "+Inf" : "-Inf";
      } else {
        out.append(number, std::to_chars(number, number + sizeof number, v.real).ptr);
      }
      out += '\n';
    }
  }
  return out;
}

}  // namespace distflow
