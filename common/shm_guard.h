// Keeps the daemon alive when a client truncates a shared-memory segment it may write (any
// process that can open a segment read-write can also ftruncate it, and the daemon's next touch
// of a page past the new end would raise SIGBUS and kill it). A SIGBUS handler finds the
// segment the faulting address belongs to, restores the segment's size (the lost pages come
// back as zeros: only the truncating tenant's own bytes are lost, and checksums catch them) and
// returns, so the access is retried. Faults anywhere else keep their default action.
#pragma once

#include <cstdint>

namespace tensord::shm_guard {

// Installs the handler (idempotent; the first call wins).
void Install();
// Guards [data, data + size), backed by the file `fd` refers to (duplicated here). Returns a
// slot for Unregister, or -1 when all slots are taken (the mapping is then unguarded).
int Register(uint8_t* data, uint64_t size, int fd);
// Stops guarding `slot` (-1: nothing). Call before unmapping.
void Unregister(int slot);
// How often the handler restored a truncated segment.
uint64_t Repairs();

}  // namespace tensord::shm_guard
