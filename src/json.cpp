#include "json.hpp"

#include <charconv>
#include <cstring>

#include "errors.hpp"
#include "json_scanner.hpp"

namespace distflow {
namespace {

using detail::g_json_failure;
using detail::json_hex4;
using detail::json_skip_space;
using detail::JsonScanFailure;
using detail::JsonScanner;

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

std::error_code bad_json(std::string_view text, std::string* why) {
  if (why) {
    const JsonScanFailure f = g_json_failure;
    if (f.reason == nullptr) {
      why->assign("invalid JSON");
    } else {
      *why = f.reason;
      *why += " at byte ";
      *why += std::to_string(f.at - text.data());
    }
  }
  return errc::bad_json;
}

// errc::bad_json with the reason, or {} when `text` is one JSON value.
std::error_code check_document(std::string_view text, std::string* why) {
  const char* end = text.data() + text.size();
  if (JsonScanner<false>::document(text.data(), end))
    return {};
  g_json_failure = {};
  JsonScanner<false, true>::document(text.data(), end);
  return bad_json(text, why);
}

// The value of `text` is not an object: not_an_object if it is valid JSON, else bad_json.
std::error_code not_an_object(std::string_view text, std::string* why) {
  if (auto ec = check_document(text, why))
    return ec;
  return fail(errc::not_an_object, why, "not a JSON object");
}

}  // namespace

void append_json_unescaped(std::string& out, std::string_view text) {
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    const char* slash =
        static_cast<const char*>(std::memchr(p, '\\', static_cast<std::size_t>(end - p)));
    if (slash == nullptr)
      slash = end;
    out.append(p, slash);
    if (slash == end)
      break;
    p = slash + 2;
    switch (slash[1]) {
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        auto code = static_cast<std::uint32_t>(json_hex4(slash + 2));
        p = slash + 6;
        if (code >= 0xd800 && code <= 0xdbff) {
          const auto low = static_cast<std::uint32_t>(json_hex4(slash + 8));
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          p = slash + 12;
        }
        if (code < 0x80) {
          out += static_cast<char>(code);
        } else if (code < 0x800) {
          out += static_cast<char>(0xc0 | code >> 6);
          out += static_cast<char>(0x80 | (code & 0x3f));
        } else if (code < 0x10000) {
          out += static_cast<char>(0xe0 | code >> 12);
          out += static_cast<char>(0x80 | (code >> 6 & 0x3f));
          out += static_cast<char>(0x80 | (code & 0x3f));
        } else {
          out += static_cast<char>(0xf0 | code >> 18);
          out += static_cast<char>(0x80 | (code >> 12 & 0x3f));
          out += static_cast<char>(0x80 | (code >> 6 & 0x3f));
          out += static_cast<char>(0x80 | (code & 0x3f));
        }
        break;
      }
      default:  // '"', '\\', '/'
        out += slash[1];
    }
  }
}

std::string_view json_string_text(std::string_view token, std::string& storage) {
  const std::string_view inner = token.substr(1, token.size() - 2);
  if (inner.find('\\') == std::string_view::npos)
    return inner;
  storage.clear();
  append_json_unescaped(storage, inner);
  return storage;
}

// ---- JsonObjectWalker ---------------------------------------------------------

std::error_code JsonObjectWalker::walk(std::string_view text, bool padded, std::string* why) {
  members_.clear();
  keys_.clear();
  escaped_keys_.clear();
  const char* end = text.data() + text.size();
  const char* p = json_skip_space(text.data(), end);
  if (p == end || *p != '{')
    return not_an_object(text, why);
  const bool ok = padded ? JsonScanner<true>::members(p, end, members_, keys_, escaped_keys_)
                         : JsonScanner<false>::members(p, end, members_, keys_, escaped_keys_);
  if (!ok) {
    members_.clear();
    keys_.clear();
    escaped_keys_.clear();
    g_json_failure = {};
    JsonScanner<false, true>::members(p, end, members_, keys_, escaped_keys_);
    members_.clear();
    return bad_json(text, why);
  }
  for (const detail::JsonEscapedKey& k : escaped_keys_)
    members_[k.member].key = std::string_view(keys_).substr(k.offset, k.length);
  return {};
}

// ---- JsonValidator ------------------------------------------------------------

std::error_code JsonValidator::validate(std::string_view text, std::string* why) {
  return check_document(text, why);
}

std::error_code JsonValidator::validate_object(std::string_view text, std::string* why) {
  const char* end = text.data() + text.size();
  const char* p = json_skip_space(text.data(), end);
  if (p < end && *p == '{' && JsonScanner<false>::document(p, end))
    return {};
  return not_an_object(text, why);
}

bool json_array_elements(std::string_view text, std::vector<std::string_view>& out) {
  out.clear();
  const char* end = text.data() + text.size();
  const char* p = json_skip_space(text.data(), end);
  if (p == end || *p != '[')
    return false;
  p = json_skip_space(p + 1, end);
  if (p < end && *p == ']') {
    ++p;
  } else {
    for (;;) {
      const char* element = p;
      p = JsonScanner<false>::value(p, end, 1);
      if (p == nullptr)
        break;
      out.emplace_back(element, static_cast<std::size_t>(p - element));
      p = json_skip_space(p, end);
      if (p == end || (*p != ']' && *p != ',')) {
        p = nullptr;
        break;
      }
      if (*p++ == ']')
        break;
      p = json_skip_space(p, end);
    }
  }
  if (p == nullptr || json_skip_space(p, end) != end) {
    out.clear();
    return false;
  }
  return true;
}

// ---- encoding -----------------------------------------------------------------

namespace {

// The length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or, when
// it is not one, minus the number of bytes of its maximal invalid prefix (at least 1).
std::ptrdiff_t utf8_sequence(const char* p, const char* end) {
  const auto lead = static_cast<unsigned char>(*p);
  int length = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the second byte's range
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    lo = lead == 0xe0 ? 0xa0 : 0x80;
    hi = lead == 0xed ? 0x9f : 0xbf;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    lo = lead == 0xf0 ? 0x90 : 0x80;
    hi = lead == 0xf4 ? 0x8f : 0xbf;
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (p + i == end)
      return -i;
    const auto c = static_cast<unsigned char>(p[i]);
    if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf))
      return -i;
  }
  return length;
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + text.size() + 2);
  out += '"';
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    // The run of bytes that need nothing, copied at once.
    const char* run = p;
    while (p < end) {
      const auto c = static_cast<unsigned char>(*p);
      if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f)
        break;
      ++p;
    }
    out.append(run, p);
    if (p == end)
      break;
    const auto c = static_cast<unsigned char>(*p);
    if (c >= 0x80) {
      const std::ptrdiff_t n = utf8_sequence(p, end);
      if (n == 2 && c == 0xc2 && static_cast<unsigned char>(p[1]) < 0xa0) {
        // A C1 control (U+0080..U+009F): escaped, as DEL, so that no JSON we
        // write can act on a terminal that shows it.
        out += "\\u00";
        out += kHex[static_cast<unsigned char>(p[1]) >> 4];
        out += kHex[static_cast<unsigned char>(p[1]) & 0xf];
        p += 2;
      } else if (n > 0) {
        out.append(p, static_cast<std::size_t>(n));
        p += n;
      } else {
        out += "\xEF\xBF\xBD";  // U+FFFD
        p -= n;
      }
      continue;
    }
    out += '\\';
    switch (c) {
      case '"':
      case '\\':
        out += static_cast<char>(c);
        break;
      case '\b':
        out += 'b';
        break;
      case '\t':
        out += 't';
        break;
      case '\n':
        out += 'n';
        break;
      case '\f':
        out += 'f';
        break;
      case '\r':
        out += 'r';
        break;
      default:  // other C0 controls, DEL
        out += "u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
    ++p;
  }
  out += '"';
}

void append_json_compact(std::string& out, std::string_view json) {
  // Valid JSON holds no raw control character inside a string, so a newline is
  // always insignificant; spaces and tabs are kept inside strings only.
  if (std::memchr(json.data(), '\n', json.size()) == nullptr &&
      std::memchr(json.data(), '\r', json.size()) == nullptr) {
    out += json;
    return;
  }
  bool in_string = false;
  bool escaped = false;
  for (const char c : json) {
    if (in_string) {
      out += c;
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
      out += c;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      out += c;
    }
  }
}

bool json_int64(std::string_view token, std::int64_t& out) {
  if (token.empty() || token.find_first_of(".eE") != std::string_view::npos)
    return false;
  const char* end = token.data() + token.size();
  const auto [at, ec] = std::from_chars(token.data(), end, out);
  return ec == std::errc() && at == end;
}

}  // namespace distflow
