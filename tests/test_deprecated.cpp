// (to be written) tests of the deprecated family.
#include "tests/helpers.hpp"
