#include "node_runtime.hpp"
