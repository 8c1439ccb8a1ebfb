#pragma once

// The json module's scanner core (see json.hpp), inline for the two hot paths
// that drive it token by token: json.cpp (validation, the object walker) and
// the envelope fast path in messages.cpp. Not an API: everything here is
// detail; use json.hpp.
//
// A validating JSON scanner: one pass over the bytes, no tape, no DOM, no
// allocation. It decides every input by itself: RFC 8259's grammar, UTF-8
// well-formedness (no overlongs, no encoded surrogates, nothing above
// U+10FFFF), \u escapes (a high surrogate must be followed by a low one),
// nesting up to kJsonMaxDepth levels. Numbers are checked against the grammar
// only, as JSON.parse does: 1e400 is valid JSON text (the payload is forwarded
// as its text, never converted).
//
// Failures return nullptr. The Diagnose instantiation, run again over the
// input only once it failed, also records where and why.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "json.hpp"

namespace distflow::detail {

struct JsonScanFailure {
  const char* at = nullptr;
  const char* reason = nullptr;
};
inline thread_local JsonScanFailure g_json_failure;

template <bool Diagnose>
inline const char* json_failed(const char* at, const char* reason) {
  if constexpr (Diagnose)
    g_json_failure = {at, reason};
  return nullptr;
}

inline bool json_is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}
inline bool json_is_digit(char c) {
  return c >= '0' && c <= '9';
}

inline const char* json_skip_space(const char* p, const char* end) {
  // Compact JSON has no space: one compare settles the common case.
  while (p < end && static_cast<unsigned char>(*p) <= ' ' && json_is_space(*p))
    ++p;
  return p;
}

inline int json_hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Four hex digits at p (the caller checked they are there): the code unit, or -1.
inline int json_hex4(const char* p) {
  int code = 0;
  for (int i = 0; i < 4; ++i) {
    const int digit = json_hex_value(p[i]);
    if (digit < 0)
      return -1;
    code = code << 4 | digit;
  }
  return code;
}

inline bool json_in_range(const char* p, unsigned char lo, unsigned char hi) {
  const auto c = static_cast<unsigned char>(*p);
  return c >= lo && c <= hi;
}

// One UTF-8 sequence at p (its lead byte >= 0x80): the byte after it, or nullptr
// when it is not well-formed (overlong, surrogate, above U+10FFFF, truncated).
inline const char* json_skip_utf8(const char* p, const char* end) {
  const auto lead = static_cast<unsigned char>(*p);
  const std::ptrdiff_t left = end - p;
  if (lead >= 0xc2 && lead <= 0xdf)
    return left >= 2 && json_in_range(p + 1, 0x80, 0xbf) ? p + 2 : nullptr;
  if (lead >= 0xe0 && lead <= 0xef) {
    if (left < 3 || !json_in_range(p + 2, 0x80, 0xbf))
      return nullptr;
    const unsigned char lo = lead == 0xe0 ? 0xa0 : 0x80;
    const unsigned char hi = lead == 0xed ? 0x9f : 0xbf;
    return json_in_range(p + 1, lo, hi) ? p + 3 : nullptr;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    if (left < 4 || !json_in_range(p + 2, 0x80, 0xbf) || !json_in_range(p + 3, 0x80, 0xbf))
      return nullptr;
    const unsigned char lo = lead == 0xf0 ? 0x90 : 0x80;
    const unsigned char hi = lead == 0xf4 ? 0x8f : 0xbf;
    return json_in_range(p + 1, lo, hi) ? p + 4 : nullptr;
  }
  return nullptr;
}

// An escape sequence at p (a backslash): the byte after it, or nullptr. A \u
// escape of a high surrogate must be followed by one of a low surrogate (the
// pair is one code point); a lone half has no UTF-8 form and is refused.
template <bool Diagnose>
inline const char* json_skip_escape(const char* p, const char* end) {
  if (end - p < 2)
    return json_failed<Diagnose>(p, "unterminated string");
  switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
      return p + 2;
    case 'u': {
      const int code = end - p >= 6 ? json_hex4(p + 2) : -1;
      if (code < 0)
        return json_failed<Diagnose>(p, "invalid \\u escape");
      if (code >= 0xdc00 && code <= 0xdfff)
        return json_failed<Diagnose>(p, "lone low surrogate in a \\u escape");
      if (code < 0xd800 || code > 0xdbff)
        return p + 6;
      const int low = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? json_hex4(p + 8) : -1;
      if (low < 0xdc00 || low > 0xdfff)
        return json_failed<Diagnose>(p, "high surrogate in a \\u escape without a low one");
      return p + 12;
    }
    default:
      return json_failed<Diagnose>(p, "invalid escape in a string");
  }
}

struct JsonNumberToken {
  bool integer = false;  // no fraction, no exponent
  bool negative = false;
  const char* digits = nullptr;  // the integer part
  std::size_t int_digits = 0;
};

// The scanner proper. Padded: the caller guarantees 16 readable bytes after
// `end` (frame bodies have kFramePadding), so every look at the bytes is a
// 16-byte vector load; otherwise the last partial block is copied first.
template <bool Padded, bool Diagnose = false>
struct JsonScanner {
#if defined(__SSE2__)
  static __m128i load(const char* p, const char* end) {
    if (Padded || end - p >= 16)
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    alignas(16) char block[16];
    std::memset(block, 0, sizeof block);
    std::memcpy(block, p, static_cast<std::size_t>(end - p));
    return _mm_load_si128(reinterpret_cast<const __m128i*>(block));
  }
#endif

  static const char* fail(const char* at, const char* reason) {
    return json_failed<Diagnose>(at, reason);
  }
  // `what` was expected at p: the reason when it is not there.
  static const char* expected(const char* p, const char* end, const char* what) {
    return fail(p, p == end ? "unexpected end of input" : what);
  }

  // The first byte in [p, end) a string scan must look at: '"', '\\', a control
  // character or a non-ASCII byte; `end` if none.
  static const char* find_special(const char* p, const char* end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    for (; p < end; p += 16) {
      const __m128i v = load(p, end);
      // Signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them too.
      const __m128i hit =
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                       _mm_cmplt_epi8(v, space));
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
      if (mask != 0)
        return std::min(p + __builtin_ctz(mask), end);
    }
    return end;
#else
    for (; p < end; ++p) {
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
        return p;
    }
    return end;
#endif
  }

  // The end of the run of ASCII digits at p.
  static const char* skip_digits(const char* p, const char* end) {
#if defined(__SSE2__)
    const __m128i below = _mm_set1_epi8('0' - 1);
    const __m128i above = _mm_set1_epi8('9' + 1);
    for (; p < end; p += 16) {
      const __m128i v = load(p, end);
      const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above));
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(digit)) ^ 0xffffu;
      if (mask != 0)
        return std::min(p + __builtin_ctz(mask), end);
    }
    return end;
#else
    while (p < end && json_is_digit(*p))
      ++p;
    return p;
#endif
  }

  // A string's contents from p (after its opening quote): its closing quote, or
  // nullptr. `escaped` is set when it holds an escape sequence.
  // Inline: most strings are plain ASCII, settled by the first special byte found.
  [[gnu::always_inline]] static const char* string(const char* p, const char* end, bool& escaped) {
    p = find_special(p, end);
    if (p != end && *p == '"')
      return p;
    return string_rest(p, end, escaped);
  }

  // string() from its first special byte at p, which is not its closing quote.
  [[gnu::noinline]] static const char* string_rest(const char* p, const char* end, bool& escaped) {
    for (;; p = find_special(p, end)) {
      if (p == end)
        return fail(p, "unterminated string");
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"')
        return p;
      if (c == '\\') {
        escaped = true;
        p = json_skip_escape<Diagnose>(p, end);
      } else if (c < 0x20) {
        return fail(p, "unescaped control character in a string");
      } else {
        const char* next = json_skip_utf8(p, end);
        if (next == nullptr)
          return fail(p, "invalid UTF-8 in a string");
        p = next;
      }
      if (p == nullptr)
        return nullptr;
    }
  }

  // A number at p (a '-' or a digit): the byte after it, or nullptr.
  static const char* number(const char* p, const char* end, JsonNumberToken& token) {
    const char* start = p;
    token.negative = *p == '-';
    if (token.negative)
      ++p;
    token.digits = p;
    if (p < end && *p == '0') {
      ++p;
    } else {
      p = skip_digits(p, end);
    }
    token.int_digits = static_cast<std::size_t>(p - token.digits);
    if (token.int_digits == 0)
      return fail(start, "invalid number");
    token.integer = true;
    if (p < end && *p == '.') {
      token.integer = false;
      const char* fraction = ++p;
      p = skip_digits(p, end);
      if (p == fraction)
        return fail(start, "invalid number");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      token.integer = false;
      ++p;
      if (p < end && (*p == '+' || *p == '-'))
        ++p;
      const char* exponent = p;
      p = skip_digits(p, end);
      if (p == exponent)
        return fail(start, "invalid number");
    }
    return p;
  }

  static const char* literal(const char* p, const char* end, std::string_view word) {
    if (static_cast<std::size_t>(end - p) < word.size() ||
        std::memcmp(p, word.data(), word.size()) != 0) {
      return fail(p, "invalid literal");
    }
    return p + word.size();
  }

  static const char* object(const char* p, const char* end, unsigned depth) {
    if (depth >= kJsonMaxDepth)
      return fail(p, "nesting deeper than 1024 levels");
    p = json_skip_space(p + 1, end);
    if (p < end && *p == '}')
      return p + 1;
    for (;;) {
      if (p == end || *p != '"')
        return expected(p, end, "expected a string key");
      bool escaped = false;
      p = string(p + 1, end, escaped);
      if (p == nullptr)
        return nullptr;
      p = json_skip_space(p + 1, end);
      if (p == end || *p != ':')
        return expected(p, end, "expected ':' after a key");
      p = value(json_skip_space(p + 1, end), end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = json_skip_space(p, end);
      if (p == end || (*p != '}' && *p != ','))
        return expected(p, end, "expected ',' or '}' in an object");
      if (*p == '}')
        return p + 1;
      p = json_skip_space(p + 1, end);
    }
  }

  static const char* array(const char* p, const char* end, unsigned depth) {
    if (depth >= kJsonMaxDepth)
      return fail(p, "nesting deeper than 1024 levels");
    p = json_skip_space(p + 1, end);
    if (p < end && *p == ']')
      return p + 1;
    for (;;) {
      p = value(p, end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = json_skip_space(p, end);
      if (p == end || (*p != ']' && *p != ','))
        return expected(p, end, "expected ',' or ']' in an array");
      if (*p == ']')
        return p + 1;
      p = json_skip_space(p + 1, end);
    }
  }

  // One value at p (no leading space): the byte after it, or nullptr. `depth`:
  // the number of arrays and objects around it.
  static const char* value(const char* p, const char* end, unsigned depth) {
    if (p == end)
      return fail(p, "unexpected end of input");
    switch (*p) {
      case '"': {
        bool escaped = false;
        p = string(p + 1, end, escaped);
        return p ? p + 1 : nullptr;
      }
      case '{':
        return object(p, end, depth);
      case '[':
        return array(p, end, depth);
      case 't':
        return literal(p, end, "true");
      case 'f':
        return literal(p, end, "false");
      case 'n':
        return literal(p, end, "null");
      default: {
        if (*p != '-' && !json_is_digit(*p))
          return fail(p, "unexpected character");
        JsonNumberToken token;
        return number(p, end, token);
      }
    }
  }

  // One JSON value with optional space around it: true when it is the whole text.
  static bool document(const char* p, const char* end) {
    p = value(json_skip_space(p, end), end, 0);
    if (p == nullptr)
      return false;
    if (json_skip_space(p, end) != end) {
      fail(json_skip_space(p, end), "trailing content after the JSON value");
      return false;
    }
    return true;
  }

  // An object at p ('{'), as the whole text (space around it allowed): its
  // top-level members in order, escaped keys unescaped into `keys`.
  static bool members(const char* p, const char* end, std::vector<JsonMember>& out,
                      std::string& keys, std::vector<detail::JsonEscapedKey>& escaped_keys) {
    p = json_skip_space(p + 1, end);
    if (p < end && *p == '}') {
      ++p;
    } else {
      for (;;) {
        if (p == end || *p != '"')
          return expected(p, end, "expected a string key") != nullptr;
        bool escaped = false;
        const char* key = p + 1;
        p = string(key, end, escaped);
        if (p == nullptr)
          return false;
        std::string_view name(key, static_cast<std::size_t>(p - key));
        if (escaped) {
          // Unescaped into `keys`; the view is set after the walk (`keys` may move).
          const std::size_t at = keys.size();
          append_json_unescaped(keys, name);
          escaped_keys.push_back({out.size(), at, keys.size() - at});
          name = {};
        }
        p = json_skip_space(p + 1, end);
        if (p == end || *p != ':')
          return expected(p, end, "expected ':' after a key") != nullptr;
        const char* value_begin = json_skip_space(p + 1, end);
        p = value(value_begin, end, 1);
        if (p == nullptr)
          return false;
        const std::string_view raw(value_begin, static_cast<std::size_t>(p - value_begin));
        out.push_back({name, raw, escaped});
        p = json_skip_space(p, end);
        if (p == end || (*p != '}' && *p != ','))
          return expected(p, end, "expected ',' or '}' in an object") != nullptr;
        if (*p == '}') {
          ++p;
          break;
        }
        p = json_skip_space(p + 1, end);
      }
    }
    if (json_skip_space(p, end) != end) {
      fail(json_skip_space(p, end), "trailing content after the JSON value");
      return false;
    }
    return true;
  }
};
}  // namespace distflow::detail
