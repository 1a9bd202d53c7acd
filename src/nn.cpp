// (to be written)
#include "octet/nn.hpp"
