#pragma once

// The exposure rule (issue 12): a PMD or a node that listens beyond loopback needs
// a cookie or TLS, unless told --insecure (then it is warned at every start). Pure.

#include <string>
#include <string_view>
#include <vector>

namespace distflow {

/// What check_exposure() decided: at most one of the two is set.
struct ExposureVerdict {
  std::string error;    ///< refuse to start: this says why and how to fix it
  std::string warning;  ///< start, and log this at warn
};

/// `addresses`: what the process listens on (hosts as given, e.g. "10.0.0.5", "::",
/// "localhost"), `flag`: the flag that set them ("--bind", "--listen"). Anything but
/// a loopback address (is_loopback_host) counts as exposed, wildcards and names too.
ExposureVerdict check_exposure(const std::vector<std::string>& addresses, std::string_view flag,
                               bool cookie, bool tls, bool insecure);

}  // namespace distflow
