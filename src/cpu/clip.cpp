// (to be written) CPU reference of the clip family.
#include "octet/clip.hpp"
