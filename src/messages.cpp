#include "messages.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "framing.hpp"

namespace distflow {

namespace {

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

// ---- the one-pass scanner ---------------------------------------------------------
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

constexpr unsigned kMaxDepth = kJsonMaxDepth;

struct ScanFailure {
  const char* at = nullptr;
  const char* reason = nullptr;
};
thread_local ScanFailure g_failure;

template <bool Diagnose>
inline const char* failed(const char* at, const char* reason) {
  if constexpr (Diagnose)
    g_failure = {at, reason};
  return nullptr;
}

inline bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}
inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

inline const char* skip_space(const char* p, const char* end) {
  // Compact JSON has no space: one compare settles the common case.
  while (p < end && static_cast<unsigned char>(*p) <= ' ' && is_space(*p))
    ++p;
  return p;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Four hex digits at p (the caller checked they are there): the code unit, or -1.
int hex4(const char* p) {
  int code = 0;
  for (int i = 0; i < 4; ++i) {
    const int digit = hex_value(p[i]);
    if (digit < 0)
      return -1;
    code = code << 4 | digit;
  }
  return code;
}

bool in_range(const char* p, unsigned char lo, unsigned char hi) {
  const auto c = static_cast<unsigned char>(*p);
  return c >= lo && c <= hi;
}

// One UTF-8 sequence at p (its lead byte >= 0x80): the byte after it, or nullptr
// when it is not well-formed (overlong, surrogate, above U+10FFFF, truncated).
const char* skip_utf8(const char* p, const char* end) {
  const auto lead = static_cast<unsigned char>(*p);
  const std::ptrdiff_t left = end - p;
  if (lead >= 0xc2 && lead <= 0xdf)
    return left >= 2 && in_range(p + 1, 0x80, 0xbf) ? p + 2 : nullptr;
  if (lead >= 0xe0 && lead <= 0xef) {
    if (left < 3 || !in_range(p + 2, 0x80, 0xbf))
      return nullptr;
    const unsigned char lo = lead == 0xe0 ? 0xa0 : 0x80;
    const unsigned char hi = lead == 0xed ? 0x9f : 0xbf;
    return in_range(p + 1, lo, hi) ? p + 3 : nullptr;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    if (left < 4 || !in_range(p + 2, 0x80, 0xbf) || !in_range(p + 3, 0x80, 0xbf))
      return nullptr;
    const unsigned char lo = lead == 0xf0 ? 0x90 : 0x80;
    const unsigned char hi = lead == 0xf4 ? 0x8f : 0xbf;
    return in_range(p + 1, lo, hi) ? p + 4 : nullptr;
  }
  return nullptr;
}

// An escape sequence at p (a backslash): the byte after it, or nullptr. A \u
// escape of a high surrogate must be followed by one of a low surrogate (the
// pair is one code point); a lone half has no UTF-8 form and is refused.
template <bool Diagnose>
const char* skip_escape(const char* p, const char* end) {
  if (end - p < 2)
    return failed<Diagnose>(p, "unterminated string");
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
      const int code = end - p >= 6 ? hex4(p + 2) : -1;
      if (code < 0)
        return failed<Diagnose>(p, "invalid \\u escape");
      if (code >= 0xdc00 && code <= 0xdfff)
        return failed<Diagnose>(p, "lone low surrogate in a \\u escape");
      if (code < 0xd800 || code > 0xdbff)
        return p + 6;
      const int low = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
      if (low < 0xdc00 || low > 0xdfff)
        return failed<Diagnose>(p, "high surrogate in a \\u escape without a low one");
      return p + 12;
    }
    default:
      return failed<Diagnose>(p, "invalid escape in a string");
  }
}

struct NumberToken {
  bool integer = false;  // no fraction, no exponent
  bool negative = false;
  const char* digits = nullptr;  // the integer part
  std::size_t int_digits = 0;
};

// The scanner proper. Padded: the caller guarantees 16 readable bytes after
// `end` (frame bodies have kFramePadding), so every look at the bytes is a
// 16-byte vector load; otherwise the last partial block is copied first.
template <bool Padded, bool Diagnose = false>
struct Scanner {
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
    return failed<Diagnose>(at, reason);
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
    while (p < end && is_digit(*p))
      ++p;
    return p;
#endif
  }

  // A string's contents from p (after its opening quote): its closing quote, or
  // nullptr. `escaped` is set when it holds an escape sequence.
  static const char* string(const char* p, const char* end, bool& escaped) {
    for (;;) {
      p = find_special(p, end);
      if (p == end)
        return fail(p, "unterminated string");
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"')
        return p;
      if (c == '\\') {
        escaped = true;
        p = skip_escape<Diagnose>(p, end);
      } else if (c < 0x20) {
        return fail(p, "unescaped control character in a string");
      } else {
        const char* next = skip_utf8(p, end);
        if (next == nullptr)
          return fail(p, "invalid UTF-8 in a string");
        p = next;
      }
      if (p == nullptr)
        return nullptr;
    }
  }

  // A number at p (a '-' or a digit): the byte after it, or nullptr.
  static const char* number(const char* p, const char* end, NumberToken& token) {
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
    if (depth >= kMaxDepth)
      return fail(p, "nesting deeper than 1024 levels");
    p = skip_space(p + 1, end);
    if (p < end && *p == '}')
      return p + 1;
    for (;;) {
      if (p == end || *p != '"')
        return expected(p, end, "expected a string key");
      bool escaped = false;
      p = string(p + 1, end, escaped);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p + 1, end);
      if (p == end || *p != ':')
        return expected(p, end, "expected ':' after a key");
      p = value(skip_space(p + 1, end), end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p, end);
      if (p == end || (*p != '}' && *p != ','))
        return expected(p, end, "expected ',' or '}' in an object");
      if (*p == '}')
        return p + 1;
      p = skip_space(p + 1, end);
    }
  }

  static const char* array(const char* p, const char* end, unsigned depth) {
    if (depth >= kMaxDepth)
      return fail(p, "nesting deeper than 1024 levels");
    p = skip_space(p + 1, end);
    if (p < end && *p == ']')
      return p + 1;
    for (;;) {
      p = value(p, end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p, end);
      if (p == end || (*p != ']' && *p != ','))
        return expected(p, end, "expected ',' or ']' in an array");
      if (*p == ']')
        return p + 1;
      p = skip_space(p + 1, end);
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
        if (*p != '-' && !is_digit(*p))
          return fail(p, "unexpected character");
        NumberToken token;
        return number(p, end, token);
      }
    }
  }

  // One JSON value with optional space around it: true when it is the whole text.
  static bool document(const char* p, const char* end) {
    p = value(skip_space(p, end), end, 0);
    if (p == nullptr)
      return false;
    if (skip_space(p, end) != end) {
      fail(skip_space(p, end), "trailing content after the JSON value");
      return false;
    }
    return true;
  }

  // An object at p ('{'), as the whole text (space around it allowed): its
  // top-level members in order, escaped keys unescaped into `keys`.
  static bool members(const char* p, const char* end, std::vector<JsonMember>& out,
                      std::string& keys, std::vector<detail::JsonEscapedKey>& escaped_keys) {
    p = skip_space(p + 1, end);
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
        p = skip_space(p + 1, end);
        if (p == end || *p != ':')
          return expected(p, end, "expected ':' after a key") != nullptr;
        const char* value_begin = skip_space(p + 1, end);
        p = value(value_begin, end, 1);
        if (p == nullptr)
          return false;
        const std::string_view raw(value_begin, static_cast<std::size_t>(p - value_begin));
        out.push_back({name, raw, escaped});
        p = skip_space(p, end);
        if (p == end || (*p != '}' && *p != ','))
          return expected(p, end, "expected ',' or '}' in an object") != nullptr;
        if (*p == '}') {
          ++p;
          break;
        }
        p = skip_space(p + 1, end);
      }
    }
    if (skip_space(p, end) != end) {
      fail(skip_space(p, end), "trailing content after the JSON value");
      return false;
    }
    return true;
  }
};

std::error_code bad_json(std::string_view text, std::string* why) {
  if (why) {
    const ScanFailure f = g_failure;
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
  if (Scanner<false>::document(text.data(), end))
    return {};
  g_failure = {};
  Scanner<false, true>::document(text.data(), end);
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
        auto code = static_cast<std::uint32_t>(hex4(slash + 2));
        p = slash + 6;
        if (code >= 0xd800 && code <= 0xdbff) {
          const auto low = static_cast<std::uint32_t>(hex4(slash + 8));
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
  const char* p = skip_space(text.data(), end);
  if (p == end || *p != '{')
    return not_an_object(text, why);
  const bool ok = padded ? Scanner<true>::members(p, end, members_, keys_, escaped_keys_)
                         : Scanner<false>::members(p, end, members_, keys_, escaped_keys_);
  if (!ok) {
    members_.clear();
    keys_.clear();
    escaped_keys_.clear();
    g_failure = {};
    Scanner<false, true>::members(p, end, members_, keys_, escaped_keys_);
    members_.clear();
    return bad_json(text, why);
  }
  for (const detail::JsonEscapedKey& k : escaped_keys_)
    members_[k.member].key = std::string_view(keys_).substr(k.offset, k.length);
  return {};
}

// ---- envelopes ---------------------------------------------------------------

namespace {

struct FieldSpan {
  std::uint32_t offset = 0;
  std::uint32_t length = 0;
};

// What a parse found, as offsets from the body's first byte (escaped strings'
// unescaped copies, from the general path, come after the body's size).
struct ParsedFields {
  FieldSpan from, to, alias, payload, from_raw, to_raw, alias_raw;
  std::int64_t timestamp = 0;
};

std::int64_t timestamp_of(const NumberToken& token) {
  std::uint64_t magnitude = 0;
  for (std::size_t i = 0; i < token.int_digits; ++i)
    magnitude = magnitude * 10 + static_cast<std::uint64_t>(token.digits[i] - '0');
  // As the general path reads it (through a double), also past 2^53.
  constexpr std::uint64_t kExact = std::uint64_t{1} << 53;
  auto value = static_cast<std::int64_t>(magnitude);
  if (magnitude > kExact)
    value = static_cast<std::int64_t>(static_cast<double>(magnitude));
  return token.negative ? -value : value;
}

// The fast path: the whole body in one pass, fields in any order, extension keys
// validated and skipped. False hands the body to the general path, which
// decides: escaped keys and fields, a non-string alias, a timestamp with a
// fraction or more than 18 digits, and every error take it.
bool scan_envelope(std::string_view body, ParsedFields& out) {
  static_assert(kFramePadding >= 16);
  using Scan = Scanner<true>;  // the frame padding follows the body
  const char* begin = body.data();
  const char* end = begin + body.size();
  auto span = [begin](const char* first, const char* last) {
    return FieldSpan{static_cast<std::uint32_t>(first - begin),
                     static_cast<std::uint32_t>(last - first)};
  };
  const char* p = skip_space(begin, end);
  if (p == end || *p != '{')
    return false;
  p = skip_space(p + 1, end);
  bool have_from = false, have_payload = false;
  for (;;) {
    if (p == end || *p != '"')
      return false;
    bool escaped = false;
    const char* key = p + 1;
    p = Scan::string(key, end, escaped);
    if (p == nullptr || escaped)
      return false;
    const std::string_view name(key, static_cast<std::size_t>(p - key));
    p = skip_space(p + 1, end);
    if (p == end || *p != ':')
      return false;
    const char* value = skip_space(p + 1, end);
    if (value == end)
      return false;
    FieldSpan* raw = nullptr;
    FieldSpan* text = nullptr;
    if (name == "from") {
      raw = &out.from_raw;
      text = &out.from;
      have_from = true;
    } else if (name == "to") {
      raw = &out.to_raw;
      text = &out.to;
    } else if (name == "alias") {
      raw = &out.alias_raw;
      text = &out.alias;
    }
    if (raw != nullptr) {
      if (*value != '"')
        return false;
      p = Scan::string(value + 1, end, escaped);
      if (p == nullptr || escaped)
        return false;
      ++p;
      *raw = span(value, p);
      *text = span(value + 1, p - 1);
    } else if (name == "payload") {
      p = Scan::value(value, end, 1);
      if (p == nullptr)
        return false;
      out.payload = span(value, p);
      have_payload = true;
    } else if (name == "timestamp") {
      if (*value != '-' && !is_digit(*value))
        return false;
      NumberToken token;
      p = Scan::number(value, end, token);
      if (p == nullptr || !token.integer || token.int_digits > 18)
        return false;
      out.timestamp = timestamp_of(token);
    } else {
      p = Scan::value(value, end, 1);
      if (p == nullptr)
        return false;
    }
    p = skip_space(p, end);
    if (p == end)
      return false;
    if (*p == '}')
      break;
    if (*p != ',')
      return false;
    p = skip_space(p + 1, end);
  }
  return have_from && have_payload && skip_space(p + 1, end) == end;
}

constexpr std::size_t kBlockBytes = (32u << 10) - sizeof(detail::EnvelopeBlock);
// A body larger than this gets a block of its own.
constexpr std::size_t kLargeBody = kBlockBytes / 4;
// The parser's hold on the block it fills: it hands out one of these references
// per envelope without touching the counter (which the consumer thread is
// decrementing meanwhile) and returns the unused ones when it moves on.
constexpr std::uint64_t kReserved = std::uint64_t{1} << 62;

detail::EnvelopeBlock* new_block(std::size_t bytes, std::uint64_t refs, detail::BlockPool* pool) {
  void* memory = ::operator new(sizeof(detail::EnvelopeBlock) + bytes);
  auto* block = ::new (memory) detail::EnvelopeBlock;
  block->refs.store(refs, std::memory_order_relaxed);
  block->pool = pool;
  block->next = nullptr;
  return block;
}

void delete_block(detail::EnvelopeBlock* block) {
  block->~EnvelopeBlock();
  ::operator delete(block);
}

char* bytes_of(detail::EnvelopeBlock* block) {
  return reinterpret_cast<char*>(block + 1);
}

// Blocks the parser may reuse: kept warm instead of freed into its thread's
// malloc arena (which trims, so the next block would fault its pages in again).
constexpr std::size_t kSpareBlocks = 16;

}  // namespace

// Blocks come back here from any thread (a push on a lock-free list); only the
// parser takes them out, all at once. refs: the parser, plus every block in use.
struct detail::BlockPool {
  std::atomic<EnvelopeBlock*> returned{nullptr};
  std::atomic<std::uint64_t> refs{1};

  void give_back(EnvelopeBlock* block) {
    EnvelopeBlock* head = returned.load(std::memory_order_relaxed);
    do {
      block->next = head;
    } while (!returned.compare_exchange_weak(head, block, std::memory_order_release,
                                             std::memory_order_relaxed));
    release();
  }

  void release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1)
      return;
    // The parser is gone and so is every block in use: nobody touches the pool again.
    free_list(returned.exchange(nullptr, std::memory_order_acquire));
    delete this;
  }

  static void free_list(EnvelopeBlock* block) {
    while (block != nullptr) {
      EnvelopeBlock* next = block->next;
      delete_block(block);
      block = next;
    }
  }
};

void detail::free_envelope_block(EnvelopeBlock* block) noexcept {
  if (block->pool != nullptr) {
    block->pool->give_back(block);
  } else {
    delete_block(block);
  }
}

struct EnvelopeParser::Impl {
  JsonObjectWalker walker;  // the general path
  std::string escaped;      // unescaped copies of escaped strings (general path)

  detail::BlockPool* pool = new detail::BlockPool;
  std::vector<detail::EnvelopeBlock*> spare;  // taken back from the pool
  detail::EnvelopeBlock* block = nullptr;     // being filled
  std::size_t used = 0;
  std::uint64_t handed = 0;  // references handed out of kReserved

  ~Impl() {
    seal();
    for (auto* b : spare)
      delete_block(b);
    detail::BlockPool::free_list(pool->returned.exchange(nullptr, std::memory_order_acquire));
    pool->release();
  }

  void seal() {
    if (block == nullptr)
      return;
    const std::uint64_t unused = kReserved - handed;
    if (block->refs.fetch_sub(unused, std::memory_order_acq_rel) == unused)
      detail::free_envelope_block(block);
    block = nullptr;
  }

  detail::EnvelopeBlock* fresh_block() {
    if (spare.empty()) {
      for (auto* b = pool->returned.exchange(nullptr, std::memory_order_acquire); b != nullptr;) {
        auto* next = b->next;
        if (spare.size() < kSpareBlocks) {
          spare.push_back(b);
        } else {
          delete_block(b);
        }
        b = next;
      }
    }
    pool->refs.fetch_add(1, std::memory_order_relaxed);
    if (spare.empty())
      return new_block(kBlockBytes, kReserved, pool);
    detail::EnvelopeBlock* b = spare.back();
    spare.pop_back();
    b->refs.store(kReserved, std::memory_order_relaxed);
    return b;
  }

  // Room for `n` bytes, and the block that holds them (one reference is the caller's).
  char* allocate(std::size_t n, detail::EnvelopeBlock*& owner) {
    if (n > kLargeBody) {
      owner = new_block(n, 1, nullptr);
      return bytes_of(owner);
    }
    if (block == nullptr || kBlockBytes - used < n) {
      seal();
      block = fresh_block();
      used = 0;
      handed = 0;
    }
    owner = block;
    ++handed;
    char* at = bytes_of(block) + used;
    used += n;
    return at;
  }

  std::error_code parse_general(std::string_view body, ParsedFields& out, std::string* why);
};

EnvelopeParser::EnvelopeParser() : impl_(std::make_unique<Impl>()) {}
EnvelopeParser::~EnvelopeParser() = default;

std::error_code EnvelopeParser::parse(std::string_view body, Envelope& out, std::string* why) {
  return parse_with(body, out, why, true);
}

std::error_code EnvelopeParser::parse_general(std::string_view body, Envelope& out,
                                              std::string* why) {
  return parse_with(body, out, why, false);
}

std::error_code EnvelopeParser::parse_with(std::string_view body, Envelope& out, std::string* why,
                                           bool fast) {
  out.release();
  out.block_ = nullptr;
  ParsedFields fields;
  std::string_view extra;
  if (!fast || !scan_envelope(body, fields)) {
    fields = {};
    if (auto ec = impl_->parse_general(body, fields, why)) {
      out.f_ = {};
      return ec;
    }
    extra = impl_->escaped;
  }
  DISTFLOW_ASSERT(body.size() + extra.size() <= UINT32_MAX);
  // The one copy: the frame body (bytes in the decoder's buffer) into shared storage.
  char* at = impl_->allocate(body.size() + extra.size(), out.block_);
  std::memcpy(at, body.data(), body.size());
  if (!extra.empty())
    std::memcpy(at + body.size(), extra.data(), extra.size());
  auto convert = [](FieldSpan s) { return Envelope::Span{s.offset, s.length}; };
  out.f_ = {at,
            static_cast<std::uint32_t>(body.size()),
            convert(fields.from),
            convert(fields.to),
            convert(fields.alias),
            convert(fields.payload),
            convert(fields.from_raw),
            convert(fields.to_raw),
            convert(fields.alias_raw),
            fields.timestamp};
  return {};
}

std::error_code EnvelopeParser::Impl::parse_general(std::string_view body, ParsedFields& out,
                                                    std::string* why) {
  escaped.clear();
  // The caller guarantees the padding after the body.
  if (auto ec = walker.walk(body, true, why))
    return ec;
  const char* base = body.data();
  auto span_of = [&](std::string_view v) {
    return FieldSpan{static_cast<std::uint32_t>(v.data() - base),
                     static_cast<std::uint32_t>(v.size())};
  };
  // A string field: raw token span, plus the unescaped text (a span of the raw
  // token when it has no escapes, else an unescaped copy kept after the body).
  auto string_field = [&](std::string_view token, FieldSpan& raw, FieldSpan& text) {
    raw = span_of(token);
    const std::string_view inner = token.substr(1, token.size() - 2);
    if (inner.find('\\') == std::string_view::npos) {
      text = span_of(inner);
      return;
    }
    const std::size_t at = escaped.size();
    append_json_unescaped(escaped, inner);
    text = {static_cast<std::uint32_t>(body.size() + at),
            static_cast<std::uint32_t>(escaped.size() - at)};
  };
  bool have_from = false, have_payload = false;
  for (const JsonMember& member : walker.members()) {
    const std::string_view key = member.key;
    const std::string_view value = member.value;
    if (key == "payload") {
      out.payload = span_of(value);
      have_payload = true;
    } else if (key == "from" || key == "to") {
      if (value.front() != '"')
        return fail(errc::wrong_type, why, "'" + std::string(key) + "' has the wrong type");
      if (key == "from") {
        string_field(value, out.from_raw, out.from);
        have_from = true;
      } else {
        string_field(value, out.to_raw, out.to);
      }
    } else if (key == "alias") {
      if (value.front() == '"')  // anything else: no alias
        string_field(value, out.alias_raw, out.alias);
    } else if (key == "timestamp") {
      if (value.front() != '-' && !is_digit(value.front()))
        return fail(errc::wrong_type, why, "'timestamp' is not a number");
      // As a double (what the original's JSON.parse gives), correctly rounded;
      // a peer's number may be anything: clamp instead of an out-of-range cast.
      const std::string token(value);
      const double ts = std::strtod(token.c_str(), nullptr);
      constexpr double kLimit = 9.2e18;
      out.timestamp = static_cast<std::int64_t>(ts < -kLimit ? -kLimit : ts > kLimit ? kLimit : ts);
    }
  }
  if (!have_from)
    return fail(errc::missing_field, why, "missing 'from'");
  if (!have_payload)
    return fail(errc::missing_field, why, "missing 'payload'");
  return {};
}

// ---- JsonValidator ------------------------------------------------------------

std::error_code JsonValidator::validate(std::string_view text, std::string* why) {
  return check_document(text, why);
}

std::error_code JsonValidator::validate_object(std::string_view text, std::string* why) {
  const char* end = text.data() + text.size();
  const char* p = skip_space(text.data(), end);
  if (p < end && *p == '{' && Scanner<false>::document(p, end))
    return {};
  return not_an_object(text, why);
}

// ---- encoding -----------------------------------------------------------------

void append_json_string(std::string& out, std::string_view text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
  });
  if (plain) {  // what dump() would produce, without a DOM
    out += '"';
    out += text;
    out += '"';
    return;
  }
  // Invalid UTF-8 is replaced rather than thrown on: names come from peers.
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
  if (head_.empty() || timestamp_ms != head_timestamp_) {
    // Messages sent together share a timestamp: render it once for the lot.
    head_ = prefix_;
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, timestamp_ms);
    DISTFLOW_ASSERT(ec == std::errc());
    head_.append(digits, end);
    head_ += ",\"payload\":";
    head_timestamp_ = timestamp_ms;
  }
  const std::size_t at = begin_frame(out);
  out += head_;
  out += payload_json;
  out += '}';
  end_frame(out, at);
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
  append_json_compact(out, message.payload());
  out += "}\n";
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace distflow
