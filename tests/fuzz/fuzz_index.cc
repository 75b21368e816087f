// libFuzzer harness: the restart index reader. The input is an index file (corrupt, truncated
// or hostile); it is parsed and restored into a real store (a shared-memory host tier of 512 KiB
// filled with a known pattern and taken as the last instance's, an SSD tier of 2 MiB on a
// memory-backed engine), the restored tensors are checked (in the background pass or by their
// first Get) and then read. Invariants: nothing crashes, and a Get that succeeds serves bytes
// whose XXH3 is the checksum the index recorded for them (a host copy) — never bytes that failed
// their check. With FUZZ_INDEX_WRITE_SEEDS=<dir> set, it first writes valid seed index files for
// this layout there (tests/fuzz/corpus/fuzz_index/ was made so).
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "daemon/store/index.h"
#include "daemon/store/store.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/ssd_tier.h"
#include "spdlog/spdlog.h"
#include "tests/unit/fake_engine.h"

namespace tensord {
namespace {

constexpr uint64_t kHostBytes = 512 << 10;
constexpr uint64_t kSwapBytes = 2 << 20;

void Require(bool ok) {
  if (!ok) std::abort();
}

uint8_t Pattern(uint64_t offset) { return static_cast<uint8_t>(offset * 7 + (offset >> 8) + 3); }

// Writes seed index files: records whose host ranges and checksums match the harness's pattern,
// SSD copies of zeros (the fake engine's fresh content), and a few refusals.
void WriteSeeds(const std::string& dir) {
  auto record = [](int i, uint64_t offset, uint64_t nbytes, bool host, bool ssd) {
    index::Tensor t;
    t.set_ns(i % 2 == 0 ? "" : "ns");
    t.set_key("k" + std::to_string(i));
    t.set_dtype(static_cast<int32_t>(DType::kUInt8));
    t.add_shape(static_cast<int64_t>(nbytes));
    t.set_nbytes(nbytes);
    t.set_durability(i % 3 == 0 ? 2 : 1);
    t.set_created_unix_ms(1700000000000 + i);
    std::string bytes(nbytes, '\0');
    for (uint64_t j = 0; j < nbytes; ++j) bytes[j] = static_cast<char>(Pattern(offset + j));
    t.set_checksum(XXH3_64bits(bytes.data(), bytes.size()));
    if (host) {
      index::Copy* c = t.mutable_host();
      c->set_space(0);
      c->set_offset(offset);
      c->set_length(nbytes);
      c->set_reserved((nbytes + 4095) / 4096 * 4096);
    }
    if (ssd) {
      const std::string zeros(nbytes, '\0');
      index::Copy* c = t.mutable_ssd();
      c->set_space(0);
      c->set_offset(offset);
      c->set_length(nbytes);
      c->set_reserved((nbytes + 4095) / 4096 * 4096);
      c->set_checksum(XXH3_64bits(zeros.data(), zeros.size()));
    }
    return t;
  };
  for (int seed = 0; seed < 4; ++seed) {
    const std::string path = dir + "/seed" + std::to_string(seed);
    ::unlink(path.c_str());
    store::LoadedIndex unused;
    auto index = store::Index::Open(path, &unused);
    Require(index.ok());
    for (int i = 0; i < 3 + seed; ++i) {
      const uint64_t nbytes = 4096 * (1 + i % 3) - (i % 2) * 100;
      index::Tensor t = record(i, 16384 * i, nbytes, /*host=*/seed != 1 || i % 2 == 0,
                               /*ssd=*/seed >= 1 && i % 2 == 1);
      (*index)->Put(store::ObjectTable::TableKey(t.ns(), t.key()), t);
    }
    if (seed == 3) (*index)->Erase(store::ObjectTable::TableKey("", "k0"), "", "k0");
  }
}

class Harness {
 public:
  bool Start() {
    HostTierConfig host;
    host.capacity = kHostBytes;
    host.prefault = false;
    auto tier = tiers::HostTier::Create(host, "tensord.fuzz." + RandomHex(6) + ".");
    if (!tier.ok()) return false;
    host_ = *std::move(tier);
    static const std::vector<uint8_t> pattern = [] {
      std::vector<uint8_t> p(kHostBytes);
      for (uint64_t i = 0; i < kHostBytes; ++i) p[i] = Pattern(i);
      return p;
    }();
    std::memcpy(host_->Address(0, 0), pattern.data(), kHostBytes);
    tiers::SsdTierConfig ssd;
    ssd.files = {{swap_path_, kSwapBytes}};
    auto s = tiers::SsdTier::Create(ssd, std::make_unique<io::FakeEngine>(kSwapBytes));
    if (!s.ok()) return false;
    ssd_ = *std::move(s);
    store::StoreOptions options;
    options.executor_threads = 1;
    store_ = std::make_unique<store::Store>(host_.get(), options, ssd_.get());
    return true;
  }

  void Run(const uint8_t* data, size_t size) {
    const store::LoadedIndex loaded =
        store::Index::Parse(absl::string_view(reinterpret_cast<const char*>(data), size));
    store_->Restore(loaded, /*host_reattached=*/true);
    if (size % 2 == 0) {  // the background check first, or the Gets' own
      absl::Notification never;
      store_->VerifyRestored(&never);
    }
    auto session = store_->OpenSession("fuzz");
    Require(session.ok());
    for (const auto& [table_key, t] : loaded.tensors) {
      auto got =
          store_->Get(*session, t.ns(), std::vector<std::string>{t.key()}, store::WantTier::kHost);
      if (!got.ok() || !(*got)[0].status.ok()) continue;
      const store::GetOutcome& r = (*got)[0];
      const uint8_t* bytes = store_->Address(r.info.location);
      // Served from a host copy the index recorded: it passed its check against this checksum.
      // (A tensor swapped in from SSD passed the extent's checksum instead.)
      if (t.has_host() && t.has_checksum() && r.info.nbytes == t.nbytes() && !t.has_ssd()) {
        Require(XXH3_64bits(bytes, r.info.nbytes) == t.checksum());
      }
      Require(store_->Release(*session, std::vector<uint64_t>{r.lease_id}).ok());
    }
    store_->CloseSession(*session);
  }

  void Stop() {
    store_.reset();
    ssd_.reset();
    host_.reset();
    unlink(swap_path_.c_str());
  }

 private:
  const std::string swap_path_ = "/tmp/tensord-fuzz-index-swap." + std::to_string(getpid());
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<store::Store> store_;
};

}  // namespace
}  // namespace tensord

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  if (const char* dir = std::getenv("FUZZ_INDEX_WRITE_SEEDS")) tensord::WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tensord::Harness h;
  if (!h.Start()) std::abort();
  h.Run(data, size);
  h.Stop();
  return 0;
}
