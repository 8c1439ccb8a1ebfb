#include "json_log.hpp"

#include <ctime>
#include <unistd.h>
#include <vector>

#include <spdlog/details/log_msg.h>

#include "json.hpp"

namespace distflow {
namespace {

bool key_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (!first && ((c >= '0' && c <= '9') || c == '.' || c == '-'));
}

/// A decimal integer JSON can carry exactly: no leading zero, at most 15 digits.
bool json_integer(std::string_view value) {
  if (value.starts_with('-'))
    value.remove_prefix(1);
  if (value.empty() || value.size() > 15 || (value[0] == '0' && value.size() > 1))
    return false;
  for (char c : value) {
    if (c < '0' || c > '9')
      return false;
  }
  return true;
}

struct Field {
  std::string_view key;
  std::string_view value;
};

/// The key=value words of `message`, first occurrence of each key.
std::vector<Field> fields_of(std::string_view message) {
  std::vector<Field> fields;
  std::size_t at = 0;
  while (at < message.size()) {
    const std::size_t start = message.find_first_not_of(' ', at);
    if (start == std::string_view::npos)
      break;
    std::size_t end = message.find(' ', start);
    if (end == std::string_view::npos)
      end = message.size();
    at = end;
    std::size_t k = start;
    while (k < end && key_char(message[k], k == start))
      ++k;
    if (k == start || k >= end || message[k] != '=')
      continue;
    const std::string_view key = message.substr(start, k - start);
    std::string_view value = message.substr(k + 1, end - k - 1);
    if (value.starts_with('\'')) {
      const std::size_t close = message.find('\'', k + 2);
      if (close != std::string_view::npos) {
        value = message.substr(k + 2, close - k - 2);
        at = close + 1;
      }
    } else if (value.ends_with(',') || value.ends_with(';')) {
      value.remove_suffix(1);
    }
    bool seen = false;
    for (const Field& field : fields)
      seen = seen || field.key == key;
    if (!seen)
      fields.push_back(Field{key, value});
  }
  return fields;
}

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    line_.clear();
    const auto level = spdlog::level::to_string_view(msg.level);
    append_json_log_line(line_, msg.time, std::string_view(level.data(), level.size()),
                         static_cast<long>(::getpid()),
                         std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(line_.data(), line_.data() + line_.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLogFormatter>();
  }

 private:
  std::string line_;
};

}  // namespace

void append_json_log_line(std::string& out, std::chrono::system_clock::time_point time,
                          std::string_view level, long pid, std::string_view message) {
  using namespace std::chrono;
  const auto since_epoch = time.time_since_epoch();
  const std::time_t secs = static_cast<std::time_t>(duration_cast<seconds>(since_epoch).count());
  const auto millis = duration_cast<milliseconds>(since_epoch).count() % 1000;
  std::tm utc{};
  ::gmtime_r(&secs, &utc);
  char stamp[40];
  const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  out += "{\"time\":\"";
  out.append(stamp, n);
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03dZ", static_cast<int>(millis < 0 ? millis + 1000 : millis));
  out += ms;
  out += "\",\"level\":";
  append_json_string(out, level);
  out += ",\"pid\":";
  out += std::to_string(pid);
  out += ",\"message\":";
  append_json_string(out, message);
  const std::vector<Field> fields = fields_of(message);
  if (!fields.empty()) {
    out += ",\"fields\":{";
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (i > 0)
        out += ',';
      append_json_string(out, fields[i].key);
      out += ':';
      if (json_integer(fields[i].value)) {
        out += fields[i].value;
      } else {
        append_json_string(out, fields[i].value);
      }
    }
    out += '}';
  }
  out += "}\n";
}

std::unique_ptr<spdlog::formatter> make_json_log_formatter() {
  return std::make_unique<JsonLogFormatter>();
}

}  // namespace distflow
