// libFuzzer harness: the remote tier's header parser (daemon/tiers/remote_tier.h). Anyone who can
// write to the Redis the daemons share can put any bytes under a tensor's key, so the parser sees
// hostile input. Invariants for a header it accepts — what the tier's Find and Read then rely on:
// it serializes back to the same bytes; its chunk checksums cover exactly the stored bytes
// (chunk_bytes in [4 KiB, 512 MiB], no size that wraps); it never claims more stored bytes than
// the tensor has (so no reader stages more than a tensor's size); the rank is bounded; the
// content hash is the one of its chunk checksums. With FUZZ_REMOTE_WRITE_SEEDS=<dir> it first
// writes valid headers there (tests/fuzz/corpus/fuzz_remote_header/ was made so).
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "daemon/tiers/remote_tier.h"

namespace tensord {
namespace {

void Require(bool ok) {
  if (!ok) std::abort();
}

void WriteSeeds(const char* dir) {
  int n = 0;
  for (uint64_t stored : {uint64_t{0}, uint64_t{100}, uint64_t{5} << 20, uint64_t{64} << 20}) {
    tiers::RemoteHeader h;
    h.tensor.ns = "kv";
    h.tensor.key = "layer0/block" + std::to_string(n);
    h.tensor.dtype = DType::kFloat16;
    h.tensor.shape = {int64_t(stored / 2 + 1)};
    h.tensor.nbytes = stored + 2;
    h.tensor.codec = n % 2;
    h.tensor.pool = n % 2 ? "kv_cache" : "";
    h.tensor.parent = n % 2 ? "layer0/prev" : "";
    h.tensor.expires_unix_ms = n * 1000;
    h.stored_bytes = stored;
    h.chunk_bytes = 4u << 20;
    const uint64_t chunks = stored == 0 ? 1 : (stored - 1) / h.chunk_bytes + 1;
    for (uint64_t i = 0; i < chunks; ++i) h.chunk_sums.push_back(i * 0x9e3779b97f4a7c15ull);
    h.content = tiers::RemoteContentHash(h.chunk_sums, h.stored_bytes);
    std::ofstream(std::string(dir) + "/seed" + std::to_string(n++), std::ios::binary)
        << tiers::SerializeRemoteHeader(h) << "chunk zero's bytes";
  }
}

}  // namespace
}  // namespace tensord

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("FUZZ_REMOTE_WRITE_SEEDS")) tensord::WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tensord;
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tiers::RemoteHeader> h = tiers::ParseRemoteHeader(in);
  if (!h.ok()) {
    Require(h.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  Require(h->header_bytes >= 16 && h->header_bytes <= size);
  Require(tiers::SerializeRemoteHeader(*h) == in.substr(0, h->header_bytes));
  Require(h->chunk_bytes >= 4096 && h->chunk_bytes <= (512u << 20));
  const uint64_t chunks = h->chunk_sums.size();
  Require(chunks >= 1 && chunks <= (1u << 20));
  // The chunks cover the stored bytes exactly: all but the last are full, the last not empty
  // (unless nothing is stored).
  Require(h->stored_bytes <= chunks * uint64_t{h->chunk_bytes});
  Require(h->stored_bytes == 0 ? chunks == 1
                               : h->stored_bytes > (chunks - 1) * uint64_t{h->chunk_bytes});
  Require(h->stored_bytes <= h->tensor.nbytes);
  Require(h->tensor.shape.size() <= 32);
  Require(tiers::RemoteContentHash(h->chunk_sums, h->stored_bytes) == h->content);
  return 0;
}
