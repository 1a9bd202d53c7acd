// (to be written) CPU reference of the quant family.
#include "octet/quant.hpp"
