#pragma once

// The PMD's JSON messages (PROTOCOL.md §2): requests, responses, events and
// NodeInfo, for both sides (the daemon and its clients). Pure: text in, text out.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distflow {

inline constexpr std::uint16_t kDefaultPmdPort = 4369;

/// Where a PMD listens.
struct PmdEndpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = kDefaultPmdPort;
  std::string to_string() const;  ///< "host:port" ("[::1]:port" for IPv6)
};

/// A registered node as the PMD describes it.
struct NodeInfo {
  std::string node_id;
  std::string alias;  ///< empty when the node has none
  std::string host;
  std::uint16_t port = 0;
  std::int64_t last_heartbeat = 0;  ///< ms since the epoch, PMD clock
  std::int64_t registered_at = 0;   ///< extension; 0 when the PMD did not send it
  std::int64_t pid = 0;             ///< extension; 0 when unknown
};

/// Appends NodeInfo as a JSON object (extension fields only when non-zero).
void append_node_info(std::string& out, const NodeInfo& node);

/// A request as the PMD's fast path reads it (PROTOCOL.md §2.1). The views point
/// into the body or into the parser and stay valid until its next parse().
struct PmdRequestView {
  std::string_view type;
  std::optional<std::string_view> request_id;  ///< the id's raw JSON text, verbatim
  bool payload = false;                        ///< the payload was an object (not absent/null)
  std::optional<std::string_view> node_id;     ///< payload strings, unescaped
  std::optional<std::string_view> alias;       ///< absent also when the payload says null
  std::optional<std::string_view> host;
  std::optional<std::int64_t> port;
  std::optional<std::int64_t> pid;
  std::optional<bool> snapshot;
  std::optional<bool> force;
};

/// The daemon's fast request reader: one JsonObjectWalker pass, no DOM, no exceptions.
/// It accepts only the common, unambiguous shape: an object with at most the keys
/// `type` (a string), `payload` (absent, null or an object) and `requestId` (a
/// string, number, true, false or null), each at most once and spelt without
/// escapes; in the payload at most `nodeId`, `alias` (string or null), `host`
/// (strings), `port`, `pid` (integers within int64), `snapshot`, `force`
/// (booleans), each at most once, spelt without escapes. Anything else —
/// malformed JSON, other keys or types, duplicates, an object id — is refused
/// and left to the full parser, whose answers (error texts included) stay the
/// reference.
class PmdRequestParser {
 public:
  PmdRequestParser();
  ~PmdRequestParser();
  PmdRequestParser(PmdRequestParser&&) noexcept;
  PmdRequestParser& operator=(PmdRequestParser&&) noexcept;

  /// False when the body is not in the fast shape (`out` is then unspecified).
  /// `padded`: at least kFramePadding readable bytes follow `body` (as FrameDecoder
  /// guarantees); otherwise the body is copied first.
  bool parse(std::string_view body, bool padded, PmdRequestView& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Client side: the body of a request frame. `payload_json` is a JSON object text.
std::string encode_request(std::string_view type, std::string_view payload_json,
                           std::uint64_t request_id);
/// Client side: {"nodeId","alias"?,"host","port"} (+ "pid" extension when non-zero).
std::string register_payload(const NodeInfo& node);

/// Anything the PMD sends a client: a response (to a request) or an event.
struct PmdReply {
  bool is_event = false;
  std::optional<std::uint64_t> request_id;  ///< when the response carried a numeric id
  // response payload
  std::string error;  ///< non-empty for {"error": ...}
  bool success = false;
  std::optional<NodeInfo> node;                ///< resolve
  std::optional<std::vector<NodeInfo>> nodes;  ///< list; watch with snapshot
  // event payload
  std::string event;  ///< "peer:join" | "peer:leave"
  std::optional<NodeInfo> peer;
  std::string reason;  ///< leave reason extension, may be empty
};

/// Client side: parses a frame body from the PMD; nullopt with `why` on bad input.
std::optional<PmdReply> parse_reply(std::string_view body, std::string* why = nullptr);

}  // namespace distflow
