// The binding's own error: an object that cannot be taken as an array (raised as octet.TypeError).
#pragma once
#include "octet/error.hpp"

namespace octet::python {

struct ArrayTypeError : Error {
  using Error::Error;
};

}  // namespace octet::python
