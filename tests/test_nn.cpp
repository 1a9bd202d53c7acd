// (to be written) tests of the nn family.
#include "tests/helpers.hpp"
