#pragma once

// JSON text without a DOM (RFC 8259): one-pass validation, the members of an
// object and the elements of an array as views of their exact text, string
// escapes both ways. Pure: no I/O, no allocation beyond the caller's buffers.
// What is valid: RFC 8259's grammar; UTF-8 well-formed (no overlongs, no encoded
// surrogates); \u escapes with surrogates only in pairs (a lone half has no
// UTF-8 form); at most kJsonMaxDepth levels of arrays and objects; numbers
// checked by the grammar only (1e400 is valid, as for JSON.parse). A byte order
// mark is not whitespace.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace distflow {

/// The deepest nesting of arrays and objects accepted (the whole text counts:
/// an envelope's payload may be 1023 levels deep).
inline constexpr unsigned kJsonMaxDepth = 1024;

/// Full JSON validation of text the caller keeps as text, in one pass. Stateless.
class JsonValidator {
 public:
  /// errc::bad_json with `why` (reason and byte offset) when `text` is not one JSON value.
  std::error_code validate(std::string_view text, std::string* why = nullptr);
  /// Like validate(), and errc::not_an_object unless the value is an object.
  std::error_code validate_object(std::string_view text, std::string* why = nullptr);
};

/// A member of a JSON object, as JsonObjectWalker lists it.
struct JsonMember {
  std::string_view key;      ///< unescaped
  std::string_view value;    ///< the value's exact text, without the space around it
  bool key_escaped = false;  ///< the key was spelt with escapes
};

namespace detail {
struct JsonEscapedKey {
  std::size_t member, offset, length;
};
}  // namespace detail

/// Validates one JSON object completely (as JsonValidator) in one pass, and lists
/// its top-level members in order (duplicates included). Reuses its buffers.
class JsonObjectWalker {
 public:
  /// errc::bad_json (`why`: reason and byte offset) or errc::not_an_object ("not a
  /// JSON object") for anything but one object. `padded`: 16 readable bytes follow
  /// `text`. The members' views point into `text` or into the walker (escaped
  /// keys) and stay valid until the next walk().
  std::error_code walk(std::string_view text, bool padded, std::string* why = nullptr);
  const std::vector<JsonMember>& members() const { return members_; }

 private:
  std::vector<JsonMember> members_;
  std::string keys_;  // unescaped escaped keys
  std::vector<detail::JsonEscapedKey> escaped_keys_;
};

/// The elements of `text`, one JSON array (space around it allowed), as views of
/// their exact text; false (and `out` empty) when `text` is anything else.
bool json_array_elements(std::string_view text, std::vector<std::string_view>& out);

/// Appends the unescaped text of a JSON string's contents (between its quotes),
/// which a scan accepted (valid escapes, surrogates in pairs).
void append_json_unescaped(std::string& out, std::string_view contents);
/// The text of an accepted JSON string token (quotes included): a view of the
/// token when it has no escape, else unescaped into `storage`.
std::string_view json_string_text(std::string_view token, std::string& storage);

/// Appends `text` as a JSON string literal: `"`, `\` and control characters
/// (C0, DEL, C1) escaped (\n, \u001b, \u007f, \u0085, ...), everything else as
/// is; invalid UTF-8 becomes U+FFFD (one per maximal invalid subsequence, as
/// nlohmann::json's dump with error_handler_t::replace), never an error.
void append_json_string(std::string& out, std::string_view text);

/// Appends valid JSON text `json` as is, unless it holds a newline or carriage
/// return: then without its insignificant whitespace (none inside strings).
void append_json_compact(std::string& out, std::string_view json);

/// The value of an accepted number token that is an integer (no fraction, no
/// exponent) within int64; false for anything else.
bool json_int64(std::string_view token, std::int64_t& out);

}  // namespace distflow
