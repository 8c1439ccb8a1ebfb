#include "framing.hpp"

#include <cstring>

#include "errors.hpp"

namespace distflow {
namespace {

void put_be32(char* p, std::uint32_t v) {
  p[0] = static_cast<char>((v >> 24) & 0xff);
  p[1] = static_cast<char>((v >> 16) & 0xff);
  p[2] = static_cast<char>((v >> 8) & 0xff);
  p[3] = static_cast<char>(v & 0xff);
}

std::uint32_t get_be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) |
         std::uint32_t{u[3]};
}

}  // namespace

FrameDecoder::FrameDecoder(std::size_t max_frame_bytes) : max_(max_frame_bytes) {}

std::span<char> FrameDecoder::prepare(std::size_t min_bytes) {
  // Slide the unread tail to the front before growing: the buffer stays within
  // one frame limit plus one read, whatever the peer announces.
  if (begin_ > 0 && (begin_ == end_ || buf_.size() - end_ < min_bytes + kFramePadding)) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buf_.size() < end_ + min_bytes + kFramePadding) {
    buf_.resize(end_ + min_bytes + kFramePadding);
  }
  return {buf_.data() + end_, buf_.size() - end_ - kFramePadding};
}

void FrameDecoder::commit(std::size_t n) {
  DISTFLOW_ASSERT(end_ + n + kFramePadding <= buf_.size());
  end_ += n;
}

void FrameDecoder::feed(std::string_view bytes) {
  auto room = prepare(bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

std::optional<std::string_view> FrameDecoder::next(std::error_code& ec) {
  ec.clear();
  if (failed_) {
    ec = announced_ == 0 ? errc::frame_empty : errc::frame_too_large;
    return std::nullopt;
  }
  if (end_ - begin_ < kFrameHeaderBytes)
    return std::nullopt;
  const std::uint32_t length = get_be32(buf_.data() + begin_);
  announced_ = length;
  if (length == 0 || length > max_) {
    failed_ = true;
    ec = length == 0 ? errc::frame_empty : errc::frame_too_large;
    return std::nullopt;
  }
  if (end_ - begin_ - kFrameHeaderBytes < length)
    return std::nullopt;
  const char* body = buf_.data() + begin_ + kFrameHeaderBytes;
  begin_ += kFrameHeaderBytes + length;
  if (begin_ == end_)
    begin_ = end_ = 0;  // cheap reset; the body bytes stay in place
  return std::string_view(body, length);
}

std::error_code FrameDecoder::finish() const {
  if (end_ != begin_)
    return errc::frame_truncated;
  return {};
}

void append_frame(std::string& out, std::string_view body) {
  const std::size_t at = begin_frame(out);
  out.append(body);
  end_frame(out, at);
}

std::size_t begin_frame(std::string& out) {
  const std::size_t at = out.size();
  out.append(kFrameHeaderBytes, '\0');
  return at;
}

void end_frame(std::string& out, std::size_t header_offset) {
  const std::size_t length = out.size() - header_offset - kFrameHeaderBytes;
  DISTFLOW_ASSERT(length <= UINT32_MAX);
  put_be32(out.data() + header_offset, static_cast<std::uint32_t>(length));
}

std::string describe_frame_error(std::error_code ec, const FrameDecoder& decoder) {
  if (ec == errc::frame_empty)
    return "frame length 0 is not allowed";
  if (ec == errc::frame_too_large) {
    return "frame length " + std::to_string(decoder.announced_length()) + " exceeds limit " +
           std::to_string(decoder.max_frame_bytes());
  }
  if (ec == errc::frame_truncated) {
    return "stream ended inside a frame (" + std::to_string(decoder.buffered()) +
           " bytes buffered)";
  }
  return ec.message();
}

}  // namespace distflow
