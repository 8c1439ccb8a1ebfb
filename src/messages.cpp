#include "messages.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <new>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// ---- the one-pass scanner ---------------------------------------------------------
//
// A validating JSON scanner for the data path: one pass over the bytes, no
// tape, no DOM, no allocation. It accepts only what it is sure of, a subset of
// what simdjson accepts (nesting up to kMaxDepth, numbers well inside double's
// range, no surrogate escapes); for anything else it says "not sure" and the
// caller falls back to simdjson, which then accepts or names the error. So the
// fast path never changes an outcome, it only makes the common one cheap.

constexpr unsigned kMaxDepth = 64;

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

// An escape sequence at p (a backslash): the byte after it, or nullptr.
const char* skip_escape(const char* p, const char* end) {
  if (end - p < 2)
    return nullptr;
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
      if (end - p < 6)
        return nullptr;
      int code = 0;
      for (int i = 2; i < 6; ++i) {
        const int digit = hex_value(p[i]);
        if (digit < 0)
          return nullptr;
        code = code << 4 | digit;
      }
      // Pairs and lone halves: simdjson's rules decide.
      return code >= 0xd800 && code <= 0xdfff ? nullptr : p + 6;
    }
    default:
      return nullptr;
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
template <bool Padded>
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
        return nullptr;
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"')
        return p;
      if (c == '\\') {
        escaped = true;
        p = skip_escape(p, end);
      } else if (c < 0x20) {
        return nullptr;
      } else {
        p = skip_utf8(p, end);
      }
      if (p == nullptr)
        return nullptr;
    }
  }

  // A number at p: the byte after it, or nullptr. Only numbers with at most 18
  // digits before and after the point and an exponent of at most 280 are taken:
  // those are far from double's overflow and underflow, where parsers differ.
  static const char* number(const char* p, const char* end, NumberToken& token) {
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
    if (token.int_digits == 0 || token.int_digits > 18)
      return nullptr;
    token.integer = true;
    if (p < end && *p == '.') {
      token.integer = false;
      const char* fraction = ++p;
      p = skip_digits(p, end);
      if (p == fraction || p - fraction > 18)
        return nullptr;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      token.integer = false;
      ++p;
      if (p < end && (*p == '+' || *p == '-'))
        ++p;
      const char* exponent = p;
      int magnitude = 0;
      for (; p < end && is_digit(*p); ++p) {
        if (p - exponent >= 3)
          return nullptr;
        magnitude = magnitude * 10 + (*p - '0');
      }
      if (p == exponent || magnitude > 280)
        return nullptr;
    }
    return p;
  }

  static const char* literal(const char* p, const char* end, std::string_view word) {
    if (static_cast<std::size_t>(end - p) < word.size() ||
        std::memcmp(p, word.data(), word.size()) != 0) {
      return nullptr;
    }
    return p + word.size();
  }

  static const char* object(const char* p, const char* end, unsigned depth) {
    if (depth >= kMaxDepth)
      return nullptr;
    p = skip_space(p + 1, end);
    if (p < end && *p == '}')
      return p + 1;
    for (;;) {
      if (p == end || *p != '"')
        return nullptr;
      bool escaped = false;
      p = string(p + 1, end, escaped);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p + 1, end);
      if (p == end || *p != ':')
        return nullptr;
      p = value(skip_space(p + 1, end), end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p, end);
      if (p == end)
        return nullptr;
      if (*p == '}')
        return p + 1;
      if (*p != ',')
        return nullptr;
      p = skip_space(p + 1, end);
    }
  }

  static const char* array(const char* p, const char* end, unsigned depth) {
    if (depth >= kMaxDepth)
      return nullptr;
    p = skip_space(p + 1, end);
    if (p < end && *p == ']')
      return p + 1;
    for (;;) {
      p = value(p, end, depth + 1);
      if (p == nullptr)
        return nullptr;
      p = skip_space(p, end);
      if (p == end)
        return nullptr;
      if (*p == ']')
        return p + 1;
      if (*p != ',')
        return nullptr;
      p = skip_space(p + 1, end);
    }
  }

  // One value at p (no leading space): the byte after it, or nullptr.
  static const char* value(const char* p, const char* end, unsigned depth) {
    if (p == end)
      return nullptr;
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
          return nullptr;
        NumberToken token;
        return number(p, end, token);
      }
    }
  }
};

// True when `text` is certainly one valid JSON value (with optional space around).
bool scan_document(std::string_view text, bool object_only) {
  const char* end = text.data() + text.size();
  const char* p = skip_space(text.data(), end);
  if (object_only && (p == end || *p != '{'))
    return false;
  p = Scanner<false>::value(p, end, 0);
  return p != nullptr && skip_space(p, end) == end;
}

}  // namespace

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
// validated and skipped. False means "not sure" (see the scanner): the general
// path decides, so escaped keys and fields, a non-string alias, a timestamp with
// a fraction, and every error take it.
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
      p = Scan::value(value, end, 0);
      if (p == nullptr)
        return false;
      out.payload = span(value, p);
      have_payload = true;
    } else if (name == "timestamp") {
      if (*value != '-' && !is_digit(*value))
        return false;
      NumberToken token;
      p = Scan::number(value, end, token);
      if (p == nullptr || !token.integer)
        return false;
      out.timestamp = timestamp_of(token);
    } else {
      p = Scan::value(value, end, 0);
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
  ondemand::parser parser;
  // Validates object/array payloads (on-demand skips them unchecked) and, on the
  // error path, tells bad JSON from a valid non-object.
  simdjson::dom::parser classifier;
  std::string escaped;  // unescaped copies of escaped strings (general path)

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
  static_assert(kFramePadding >= simdjson::SIMDJSON_PADDING);
  escaped.clear();
  // Parsed in place: the caller guarantees the padding after the body.
  const char* base = body.data();
  ondemand::document doc;
  if (auto e = parser.iterate(base, body.size(), body.size() + kFramePadding).get(doc)) {
    return fail(e, why);
  }
  ondemand::object object;
  if (auto e = doc.get_object().get(object)) {
    if (e != simdjson::INCORRECT_TYPE)
      return fail(e, why);
    // On-demand only looked at the first byte ("nope" looks like null): a full
    // parse tells a valid non-object from garbage.
    simdjson::dom::element root;
    if (auto de = classifier.parse(body.data(), body.size(), true).get(root)) {
      return fail(de, why);
    }
    return fail(errc::not_an_object, why, "not a JSON object");
  }

  auto span_of = [&](std::string_view v) {
    return FieldSpan{static_cast<std::uint32_t>(v.data() - base),
                     static_cast<std::uint32_t>(v.size())};
  };
  // A string field: raw token span, plus the unescaped text (a span of the raw
  // token when it has no escapes, else an unescaped copy kept after the body).
  auto string_field = [&](ondemand::value& value, FieldSpan& raw,
                          FieldSpan& text) -> simdjson::error_code {
    std::string_view token = trim_right(value.raw_json_token());
    std::string_view unescaped;
    if (auto e = value.get_string().get(unescaped))
      return e;
    raw = span_of(token);
    if (token.size() >= 2 && token.substr(1, token.size() - 2) == unescaped) {
      text = span_of(token.substr(1, token.size() - 2));
    } else {
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
        // The span is inside the body, followed by the caller's padding.
        simdjson::dom::element root;
        if ((e = classifier.parse(raw.data(), raw.size(), false).get(root))) {
          return fail(e, why);
        }
      } else if ((e = validate_scalar(value, type))) {
        return fail(e, why);
      }
      out.payload = span_of(trim_right(raw));
      have_payload = true;
    } else if (key == "from") {
      e = string_field(value, out.from_raw, out.from);
      have_from = true;
    } else if (key == "to") {
      e = string_field(value, out.to_raw, out.to);
    } else if (key == "alias") {
      ondemand::json_type type;
      if ((e = value.type().get(type)))
        return fail(e, why);
      if (type == ondemand::json_type::string)
        e = string_field(value, out.alias_raw, out.alias);
    } else if (key == "timestamp") {
      double ts = 0;
      if ((e = value.get_double().get(ts))) {
        return fail(errc::wrong_type, why, "'timestamp' is not a number");
      }
      // A peer's number may be anything: clamp instead of an out-of-range cast.
      constexpr double kLimit = 9.2e18;
      out.timestamp = ts != ts ? 0
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
  return {};
}

// ---- JsonValidator ------------------------------------------------------------

struct JsonValidator::Impl {
  simdjson::dom::parser parser;
};

JsonValidator::JsonValidator() : impl_(std::make_unique<Impl>()) {}
JsonValidator::~JsonValidator() = default;

std::error_code JsonValidator::validate(std::string_view text, std::string* why) {
  if (scan_document(text, false))
    return {};
  simdjson::dom::element root;
  if (auto e = impl_->parser.parse(text.data(), text.size(), true).get(root))
    return fail(e, why);
  return {};
}

std::error_code JsonValidator::validate_object(std::string_view text, std::string* why) {
  if (scan_document(text, true))
    return {};
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
