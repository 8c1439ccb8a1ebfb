#pragma once

// Node-to-node messages (PROTOCOL.md §3.1) on the data path: the payload is kept
// as the exact JSON text received, located as a span, never rebuilt via a DOM.
// The JSON reading itself is the json module's (json.hpp).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "json.hpp"

namespace distflow {

namespace detail {
/// The shared storage of envelopes parsed one after another (see EnvelopeParser).
struct BlockPool;
struct EnvelopeBlock {
  std::atomic<std::uint64_t> refs;
  BlockPool* pool;      // where it goes back when its last envelope is gone; null: freed
  EnvelopeBlock* next;  // in the pool
  // the bytes follow
};
void free_envelope_block(EnvelopeBlock* block) noexcept;
}  // namespace detail

/// A received message. Every field is a view into its frame body, which it shares
/// (reference-counted, copies are cheap) with the messages parsed along with it.
class Envelope {
 public:
  Envelope() = default;
  Envelope(const Envelope& other) noexcept : block_(other.block_), f_(other.f_) { retain(); }
  Envelope(Envelope&& other) noexcept
      : block_(std::exchange(other.block_, nullptr)), f_(std::exchange(other.f_, {})) {}
  Envelope& operator=(const Envelope& other) noexcept {
    Envelope copy(other);
    swap(copy);
    return *this;
  }
  Envelope& operator=(Envelope&& other) noexcept {
    Envelope taken(std::move(other));
    swap(taken);
    return *this;
  }
  ~Envelope() { release(); }

  std::string_view body() const { return {f_.base, f_.body_len}; }
  std::string_view from() const { return view(f_.from); }
  std::string_view to() const { return view(f_.to); }
  std::string_view alias() const { return view(f_.alias); }  ///< empty when absent
  bool has_alias() const { return f_.alias.length != 0; }
  std::string_view payload() const { return view(f_.payload); }  ///< exact JSON text
  /// Request/reply (PROTOCOL.md §3.5): the request's `ref` and a reply's
  /// `inReplyTo`, as their JSON string tokens (quotes included); empty when absent.
  std::string_view ref_json() const { return view(f_.ref_raw); }
  std::string_view in_reply_to_json() const { return view(f_.in_reply_to_raw); }
  bool is_request() const { return f_.ref_raw.length != 0; }
  bool is_reply() const { return f_.in_reply_to_raw.length != 0; }
  /// Their text (unescaped).
  std::string ref() const { return token_text(ref_json()); }
  std::string in_reply_to() const { return token_text(in_reply_to_json()); }
  /// The host the sender's connection came from when it is not this host (a
  /// remote node, issue 12), as `alias@host` takes it; empty for a local sender.
  std::string_view origin() const { return view(f_.origin); }
  /// The address that reaches the sender again: `from`, or `from@origin`.
  std::string reply_address() const {
    return f_.origin.length == 0 ? std::string(from())
                                 : std::string(from()) + "@" + std::string(origin());
  }
  std::int64_t timestamp() const { return f_.timestamp; }
  /// The raw JSON tokens (quotes and escapes included) for re-emitting without rework.
  std::string_view from_json() const { return view(f_.from_raw); }
  std::string_view to_json() const { return view(f_.to_raw); }
  std::string_view alias_json() const { return view(f_.alias_raw); }

 private:
  friend class EnvelopeParser;
  struct Span {
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
  };
  // Offsets are from `base`: the body, then (rarely) unescaped copies of escaped strings.
  struct Fields {
    const char* base = "";
    std::uint32_t body_len = 0;
    Span from, to, alias, payload, from_raw, to_raw, alias_raw, ref_raw, in_reply_to_raw, origin;
    std::int64_t timestamp = 0;
  };
  std::string_view view(Span s) const { return {f_.base + s.offset, s.length}; }
  static std::string token_text(std::string_view token);
  void retain() noexcept {
    if (block_)
      block_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  void release() noexcept {
    if (block_ && block_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
      detail::free_envelope_block(block_);
  }
  void swap(Envelope& other) noexcept {
    std::swap(block_, other.block_);
    std::swap(f_, other.f_);
  }

  detail::EnvelopeBlock* block_ = nullptr;
  Fields f_;
};

/// Parses envelopes. Reuses its buffers: keep one per thread. The envelopes it
/// makes share blocks of ~32 KiB, each freed when the last of its envelopes is
/// gone: copy out what must outlive its message for long.
class EnvelopeParser {
 public:
  EnvelopeParser();
  ~EnvelopeParser();
  EnvelopeParser(const EnvelopeParser&) = delete;
  EnvelopeParser& operator=(const EnvelopeParser&) = delete;

  /// Parses a frame body into `out` (which gets its own copy of it) in one pass
  /// that validates the whole body (grammar and UTF-8). Precondition:
  /// kFramePadding (64) readable bytes follow `body` (FrameDecoder guarantees it).
  /// Errors: errc::bad_json, not_an_object, missing_field (from, payload),
  /// wrong_type; `why` says more.
  std::error_code parse(std::string_view body, Envelope& out, std::string* why = nullptr) {
    return parse(body, out, {}, why);
  }
  /// The same for a message from a remote host: `origin` (that host, as
  /// `alias@host` takes it) is kept with it (Envelope::origin()).
  std::error_code parse(std::string_view body, Envelope& out, std::string_view origin,
                        std::string* why);
  /// For tests: parse() without its fast path, by the general parser (a
  /// JsonObjectWalker) that parse() falls back to for escaped keys and fields,
  /// odd timestamps and every malformed body.
  std::error_code parse_general(std::string_view body, Envelope& out, std::string* why = nullptr);

 private:
  struct Impl;
  std::error_code parse_with(std::string_view body, Envelope& out, std::string_view origin,
                             std::string* why, bool fast);
  std::unique_ptr<Impl> impl_;
};

/// Builds outgoing frames for one route (from, to, alias). The JSON around the
/// payload is rendered once; each message costs two copies and a number.
class MessageEncoder {
 public:
  /// `alias` may be empty (then no "alias" key is sent).
  MessageEncoder(std::string_view from, std::string_view to, std::string_view alias);
  /// Appends one complete frame. Precondition: payload_json is valid JSON. Not for
  /// concurrent use (it caches the rendered timestamp): one encoder per thread.
  /// `members`: more top-level members, rendered (`"ref":"r1"`), before the payload.
  void append(std::string& out, std::string_view payload_json, std::int64_t timestamp_ms,
              std::string_view members = {}) const;
  /// At least the bytes append() adds for a payload of `payload_bytes`.
  std::size_t max_frame_bytes(std::size_t payload_bytes) const {
    return prefix_.size() + payload_bytes + 64;  // header, timestamp, ,"payload": and }
  }
  std::size_t max_frame_bytes(std::size_t payload_bytes, std::size_t members_bytes) const {
    return max_frame_bytes(payload_bytes) + members_bytes + 1;
  }

 private:
  std::string prefix_;  // {"from":..,"to":..,"alias":..,"timestamp":
  // prefix_, the last timestamp, ,"payload":
  mutable std::string head_;
  mutable std::int64_t head_timestamp_ = 0;
};

/// Appends one NDJSON line for a received message (the `node` mode's output):
/// {"from":..,"alias":..,"to":..,"timestamp":..,"payload":<JSON>}\n
/// The payload is its exact text, compacted (append_json_compact) when it holds a
/// newline: a record never spans two lines, whatever a peer sent.
void append_ndjson_line(std::string& out, const Envelope& message);

/// Milliseconds since the Unix epoch (the coarse system clock: within a tick of
/// the precise one), as the protocol's timestamps.
std::int64_t now_ms();

}  // namespace distflow
