#include "errors.hpp"

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace distflow {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "distflow"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::frame_empty:
        return "frame length 0";
      case errc::frame_too_large:
        return "frame length exceeds limit";
      case errc::frame_truncated:
        return "stream ended inside a frame";
      case errc::bad_json:
        return "malformed JSON";
      case errc::not_an_object:
        return "JSON value is not an object";
      case errc::missing_field:
        return "missing field";
      case errc::wrong_type:
        return "wrong field type";
      case errc::unknown_node:
        return "Node not found";
      case errc::queue_full:
        return "queue full";
      case errc::closed:
        return "closed";
      case errc::timed_out:
        return "timed out";
      case errc::peer_gone:
        return "peer gone";
    }
    return "unknown distflow error";
  }
};

}  // namespace

const std::error_category& distflow_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), distflow_category()};
}

void assert_failed(const char* expr, const char* file, int line) {
  spdlog::critical("assertion failed: {} at {}:{}", expr, file, line);
  std::abort();
}

}  // namespace distflow
