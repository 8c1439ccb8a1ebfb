#include "supervisor.hpp"
