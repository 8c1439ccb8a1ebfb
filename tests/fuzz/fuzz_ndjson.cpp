// Fuzzes NdjsonReader: the first bytes choose a line limit and chunk sizes, the
// rest is the stream. Checks the chunked result against a one-line reference
// splitter, so every chunking of every byte string yields the same lines.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ndjson.hpp"

namespace {

struct Got {
  std::string text;
  std::uint64_t number;
  bool too_long;
  bool operator==(const Got&) const = default;
};

std::vector<Got> reference(std::string_view input, std::size_t max) {
  std::vector<Got> out;
  std::uint64_t number = 0;
  while (!input.empty()) {
    const auto nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view{} : input.substr(nl + 1);
    ++number;
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.size() > max) {
      out.push_back({{}, number, true});
    } else if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      out.push_back({std::string(line), number, false});
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3)
    return 0;
  const std::size_t max = 1 + data[0] % 64;
  const std::vector<std::size_t> cuts{1u + data[1] % 17u, 1u + data[2] % 251u};
  const std::string_view input(reinterpret_cast<const char*>(data + 3), size - 3);

  distflow::NdjsonReader reader(max);
  std::vector<Got> got;
  std::size_t at = 0;
  for (std::size_t i = 0; at < input.size(); ++i) {
    const std::string_view chunk = input.substr(at, cuts[i % 2]);
    at += chunk.size();
    reader.feed(chunk);
    while (auto line = reader.next()) {
      // Promised padding: readable (ASan checks it) after every line.
      volatile char last = line->text.data() == nullptr
                               ? 0
                               : line->text.data()[line->text.size() + distflow::kLinePadding - 1];
      (void)last;
      got.push_back({std::string(line->text), line->number, line->too_long});
    }
  }
  if (auto line = reader.finish())
    got.push_back({std::string(line->text), line->number, line->too_long});
  if (got != reference(input, max))
    __builtin_trap();
  return 0;
}
