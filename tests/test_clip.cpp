// (to be written) tests of the clip family.
#include "tests/helpers.hpp"
