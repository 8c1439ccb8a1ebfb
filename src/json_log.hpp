#pragma once

// `--log-format json` (issue 16): one JSON object per log line, for collectors.
//   {"time":"2026-12-01T23:11:05.123Z","level":"info","pid":42,
//    "message":"session closed peer=127.0.0.1:5000 reason=eof",
//    "fields":{"peer":"127.0.0.1:5000","reason":"eof"}}
// "fields" holds the message's key=value words (STYLE.md §8 asks for them): a
// value runs to the next space, or is quoted with '...'; one trailing ',' or ';'
// is not part of it; the first of a repeated key wins; a decimal integer is a JSON
// number, anything else a string. The object has no "fields" when there are none.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/formatter.h>

namespace distflow {

/// Appends one record as a JSON line ('\n' at its end). Invalid UTF-8 in the
/// message becomes U+FFFD; control characters are escaped.
void append_json_log_line(std::string& out, std::chrono::system_clock::time_point time,
                          std::string_view level, long pid, std::string_view message);

/// The spdlog formatter that writes append_json_log_line() records (the level
/// names are spdlog's: trace, debug, info, warning, error, critical).
std::unique_ptr<spdlog::formatter> make_json_log_formatter();

}  // namespace distflow
