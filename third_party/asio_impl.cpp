// The single translation unit that compiles standalone Asio's implementation
// (ASIO_SEPARATE_COMPILATION), so the rest of distflow only parses its headers.
#include <asio/impl/src.hpp>
#include <asio/ssl/impl/src.hpp>
