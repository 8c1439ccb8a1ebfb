// Frame encode (many frames into one buffer, as one write per batch) and decode
// (large reads holding many frames, as the node's read loop sees them).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>

#include <benchmark/benchmark.h>

#include "framing.hpp"

namespace {

// ~130 bytes: a node message with a ~100-byte payload.
const std::string kBody =
    R"({"from":"sender-1","to":"receiver-1","timestamp":1732300000123,"payload":)"
    R"({"id":12345,"kind":"update","values":[1,2,3,4,5],"note":"a hundred bytes of json payload"}})";

void BM_Frame_Encode(benchmark::State& state) {
  const auto frames = static_cast<std::size_t>(state.range(0));
  std::string out;
  for (auto _ : state) {
    out.clear();
    for (std::size_t i = 0; i < frames; ++i)
      distflow::append_frame(out, kBody);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(out.size()));
}
BENCHMARK(BM_Frame_Encode)->Arg(16)->Arg(256);

// Decodes a stream by reads of `read_size` bytes through prepare/commit, as a socket
// read loop does; frames straddle read boundaries.
void BM_Frame_Decode(benchmark::State& state) {
  const auto read_size = static_cast<std::size_t>(state.range(0));
  std::string stream;
  while (stream.size() < (1u << 20))
    distflow::append_frame(stream, kBody);
  const std::size_t frames = stream.size() / (kBody.size() + distflow::kFrameHeaderBytes);
  for (auto _ : state) {
    distflow::FrameDecoder decoder(distflow::kDefaultNodeFrameLimit);
    std::size_t seen = 0;
    std::error_code ec;
    for (std::size_t at = 0; at < stream.size(); at += read_size) {
      const std::size_t n = std::min(read_size, stream.size() - at);
      auto room = decoder.prepare(n);
      std::memcpy(room.data(), stream.data() + at, n);
      decoder.commit(n);
      while (auto body = decoder.next(ec)) {
        benchmark::DoNotOptimize(body->data());
        ++seen;
      }
    }
    if (seen != frames || ec)
      state.SkipWithError("decode mismatch");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(frames));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(stream.size()));
}
BENCHMARK(BM_Frame_Decode)->Arg(4096)->Arg(65536);

}  // namespace
