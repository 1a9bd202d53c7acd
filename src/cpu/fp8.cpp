// (to be written) CPU reference of the fp8 family.
#include "octet/fp8.hpp"
