// Fuzzes the node message parser (EnvelopeParser) on arbitrary frame bodies:
// * differential: the one-pass parse() and the general parse_general() agree on
//   every body (accept/reject, error code and reason, every field, payload text);
// * every accepted envelope re-encodes to a frame that parses back to the same
//   fields and the same payload text.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "framing.hpp"
#include "messages.hpp"

namespace {

bool same_fields(const distflow::Envelope& a, const distflow::Envelope& b) {
  return a.body() == b.body() && a.from() == b.from() && a.to() == b.to() &&
         a.alias() == b.alias() && a.has_alias() == b.has_alias() && a.payload() == b.payload() &&
         a.timestamp() == b.timestamp() && a.from_json() == b.from_json() &&
         a.to_json() == b.to_json() && a.alias_json() == b.alias_json();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static distflow::EnvelopeParser parser;
  static distflow::JsonValidator validator;
  // The parser's precondition: kFramePadding readable bytes after the body.
  std::string padded(reinterpret_cast<const char*>(data), size);
  padded.append(distflow::kFramePadding, '\0');
  const std::string_view body(padded.data(), size);

  distflow::Envelope envelope, general;
  std::string why, general_why;
  const auto ec = parser.parse(body, envelope, &why);
  const auto general_ec = parser.parse_general(body, general, &general_why);
  if (ec != general_ec || why != general_why)
    __builtin_trap();
  if (ec)
    return 0;
  if (!same_fields(envelope, general) || envelope.body() != body)
    __builtin_trap();

  // Only envelopes with a payload that is really valid JSON are re-encoded: the
  // receive path checks structure, the sender validates payloads (PROTOCOL.md §3).
  if (validator.validate(envelope.payload()))
    return 0;

  const distflow::MessageEncoder encoder(envelope.from(), envelope.to(), envelope.alias());
  std::string frame;
  encoder.append(frame, envelope.payload(), envelope.timestamp());
  distflow::FrameDecoder decoder(distflow::kDefaultNodeFrameLimit);
  decoder.feed(frame);
  std::error_code frame_ec;
  const auto again_body = decoder.next(frame_ec);
  if (!again_body)
    __builtin_trap();
  distflow::Envelope again;
  if (parser.parse(*again_body, again, &why))
    __builtin_trap();
  if (again.payload() != envelope.payload() || again.from() != envelope.from() ||
      again.to() != envelope.to() || again.alias() != envelope.alias()) {
    __builtin_trap();
  }
  std::string line;
  distflow::append_ndjson_line(line, envelope);
  if (line.empty() || line.back() != '\n')
    __builtin_trap();
  return 0;
}
