#pragma once

// The reference reading of a PMD request, for tests and fuzz targets: a
// nlohmann::json DOM, the way the daemon read requests before PmdRequestParser
// decided them all (its DOM path), on the JSON acceptance of tests/json_oracle.hpp
// (what is valid JSON at all is the json module's rule, checked there).
// Its rules, which PmdRequestParser must reproduce:
// * a key given twice counts once, with its last value (the DOM keeps the last);
//   keys are compared unescaped ("typ\u0065" is "type");
// * "requestId" is copied as the raw text of that last value (a small token
//   scanner, independent of the json module, finds it in the body);
// * a null payload is no payload; integers are those within int64 (a larger one
//   reads as a float in the DOM, as do numbers with a fraction or an exponent).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "json_oracle.hpp"
#include "pmd_protocol.hpp"

namespace distflow_test {

struct OracleRequest {
  enum class Verdict { ok, bad_json, not_an_object };
  Verdict verdict = Verdict::ok;
  distflow::PmdRequest request;     ///< when ok; views into `strings` and the body
  std::deque<std::string> strings;  ///< what the views point into
};

namespace oracle_detail {

using json = nlohmann::json;

inline std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
    ++i;
  return i;
}

inline std::size_t skip_string(std::string_view s, std::size_t i) {  // s[i] == '"'
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

inline std::size_t skip_value(std::string_view s, std::size_t i) {
  if (s[i] == '"')
    return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        continue;
      }
      if (c == '{' || c == '[')
        ++depth;
      if ((c == '}' || c == ']') && --depth == 0)
        return i + 1;
      ++i;
    }
    return i;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
         s[i] != '\n' && s[i] != '\r') {
    ++i;
  }
  return i;
}

/// Raw text of the last top-level member whose unescaped key is `key`, in a
/// valid JSON object.
inline std::optional<std::string_view> raw_member(std::string_view s, std::string_view key) {
  std::optional<std::string_view> found;
  std::size_t i = skip_ws(s, 0) + 1;  // past '{'
  for (i = skip_ws(s, i); i < s.size() && s[i] == '"';) {
    const std::size_t key_end = skip_string(s, i);
    const std::string name = json::parse(s.substr(i, key_end - i)).get<std::string>();
    i = skip_ws(s, skip_ws(s, key_end) + 1);  // past ':'
    const std::size_t value_end = skip_value(s, i);
    if (name == key)
      found = s.substr(i, value_end - i);
    i = skip_ws(s, value_end);
    if (i < s.size() && s[i] == ',')
      i = skip_ws(s, i + 1);
  }
  return found;
}

/// The DOM of a text the oracle accepted; numbers beyond double's range (which
/// nlohmann refuses) read as a float, as any number that is not an integer.
inline json dom(std::string text) {
  struct Sax : nlohmann::json_sax<json> {
    int error_id = 0;
    std::size_t error_end = 0, error_length = 0;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t position, const std::string& token,
                     const nlohmann::detail::exception& e) override {
      error_id = e.id;
      error_end = position;
      error_length = token.size();
      return false;
    }
  };
  for (;;) {
    Sax sax;
    if (json::sax_parse(text, &sax))
      return json::parse(text);
    if (sax.error_id != 406)  // json_oracle.hpp accepted it: only a number overflow is left
      throw std::logic_error("pmd_oracle: nlohmann refuses a text the oracle accepted");
    text.replace(sax.error_end - sax.error_length, sax.error_length, "1.5");
  }
}

inline distflow::PmdField field(const json& payload, const char* key,
                                std::deque<std::string>& strings) {
  using Kind = distflow::PmdField::Kind;
  distflow::PmdField out;
  auto it = payload.find(key);
  if (it == payload.end())
    return out;
  if (it->is_null()) {
    out.kind = Kind::null;
  } else if (it->is_string()) {
    out.kind = Kind::string;
    out.text = strings.emplace_back(it->get<std::string>());
  } else if (it->is_boolean()) {
    out.kind = Kind::boolean;
    out.number = it->get<bool>() ? 1 : 0;
  } else if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    if (value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      out.kind = Kind::integer;
      out.number = static_cast<std::int64_t>(value);
    } else {
      out.kind = Kind::other;
    }
  } else if (it->is_number_integer()) {
    out.kind = Kind::integer;
    out.number = it->get<std::int64_t>();
  } else {
    out.kind = Kind::other;
  }
  return out;
}

}  // namespace oracle_detail

/// Reads `body` as the DOM path did (see the top of this file).
inline void oracle_read(std::string_view body, OracleRequest& out) {
  using namespace oracle_detail;
  using Payload = distflow::PmdRequest::Payload;
  out = OracleRequest{};
  const JsonVerdict verdict = oracle_parse(body);
  if (!verdict.valid) {
    out.verdict = OracleRequest::Verdict::bad_json;
    return;
  }
  if (!verdict.object) {
    out.verdict = OracleRequest::Verdict::not_an_object;
    return;
  }
  const json request = dom(std::string(body));
  distflow::PmdRequest& r = out.request;
  r.request_id = raw_member(body, "requestId");
  if (auto t = request.find("type"); t != request.end() && t->is_string())
    r.type = out.strings.emplace_back(t->get<std::string>());
  auto p = request.find("payload");
  if (p == request.end() || p->is_null()) {
    r.payload = Payload::absent;
  } else if (!p->is_object()) {
    r.payload = Payload::other;
  } else {
    r.payload = Payload::object;
    auto& s = out.strings;
    r.node_id = field(*p, "nodeId", s);
    r.alias = field(*p, "alias", s);
    r.host = field(*p, "host", s);
    r.port = field(*p, "port", s);
    r.pid = field(*p, "pid", s);
    r.snapshot = field(*p, "snapshot", s);
    r.force = field(*p, "force", s);
    r.heartbeat_ms = field(*p, "heartbeatMs", s);
    r.max_frame = field(*p, "maxFrame", s);
  }
}

}  // namespace distflow_test
