#include "outbox.hpp"

#include <algorithm>
#include <utility>

#include "errors.hpp"

namespace distflow {
namespace {

// append(): runs shorter than this are copied into the last chunk, longer ones
// become a chunk of their own.
constexpr std::size_t kCopyBelow = 32u << 10;

}  // namespace

Outbox::Outbox(std::size_t max_bytes) : max_bytes_(max_bytes) {}

std::string* Outbox::reserve(std::size_t frame_bytes) {
  if (bytes_ + frame_bytes > max_bytes_ && bytes_ > 0)
    return nullptr;
  if (!chunks_.empty()) {
    Chunk& last = chunks_.back();
    if (last.bytes.size() + frame_bytes <= last.bytes.capacity()) {
      reserved_at_ = last.bytes.size();
      return &last.bytes;
    }
  }
  Chunk& chunk = chunks_.emplace_back();
  if (!spare_.empty()) {
    chunk.bytes = std::move(spare_.back());
    spare_.pop_back();
  }
  chunk.bytes.reserve(std::max(kChunkBytes, frame_bytes));
  chunk.frames_end = frames_;
  reserved_at_ = 0;
  return &chunk.bytes;
}

std::uint64_t Outbox::commit(std::size_t frames) {
  DISTFLOW_ASSERT(!chunks_.empty());
  Chunk& last = chunks_.back();
  if (last.bytes.empty()) {  // reserved, then nothing appended
    recycle(std::move(last.bytes));
    chunks_.pop_back();
    reserved_at_ = chunks_.empty() ? 0 : chunks_.back().bytes.size();
    return frames_;
  }
  bytes_ += last.bytes.size() - reserved_at_;
  reserved_at_ = last.bytes.size();
  frames_ += frames;
  last.frames_end = frames_;
  return frames_;
}

void Outbox::append(std::string& bytes, std::size_t frames) {
  if (bytes.empty())
    return;
  if (!chunks_.empty() && bytes.size() < kCopyBelow) {
    // A few frames join the last chunk; a long run becomes a chunk of its own
    // (swapped in, not copied: the writer sends it as it is).
    Chunk& last = chunks_.back();
    if (last.bytes.size() + bytes.size() <= last.bytes.capacity()) {
      last.bytes += bytes;
      bytes_ += bytes.size();
      bytes.clear();
      reserved_at_ = last.bytes.size();
      frames_ += frames;
      last.frames_end = frames_;
      return;
    }
  }
  Chunk& chunk = chunks_.emplace_back();
  chunk.bytes.swap(bytes);
  bytes_ += chunk.bytes.size();
  reserved_at_ = chunk.bytes.size();
  frames_ += frames;
  chunk.frames_end = frames_;
  if (!spare_.empty()) {
    bytes.swap(spare_.back());
    spare_.pop_back();
  }
}

std::string Outbox::take(std::uint64_t& frames_end) {
  DISTFLOW_ASSERT(!chunks_.empty());
  Chunk& front = chunks_.front();
  std::string bytes = std::move(front.bytes);
  frames_end = front.frames_end;
  chunks_.pop_front();
  bytes_ -= bytes.size();
  taken_frames_ = frames_end;
  if (chunks_.empty())
    reserved_at_ = 0;
  return bytes;
}

bool Outbox::consume_front(std::size_t n, std::uint64_t& frames_end) {
  DISTFLOW_ASSERT(!chunks_.empty());
  Chunk& front = chunks_.front();
  bytes_ -= n;
  if (n < front.bytes.size()) {
    front.bytes.erase(0, n);
    if (chunks_.size() == 1)
      reserved_at_ -= n;
    return false;
  }
  frames_end = front.frames_end;
  taken_frames_ = frames_end;
  recycle(std::move(front.bytes));
  chunks_.pop_front();
  if (chunks_.empty())
    reserved_at_ = 0;
  return true;
}

void Outbox::recycle(std::string&& chunk) {
  if (chunk.capacity() > 2 * kChunkBytes)
    return;
  chunk.clear();
  spare_.push_back(std::move(chunk));
}

void Outbox::trim(std::size_t keep) {
  const std::size_t chunks = keep / kChunkBytes;
  if (spare_.size() > chunks)
    spare_.resize(chunks);
}

std::uint64_t Outbox::clear() {
  const std::uint64_t dropped = frames_ - taken_frames_;
  for (Chunk& chunk : chunks_)
    recycle(std::move(chunk.bytes));
  chunks_.clear();
  bytes_ = 0;
  reserved_at_ = 0;
  taken_frames_ = frames_;
  return dropped;
}

}  // namespace distflow
