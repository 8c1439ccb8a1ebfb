// The json module on the work it does per message and per PMD request:
// validating a payload (JsonValidator, as send() does), walking an object
// (JsonObjectWalker: a payload, a PMD request), reading a whole PMD request
// (PmdRequestParser, the daemon's reader) and escaping a string.

#include <string>
#include <string_view>

#include <benchmark/benchmark.h>

#include "framing.hpp"
#include "json.hpp"
#include "pmd_protocol.hpp"

namespace {

const std::string kPayload =
    R"({"id":12345,"kind":"update","values":[1,2,3,4,5],"note":"a hundred bytes of json payload"})";
// 1 KiB of nested records: the bigger payloads a service sends.
std::string big_payload() {
  std::string out = R"({"items":[)";
  for (int i = 0; i < 12; ++i) {
    if (i)
      out += ',';
    out += R"({"id":)" + std::to_string(1000 + i) +
           R"(,"name":"item \u00e9 number","tags":["a","b"],"price":12.5e-1,"ok":true})";
  }
  return out + "]}";
}
const std::string kResolve = R"({"type":"resolve","payload":{"alias":"worker-7"},"requestId":42})";
const std::string kRegister =
    R"({"type":"register","payload":{"nodeId":"node-7f3a","alias":"worker-7","host":"127.0.0.1","port":40123,"pid":4242,"maxFrame":16777216,"heartbeatMs":2000},"requestId":"req_1"})";

/// `text` followed by the frame padding, as FrameDecoder hands bodies over.
std::string padded(const std::string& text) {
  return text + std::string(distflow::kFramePadding, ' ');
}

void BM_JsonValidator_Validate(benchmark::State& state) {
  const std::string text = state.range(0) == 0 ? kPayload : big_payload();
  distflow::JsonValidator validator;
  for (auto _ : state) {
    if (validator.validate(text))
      state.SkipWithError("validate failed");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(text.size()));
}
// Arg 0: a 100-byte payload; 1: a 1 KiB one.
BENCHMARK(BM_JsonValidator_Validate)->Arg(0)->Arg(1);

void BM_JsonObjectWalker_Walk(benchmark::State& state) {
  const std::string texts[] = {kPayload, big_payload(), kResolve, kRegister};
  const std::string& text = texts[state.range(0)];
  const std::string buffer = padded(text);
  const std::string_view view(buffer.data(), text.size());
  distflow::JsonObjectWalker walker;
  for (auto _ : state) {
    if (walker.walk(view, true))
      state.SkipWithError("walk failed");
    benchmark::DoNotOptimize(walker.members().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(text.size()));
}
// Arg 0: payload; 1: 1 KiB payload; 2: a resolve request; 3: a register request.
BENCHMARK(BM_JsonObjectWalker_Walk)->DenseRange(0, 3);

void BM_PmdRequestParser_Parse(benchmark::State& state) {
  const std::string& text = state.range(0) == 0 ? kResolve : kRegister;
  const std::string buffer = padded(text);
  const std::string_view view(buffer.data(), text.size());
  distflow::PmdRequestParser parser;
  distflow::PmdRequest request;
  for (auto _ : state) {
    if (parser.parse(view, true, request))
      state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(request.type.data());
  }
  state.SetItemsProcessed(state.iterations());
}
// Arg 0: resolve (the pipelined hot path); 1: register.
BENCHMARK(BM_PmdRequestParser_Parse)->Arg(0)->Arg(1);

void BM_AppendJsonString(benchmark::State& state) {
  const std::string text = state.range(0) == 0 ? "worker-7.example-host" : "t\u00e9l\u00e9 \"x\"\n";
  std::string out;
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 16; ++i)
      distflow::append_json_string(out, text);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 16);
}
// Arg 0: plain ASCII (the common name); 1: with non-ASCII and escapes.
BENCHMARK(BM_AppendJsonString)->Arg(0)->Arg(1);

}  // namespace
