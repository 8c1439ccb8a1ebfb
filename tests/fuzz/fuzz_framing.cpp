// Fuzzes FrameDecoder: the input is split into chunks whose sizes come from the
// input itself, so every chunking of every byte string gets explored. Checks
// that the decoder yields exactly what a one-shot decode yields.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "errors.hpp"
#include "framing.hpp"

namespace {

struct Outcome {
  std::vector<std::string> frames;
  std::error_code error;
};

Outcome decode(std::string_view bytes, const std::vector<std::size_t>& cuts, std::size_t limit) {
  distflow::FrameDecoder decoder(limit);
  Outcome outcome;
  std::size_t at = 0;
  for (std::size_t i = 0; at < bytes.size() && !outcome.error; ++i) {
    const std::size_t n = cuts.empty() ? bytes.size() : 1 + cuts[i % cuts.size()];
    const std::string_view chunk = bytes.substr(at, n);
    at += chunk.size();
    decoder.feed(chunk);
    std::error_code ec;
    while (auto body = decoder.next(ec))
      outcome.frames.emplace_back(*body);
    outcome.error = ec;
  }
  if (!outcome.error)
    outcome.error = decoder.finish();
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2)
    return 0;
  // First byte: limit selector; second: how many chunk sizes follow.
  const std::size_t limit = std::size_t{1} << (data[0] % 24);
  const std::size_t ncuts = std::min<std::size_t>(data[1] % 16, size - 2);
  std::vector<std::size_t> cuts(data + 2, data + 2 + ncuts);
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 2 + ncuts, size - 2 - ncuts);

  const Outcome whole = decode(bytes, {}, limit);
  const Outcome pieces = decode(bytes, cuts, limit);
  if (whole.frames != pieces.frames || whole.error != pieces.error)
    __builtin_trap();
  for (const auto& frame : whole.frames) {
    if (frame.empty() || frame.size() > limit)
      __builtin_trap();
  }
  return 0;
}
