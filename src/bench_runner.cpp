#include "bench_runner.hpp"
