#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace distflow {

/// A local failure that ends the current command. Only main() catches it.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad input from a peer or a stream: returned as values, never thrown.
enum class errc {
  frame_empty = 1,  ///< a frame announced a length of 0
  frame_too_large,  ///< a frame announced more than the receiver's limit
  frame_truncated,  ///< the stream ended inside a frame
  bad_json,         ///< not valid JSON (or not valid UTF-8)
  not_an_object,    ///< valid JSON, but not an object
  missing_field,    ///< a required key is absent
  wrong_type,       ///< a key holds the wrong JSON type
  unknown_node,     ///< no node with that alias or id
  queue_full,       ///< a bounded queue refused an item
  closed,           ///< the queue or connection is closed
  timed_out,        ///< no answer within the time allowed (a call)
  peer_gone,        ///< the other side left or its link was lost
};

const std::error_category& distflow_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

/// Aborts with a critical log line: for broken invariants (bugs), never for input.
[[noreturn]] void assert_failed(const char* expr, const char* file, int line);

}  // namespace distflow

template <>
struct std::is_error_code_enum<distflow::errc> : std::true_type {};

#define DISTFLOW_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::distflow::assert_failed(#expr, __FILE__, __LINE__))
