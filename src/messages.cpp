#include "messages.hpp"

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <vector>

#include "errors.hpp"
#include "framing.hpp"
#include "json_scanner.hpp"

namespace distflow {

namespace {

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

// ---- envelopes ---------------------------------------------------------------

struct FieldSpan {
  std::uint32_t offset = 0;
  std::uint32_t length = 0;
};

// What a parse found, as offsets from the body's first byte (escaped strings'
// unescaped copies, from the general path, come after the body's size).
struct ParsedFields {
  FieldSpan from, to, alias, payload, from_raw, to_raw, alias_raw, ref_raw, in_reply_to_raw;
  std::int64_t timestamp = 0;
};

std::int64_t timestamp_of(const detail::JsonNumberToken& token) {
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
  using Scan = detail::JsonScanner<true>;  // the frame padding follows the body
  const char* begin = body.data();
  const char* end = begin + body.size();
  auto span = [begin](const char* first, const char* last) {
    return FieldSpan{static_cast<std::uint32_t>(first - begin),
                     static_cast<std::uint32_t>(last - first)};
  };
  const char* p = detail::json_skip_space(begin, end);
  if (p == end || *p != '{')
    return false;
  p = detail::json_skip_space(p + 1, end);
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
    p = detail::json_skip_space(p + 1, end);
    if (p == end || *p != ':')
      return false;
    const char* value = detail::json_skip_space(p + 1, end);
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
    } else if (name == "ref" || name == "inReplyTo") {
      // Request/reply (PROTOCOL.md §3.5): kept as tokens, escapes and all.
      raw = name == "ref" ? &out.ref_raw : &out.in_reply_to_raw;
    }
    if (raw != nullptr) {
      // A string; anything else (or an escaped name) goes the general way.
      if (*value != '"')
        return false;
      p = Scan::string(value + 1, end, escaped);
      if (p == nullptr || (escaped && text != nullptr))
        return false;
      ++p;
      *raw = span(value, p);
      if (text != nullptr)
        *text = span(value + 1, p - 1);
    } else if (name == "payload") {
      p = Scan::value(value, end, 1);
      if (p == nullptr)
        return false;
      out.payload = span(value, p);
      have_payload = true;
    } else if (name == "timestamp") {
      if (*value != '-' && !detail::json_is_digit(*value))
        return false;
      detail::JsonNumberToken token;
      p = Scan::number(value, end, token);
      if (p == nullptr || !token.integer || token.int_digits > 18)
        return false;
      out.timestamp = timestamp_of(token);
    } else {
      p = Scan::value(value, end, 1);
      if (p == nullptr)
        return false;
    }
    p = detail::json_skip_space(p, end);
    if (p == end)
      return false;
    if (*p == '}')
      break;
    if (*p != ',')
      return false;
    p = detail::json_skip_space(p + 1, end);
  }
  return have_from && have_payload && detail::json_skip_space(p + 1, end) == end;
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
    // A recycled block was last read on the consumer's CPU: take the lines a few
    // envelopes ahead now, so the copies into them need not wait for them.
    const char* ahead = at + n + 256;
    const char* limit = bytes_of(block) + kBlockBytes;
    for (int line = 0; line < 4 && ahead < limit; ++line, ahead += 64)
      __builtin_prefetch(ahead, 1, 3);
    return at;
  }

  std::error_code parse_general(std::string_view body, ParsedFields& out, std::string* why);
};

EnvelopeParser::EnvelopeParser() : impl_(std::make_unique<Impl>()) {}
EnvelopeParser::~EnvelopeParser() = default;

std::error_code EnvelopeParser::parse(std::string_view body, Envelope& out, std::string_view origin,
                                      std::string* why) {
  return parse_with(body, out, origin, why, true);
}

std::error_code EnvelopeParser::parse_general(std::string_view body, Envelope& out,
                                              std::string* why) {
  return parse_with(body, out, {}, why, false);
}

std::error_code EnvelopeParser::parse_with(std::string_view body, Envelope& out,
                                           std::string_view origin, std::string* why, bool fast) {
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
  DISTFLOW_ASSERT(body.size() + extra.size() + origin.size() <= UINT32_MAX);
  // The one copy: the frame body (bytes in the decoder's buffer) into shared storage.
  char* at = impl_->allocate(body.size() + extra.size() + origin.size(), out.block_);
  std::memcpy(at, body.data(), body.size());
  if (!extra.empty())
    std::memcpy(at + body.size(), extra.data(), extra.size());
  if (!origin.empty())
    std::memcpy(at + body.size() + extra.size(), origin.data(), origin.size());
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
            convert(fields.ref_raw),
            convert(fields.in_reply_to_raw),
            {static_cast<std::uint32_t>(body.size() + extra.size()),
             static_cast<std::uint32_t>(origin.size())},
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
    } else if (key == "ref" || key == "inReplyTo") {
      if (value.front() == '"')  // anything else: not a request / not a reply
        (key == "ref" ? out.ref_raw : out.in_reply_to_raw) = span_of(value);
    } else if (key == "timestamp") {
      if (value.front() != '-' && !detail::json_is_digit(value.front()))
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

std::string Envelope::token_text(std::string_view token) {
  if (token.size() < 2)
    return {};
  std::string text;
  append_json_unescaped(text, token.substr(1, token.size() - 2));
  return text;
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
                            std::int64_t timestamp_ms, std::string_view members) const {
  if (!members.empty()) {
    // A request or a reply: its own members before the payload (rare: no cache).
    const std::size_t at = begin_frame(out);
    out += prefix_;
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, timestamp_ms);
    DISTFLOW_ASSERT(ec == std::errc());
    out.append(digits, end);
    out += ',';
    out += members;
    out += ",\"payload\":";
    out += payload_json;
    out += '}';
    end_frame(out, at);
    return;
  }
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
  if (message.origin().empty()) {
    out += message.from_json();
  } else {
    append_json_string(out, message.reply_address());  // a reply to it works
  }
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
  if (message.is_request()) {
    out += ",\"ref\":";  // a script answers it with {"replyTo": ref, "payload": ...}
    out += message.ref_json();
  }
  if (message.is_reply()) {
    out += ",\"inReplyTo\":";
    out += message.in_reply_to_json();
  }
  out += ",\"payload\":";
  append_json_compact(out, message.payload());
  out += "}\n";
}

std::int64_t now_ms() {
  // The coarse clock (the kernel's last tick, a few ms old at most) costs a load
  // where the precise one reads the TSC: every send takes a timestamp.
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

}  // namespace distflow
