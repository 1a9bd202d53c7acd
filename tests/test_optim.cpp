#include "tests/helpers.hpp"
