// (to be written) the nn family.
#pragma once
#include "octet/tensor.hpp"
