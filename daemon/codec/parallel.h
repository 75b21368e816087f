// The codec pool: a bounded set of threads (one per core) that encode and decode chunks of
// tensors, so that codec work never runs on gRPC's threads and a large tensor uses every core.
// ParallelFor has the caller take part: it runs chunks itself while the pool helps, so it never
// waits on a busy or nested pool (a chunk that calls ParallelFor again just runs inline).
#pragma once

#include <cstddef>

#include "absl/functional/function_ref.h"

namespace tensord::codec {

// Runs fn(0) .. fn(n-1), each once, on the calling thread and the codec pool; returns when all
// have run. `fn` must not throw.
void ParallelFor(size_t n, absl::FunctionRef<void(size_t)> fn);

// Threads a ParallelFor uses, its caller included (the cores; at least 1). Set before first use
// (tests, benchmarks measuring one thread); 0 restores the default.
void SetCodecThreads(int threads);
int CodecThreads();

}  // namespace tensord::codec
