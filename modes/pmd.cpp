#include "errors.hpp"
#include "modes.hpp"

namespace distflow::modes {

Runner setup_pmd(CLI::App& app, const GlobalOptions&) {
  auto admin = add_pmd_admin(app);
  return [admin]() -> int {
    if (auto runner = admin()) return runner();
    throw Error("not implemented yet");
  };
}

}  // namespace distflow::modes
