// fine: its own layer and lower ones
#include "model/table.hpp"
#include "util/log.hpp"
