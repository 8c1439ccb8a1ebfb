#include "messages.hpp"

#include <charconv>
#include <chrono>

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include "errors.hpp"
#include "framing.hpp"

namespace distflow {
namespace ondemand = simdjson::ondemand;

namespace {

std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

std::error_code fail(simdjson::error_code e, std::string* why) {
  return fail(errc::bad_json, why, simdjson::error_message(e));
}

// On-demand checks only the nesting of what it skips ("[tru,,]" passes), and a
// scalar's token is not parsed until asked for: parse it once, build nothing.
// Objects and arrays are validated by the caller (a DOM pass over their span).
simdjson::error_code validate_scalar(ondemand::value& value, ondemand::json_type type) {
  switch (type) {
    case ondemand::json_type::object:
    case ondemand::json_type::array:
      return simdjson::INCORRECT_TYPE;
    case ondemand::json_type::string: {
      std::string_view text;
      return value.get_string().get(text);
    }
    case ondemand::json_type::number: {
      ondemand::number number;
      return value.get_number().get(number);
    }
    case ondemand::json_type::boolean: {
      bool flag = false;
      return value.get_bool().get(flag);
    }
    case ondemand::json_type::null: {
      bool is_null = false;
      if (auto e = value.is_null().get(is_null))
        return e;
      return is_null ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::TAPE_ERROR;
}

}  // namespace

// ---- EnvelopeParser -----------------------------------------------------------

struct EnvelopeParser::Impl {
  ondemand::parser parser;
  // Validates object/array payloads (on-demand skips them unchecked) and, on the
  // error path, tells bad JSON from a valid non-object.
  simdjson::dom::parser classifier;
};

EnvelopeParser::EnvelopeParser() : impl_(std::make_unique<Impl>()) {}
EnvelopeParser::~EnvelopeParser() = default;

std::error_code EnvelopeParser::parse(std::string_view body, Envelope& out, std::string* why) {
  out.body_.assign(body);
  out.body_len_ = body.size();
  out.from_ = out.to_ = out.alias_ = out.payload_ = {};
  out.from_raw_ = out.to_raw_ = out.alias_raw_ = {};
  out.timestamp_ = 0;

  // Parse our own copy: spans are offsets into it. The copy is padded by the
  // string's spare capacity, which we guarantee here.
  out.body_.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  const char* base = out.body_.data();
  ondemand::document doc;
  if (auto e = impl_->parser.iterate(base, body.size(), out.body_.capacity()).get(doc)) {
    return fail(e, why);
  }
  ondemand::object object;
  if (auto e = doc.get_object().get(object)) {
    if (e != simdjson::INCORRECT_TYPE)
      return fail(e, why);
    // On-demand only looked at the first byte ("nope" looks like null): a full
    // parse tells a valid non-object from garbage.
    simdjson::dom::element root;
    if (auto de = impl_->classifier.parse(body.data(), body.size(), true).get(root)) {
      return fail(de, why);
    }
    return fail(errc::not_an_object, why, "not a JSON object");
  }

  auto span_of = [&](std::string_view v) {
    return Envelope::Span{static_cast<std::uint32_t>(v.data() - base),
                          static_cast<std::uint32_t>(v.size())};
  };
  std::string escaped;
  // A string field: raw token span, plus the unescaped text (a span of the raw
  // token when it has no escapes, else an unescaped copy appended to the body).
  auto string_field = [&](ondemand::value& value, Envelope::Span& raw,
                          Envelope::Span& text) -> simdjson::error_code {
    std::string_view token = trim_right(value.raw_json_token());
    std::string_view unescaped;
    if (auto e = value.get_string().get(unescaped))
      return e;
    raw = span_of(token);
    if (token.size() >= 2 && token.substr(1, token.size() - 2) == unescaped) {
      text = span_of(token.substr(1, token.size() - 2));
    } else {
      // Kept aside until parsing ends: appending to body_ now could move `base`.
      text = {static_cast<std::uint32_t>(body.size() + escaped.size()),
              static_cast<std::uint32_t>(unescaped.size())};
      escaped.append(unescaped);
    }
    return simdjson::SUCCESS;
  };

  bool have_from = false, have_payload = false;
  for (auto field_result : object) {
    ondemand::field field;
    if (auto e = std::move(field_result).get(field))
      return fail(e, why);
    std::string_view key;
    if (auto e = field.unescaped_key().get(key))
      return fail(e, why);
    ondemand::value value = field.value();
    simdjson::error_code e = simdjson::SUCCESS;
    if (key == "payload") {
      // A scalar is its token; an object or array runs from its first byte to
      // the token after it, where the walk leaves the iterator.
      const std::string_view token = value.raw_json_token();
      ondemand::json_type type;
      if ((e = value.type().get(type)))
        return fail(e, why);
      std::string_view raw = token;
      if (type == ondemand::json_type::object || type == ondemand::json_type::array) {
        if (type == ondemand::json_type::object) {
          ondemand::object inner;
          if (!(e = value.get_object().get(inner)))
            e = inner.raw_json().get(raw);
        } else {
          ondemand::array inner;
          if (!(e = value.get_array().get(inner)))
            e = inner.raw_json().get(raw);
        }
        if (e)
          return fail(e, why);
        raw = trim_right(raw);
        // The span is inside body_, whose spare capacity is the parser's padding.
        simdjson::dom::element root;
        if ((e = impl_->classifier.parse(raw.data(), raw.size(), false).get(root))) {
          return fail(e, why);
        }
      } else if ((e = validate_scalar(value, type))) {
        return fail(e, why);
      }
      out.payload_ = span_of(trim_right(raw));
      have_payload = true;
    } else if (key == "from") {
      e = string_field(value, out.from_raw_, out.from_);
      have_from = true;
    } else if (key == "to") {
      e = string_field(value, out.to_raw_, out.to_);
    } else if (key == "alias") {
      ondemand::json_type type;
      if ((e = value.type().get(type)))
        return fail(e, why);
      if (type == ondemand::json_type::string)
        e = string_field(value, out.alias_raw_, out.alias_);
    } else if (key == "timestamp") {
      double ts = 0;
      if ((e = value.get_double().get(ts))) {
        return fail(errc::wrong_type, why, "'timestamp' is not a number");
      }
      // A peer's number may be anything: clamp instead of an out-of-range cast.
      constexpr double kLimit = 9.2e18;
      out.timestamp_ = ts != ts ? 0
                                : static_cast<std::int64_t>(ts < -kLimit  ? -kLimit
                                                            : ts > kLimit ? kLimit
                                                                          : ts);
    }
    if (e == simdjson::INCORRECT_TYPE) {
      return fail(errc::wrong_type, why, "'" + std::string(key) + "' has the wrong type");
    }
    if (e)
      return fail(e, why);
  }
  // current_location() fails (out of bounds) exactly when the object was the whole input.
  const char* trailing = nullptr;
  if (doc.current_location().get(trailing) == simdjson::SUCCESS) {
    return fail(errc::bad_json, why, "trailing content after the JSON object");
  }
  if (!have_from)
    return fail(errc::missing_field, why, "missing 'from'");
  if (!have_payload)
    return fail(errc::missing_field, why, "missing 'payload'");
  out.body_.append(escaped);
  return {};
}

// ---- JsonValidator ------------------------------------------------------------

struct JsonValidator::Impl {
  simdjson::dom::parser parser;
};

JsonValidator::JsonValidator() : impl_(std::make_unique<Impl>()) {}
JsonValidator::~JsonValidator() = default;

std::error_code JsonValidator::validate(std::string_view text, std::string* why) {
  simdjson::dom::element root;
  if (auto e = impl_->parser.parse(text.data(), text.size(), true).get(root))
    return fail(e, why);
  return {};
}

std::error_code JsonValidator::validate_object(std::string_view text, std::string* why) {
  simdjson::dom::element root;
  if (auto e = impl_->parser.parse(text.data(), text.size(), true).get(root))
    return fail(e, why);
  if (!root.is_object())
    return fail(errc::not_an_object, why, "not a JSON object");
  return {};
}

// ---- encoding -----------------------------------------------------------------

void append_json_string(std::string& out, std::string_view text) {
  out += nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

MessageEncoder::MessageEncoder(std::string_view from, std::string_view to, std::string_view alias) {
  prefix_ = "{\"from\":";
  append_json_string(prefix_, from);
  prefix_ += ",\"to\":";
  append_json_string(prefix_, to);
  if (!alias.empty()) {
    prefix_ += ",\"alias\":";
    append_json_string(prefix_, alias);
  }
  prefix_ += ",\"timestamp\":";
}

void MessageEncoder::append(std::string& out, std::string_view payload_json,
                            std::int64_t timestamp_ms) const {
  const std::size_t at = begin_frame(out);
  out += prefix_;
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, timestamp_ms);
  DISTFLOW_ASSERT(ec == std::errc());
  out.append(digits, end);
  out += ",\"payload\":";
  out += payload_json;
  out += '}';
  end_frame(out, at);
}

void append_ndjson_line(std::string& out, const Envelope& message) {
  out += "{\"from\":";
  out += message.from_json();
  if (message.has_alias()) {
    out += ",\"alias\":";
    out += message.alias_json();
  }
  if (!message.to_json().empty()) {
    out += ",\"to\":";
    out += message.to_json();
  }
  out += ",\"timestamp\":";
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, message.timestamp());
  DISTFLOW_ASSERT(ec == std::errc());
  out.append(digits, end);
  out += ",\"payload\":";
  out += message.payload();
  out += "}\n";
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace distflow
