#include "etcd_protocol.hpp"

#include <array>
#include <charconv>

#include <nlohmann/json.hpp>

namespace distflow {
namespace {

using Json = nlohmann::json;

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

std::string number(std::int64_t n) {
  return std::to_string(n);
}

/// A 64-bit field: a string of digits (proto3 JSON) or a number; absent reads 0.
/// False when present with anything else.
bool read_int64(const Json& object, const char* name, std::int64_t& out) {
  out = 0;
  const auto it = object.find(name);
  if (it == object.end() || it->is_null())
    return true;
  if (it->is_number_integer()) {
    out = it->get<std::int64_t>();
    return true;
  }
  if (!it->is_string())
    return false;
  const auto& text = it->get_ref<const std::string&>();
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

bool read_bool(const Json& object, const char* name, bool& out) {
  out = false;
  const auto it = object.find(name);
  if (it == object.end() || it->is_null())
    return true;
  if (!it->is_boolean())
    return false;
  out = it->get<bool>();
  return true;
}

/// A base64 bytes field; absent reads "".
bool read_bytes(const Json& object, const char* name, std::string& out) {
  out.clear();
  const auto it = object.find(name);
  if (it == object.end() || it->is_null())
    return true;
  if (!it->is_string())
    return false;
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  if (!decoded)
    return false;
  out = std::move(*decoded);
  return true;
}

bool read_kv(const Json& j, EtcdKeyValue& kv) {
  return j.is_object() && read_bytes(j, "key", kv.key) && read_bytes(j, "value", kv.value) &&
         read_int64(j, "create_revision", kv.create_revision) &&
         read_int64(j, "mod_revision", kv.mod_revision) && read_int64(j, "version", kv.version) &&
         read_int64(j, "lease", kv.lease);
}

bool read_kvs(const Json& j, std::vector<EtcdKeyValue>& out) {
  const auto it = j.find("kvs");
  if (it == j.end() || it->is_null())
    return true;
  if (!it->is_array())
    return false;
  for (const auto& item : *it) {
    EtcdKeyValue kv;
    if (!read_kv(item, kv))
      return false;
    out.push_back(std::move(kv));
  }
  return true;
}

bool read_header(const Json& j, EtcdResponse& out) {
  const auto it = j.find("header");
  if (it == j.end() || it->is_null())
    return true;
  return it->is_object() && read_int64(*it, "revision", out.revision);
}

EtcdResponse malformed(std::string why) {
  EtcdResponse r;
  r.status = EtcdStatus::failed;
  r.error = "malformed etcd answer: " + why;
  return r;
}

/// Reads an error object: {"error":"text","code":N} (unary, and streams before they
/// start) or {"error":{"grpc_code":N,"http_code":H,"message":"text"}} (inside a stream).
EtcdResponse read_error(const Json& j, unsigned http_status) {
  EtcdResponse r;
  const auto& error = j.at("error");
  std::int64_t code = 0;
  if (error.is_object()) {
    std::int64_t http = 0;
    read_int64(error, "grpc_code", code);
    read_int64(error, "http_code", http);
    const auto message = error.find("message");
    r.error =
        message != error.end() && message->is_string() ? message->get<std::string>() : error.dump();
    if (http > 0 && http < 1000)
      http_status = static_cast<unsigned>(http);
  } else {
    read_int64(j, "code", code);
    r.error = error.is_string() ? error.get<std::string>() : error.dump();
  }
  r.code = code > 0 && code < 100 ? static_cast<int>(code) : 0;
  r.status = etcd_error_status(http_status, r.code);
  return r;
}

/// Fills the fields of `request`'s answer kind from the result object `j`.
bool read_result(const EtcdRequest& request, const Json& j, EtcdResponse& out) {
  if (!j.is_object() || !read_header(j, out))
    return false;
  return std::visit(
      Overloaded{
          [&](const EtcdLeaseGrant&) {
            return read_int64(j, "ID", out.lease) && read_int64(j, "TTL", out.ttl);
          },
          [&](const EtcdLeaseKeepAlive&) {
            return read_int64(j, "ID", out.lease) && read_int64(j, "TTL", out.ttl);
          },
          [&](const EtcdLeaseRevoke&) { return true; },
          [&](const EtcdPut&) { return true; },
          [&](const EtcdRange&) { return read_kvs(j, out.kvs); },
          [&](const EtcdDeleteRange&) { return read_int64(j, "deleted", out.deleted); },
          [&](const EtcdTxn&) {
            if (!read_bool(j, "succeeded", out.succeeded))
              return false;
            const auto it = j.find("responses");
            if (it == j.end() || it->is_null())
              return true;
            if (!it->is_array())
              return false;
            for (const auto& op : *it) {
              if (!op.is_object())
                return false;
              if (const auto range = op.find("response_range"); range != op.end()) {
                if (!range->is_object() || !read_kvs(*range, out.kvs))
                  return false;
              } else if (const auto del = op.find("response_delete_range"); del != op.end()) {
                std::int64_t n = 0;
                if (!del->is_object() || !read_int64(*del, "deleted", n))
                  return false;
                out.deleted += n;
              }
            }
            return true;
          },
          [&](const EtcdWatch&) {
            if (!read_bool(j, "created", out.created) || !read_bool(j, "canceled", out.canceled) ||
                !read_int64(j, "compact_revision", out.compact_revision))
              return false;
            if (const auto reason = j.find("cancel_reason");
                reason != j.end() && reason->is_string())
              out.error = reason->get<std::string>();
            const auto it = j.find("events");
            if (it == j.end() || it->is_null())
              return true;
            if (!it->is_array())
              return false;
            for (const auto& e : *it) {
              EtcdWatchEvent event;
              if (!e.is_object())
                return false;
              if (const auto type = e.find("type"); type != e.end() && !type->is_null()) {
                if (*type == "DELETE")
                  event.type = EtcdWatchEvent::Type::del;
                else if (*type != "PUT")
                  return false;
              }
              if (const auto kv = e.find("kv"); kv != e.end() && !read_kv(*kv, event.kv))
                return false;
              if (const auto prev = e.find("prev_kv");
                  prev != e.end() && !read_kv(*prev, event.prev))
                return false;
              out.events.push_back(std::move(event));
            }
            return true;
          },
          [&](const EtcdCompaction&) { return true; },
          [&](const EtcdAuthenticate&) {
            const auto it = j.find("token");
            if (it == j.end() || !it->is_string())
              return false;
            out.token = it->get<std::string>();
            return true;
          },
      },
      request);
}

Json compare_json(const EtcdCompare& c) {
  static constexpr std::array<const char*, 5> kTargets{"VERSION", "CREATE", "MOD", "VALUE",
                                                       "LEASE"};
  static constexpr std::array<const char*, 4> kResults{"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
  Json j{{"key", base64_encode(c.key)},
         {"target", kTargets[static_cast<std::size_t>(c.target)]},
         {"result", kResults[static_cast<std::size_t>(c.result)]}};
  switch (c.target) {
    case EtcdCompare::Target::version:
      j["version"] = number(c.number);
      break;
    case EtcdCompare::Target::create:
      j["create_revision"] = number(c.number);
      break;
    case EtcdCompare::Target::mod:
      j["mod_revision"] = number(c.number);
      break;
    case EtcdCompare::Target::value:
      j["value"] = base64_encode(c.value);
      break;
    case EtcdCompare::Target::lease:
      j["lease"] = number(c.number);
      break;
  }
  return j;
}

Json key_range(const std::string& key, const std::string& range_end) {
  Json j{{"key", base64_encode(key)}};
  if (!range_end.empty())
    j["range_end"] = base64_encode(range_end);
  return j;
}

Json op_json(const EtcdOp& op) {
  switch (op.kind) {
    case EtcdOp::Kind::put: {
      Json put{{"key", base64_encode(op.key)}, {"value", base64_encode(op.value)}};
      if (op.lease != 0)
        put["lease"] = number(op.lease);
      return Json{{"request_put", put}};
    }
    case EtcdOp::Kind::range:
      return Json{{"request_range", key_range(op.key, op.range_end)}};
    case EtcdOp::Kind::delete_range:
      return Json{{"request_delete_range", key_range(op.key, op.range_end)}};
  }
  return Json::object();
}

Json ops_json(const std::vector<EtcdOp>& ops) {
  Json a = Json::array();
  for (const auto& op : ops)
    a.push_back(op_json(op));
  return a;
}

}  // namespace

std::string_view etcd_path(const EtcdRequest& request) {
  return std::visit(Overloaded{
                        [](const EtcdLeaseGrant&) { return "/v3/lease/grant"; },
                        [](const EtcdLeaseKeepAlive&) { return "/v3/lease/keepalive"; },
                        [](const EtcdLeaseRevoke&) { return "/v3/lease/revoke"; },
                        [](const EtcdPut&) { return "/v3/kv/put"; },
                        [](const EtcdRange&) { return "/v3/kv/range"; },
                        [](const EtcdDeleteRange&) { return "/v3/kv/deleterange"; },
                        [](const EtcdTxn&) { return "/v3/kv/txn"; },
                        [](const EtcdWatch&) { return "/v3/watch"; },
                        [](const EtcdAuthenticate&) { return "/v3/auth/authenticate"; },
                        [](const EtcdCompaction&) { return "/v3/kv/compaction"; },
                    },
                    request);
}

bool etcd_is_stream(const EtcdRequest& request) {
  return std::holds_alternative<EtcdWatch>(request) ||
         std::holds_alternative<EtcdLeaseKeepAlive>(request);
}

std::string etcd_request_body(const EtcdRequest& request) {
  const Json j =
      std::visit(Overloaded{
                     [](const EtcdLeaseGrant& r) {
                       return Json{{"TTL", number(r.ttl_seconds)}};
                     },
                     [](const EtcdLeaseKeepAlive& r) {
                       return Json{{"ID", number(r.lease)}};
                     },
                     [](const EtcdLeaseRevoke& r) {
                       return Json{{"ID", number(r.lease)}};
                     },
                     [](const EtcdPut& r) {
                       Json put{{"key", base64_encode(r.key)}, {"value", base64_encode(r.value)}};
                       if (r.lease != 0)
                         put["lease"] = number(r.lease);
                       return put;
                     },
                     [](const EtcdRange& r) { return key_range(r.key, r.range_end); },
                     [](const EtcdDeleteRange& r) { return key_range(r.key, r.range_end); },
                     [](const EtcdTxn& r) {
                       Json compare = Json::array();
                       for (const auto& c : r.compare)
                         compare.push_back(compare_json(c));
                       return Json{{"compare", compare},
                                   {"success", ops_json(r.success)},
                                   {"failure", ops_json(r.failure)}};
                     },
                     [](const EtcdWatch& r) {
                       Json create = key_range(r.key, r.range_end);
                       create["prev_kv"] = true;
                       if (r.start_revision != 0)
                         create["start_revision"] = number(r.start_revision);
                       return Json{{"create_request", create}};
                     },
                     [](const EtcdAuthenticate& r) {
                       return Json{{"name", r.name}, {"password", r.password}};
                     },
                     [](const EtcdCompaction& r) {
                       return Json{{"revision", number(r.revision)}, {"physical", true}};
                     },
                 },
                 request);
  return j.dump();
}

EtcdStatus etcd_error_status(unsigned http_status, int grpc_code) {
  // gRPC: 2 unknown, 4 deadline exceeded, 10 aborted, 14 unavailable.
  if (grpc_code == 2 || grpc_code == 4 || grpc_code == 10 || grpc_code == 14)
    return EtcdStatus::unavailable;
  if (grpc_code == 0 && (http_status >= 500 || http_status == 429))
    return EtcdStatus::unavailable;
  return EtcdStatus::failed;
}

EtcdResponse etcd_decode_response(const EtcdRequest& request, unsigned http_status,
                                  std::string_view body) {
  const Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    if (http_status != 200) {
      EtcdResponse r;
      r.status = etcd_error_status(http_status, 0);
      r.error = "HTTP " + std::to_string(http_status);
      return r;
    }
    return malformed("not a JSON object");
  }
  if (j.contains("error"))
    return read_error(j, http_status);
  if (http_status != 200) {
    EtcdResponse r;
    r.status = etcd_error_status(http_status, 0);
    r.error = "HTTP " + std::to_string(http_status);
    return r;
  }
  EtcdResponse r;
  if (!read_result(request, j, r))
    return malformed("unexpected field types");
  return r;
}

EtcdResponse etcd_decode_stream_message(const EtcdRequest& request, std::string_view line) {
  const Json j = Json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return malformed("stream message is not a JSON object");
  if (j.contains("error"))
    return read_error(j, 200);
  const auto result = j.find("result");
  if (result == j.end())
    return malformed("stream message without result");
  EtcdResponse r;
  if (!read_result(request, *result, r))
    return malformed("unexpected field types");
  return r;
}

std::string etcd_prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key (etcd's convention for an empty prefix)
}

namespace {
constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_value(char c) {
  const auto pos = kBase64.find(c);
  return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}
}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    out += kBase64[(n >> 18) & 63];
    out += kBase64[(n >> 12) & 63];
    out += kBase64[(n >> 6) & 63];
    out += kBase64[n & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2)
      n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kBase64[(n >> 18) & 63];
    out += kBase64[(n >> 12) & 63];
    out += rest == 2 ? kBase64[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    if (pad == 1 && text[i + 2] == '=')
      return std::nullopt;  // "x=y=" and the like
    std::uint32_t n = 0;
    for (int k = 0; k < 4 - pad; ++k) {
      const int v = base64_value(text[i + static_cast<std::size_t>(k)]);
      if (v < 0)
        return std::nullopt;
      n |= static_cast<std::uint32_t>(v) << (18 - 6 * k);
    }
    // Canonical form: the bits below the last byte's are zero.
    if ((pad == 1 && (n & 0xff) != 0) || (pad == 2 && (n & 0xffff) != 0))
      return std::nullopt;
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2)
      out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1)
      out += static_cast<char>(n & 0xff);
  }
  return out;
}

}  // namespace distflow
