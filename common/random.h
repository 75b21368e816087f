// Unguessable tokens from the kernel's CSPRNG, for session ids and shared-memory names.
#pragma once

#include <string>

namespace tensord {

// Returns 2*bytes lower-case hex characters read from getrandom(2).
std::string RandomHex(size_t bytes);

}  // namespace tensord
