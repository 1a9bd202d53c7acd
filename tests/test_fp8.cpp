// (to be written) tests of the fp8 family.
#include "tests/helpers.hpp"
