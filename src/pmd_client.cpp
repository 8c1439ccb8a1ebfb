#include "pmd_client.hpp"
