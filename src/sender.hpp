#pragma once

// The core of `distflow send`: resolve the target through a running PMD (never
// started here: nobody would be there to receive), open one blocking TCP
// connection to it, and write framed messages in large batches. Bodies are
// validated as JSON and sent as their exact text (PROTOCOL.md §3.1).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "pmd_client.hpp"
#include "security_options.hpp"

namespace distflow {

/// The largest payload send accepts: the node frame limit minus room for the envelope.
std::size_t max_send_payload_bytes();

struct SendOptions {
  PmdEndpoint pmd;
  std::string target;       ///< alias or node id
  std::string from;         ///< the sender's node id; empty: "send-<pid>"
  std::uint64_t count = 1;  ///< every body is sent this many times
  std::size_t max_line_bytes = max_send_payload_bytes();  ///< send_stream: longest line
  std::chrono::milliseconds connect_timeout{2000};
  /// A receiver that takes no bytes for this long fails the send (0: never).
  std::chrono::milliseconds write_timeout{10000};
  /// With a cookie or TLS: an idle connection carries a tick this often, and a
  /// receiver silent for 4 of them is taken for gone (0: no ticks).
  std::chrono::milliseconds tick_interval{1000};
  SecurityOptions security;  ///< cookie and TLS, for the node and a remote PMD
};

struct SendResult {
  std::uint64_t sent = 0;     ///< messages written to the socket
  std::uint64_t invalid = 0;  ///< input lines rejected (not JSON, too long)
};

/// Receives one report per rejected line: "line 3: invalid JSON: <why>".
using SendDiagnostic = std::function<void(std::string_view message)>;

/// Sends `body` (JSON text) `count` times. Throws distflow::Error with a complete
/// message for an invalid body, no PMD, an unknown target or a failed connection.
SendResult send_message(const SendOptions& options, std::string_view body);

/// Sends every non-blank line of `input_fd` (NDJSON: one JSON payload per line),
/// in order over one connection, flushed before it returns. Invalid lines go to
/// `diagnostic` (with their line number) and are skipped; the others are sent.
/// Throws distflow::Error as send_message() does, and when the connection breaks
/// or makes no progress for `write_timeout` (naming the target and the count).
/// Returns once the receiver's host acknowledged every byte.
SendResult send_stream(const SendOptions& options, int input_fd, const SendDiagnostic& diagnostic);

}  // namespace distflow
