#pragma once

// etcd v3's HTTP/JSON gateway (etcd 3.4, paths /v3/...) as plain structs: the
// requests distflow makes, the answers it reads, and their JSON both ways. Pure:
// no I/O. On the wire keys and values are base64, 64-bit numbers are strings,
// and proto3 leaves out every field at its default (false, 0, "", PUT), so a
// missing field reads as that default. Streams (watch, lease keepalive) carry
// one JSON object per line: {"result":{...}} or {"error":{...}}.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace distflow {

struct EtcdKeyValue {
  std::string key, value;  ///< bytes, decoded
  std::int64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
};

/// A txn guard on one key: `target` of `key` compared with `number` (or `value`).
struct EtcdCompare {
  enum class Target { version, create, mod, value, lease };
  enum class Result { equal, greater, less, not_equal };
  std::string key;
  Target target = Target::create;
  Result result = Result::equal;
  std::int64_t number = 0;
  std::string value;
};

/// One operation of a txn branch.
struct EtcdOp {
  enum class Kind { put, range, delete_range };
  Kind kind = Kind::range;
  std::string key, range_end, value;
  std::int64_t lease = 0;
};

struct EtcdLeaseGrant {
  std::int64_t ttl_seconds = 0;
};
struct EtcdLeaseKeepAlive {  ///< one keepalive: the first answer of the stream
  std::int64_t lease = 0;
};
struct EtcdLeaseRevoke {
  std::int64_t lease = 0;
};
struct EtcdPut {
  std::string key, value;
  std::int64_t lease = 0;
};
struct EtcdRange {  ///< `range_end` empty: the one key
  std::string key, range_end;
};
struct EtcdDeleteRange {
  std::string key, range_end;
};
struct EtcdTxn {
  std::vector<EtcdCompare> compare;
  std::vector<EtcdOp> success, failure;
};
struct EtcdWatch {  ///< a stream of events from `start_revision` on (0: from now)
  std::string key, range_end;
  std::int64_t start_revision = 0;
};
struct EtcdAuthenticate {
  std::string name, password;
};
struct EtcdCompaction {  ///< drops the history before `revision`
  std::int64_t revision = 0;
};
using EtcdRequest =
    std::variant<EtcdLeaseGrant, EtcdLeaseKeepAlive, EtcdLeaseRevoke, EtcdPut, EtcdRange,
                 EtcdDeleteRange, EtcdTxn, EtcdWatch, EtcdAuthenticate, EtcdCompaction>;

enum class EtcdStatus {
  ok,
  unavailable,  ///< no endpoint answered in time (or each said it cannot serve)
  failed,       ///< etcd answered with an error that retrying will not change
  canceled,     ///< the caller canceled it (or the client stopped)
};

struct EtcdWatchEvent {
  enum class Type { put, del };
  Type type = Type::put;
  EtcdKeyValue kv;    ///< a delete carries only key and mod_revision
  EtcdKeyValue prev;  ///< the key before the event (the watch asks for prev_kv); may be empty
};

/// An answer, or one message of a stream. Only the fields of its kind are set.
struct EtcdResponse {
  EtcdStatus status = EtcdStatus::ok;
  int code = 0;       ///< gRPC status code of an error (14: unavailable, 16: unauthenticated)
  std::string error;  ///< why, when status is not ok
  std::int64_t revision = 0;      ///< header.revision
  std::int64_t lease = 0;         ///< grant, keepalive: the lease ID
  std::int64_t ttl = 0;           ///< grant, keepalive: seconds left; 0 on keepalive: lease gone
  bool succeeded = false;         ///< txn
  std::vector<EtcdKeyValue> kvs;  ///< range; txn: the kvs of its range operations, in order
  std::int64_t deleted = 0;       ///< delete_range; txn: summed over its deletes
  std::string token;              ///< authenticate
  // Watch messages (stream_end: the stream is over; status says why).
  std::vector<EtcdWatchEvent> events;
  bool created = false, canceled = false, stream_end = false;
  std::int64_t compact_revision = 0;  ///< canceled: events before it are compacted away
};

/// The gateway path of `request` ("/v3/kv/txn").
std::string_view etcd_path(const EtcdRequest& request);
/// True for the requests whose answer is a stream (watch, keepalive).
bool etcd_is_stream(const EtcdRequest& request);
/// The JSON body of `request`.
std::string etcd_request_body(const EtcdRequest& request);

/// Decodes a unary answer: HTTP status and body. A body that does not parse, or an
/// error body, gives a response with status failed or unavailable and the reason.
EtcdResponse etcd_decode_response(const EtcdRequest& request, unsigned http_status,
                                  std::string_view body);
/// Decodes one line of a stream answer to `request`.
EtcdResponse etcd_decode_stream_message(const EtcdRequest& request, std::string_view line);
/// The status for an error reply: unavailable when another try may succeed
/// (HTTP 5xx, gRPC unavailable/deadline/aborted/unknown), failed otherwise.
EtcdStatus etcd_error_status(unsigned http_status, int grpc_code);

/// The range_end that makes a range cover every key starting with `prefix`.
std::string etcd_prefix_end(std::string_view prefix);

std::string base64_encode(std::string_view bytes);
/// nullopt unless `text` is canonical padded base64 (RFC 4648 §4).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace distflow
