// (to be written) tests of the quant family.
#include "tests/helpers.hpp"
