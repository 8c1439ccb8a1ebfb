#pragma once

// The PMD's JSON messages (PROTOCOL.md §2): requests, responses, events and
// NodeInfo, for both sides (the daemon and its clients). Pure: text in, text out.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distflow {

inline constexpr std::uint16_t kDefaultPmdPort = 4369;

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
