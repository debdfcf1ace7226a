#include "shapes/store.hpp"
