// includes a higher layer
#include "model/table.hpp"
#include "http/app.hpp"
