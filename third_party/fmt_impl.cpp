// The single translation unit that compiles {fmt}'s implementation
// (fmt/format-inl.h, shipped by Debian's libfmt-dev) into the distflow binary
// instead of loading libfmt.so at every start. The templates format.h declares
// and only format-inl.h defines are instantiated here, for char.
#include <fmt/format-inl.h>

FMT_BEGIN_NAMESPACE
namespace detail {
template auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl<char>(locale_ref) -> char;
template auto dragonbox::to_decimal<float>(float) noexcept -> dragonbox::decimal_fp<float>;
template auto dragonbox::to_decimal<double>(double) noexcept -> dragonbox::decimal_fp<double>;
}  // namespace detail
FMT_END_NAMESPACE
