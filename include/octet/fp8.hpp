// (to be written) the fp8 family.
#pragma once
#include "octet/tensor.hpp"
