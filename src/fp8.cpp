// (to be written) dispatch and validation of the fp8 family.
#include "octet/fp8.hpp"
