#pragma once

// The shared secret of a distflow cluster (issue 12), read from a file that only
// its owner may read or write (ssh's rule for private keys). Never generated here.

#include <cstddef>
#include <string>

namespace distflow {

/// The largest cookie file accepted.
inline constexpr std::size_t kMaxCookieBytes = 4096;

/// Reads the cookie in `path` (one trailing newline is not part of it). Throws
/// distflow::Error naming the file when it cannot be read, is not a regular file,
/// is accessible by group or others ("permissions 0644 for 'F' are too open: ..."),
/// is empty, or holds more than kMaxCookieBytes.
std::string load_cookie_file(const std::string& path);

}  // namespace distflow
