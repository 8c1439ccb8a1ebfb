#pragma once

// The core of `distflow call`: a short-lived node without an alias (it needs an
// address for the replies) that sends requests and prints their replies
// (PROTOCOL.md §3.5). Like `send`, it never starts a PMD.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "pmd_protocol.hpp"
#include "security_options.hpp"

namespace distflow {

struct CallOptions {
  PmdEndpoint pmd;
  std::string target;                       ///< alias, node id or alias@host
  std::chrono::milliseconds timeout{5000};  ///< per call
  std::size_t inflight = 64;                ///< call_stream: requests waiting at once
  std::size_t max_line_bytes = 1u << 20;    ///< call_stream: longest line
  /// Where the caller listens for the replies: beyond loopback for a target on
  /// another host (which dials back), with a cookie or TLS.
  std::string listen_host = "127.0.0.1";
  SecurityOptions security;
};

struct CallResult {
  std::uint64_t answered = 0;  ///< replies written out
  std::uint64_t failed = 0;    ///< lines rejected, calls failed or timed out
};

/// Receives each reply's payload (compact JSON, no newline), in request order.
using ReplySink = std::function<void(std::string_view payload)>;
/// Receives each failure in words ("line 3: call to 'kv': no reply within 5000 ms").
using CallDiagnostic = std::function<void(std::string_view message)>;

/// One call: returns the reply's payload (compact JSON). Throws distflow::Error
/// naming the target on timeout, unknown target, the target leaving, no PMD.
std::string call_once(const CallOptions& options, std::string_view body);

/// One call per non-blank line of `input_fd` (NDJSON payloads), up to
/// `options.inflight` at once; replies go to `reply` in request order, failures to
/// `diagnostic` with their line number. Throws distflow::Error when the node cannot
/// start (no PMD...).
CallResult call_stream(const CallOptions& options, int input_fd, const ReplySink& reply,
                       const CallDiagnostic& diagnostic);

/// `distflow stats`: asks `options.target` for its counters (a stats request,
/// PROTOCOL.md §3.6) once, or every `interval` until `sink` returns false. Each
/// answer (one JSON object) goes to `sink`. Throws distflow::Error as call_once().
void watch_stats(const CallOptions& options, std::chrono::milliseconds interval,
                 const std::function<bool(std::string_view json)>& sink);

/// A stats answer for people: one `name: value` line per counter; nested objects
/// as `name: key=value ...`, one line per link.
std::string render_stats_text(std::string_view json);

}  // namespace distflow
