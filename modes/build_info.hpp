#pragma once

// What `distflow --version` says about the build. The definition is generated
// at every build (cmake/build_info.cmake): the git state changes without a
// reconfigure.

#include <string_view>

namespace distflow::modes {

/// "git <describe>, <compiler> <version>, <build type>",
/// e.g. "git 087aa3e-dirty, g++ 12.2.0, RelWithDebInfo" ("git unknown" outside a clone).
std::string_view build_info();

}  // namespace distflow::modes
