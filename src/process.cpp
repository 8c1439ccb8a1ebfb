#include "process.hpp"
