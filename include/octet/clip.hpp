// (to be written) the clip family.
#pragma once
#include "octet/tensor.hpp"
