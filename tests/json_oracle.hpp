#pragma once

// The reference for distflow's JSON scanner in tests and fuzz targets:
// nlohmann::json's SAX parser (strict: one value, nothing after it), with the
// scanner's documented rules on top:
// * numbers are checked by the grammar only, as JSON.parse does: where nlohmann
//   refuses a number outside double's range ("number overflow", 406), that
//   token is replaced by null (which, unlike a digit, nothing after it can
//   extend) and the text checked again;
// * at most distflow::kJsonMaxDepth levels of arrays and objects;
// * a UTF-8 byte order mark is not whitespace (nlohmann skips one);
// * a NUL byte is never valid (nlohmann takes one outside strings as the end).

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "json.hpp"

namespace distflow_test {

struct JsonVerdict {
  bool valid = false;
  bool object = false;  ///< valid, and the value is an object
};

inline JsonVerdict oracle_parse(std::string_view input) {
  using json = nlohmann::json;
  struct Sax : nlohmann::json_sax<json> {
    std::size_t depth = 0, max_depth = 0, values = 0;
    bool object = false;
    int error_id = 0;
    std::size_t error_end = 0, error_length = 0;
    void value() { ++values; }
    bool open(bool is_object) {
      if (values++ == 0)
        object = is_object;
      max_depth = std::max(max_depth, ++depth);
      return true;
    }
    bool null() override { return value(), true; }
    bool boolean(bool) override { return value(), true; }
    bool number_integer(number_integer_t) override { return value(), true; }
    bool number_unsigned(number_unsigned_t) override { return value(), true; }
    bool number_float(number_float_t, const string_t&) override { return value(), true; }
    bool string(string_t&) override { return value(), true; }
    bool binary(binary_t&) override { return value(), true; }
    bool start_object(std::size_t) override { return open(true); }
    bool key(string_t&) override { return true; }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return open(false); }
    bool end_array() override { return --depth, true; }
    bool parse_error(std::size_t position, const std::string& token,
                     const nlohmann::detail::exception& e) override {
      error_id = e.id;
      error_end = position;
      error_length = token.size();
      return false;
    }
  };
  if (input.size() >= 3 && input.substr(0, 3) == "\xEF\xBB\xBF")
    return {};
  if (input.find('\0') != std::string_view::npos)
    return {};
  std::string text(input);
  for (;;) {
    Sax sax;
    if (json::sax_parse(text, &sax)) {
      if (sax.max_depth > distflow::kJsonMaxDepth)
        return {};
      return {true, sax.object};
    }
    if (sax.error_id != 406 || sax.error_length == 0 || sax.error_end < sax.error_length)
      return {};
    text.replace(sax.error_end - sax.error_length, sax.error_length, "null");
  }
}

}  // namespace distflow_test
