#include "ndjson.hpp"
