// The data path's per-message work: building a frame around a payload
// (MessageEncoder), parsing a received envelope in one pass (EnvelopeParser; and
// its general JsonObjectWalker path for comparison). ~100-byte JSON payload.
// Validating payload text is in json_bench.cpp.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include "framing.hpp"
#include "messages.hpp"

namespace {

const std::string kPayload =
    R"({"id":12345,"kind":"update","values":[1,2,3,4,5],"note":"a hundred bytes of json payload"})";

void BM_MessageEncoder_Append(benchmark::State& state) {
  const distflow::MessageEncoder encoder("sender-1", "receiver-1", "worker");
  std::string out;
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 64; ++i)
      encoder.append(out, kPayload, 1732300000123 + i);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_MessageEncoder_Append);

// Arg 0: our encoder's layout; 1: the original node's ({from,to,payload,timestamp}).
std::string make_body(std::int64_t layout) {
  std::string frame;
  if (layout == 0) {
    distflow::MessageEncoder("sender-1", "receiver-1", "worker")
        .append(frame, kPayload, 1732300000123);
  } else {
    distflow::append_frame(frame, R"({"from":"sender-1","to":"receiver-1","payload":)" + kPayload +
                                      R"(,"timestamp":1732300000123})");
  }
  frame.append(distflow::kFramePadding, ' ');
  return frame;
}

template <bool kGeneral>
void BM_EnvelopeParser(benchmark::State& state) {
  const std::string frame = make_body(state.range(0));
  const std::string_view body = std::string_view(frame).substr(
      distflow::kFrameHeaderBytes,
      frame.size() - distflow::kFrameHeaderBytes - distflow::kFramePadding);
  distflow::EnvelopeParser parser;
  // A ring of envelopes, as the mailbox holds them: blocks are shared, not reused at once.
  std::vector<distflow::Envelope> ring(256);
  std::size_t i = 0;
  for (auto _ : state) {
    distflow::Envelope& message = ring[i++ & 255];
    const auto ec = kGeneral ? parser.parse_general(body, message) : parser.parse(body, message);
    if (ec)
      state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(message.payload().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
// parse(): the one-pass scanner.
void BM_EnvelopeParser_Parse(benchmark::State& state) {
  BM_EnvelopeParser<false>(state);
}
BENCHMARK(BM_EnvelopeParser_Parse)->Arg(0)->Arg(1);
// parse_general(): the JsonObjectWalker pass plus field interpretation (the fallback).
void BM_EnvelopeParser_ParseGeneral(benchmark::State& state) {
  BM_EnvelopeParser<true>(state);
}
BENCHMARK(BM_EnvelopeParser_ParseGeneral)->Arg(0)->Arg(1);

void BM_NdjsonLine_Append(benchmark::State& state) {
  std::string frame;
  distflow::MessageEncoder("sender-1", "receiver-1", "worker")
      .append(frame, kPayload, 1732300000123);
  frame.append(distflow::kFramePadding, ' ');
  distflow::EnvelopeParser parser;
  distflow::Envelope message;
  const std::string_view body = std::string_view(frame).substr(
      distflow::kFrameHeaderBytes,
      frame.size() - distflow::kFrameHeaderBytes - distflow::kFramePadding);
  if (parser.parse(body, message))
    state.SkipWithError("parse failed");
  std::string out;
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 64; ++i)
      distflow::append_ndjson_line(out, message);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_NdjsonLine_Append);

}  // namespace
