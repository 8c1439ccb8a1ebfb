#pragma once

// The PMD's JSON messages (PROTOCOL.md §2): requests, responses, events and
// NodeInfo, for both sides (the daemon and its clients). Pure: text in, text out.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace distflow {

inline constexpr std::uint16_t kDefaultPmdPort = 4369;
/// The register extensions' ranges: "heartbeatMs" (the node's heartbeat interval)
/// and "maxFrame" (the largest frame the node accepts, bytes).
inline constexpr std::int64_t kMinHeartbeatMs = 100;
inline constexpr std::int64_t kMaxHeartbeatMs = 600'000;
inline constexpr std::uint32_t kMinMaxFrame = 16;
inline constexpr std::uint32_t kMaxMaxFrame = 1u << 30;

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
  std::uint32_t max_frame = 0;      ///< extension: largest frame it accepts, bytes; 0: unknown
  /// Extensions of a clustered PMD (issue 15): the PMD the node registered with
  /// ("host:port"; empty: not said), and whether that is another PMD of the cluster.
  std::string pmd;
  bool remote = false;
};

/// Appends NodeInfo as a JSON object (extension fields only when non-zero).
void append_node_info(std::string& out, const NodeInfo& node);
/// Reads a NodeInfo JSON object (unknown members ignored); nullopt without a string nodeId.
std::optional<NodeInfo> parse_node_info(std::string_view json);

/// `text` made safe for a terminal line: control characters (C0, DEL, C1),
/// Unicode format and separator characters and invalid UTF-8 bytes escaped
/// (\x1b, \u202e, \xff), a backslash doubled; everything else as is.
std::string printable(std::string_view text);

/// One value of a request as the PMD reads it.
struct PmdField {
  enum class Kind : std::uint8_t { absent, null, string, integer, boolean, other };
  Kind kind = Kind::absent;
  std::string_view text;    ///< string: the unescaped text
  std::int64_t number = 0;  ///< integer: the value (an integer within int64); boolean: 0 or 1
  friend bool operator==(const PmdField&, const PmdField&) = default;
};

/// A request as the PMD reads it (PROTOCOL.md §2.1). A key given more than once
/// counts once, with its last value (as JSON.parse does); keys are compared
/// unescaped. The views point into the body or into the parser.
struct PmdRequest {
  enum class Payload : std::uint8_t { absent, object, other };  ///< null counts as absent
  std::string_view type;                       ///< empty when absent or not a string
  std::optional<std::string_view> request_id;  ///< the id's raw JSON text, verbatim
  Payload payload = Payload::absent;
  // The payload's members (all absent unless it is an object).
  PmdField node_id, alias, host, port, pid, snapshot, force, heartbeat_ms, max_frame, cluster;
  friend bool operator==(const PmdRequest&, const PmdRequest&) = default;
};

/// The daemon's request reader: one JsonObjectWalker pass over the body (and one
/// over the payload), no DOM, no exceptions. Decides every body by itself.
class PmdRequestParser {
 public:
  PmdRequestParser();
  ~PmdRequestParser();
  PmdRequestParser(PmdRequestParser&&) noexcept;
  PmdRequestParser& operator=(PmdRequestParser&&) noexcept;

  /// Fills `out`, valid until the next parse(). errc::bad_json (with `why`: the
  /// reason and byte offset) or errc::not_an_object when the body is not one JSON
  /// object. `padded`: at least kFramePadding readable bytes follow `body` (as
  /// FrameDecoder guarantees).
  std::error_code parse(std::string_view body, bool padded, PmdRequest& out,
                        std::string* why = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Client side: the body of a request frame. `payload_json` is a JSON object text.
std::string encode_request(std::string_view type, std::string_view payload_json,
                           std::uint64_t request_id);
/// Client side: {"nodeId","alias"?,"host","port"} (+ extensions: "pid" when non-zero,
/// "maxFrame" (at most 2^30) when `node.max_frame` is at least 16, "heartbeatMs"
/// (at least 100) when `heartbeat_ms` is 1 to 600000: the node's heartbeat interval).
std::string register_payload(const NodeInfo& node, std::int64_t heartbeat_ms = 0);

/// Anything the PMD sends a client: a response (to a request) or an event.
struct PmdReply {
  bool is_event = false;
  std::optional<std::uint64_t> request_id;  ///< when the response carried a numeric id
  // response payload
  std::string error;  ///< non-empty for {"error": ...}
  bool success = false;
  std::optional<NodeInfo> node;                ///< resolve
  std::optional<std::vector<NodeInfo>> nodes;  ///< list; watch with snapshot
  std::string cluster;                         ///< list of a clustered PMD: its state, raw JSON
  // event payload
  std::string event;  ///< "peer:join" | "peer:leave"
  std::optional<NodeInfo> peer;
  std::string reason;  ///< leave reason extension, may be empty
};

/// Client side: parses a frame body from the PMD; nullopt with `why` on bad input.
std::optional<PmdReply> parse_reply(std::string_view body, std::string* why = nullptr);

}  // namespace distflow
