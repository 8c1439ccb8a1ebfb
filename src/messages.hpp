#pragma once

// Node-to-node messages (PROTOCOL.md §3.1) on the data path: the payload is kept
// as the exact JSON text received, located as a span, never rebuilt via a DOM.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace distflow {

/// A received message. Owns its frame body; every field is a view into it.
class Envelope {
 public:
  std::string_view body() const { return {body_.data(), body_len_}; }
  std::string_view from() const { return view(from_); }
  std::string_view to() const { return view(to_); }
  std::string_view alias() const { return view(alias_); }  ///< empty when absent
  bool has_alias() const { return alias_.length != 0; }
  std::string_view payload() const { return view(payload_); }  ///< exact JSON text
  std::int64_t timestamp() const { return timestamp_; }
  /// The raw JSON tokens (quotes and escapes included) for re-emitting without rework.
  std::string_view from_json() const { return view(from_raw_); }
  std::string_view to_json() const { return view(to_raw_); }
  std::string_view alias_json() const { return view(alias_raw_); }

 private:
  friend class EnvelopeParser;
  struct Span {
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
  };
  std::string_view view(Span s) const { return {body_.data() + s.offset, s.length}; }

  std::string body_;  // the body, then (rarely) unescaped copies of escaped strings
  std::size_t body_len_ = 0;
  Span from_, to_, alias_, payload_, from_raw_, to_raw_, alias_raw_;
  std::int64_t timestamp_ = 0;
};

/// Parses envelopes. Reuses its buffers: keep one per thread.
class EnvelopeParser {
 public:
  EnvelopeParser();
  ~EnvelopeParser();
  EnvelopeParser(const EnvelopeParser&) = delete;
  EnvelopeParser& operator=(const EnvelopeParser&) = delete;

  /// Parses a frame body into `out`. Precondition: kFramePadding (64) readable
  /// bytes follow `body` (FrameDecoder guarantees it). Errors: errc::bad_json,
  /// not_an_object, missing_field (from, payload), wrong_type; `why` says more.
  std::error_code parse(std::string_view body, Envelope& out, std::string* why = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Full JSON validation (grammar and UTF-8) of text the caller keeps as text.
class JsonValidator {
 public:
  JsonValidator();
  ~JsonValidator();
  JsonValidator(const JsonValidator&) = delete;
  JsonValidator& operator=(const JsonValidator&) = delete;

  /// errc::bad_json with `why` (the parser's reason) when `text` is not one JSON value.
  std::error_code validate(std::string_view text, std::string* why = nullptr);
  /// Like validate(), and errc::not_an_object unless the value is an object.
  std::error_code validate_object(std::string_view text, std::string* why = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Builds outgoing frames for one route (from, to, alias). The JSON around the
/// payload is rendered once; each message costs two copies and a number.
class MessageEncoder {
 public:
  /// `alias` may be empty (then no "alias" key is sent).
  MessageEncoder(std::string_view from, std::string_view to, std::string_view alias);
  /// Appends one complete frame. Precondition: payload_json is valid JSON.
  void append(std::string& out, std::string_view payload_json, std::int64_t timestamp_ms) const;

 private:
  std::string prefix_;  // {"from":..,"to":..,"alias":..,"timestamp":
};

/// Appends one NDJSON line for a received message (the `node` mode's output):
/// {"from":..,"alias":..,"to":..,"timestamp":..,"payload":<exact JSON>}\n
void append_ndjson_line(std::string& out, const Envelope& message);

/// Appends `text` as a JSON string literal (quotes and escapes).
void append_json_string(std::string& out, std::string_view text);

/// Milliseconds since the Unix epoch (system clock), as the protocol's timestamps.
std::int64_t now_ms();

}  // namespace distflow
