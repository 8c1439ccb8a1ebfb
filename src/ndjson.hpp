#pragma once

// Incremental NDJSON line reader for `send -` and `node` (stdin or a child's
// stdout). Pure: bytes in, in any chunking; lines out as views into its own
// buffer. Splits on '\n', strips one trailing '\r', skips blank lines (only
// spaces, tabs or '\r'), counts every line (blank ones too) from 1, and bounds
// memory: a line longer than the limit is reported once and skipped.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace distflow {

inline constexpr std::size_t kDefaultMaxLineBytes = 16u << 20;  ///< as a node frame
/// Readable bytes guaranteed after every line returned (room for the scanners' 16-byte loads).
inline constexpr std::size_t kLinePadding = 64;

struct NdjsonLine {
  std::string_view text;     ///< without '\n' and '\r'; empty when too_long
  std::uint64_t number = 0;  ///< 1-based line number in the stream
  bool too_long = false;     ///< the line exceeded the limit; its bytes are skipped
};

class NdjsonReader {
 public:
  explicit NdjsonReader(std::size_t max_line_bytes = kDefaultMaxLineBytes);

  /// A writable region of at least `min_bytes` for a read(); then commit(n).
  std::span<char> prepare(std::size_t min_bytes);
  void commit(std::size_t n);
  /// Copies bytes in (prepare + memcpy + commit).
  void feed(std::string_view bytes);

  /// The next non-blank complete line, or a too_long marker; nullopt when more
  /// bytes are needed. A line stays valid, with kLinePadding readable bytes after
  /// it, until the next prepare() or feed().
  std::optional<NdjsonLine> next();
  /// At end of stream: the last line when it had no final '\n' (else nullopt).
  /// Call after next() returned nullopt.
  std::optional<NdjsonLine> finish();

  std::size_t max_line_bytes() const { return max_; }
  /// Lines seen so far (complete ones, blank ones included).
  std::uint64_t lines_seen() const { return line_number_; }

 private:
  std::vector<char> buf_;
  std::size_t begin_ = 0;  // start of the first unread line
  std::size_t scan_ = 0;   // bytes before this offset hold no '\n' (after begin_)
  std::size_t end_ = 0;    // end of committed bytes
  std::size_t max_;
  std::uint64_t line_number_ = 0;
  bool skipping_ = false;  // discarding the rest of an over-long line
};

}  // namespace distflow
