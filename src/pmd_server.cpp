#include "pmd_server.hpp"
