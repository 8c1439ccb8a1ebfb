#include "pmd_protocol.hpp"
