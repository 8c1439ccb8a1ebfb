#include "ndjson.hpp"

#include <algorithm>
#include <cstring>

#include "errors.hpp"

namespace distflow {
namespace {

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

std::string_view strip_cr(std::string_view text) {
  if (!text.empty() && text.back() == '\r')
    text.remove_suffix(1);
  return text;
}

}  // namespace

NdjsonReader::NdjsonReader(std::size_t max_line_bytes) : max_(max_line_bytes) {}

std::span<char> NdjsonReader::prepare(std::size_t min_bytes) {
  // Slide the partial line to the front before growing: the buffer stays within
  // one line limit plus one read, whatever the input holds.
  if (begin_ > 0 && (begin_ == end_ || buf_.size() - end_ < min_bytes + kLinePadding)) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    scan_ -= std::min(scan_, begin_);
    begin_ = 0;
  }
  if (buf_.size() < end_ + min_bytes + kLinePadding)
    buf_.resize(end_ + min_bytes + kLinePadding);
  return {buf_.data() + end_, buf_.size() - end_ - kLinePadding};
}

void NdjsonReader::commit(std::size_t n) {
  DISTFLOW_ASSERT(end_ + n + kLinePadding <= buf_.size());
  end_ += n;
}

void NdjsonReader::feed(std::string_view bytes) {
  auto room = prepare(bytes.size());
  if (!bytes.empty())
    std::memcpy(room.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

std::optional<NdjsonLine> NdjsonReader::next() {
  for (;;) {
    const std::size_t from = std::max(scan_, begin_);
    const void* hit = from < end_ ? std::memchr(buf_.data() + from, '\n', end_ - from) : nullptr;
    if (hit == nullptr) {
      scan_ = end_;
      if (skipping_) {
        begin_ = scan_ = end_ = 0;  // nothing of an over-long line is kept
        return std::nullopt;
      }
      // One byte of slack for a '\r' that is not part of the line.
      if (end_ - begin_ > max_ + 1) {
        skipping_ = true;
        begin_ = scan_ = end_ = 0;
        return NdjsonLine{{}, line_number_ + 1, true};
      }
      return std::nullopt;
    }
    const auto nl = static_cast<std::size_t>(static_cast<const char*>(hit) - buf_.data());
    ++line_number_;
    const std::string_view text = strip_cr({buf_.data() + begin_, nl - begin_});
    begin_ = scan_ = nl + 1;
    if (begin_ == end_)
      begin_ = scan_ = end_ = 0;  // cheap reset; the bytes stay in place
    if (skipping_) {
      skipping_ = false;
      continue;
    }
    if (text.size() > max_)
      return NdjsonLine{{}, line_number_, true};
    if (is_blank(text))
      continue;
    return NdjsonLine{text, line_number_, false};
  }
}

std::optional<NdjsonLine> NdjsonReader::finish() {
  if (begin_ == end_ && !skipping_)
    return std::nullopt;
  ++line_number_;
  const std::string_view text = strip_cr({buf_.data() + begin_, end_ - begin_});
  const bool was_skipping = skipping_;
  skipping_ = false;
  begin_ = scan_ = end_ = 0;
  if (was_skipping)
    return std::nullopt;  // reported when it grew past the limit
  if (text.size() > max_)
    return NdjsonLine{{}, line_number_, true};
  if (is_blank(text))
    return std::nullopt;
  return NdjsonLine{text, line_number_, false};
}

}  // namespace distflow
