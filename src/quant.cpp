// (to be written) dispatch and validation of the quant family.
#include "octet/quant.hpp"
