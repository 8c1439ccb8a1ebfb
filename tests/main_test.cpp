// The one Catch2 main of distflow_tests (Catch2 2.13 has no Catch2WithMain target).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
