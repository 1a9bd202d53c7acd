// (to be written) dispatch and validation of the clip family.
#include "octet/clip.hpp"
