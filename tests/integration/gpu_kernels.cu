// Device-side verification for the GPU integration tests: the byte sum of a tensor, computed by
// a kernel reading the daemon's memory through the client's IPC mapping.
#include <cuda_runtime.h>

#include <cstdint>

namespace {

__global__ void ByteSum(const uint8_t* p, uint64_t n, unsigned long long* out) {
  unsigned long long local = 0;
  for (uint64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    local += p[i];
  }
  atomicAdd(out, local);
}

}  // namespace

// Returns 0 and the sum of the n bytes at device pointer p in *sum, or the CUDA error code.
extern "C" int TensordDeviceByteSum(const void* p, uint64_t n, uint64_t* sum) {
  unsigned long long* d = nullptr;
  cudaError_t err = cudaMalloc(&d, sizeof(*d));
  if (err != cudaSuccess) return err;
  cudaMemset(d, 0, sizeof(*d));
  ByteSum<<<256, 256>>>(static_cast<const uint8_t*>(p), n, d);
  unsigned long long h = 0;
  err = cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost);
  cudaFree(d);
  if (err != cudaSuccess) return err;
  *sum = h;
  return 0;
}
