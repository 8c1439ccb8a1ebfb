#pragma once

// The core of `distflow node`: a NodeRuntime wired to two NDJSON streams.
// Received messages become lines {"from","alias","to","timestamp","payload"} on
// an output fd (stdout, or the stdin of an `--exec` child); lines
// {"to":...,"payload":...} read from an input fd (stdin, or the child's stdout)
// are sent. Bad lines are reported with their number, counted, and skipped.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ndjson.hpp"
#include "node_runtime.hpp"
#include "supervisor.hpp"

namespace distflow {

struct NodeBridgeOptions {
  NodeOptions node;
  std::vector<std::string> exec;  ///< the child's argv; empty: use input_fd and output_fd
  int input_fd = -1;              ///< lines to send, without exec (the mode passes stdin)
  int output_fd = -1;             ///< received messages, without exec (the mode passes fd 1)
  RestartPolicy restart = RestartPolicy::never;
  std::size_t restart_limit = 5;  ///< restarts allowed within restart_window
  std::chrono::milliseconds restart_window{10000};
  std::chrono::milliseconds stop_timeout{5000};  ///< for the child after a forwarded signal
  std::size_t max_line_bytes = kDefaultMaxLineBytes;
};

/// Runs the node until input EOF (without exec), the child's final exit, or
/// SIGTERM/SIGINT/SIGHUP (forwarded to the child). Returns the exit code: 0, or the
/// child's once its restarts are exhausted. Throws distflow::Error when the node
/// cannot start or the command cannot be run at all.
int run_node_bridge(const NodeBridgeOptions& options);

/// One outbound line, parsed: views into the line (or into the parser, for an
/// escaped `to`) valid until the next parse.
struct OutboundLine {
  std::string_view to;        ///< empty in an answer without "to"
  std::string_view reply_to;  ///< an answer's "replyTo" (a request's ref); data() null: not one
  std::string_view payload;   ///< exact JSON text, fully validated
};

/// Parses {"to": str, "payload": any, ...} lines, and answers to requests
/// {"replyTo": ref, "payload": any, "to"?: str}, without building a DOM.
class OutboundParser {
 public:
  OutboundParser();
  ~OutboundParser();
  OutboundParser(const OutboundParser&) = delete;
  OutboundParser& operator=(const OutboundParser&) = delete;

  /// Precondition: kLinePadding readable bytes after `line` (NdjsonReader's lines).
  /// Errors: bad_json, not_an_object, missing_field, wrong_type; `why` says which.
  std::error_code parse(std::string_view line, OutboundLine& out, std::string* why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distflow
