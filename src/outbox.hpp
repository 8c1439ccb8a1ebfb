#pragma once

// A session's write queue (pure): whole frames in a queue of chunks that are
// reused once written. Frames are appended in place to the last chunk (a frame
// never straddles two; a larger frame gets a chunk of its own), so a burst
// neither grows nor copies a buffer and, once warm, touches no new page. The
// queue counts its frames, so a writer can say how many are on the wire.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace distflow {

class Outbox {
 public:
  static constexpr std::size_t kChunkBytes = 1u << 20;

  /// `max_bytes`: the most the queue holds (frames refused beyond it).
  explicit Outbox(std::size_t max_bytes);

  /// The string to append one frame of at most `frame_bytes` to (then commit()),
  /// or nullptr, with nothing changed, when the queue would exceed its bound.
  std::string* reserve(std::size_t frame_bytes);
  /// Counts the frames appended since reserve(); returns the number of the last
  /// one (frames are numbered from 1 in queue order).
  std::uint64_t commit(std::size_t frames = 1);

  /// Queues `bytes` (whole frames, `frames` of them) without the bound: copied into
  /// the last chunk when it has room, else moved in as a chunk of its own (and
  /// `bytes` gets a spare chunk back, to fill next).
  void append(std::string& bytes, std::size_t frames);

  bool empty() const { return chunks_.empty(); }
  /// Bytes queued and not taken yet.
  std::size_t bytes() const { return bytes_; }
  std::size_t max_bytes() const { return max_bytes_; }
  /// Frames ever committed.
  std::uint64_t frames() const { return frames_; }

  /// Moves the oldest chunk out for writing; `frames_end` is the number of its
  /// last frame. Precondition: !empty().
  std::string take(std::uint64_t& frames_end);
  /// The oldest chunk's bytes, for writing in place (write_now). Precondition: !empty().
  std::string_view front() const { return chunks_.front().bytes; }
  std::size_t chunk_count() const { return chunks_.size(); }
  /// `n` bytes of the oldest chunk are written: true, with the number of its last
  /// frame, when that was all of it (it is then recycled).
  bool consume_front(std::size_t n, std::uint64_t& frames_end);
  /// A written chunk, back for reuse (only chunks of the standard size are kept).
  void recycle(std::string&& chunk);
  /// Frees spare chunks beyond `keep` bytes (once a burst is over).
  void trim(std::size_t keep);
  /// Drops everything queued; returns how many frames that was.
  std::uint64_t clear();

 private:
  struct Chunk {
    std::string bytes;
    std::uint64_t frames_end = 0;
  };
  std::size_t max_bytes_;
  std::deque<Chunk> chunks_;
  std::vector<std::string> spare_;
  std::size_t bytes_ = 0;
  std::size_t reserved_at_ = 0;  // size of the tail chunk at reserve()
  std::uint64_t frames_ = 0;
  std::uint64_t taken_frames_ = 0;
};

}  // namespace distflow
