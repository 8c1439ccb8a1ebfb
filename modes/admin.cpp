#include "modes.hpp"

namespace distflow::modes {

std::function<Runner()> add_pmd_admin(CLI::App&) {
  return [] { return Runner{}; };
}

}  // namespace distflow::modes
