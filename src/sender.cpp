#include "sender.hpp"
