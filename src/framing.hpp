#pragma once

// Length-prefixed framing (PROTOCOL.md §1): uint32 big-endian length N, then N
// bytes of JSON. Pure: no I/O, no allocation beyond the decoder's own buffer.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace distflow {

inline constexpr std::size_t kFrameHeaderBytes = 4;
inline constexpr std::size_t kDefaultPmdFrameLimit = 1u << 20;    ///< 1 MiB
inline constexpr std::size_t kDefaultNodeFrameLimit = 16u << 20;  ///< 16 MiB
/// Bytes queued and unwritten for one destination before its senders wait, then fail
/// (`node --max-outbox`): 4 MiB, as much as Linux lets a TCP socket buffer by
/// default (tcp_wmem). More only lets a fast sender run further ahead of its
/// receiver, taking the CPU the receiver needs: against 64 MiB, 1.11x the msgs/s
/// of one sender and 1.20x of 4 senders into one node (bench/README.md, issue 13).
inline constexpr std::size_t kDefaultOutboxBytes = 4u << 20;
/// Readable bytes guaranteed after every body the decoder returns (room for the scanners' 16-byte
/// loads).
inline constexpr std::size_t kFramePadding = 64;

/// Incremental decoder: bytes in (any chunking), frame bodies out.
/// Lengths are checked against the limit before any byte of the body is stored.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame_bytes);

  /// A writable region of at least `min_bytes` for a socket read; then commit(n).
  std::span<char> prepare(std::size_t min_bytes);
  void commit(std::size_t n);
  /// Copies bytes in (prepare + memcpy + commit).
  void feed(std::string_view bytes);

  /// Next complete body, or nullopt when more bytes are needed or on error (ec set:
  /// errc::frame_empty or errc::frame_too_large; the decoder then stays failed).
  /// A body stays valid, with kFramePadding readable bytes after it, until the
  /// next prepare() or feed().
  std::optional<std::string_view> next(std::error_code& ec);

  /// At end of stream: errc::frame_truncated if a partial frame is buffered.
  std::error_code finish() const;

  /// The length field of the frame that failed or is pending (for error messages).
  std::uint32_t announced_length() const { return announced_; }
  std::size_t max_frame_bytes() const { return max_; }
  std::size_t buffered() const { return end_ - begin_; }

 private:
  std::vector<char> buf_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t max_;
  std::uint32_t announced_ = 0;
  bool failed_ = false;
};

/// Appends one frame (header + body) to `out`: many frames, one buffer, one write.
void append_frame(std::string& out, std::string_view body);

/// Starts a frame whose body the caller appends in place; returns the header's offset.
std::size_t begin_frame(std::string& out);
/// Patches the header written by begin_frame() with the body's length.
void end_frame(std::string& out, std::size_t header_offset);

/// Human text for a decoder error, naming the length and the limit:
/// "frame length 2130706442 exceeds limit 1048576".
std::string describe_frame_error(std::error_code ec, const FrameDecoder& decoder);

}  // namespace distflow
