// Fuzzes the json module (src/json.hpp) against nlohmann::json, on arbitrary bytes:
// * JsonValidator (validate, validate_object) and JsonObjectWalker accept exactly
//   what the oracle accepts (tests/json_oracle.hpp: nlohmann with the scanner's
//   documented rules), and json_array_elements exactly the arrays among them;
// * the walker lists every member (the DOM keeps the last of a duplicated key) with
//   its exact text, each a valid value; string values unescape as nlohmann reads them;
// * array elements are the DOM's, in order;
// * append_json_string writes what nlohmann's dump (error_handler_t::replace) writes,
//   with DEL and C1 controls escaped too; always valid JSON, read back to the input
//   when that is valid UTF-8;
// * json_int64 reads what nlohmann reads as an integer.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "json.hpp"
#include "json_oracle.hpp"

namespace {

using nlohmann::json;

void check(bool ok) {
  if (!ok)
    __builtin_trap();
}

/// nlohmann's DOM of text the oracle accepted; discarded when a number overflows
/// a double (nlohmann refuses those, the scanner accepts them).
json dom(std::string_view text) {
  return json::parse(text.begin(), text.end(), nullptr, false);
}

void check_value_text(std::string_view value) {
  static distflow::JsonValidator validator;
  check(!validator.validate(value));
  check(!value.empty() && value.front() != ' ' && value.back() != ' ');
  if (value.front() == '"') {
    std::string storage;
    const std::string_view text = distflow::json_string_text(value, storage);
    const json reference = dom(value);
    check(reference.is_string() && reference.get<std::string>() == text);
  }
}

void check_structure(std::string_view text) {
  static distflow::JsonValidator validator;
  static distflow::JsonObjectWalker walker;
  static std::vector<std::string_view> elements;
  const auto verdict = distflow_test::oracle_parse(text);
  check(!validator.validate(text) == verdict.valid);
  check(!validator.validate_object(text) == verdict.object);
  check(!walker.walk(text, false) == verdict.object);
  const bool array = distflow::json_array_elements(text, elements);
  const json reference = verdict.valid ? dom(text) : json();
  if (verdict.object) {
    // Duplicated keys collapse in the DOM; 1e400 does not parse there.
    if (!reference.is_discarded())
      check(reference.size() <= walker.members().size());
    for (std::size_t i = 0; i < walker.members().size(); ++i) {
      const auto& member = walker.members()[i];
      check_value_text(member.value);
      if (reference.is_discarded())
        continue;
      const std::string key(member.key);
      check(reference.contains(key));
      bool last = true;
      for (std::size_t k = i + 1; k < walker.members().size(); ++k)
        last = last && walker.members()[k].key != member.key;
      if (last)
        check(dom(member.value) == reference.at(key));
    }
  }
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  check(array == (verdict.valid && first != std::string_view::npos && text[first] == '['));
  if (!array)
    return;
  for (std::string_view element : elements)
    check_value_text(element);
  if (!reference.is_discarded()) {
    check(reference.is_array() && reference.size() == elements.size());
    for (std::size_t i = 0; i < elements.size(); ++i)
      check(dom(elements[i]) == reference[i]);
  }
}

/// nlohmann's dump (replace), with DEL and C1 escaped as append_json_string does.
std::string escape_controls_as_json(std::string dumped) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < dumped.size(); ++i) {
    const auto c = static_cast<unsigned char>(dumped[i]);
    const auto next = i + 1 < dumped.size() ? static_cast<unsigned char>(dumped[i + 1]) : 0;
    if (c == 0x7f) {
      out += "\\u007f";
    } else if (c == 0xc2 && next >= 0x80 && next < 0xa0) {
      out += "\\u00";
      out += kHex[next >> 4];
      out += kHex[next & 0xf];
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void check_escape(std::string_view bytes) {
  static distflow::JsonValidator validator;
  std::string ours;
  distflow::append_json_string(ours, bytes);
  const std::string theirs = escape_controls_as_json(
      json(std::string(bytes)).dump(-1, ' ', false, json::error_handler_t::replace));
  check(ours == theirs);
  check(!validator.validate(ours));
  try {
    (void)json(std::string(bytes)).dump();  // strict: throws on invalid UTF-8
    std::string storage;
    check(distflow::json_string_text(ours, storage) == bytes);
  } catch (const json::type_error&) {
  }
}

void check_int64(std::string_view text) {
  std::int64_t value = 0;
  const bool ours = distflow::json_int64(text, value);
  const auto verdict = distflow_test::oracle_parse(text);
  const json reference = verdict.valid ? dom(text) : json();
  const bool theirs = verdict.valid && !reference.is_discarded() &&
                      (reference.is_number_integer() &&
                       (!reference.is_number_unsigned() ||
                        reference.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX)));
  // json_int64 takes a token the scanner accepted: compare on those only.
  if (verdict.valid && text.find_first_of(" \t\r\n") == std::string_view::npos) {
    check(ours == theirs);
    if (ours)
      check(reference.get<std::int64_t>() == value);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_structure(text);
  check_escape(text);
  check_int64(text);
  return 0;
}
