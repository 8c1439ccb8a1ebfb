#include "pmd_protocol.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <deque>
#include <utility>

#include "errors.hpp"
#include "framing.hpp"
#include "json.hpp"

namespace distflow {
namespace {

/// Bodies larger than this are read with fresh walkers, so that one huge request
/// does not keep the parser's buffers grown for good.
constexpr std::size_t kKeepBuffersMaxBytes = 4096;

/// Unescaped strings of the request being read (views into them stay valid).
using Strings = std::deque<std::string>;

std::string_view string_text(std::string_view token, Strings& strings) {
  if (token.find('\\') == std::string_view::npos)
    return token.substr(1, token.size() - 2);
  return json_string_text(token, strings.emplace_back());
}

/// A member's value (an accepted JSON token) as the registry reads it.
PmdField field_of(std::string_view value, Strings& strings) {
  PmdField field;
  switch (value.front()) {
    case '"':
      field.kind = PmdField::Kind::string;
      field.text = string_text(value, strings);
      break;
    case 'n':
      field.kind = PmdField::Kind::null;
      break;
    case 't':
    case 'f':
      field.kind = PmdField::Kind::boolean;
      field.number = value.front() == 't' ? 1 : 0;
      break;
    case '{':
    case '[':
      field.kind = PmdField::Kind::other;
      break;
    default:  // a number
      field.kind =
          json_int64(value, field.number) ? PmdField::Kind::integer : PmdField::Kind::other;
      if (field.kind == PmdField::Kind::other)
        field.number = 0;
  }
  return field;
}

/// The payload's members that the registry reads, each the last of its name.
void read_payload(const JsonObjectWalker& walker, Strings& strings, PmdRequest& out) {
  for (const JsonMember& member : walker.members()) {
    const std::string_view key = member.key;
    PmdField* field = nullptr;
    if (key == "nodeId") {
      field = &out.node_id;
    } else if (key == "alias") {
      field = &out.alias;
    } else if (key == "host") {
      field = &out.host;
    } else if (key == "port") {
      field = &out.port;
    } else if (key == "pid") {
      field = &out.pid;
    } else if (key == "snapshot") {
      field = &out.snapshot;
    } else if (key == "force") {
      field = &out.force;
    } else if (key == "heartbeatMs") {
      field = &out.heartbeat_ms;
    } else if (key == "maxFrame") {
      field = &out.max_frame;
    } else if (key == "cluster") {
      field = &out.cluster;
    }
    if (field != nullptr)
      *field = field_of(member.value, strings);
  }
}

// ---- the client's reading of replies ------------------------------------------

/// The last value of each of `keys` among the members (empty view: absent).
template <std::size_t N>
std::array<std::string_view, N> last_values(const JsonObjectWalker& walker,
                                            const std::array<std::string_view, N>& keys) {
  std::array<std::string_view, N> out{};
  for (const JsonMember& member : walker.members()) {
    for (std::size_t i = 0; i < N; ++i) {
      if (member.key == keys[i])
        out[i] = member.value;
    }
  }
  return out;
}

bool is_string(std::string_view value) {
  return !value.empty() && value.front() == '"';
}

std::string string_of(std::string_view token) {
  std::string storage;
  const std::string_view text = json_string_text(token, storage);
  return text.data() == storage.data() ? std::move(storage) : std::string(text);
}

/// A number token as an int64: integers exactly, others rounded toward zero and
/// clamped; 0 for anything that is not a number.
std::int64_t int64_of(std::string_view value) {
  if (value.empty() || (value.front() != '-' && (value.front() < '0' || value.front() > '9')))
    return 0;
  std::int64_t integer = 0;
  if (json_int64(value, integer))
    return integer;
  const double number = std::strtod(std::string(value).c_str(), nullptr);
  constexpr double kLimit = 9.2e18;
  return static_cast<std::int64_t>(number < -kLimit ? -kLimit : number > kLimit ? kLimit : number);
}

std::optional<NodeInfo> node_from_json(std::string_view text, JsonObjectWalker& walker) {
  if (text.empty() || text.front() != '{' || walker.walk(text, false))
    return std::nullopt;
  const auto [id, alias, host, port, last_heartbeat, registered_at, pid, max_frame, pmd, remote] =
      last_values<10>(walker, {"nodeId", "alias", "host", "port", "lastHeartbeat", "registeredAt",
                               "pid", "maxFrame", "pmd", "remote"});
  if (!is_string(id))
    return std::nullopt;
  NodeInfo node;
  node.node_id = string_of(id);
  if (is_string(alias))
    node.alias = string_of(alias);
  if (is_string(host))
    node.host = string_of(host);
  std::int64_t number = 0;
  if (json_int64(port, number) && number >= 0 && number <= 65535)
    node.port = static_cast<std::uint16_t>(number);
  node.last_heartbeat = int64_of(last_heartbeat);
  node.registered_at = int64_of(registered_at);
  node.pid = int64_of(pid);
  if (json_int64(max_frame, number) && number >= kMinMaxFrame && number <= kMaxMaxFrame)
    node.max_frame = static_cast<std::uint32_t>(number);
  if (is_string(pmd))
    node.pmd = string_of(pmd);
  node.remote = remote == "true";
  return node;
}

// ---- text for terminals --------------------------------------------------------

/// The code point of the well-formed UTF-8 sequence at p (lead byte >= 0x80) and
/// its length; length 0 when it is not well-formed.
std::pair<char32_t, int> decode_utf8(const char* p, const char* end) {
  const auto lead = static_cast<unsigned char>(*p);
  int length = 0;
  char32_t code = 0;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    code = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    code = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    code = lead & 0x07;
  } else {
    return {0, 0};
  }
  if (end - p < length)
    return {0, 0};
  for (int i = 1; i < length; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if ((c & 0xc0) != 0x80)
      return {0, 0};
    code = code << 6 | (c & 0x3f);
  }
  const char32_t min = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
  if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
    return {0, 0};
  return {code, length};
}

/// C1 controls, and the format and separator characters that move or hide text
/// (bidirectional overrides, zero-width characters, line and paragraph separators).
bool invisible(char32_t code) {
  return (code >= 0x80 && code <= 0x9f) || code == 0x61c || code == 0x180e ||
         (code >= 0x200b && code <= 0x200f) || (code >= 0x2028 && code <= 0x202e) ||
         (code >= 0x2060 && code <= 0x206f) || code == 0xfeff || (code >= 0xfff9 && code <= 0xfffb);
}

}  // namespace

void append_node_info(std::string& out, const NodeInfo& node) {
  out += "{\"nodeId\":";
  append_json_string(out, node.node_id);
  if (!node.alias.empty()) {
    out += ",\"alias\":";
    append_json_string(out, node.alias);
  }
  out += ",\"host\":";
  append_json_string(out, node.host);
  out += ",\"port\":";
  out += std::to_string(node.port);
  out += ",\"lastHeartbeat\":";
  out += std::to_string(node.last_heartbeat);
  if (node.registered_at != 0) {
    out += ",\"registeredAt\":";
    out += std::to_string(node.registered_at);
  }
  if (node.pid != 0) {
    out += ",\"pid\":";
    out += std::to_string(node.pid);
  }
  if (node.max_frame != 0) {
    out += ",\"maxFrame\":";
    out += std::to_string(node.max_frame);
  }
  if (!node.pmd.empty()) {
    out += ",\"pmd\":";
    append_json_string(out, node.pmd);
  }
  if (node.remote)
    out += ",\"remote\":true";
  out += '}';
}

std::optional<NodeInfo> parse_node_info(std::string_view json) {
  JsonObjectWalker walker;
  return node_from_json(json, walker);
}

std::string printable(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    const auto c = static_cast<unsigned char>(*p);
    if (c >= 0x20 && c < 0x7f) {
      if (c == '\\')
        out += '\\';
      out += static_cast<char>(c);
      ++p;
      continue;
    }
    if (c >= 0x80) {
      const auto [code, length] = decode_utf8(p, end);
      if (length > 0 && !invisible(code)) {
        out.append(p, static_cast<std::size_t>(length));
        p += length;
        continue;
      }
      if (length > 0) {
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4)
          out += kHex[code >> shift & 0xf];
        p += length;
        continue;
      }
    }
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
    ++p;
  }
  return out;
}

struct PmdRequestParser::Impl {
  JsonObjectWalker request;
  JsonObjectWalker payload;
  Strings strings;
};

PmdRequestParser::PmdRequestParser() : impl_(std::make_unique<Impl>()) {}
PmdRequestParser::~PmdRequestParser() = default;
PmdRequestParser::PmdRequestParser(PmdRequestParser&&) noexcept = default;
PmdRequestParser& PmdRequestParser::operator=(PmdRequestParser&&) noexcept = default;

std::error_code PmdRequestParser::parse(std::string_view body, bool padded, PmdRequest& out,
                                        std::string* why) {
  static_assert(kFramePadding >= 16);
  out = PmdRequest{};
  Impl& impl = *impl_;
  impl.strings.clear();
  // Validates the whole body; the payload's members are walked again below.
  if (auto ec = impl.request.walk(body, padded, why)) {
    if (body.size() > kKeepBuffersMaxBytes)
      impl.request = JsonObjectWalker();
    return ec;
  }
  std::string_view type, payload;
  for (const JsonMember& member : impl.request.members()) {
    if (member.key == "type") {
      type = member.value;
    } else if (member.key == "requestId") {
      out.request_id = member.value;
    } else if (member.key == "payload") {
      payload = member.value;
    }
  }
  if (is_string(type))
    out.type = string_text(type, impl.strings);
  if (payload.empty() || payload == "null") {
    out.payload = PmdRequest::Payload::absent;
  } else if (payload.front() != '{') {
    out.payload = PmdRequest::Payload::other;
  } else {
    // The payload is followed by the rest of the body (and the padding, if any).
    const auto after = body.data() + body.size() - (payload.data() + payload.size());
    // It was validated as part of the body: this walk cannot fail.
    if (!impl.payload.walk(payload, padded || after >= 16)) {
      out.payload = PmdRequest::Payload::object;
      read_payload(impl.payload, impl.strings, out);
    } else {
      out.payload = PmdRequest::Payload::other;
    }
  }
  if (body.size() > kKeepBuffersMaxBytes) {
    impl.request = JsonObjectWalker();
    impl.payload = JsonObjectWalker();
  }
  return {};
}

std::string encode_request(std::string_view type, std::string_view payload_json,
                           std::uint64_t request_id) {
  std::string out = "{\"type\":";
  append_json_string(out, type);
  out += ",\"payload\":";
  out += payload_json.empty() ? std::string_view("{}") : payload_json;
  out += ",\"requestId\":";
  out += std::to_string(request_id);
  out += '}';
  return out;
}

std::string register_payload(const NodeInfo& node, std::int64_t heartbeat_ms) {
  std::string out = "{\"nodeId\":";
  append_json_string(out, node.node_id);
  if (!node.alias.empty()) {
    out += ",\"alias\":";
    append_json_string(out, node.alias);
  }
  out += ",\"host\":";
  append_json_string(out, node.host);
  out += ",\"port\":";
  out += std::to_string(node.port);
  if (node.pid != 0) {
    out += ",\"pid\":";
    out += std::to_string(node.pid);
  }
  if (node.max_frame >= kMinMaxFrame) {
    out += ",\"maxFrame\":";
    out += std::to_string(std::min(node.max_frame, kMaxMaxFrame));
  }
  if (heartbeat_ms > 0 && heartbeat_ms <= kMaxHeartbeatMs) {
    out += ",\"heartbeatMs\":";
    out += std::to_string(std::max(heartbeat_ms, kMinHeartbeatMs));
  }
  out += '}';
  return out;
}

std::optional<PmdReply> parse_reply(std::string_view body, std::string* why) {
  auto fail = [why](std::string text) -> std::optional<PmdReply> {
    if (why)
      *why = std::move(text);
    return std::nullopt;
  };
  JsonObjectWalker walker;
  if (auto ec = walker.walk(body, false))
    return fail(ec == errc::not_an_object ? "not a JSON object" : "not valid JSON");
  const auto [type, request_id, payload] = last_values<3>(walker, {"type", "requestId", "payload"});
  if (!is_string(type))
    return fail("no 'type'");
  PmdReply reply;
  const std::string type_text = string_of(type);
  if (type_text == "event") {
    reply.is_event = true;
  } else if (type_text != "response") {
    return fail("unexpected type '" + type_text + "'");
  }
  std::uint64_t id = 0;
  if (!request_id.empty() && request_id.find_first_of(".eE") == std::string_view::npos) {
    const char* end = request_id.data() + request_id.size();
    if (auto [at, ec] = std::from_chars(request_id.data(), end, id);
        ec == std::errc() && at == end) {
      reply.request_id = id;
    } else if (request_id == "-0") {
      reply.request_id = 0;
    }
  }
  if (payload.empty() || payload.front() != '{' || walker.walk(payload, false))
    return fail("no 'payload' object");
  if (reply.is_event) {
    const auto [event, peer, reason] = last_values<3>(walker, {"event", "peer", "reason"});
    if (is_string(event))
      reply.event = string_of(event);
    if (is_string(reason))
      reply.reason = string_of(reason);
    if (!peer.empty())
      reply.peer = node_from_json(peer, walker);
    if (reply.event.empty() || !reply.peer)
      return fail("event without 'event' or 'peer'");
    return reply;
  }
  const auto [error, success, node, nodes, cluster] =
      last_values<5>(walker, {"error", "success", "node", "nodes", "cluster"});
  if (!cluster.empty() && cluster.front() == '{')
    reply.cluster = std::string(cluster);
  if (!error.empty()) {
    reply.error = is_string(error) ? string_of(error) : std::string(error);
    if (reply.error.empty())
      reply.error = "error";
  }
  reply.success = success == "true";
  std::vector<std::string_view> elements;
  if (json_array_elements(nodes, elements)) {
    std::vector<NodeInfo> list;
    list.reserve(elements.size());
    for (std::string_view element : elements) {
      if (auto info = node_from_json(element, walker))
        list.push_back(std::move(*info));
    }
    reply.nodes = std::move(list);
  }
  if (!node.empty())
    reply.node = node_from_json(node, walker);
  return reply;
}

std::string PmdEndpoint::to_string() const {
  if (host.find(':') != std::string::npos)
    return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

}  // namespace distflow
