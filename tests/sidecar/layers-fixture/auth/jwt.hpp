// siblings on one floor
#include "metrics/registry.hpp"
