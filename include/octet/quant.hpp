// (to be written) the quant family.
#pragma once
#include "octet/tensor.hpp"
