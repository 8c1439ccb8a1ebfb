#include "errors.hpp"
#include "modes.hpp"

namespace distflow::modes {

Runner setup_send(CLI::App& app, const GlobalOptions&) {
  app.allow_extras();
  return [] () -> int { throw Error("not implemented yet"); };
}

}  // namespace distflow::modes
