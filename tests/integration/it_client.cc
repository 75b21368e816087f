// A real client process for integration tests, driven by arguments:
//   it_client put    SOCKET KEY BYTES SEED durable|cache   -> prints the XXH3 of the data
//   it_client verify SOCKET KEY XXH3                        -> checks every byte, zero-copy
//   it_client hold   SOCKET KEY                             -> leases KEY, leaves a create
//                                                              unsealed, prints READY, sleeps
//   it_client mixed  SOCKET ID OPS                          -> OPS random operations
//   it_client putmany    SOCKET PREFIX COUNT BYTES SEED     -> DURABLE PREFIX.0 .. PREFIX.N-1
//   it_client verifymany SOCKET PREFIX COUNT BYTES SEED START -> checks them all, from START
//   it_client raw    SOCKET NS                             -> the raw protocol (no client library):
//                                                              Attach, then every call on NS;
//                                                              prints "<call> <gRPC code>" lines
// GPU modes (exit 77 when this process has no usable GPU):
//   it_client gpuput    SOCKET KEY BYTES SEED               -> creates KEY on the GPU, writes it
//                                                              from the host, seals, prints XXH3
//   it_client gpuverify SOCKET KEY XXH3 REPS                -> Gets KEY on the GPU REPS times:
//                                                              device pointer inside the arena,
//                                                              copy back matches, kernel byte
//                                                              sum matches, one IPC open
//   it_client gpuhold   SOCKET KEY                          -> leases KEY on the GPU, prints
//                                                              READY, sleeps
// Exit codes: 0 ok, 1 wrong bytes, 2 not zero-copy, 3 usage, 10 + absl code on a failed call.
#include <unistd.h>
#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cuda.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tensord/v1/tensord.grpc.pb.h"

#if TENSORD_HAVE_CUDA
extern "C" int TensordDeviceByteSum(const void* p, uint64_t n, uint64_t* sum);
#endif

namespace {

int Failed(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "it_client: %s: %s\n", what, st.ToString().c_str());
  return 10 + static_cast<int>(st.code());
}

// Fills `p` with bytes derived from `seed` (splitmix64 per 8-byte word).
void Fill(uint8_t* p, uint64_t n, uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t i = 0; i < n; i += 8) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(p + i, &z, std::min<uint64_t>(8, n - i));
  }
}

std::unique_ptr<tensord::Client> ConnectOrDie(const char* socket, const char* name) {
  tensord::ClientOptions opts;
  opts.socket_path = socket;
  opts.client_name = name;
  auto c = tensord::Client::Connect(opts);
  if (!c.ok()) {
    std::exit(Failed("connect", c.status()));
  }
  return *std::move(c);
}

// Returns whether [p, p+n) lies in a /dev/shm mapping of this process (per /proc/self/maps).
bool InSharedMemoryMapping(const void* p, uint64_t n) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto a = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) != 2) continue;
    if (a >= lo && a + n <= hi) return line.find("/dev/shm/tensord.") != std::string::npos;
  }
  return false;
}

int Put(const char* socket, const std::string& key, uint64_t bytes, uint64_t seed,
        const std::string& durability) {
  auto c = ConnectOrDie(socket, "it-put");
  tensord::CreateOptions opts;
  opts.durability =
      durability == "cache" ? tensord::Durability::kCache : tensord::Durability::kDurable;
  auto t = c->Create(key, tensord::DType::kUInt8, {static_cast<int64_t>(bytes)}, opts);
  if (!t.ok()) return Failed("create", t.status());
  auto* p = static_cast<uint8_t*>(t->data());
  Fill(p, bytes, seed);
  const uint64_t hash = XXH3_64bits(p, bytes);
  if (auto st = t->Seal(); !st.ok()) return Failed("seal", st);
  std::printf("%016" PRIx64 "\n", hash);
  return 0;
}

int Verify(const char* socket, const std::string& key, const std::string& expected) {
  auto c = ConnectOrDie(socket, "it-verify");
  auto lease = c->Get(key, tensord::Tier::kHost);  // the shared-memory copy, zero-copy
  if (!lease.ok()) return Failed("get", lease.status());
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016" PRIx64, XXH3_64bits(lease->data(), lease->nbytes()));
  if (expected != hex) {
    std::fprintf(stderr, "it_client: checksum %s, expected %s\n", hex, expected.c_str());
    return 1;
  }
  auto [base, size] = c->SegmentMapping(lease->info().location.arena);
  const auto* p = lease->data_as<uint8_t>();
  if (base == nullptr || p < base || p + lease->nbytes() > base + size ||
      !InSharedMemoryMapping(p, lease->nbytes())) {
    std::fprintf(stderr, "it_client: data is not inside the mapped shared segment\n");
    return 2;
  }
  return 0;
}

int Hold(const char* socket, const std::string& key) {
  auto c = ConnectOrDie(socket, "it-hold");
  auto lease = c->Get(key);
  if (!lease.ok()) return Failed("get", lease.status());
  auto t = c->Create("hold.unsealed", tensord::DType::kUInt8, {4 << 20});
  if (!t.ok()) return Failed("create", t.status());
  std::memset(t->data(), 0x77, t->nbytes());
  std::printf("READY\n");
  std::fflush(stdout);
  while (true) pause();
}

// Random creates, seals, gets (own and shared keys), batched gets and deletes; every byte
// read is checked against what its writer wrote.
int Mixed(const char* socket, int id, int ops) {
  auto c = ConnectOrDie(socket, "it-mixed");
  std::mt19937_64 rng(static_cast<uint64_t>(id) * 7919 + 1);
  std::map<std::string, uint64_t> mine;  // key -> seed
  int next = 0;
  for (int op = 0; op < ops; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 4 || mine.empty()) {
      const std::string key = "mixed." + std::to_string(id) + "." + std::to_string(next++);
      const uint64_t bytes = 4096 + rng() % (192 << 10), seed = rng();
      tensord::CreateOptions opts;
      opts.scope = rng() % 4 == 0 ? tensord::Scope::kSession : tensord::Scope::kGlobal;
      auto t = c->Create(key, tensord::DType::kUInt8, {static_cast<int64_t>(bytes)}, opts);
      if (!t.ok()) return Failed("create", t.status());
      Fill(static_cast<uint8_t*>(t->data()), bytes, seed);
      if (rng() % 8 == 0) {
        if (auto st = t->Abort(); !st.ok()) return Failed("abort", st);
        continue;
      }
      if (auto st = t->Seal(); !st.ok()) return Failed("seal", st);
      mine[key] = seed;
    } else if (kind < 7) {
      auto it = std::next(mine.begin(), static_cast<long>(rng() % mine.size()));
      auto lease = c->Get(it->first);
      if (!lease.ok()) return Failed("get", lease.status());
      std::vector<uint8_t> want(lease->nbytes());
      Fill(want.data(), want.size(), it->second);
      if (std::memcmp(want.data(), lease->data(), want.size()) != 0) {
        std::fprintf(stderr, "it_client: %s corrupted\n", it->first.c_str());
        return 1;
      }
    } else if (kind < 8) {
      std::vector<std::string> keys;
      for (int i = 0; i < 8; ++i) {
        keys.push_back(std::next(mine.begin(), static_cast<long>(rng() % mine.size()))->first);
      }
      keys.push_back("shared.0");
      auto batch = c->GetBatch(keys);
      if (!batch.ok()) return Failed("batch get", batch.status());
      for (auto& r : *batch) {
        if (!r.ok()) return Failed("batch item", r.status());
      }
      std::vector<tensord::Lease> leases;
      for (auto& r : *batch) leases.push_back(*std::move(r));
      if (auto st = c->ReleaseAll(leases); !st.ok()) return Failed("release all", st);
    } else {
      auto it = std::next(mine.begin(), static_cast<long>(rng() % mine.size()));
      if (auto st = c->Delete(it->first); !st.ok()) return Failed("delete", st);
      mine.erase(it);
    }
  }
  for (const auto& [key, seed] : mine) {
    auto st = c->Delete(key);
    if (!st.ok()) return Failed("final delete", st);
  }
  return 0;
}

// Key PREFIX.i holds Fill(seed + i).
int PutMany(const char* socket, const std::string& prefix, int count, uint64_t bytes,
            uint64_t seed) {
  auto c = ConnectOrDie(socket, "it-putmany");
  for (int i = 0; i < count; ++i) {
    const std::string key = prefix + "." + std::to_string(i);
    auto t = c->Create(key, tensord::DType::kUInt8, {static_cast<int64_t>(bytes)});
    if (!t.ok()) return Failed(key.c_str(), t.status());
    Fill(static_cast<uint8_t*>(t->data()), bytes, seed + static_cast<uint64_t>(i));
    if (auto st = t->Seal(); !st.ok()) return Failed("seal", st);
  }
  return 0;
}

int VerifyMany(const char* socket, const std::string& prefix, int count, uint64_t bytes,
               uint64_t seed, int start) {
  auto c = ConnectOrDie(socket, "it-verifymany");
  std::vector<uint8_t> want(bytes);
  for (int n = 0; n < count; ++n) {
    const int i = (start + n) % count;
    const std::string key = prefix + "." + std::to_string(i);
    auto lease = c->Get(key);
    if (!lease.ok()) return Failed(key.c_str(), lease.status());
    Fill(want.data(), bytes, seed + static_cast<uint64_t>(i));
    if (lease->nbytes() != bytes || std::memcmp(lease->data(), want.data(), bytes) != 0) {
      std::fprintf(stderr, "it_client: %s has wrong bytes\n", key.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

constexpr int kNoGpu = 77;

int GpuPut(const char* socket, const std::string& key, uint64_t bytes, uint64_t seed) {
  auto c = ConnectOrDie(socket, "it-gpuput");
  if (!c->gpu_usable()) return kNoGpu;
  tensord::CreateOptions opts;
  opts.tier = tensord::Tier::kGpu;
  auto t = c->Create(key, tensord::DType::kUInt8, {static_cast<int64_t>(bytes)}, opts);
  if (!t.ok()) return Failed("create", t.status());
  if (!t->on_gpu() || t->device() < 0) {
    std::fprintf(stderr, "it_client: a GPU Create returned a host location\n");
    return 2;
  }
  std::vector<uint8_t> host(bytes);
  Fill(host.data(), bytes, seed);
  const uint64_t hash = XXH3_64bits(host.data(), bytes);
  // Asynchronous on the default stream: Seal's event must cover it.
  if (auto st = tensord::cuda::SetDevice(t->device()); !st.ok()) return Failed("device", st);
  if (auto st = tensord::cuda::CopyAsync(t->data(), host.data(), bytes,
                                         tensord::cuda::CopyKind::kHostToDevice, nullptr);
      !st.ok()) {
    return Failed("copy", st);
  }
  if (auto st = t->Seal(); !st.ok()) return Failed("seal", st);
  std::printf("%016" PRIx64 "\n", hash);
  return 0;
}

int GpuVerify(const char* socket, const std::string& key, const std::string& expected, int reps) {
  auto c = ConnectOrDie(socket, "it-gpuverify");
  if (!c->gpu_usable()) return kNoGpu;
  for (int rep = 0; rep < reps; ++rep) {
    auto lease = c->Get(key, tensord::Tier::kGpu);
    if (!lease.ok()) return Failed("get", lease.status());
    if (!lease->on_gpu() || lease->device() < 0) {
      std::fprintf(stderr, "it_client: a GPU Get returned a host location\n");
      return 2;
    }
    std::vector<uint8_t> back(lease->nbytes());
    if (auto st = tensord::cuda::SetDevice(lease->device()); !st.ok()) return Failed("device", st);
    if (auto st = tensord::cuda::Copy(back.data(), lease->data(), back.size(),
                                      tensord::cuda::CopyKind::kDeviceToHost);
        !st.ok()) {
      return Failed("copy back", st);
    }
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016" PRIx64, XXH3_64bits(back.data(), back.size()));
    if (expected != hex) {
      std::fprintf(stderr, "it_client: GPU checksum %s, expected %s\n", hex, expected.c_str());
      return 1;
    }
#if TENSORD_HAVE_CUDA
    uint64_t host_sum = 0, device_sum = 0;
    for (uint8_t b : back) host_sum += b;
    if (int err = TensordDeviceByteSum(lease->data(), lease->nbytes(), &device_sum); err != 0) {
      std::fprintf(stderr, "it_client: kernel failed with CUDA error %d\n", err);
      return 1;
    }
    if (host_sum != device_sum) {
      std::fprintf(stderr, "it_client: kernel byte sum %" PRIu64 ", copy-back sum %" PRIu64 "\n",
                   device_sum, host_sum);
      return 1;
    }
#endif
  }
  const std::vector<uint64_t> opens = c->GpuIpcOpens();
  for (uint64_t n : opens) {
    if (n > 1) {
      std::fprintf(stderr, "it_client: an arena's IPC handle was opened %" PRIu64 " times\n", n);
      return 2;
    }
  }
  std::printf("opens");
  for (uint64_t n : opens) std::printf(" %" PRIu64, n);
  std::printf("\n");
  return 0;
}

int GpuHold(const char* socket, const std::string& key) {
  auto c = ConnectOrDie(socket, "it-gpuhold");
  if (!c->gpu_usable()) return kNoGpu;
  auto lease = c->Get(key, tensord::Tier::kGpu);
  if (!lease.ok()) return Failed("get", lease.status());
  std::printf("READY\n");
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::hours(1));
  return 0;
}

// Every namespace-scoped call once, over the generated stub alone, as any client written from
// the proto would make them; prints each call's gRPC code name.
int Raw(const char* socket, const std::string& ns) {
  using tensord::v1::Tensord;
  namespace v1 = tensord::v1;
  auto channel =
      grpc::CreateChannel(absl::StrCat("unix:", socket), grpc::InsecureChannelCredentials());
  std::unique_ptr<Tensord::Stub> stub = Tensord::NewStub(channel);
  auto code = [](const char* call, const grpc::Status& st) {
    static const char* kNames[] = {"OK",
                                   "CANCELLED",
                                   "UNKNOWN",
                                   "INVALID_ARGUMENT",
                                   "DEADLINE_EXCEEDED",
                                   "NOT_FOUND",
                                   "ALREADY_EXISTS",
                                   "PERMISSION_DENIED",
                                   "RESOURCE_EXHAUSTED",
                                   "FAILED_PRECONDITION",
                                   "ABORTED",
                                   "OUT_OF_RANGE",
                                   "UNIMPLEMENTED",
                                   "INTERNAL",
                                   "UNAVAILABLE",
                                   "DATA_LOSS",
                                   "UNAUTHENTICATED"};
    std::printf("%s %s\n", call, kNames[st.error_code()]);
  };
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  };
  grpc::ClientContext attach_ctx;
  attach_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto attach = stub->Attach(&attach_ctx, v1::AttachRequest());
  v1::AttachEvent ev;
  std::string session;
  if (attach->Read(&ev)) {
    session = ev.welcome().session_id();
    code("Attach", grpc::Status::OK);
    std::printf("segments %d\n", ev.welcome().segments_size());
  } else {
    code("Attach", attach->Finish());
  }
  {
    v1::CreateRequest r;
    r.set_session_id(session);
    r.set_ns(ns);
    r.set_key("raw");
    r.set_dtype(v1::UINT8);
    r.add_shape(4096);
    r.set_nbytes(4096);
    v1::CreateResponse out;
    code("Create", stub->Create(ctx().get(), r, &out));
  }
  {
    v1::GetRequest r;
    r.set_session_id(session);
    r.set_ns(ns);
    r.add_keys("secret");
    v1::GetResponse out;
    code("Get", stub->Get(ctx().get(), r, &out));
  }
  {
    v1::StatRequest r;
    r.set_ns(ns);
    r.set_key("secret");
    v1::TensorMeta out;
    code("Stat", stub->Stat(ctx().get(), r, &out));
  }
  {
    v1::ListRequest r;
    r.set_ns(ns);
    v1::ListResponse out;
    code("List", stub->List(ctx().get(), r, &out));
  }
  {
    v1::DeleteRequest r;
    r.set_session_id(session);
    r.set_ns(ns);
    r.set_key("secret");
    v1::DeleteResponse out;
    code("Delete", stub->Delete(ctx().get(), r, &out));
  }
  {
    v1::EvictRequest r;
    r.set_ns(ns);
    r.set_key("secret");
    v1::EvictResponse out;
    code("Evict", stub->Evict(ctx().get(), r, &out));
  }
  {
    v1::HintRequest r;
    r.set_ns(ns);
    r.add_keys("secret");
    v1::HintResponse out;
    code("Hint", stub->Hint(ctx().get(), r, &out));
  }
  {
    v1::PrefetchRequest r;
    r.set_ns(ns);
    r.add_keys("secret");
    v1::PrefetchResponse out;
    code("Prefetch", stub->Prefetch(ctx().get(), r, &out));
  }
  {
    v1::GetStatsRequest r;
    v1::Stats out;
    code("GetStats", stub->GetStats(ctx().get(), r, &out));
    std::printf("tenants %d\n", out.tenants_size());
  }
  {
    v1::PingRequest r;
    v1::PingResponse out;
    code("Ping", stub->Ping(ctx().get(), r, &out));
  }
  attach_ctx.TryCancel();
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "put" && argc == 7) {
    return Put(argv[2], argv[3], std::stoull(argv[4]), std::stoull(argv[5]), argv[6]);
  }
  if (mode == "verify" && argc == 5) return Verify(argv[2], argv[3], argv[4]);
  if (mode == "hold" && argc == 4) return Hold(argv[2], argv[3]);
  if (mode == "raw" && argc == 4) return Raw(argv[2], argv[3]);
  if (mode == "gpuput" && argc == 6) {
    return GpuPut(argv[2], argv[3], std::stoull(argv[4]), std::stoull(argv[5]));
  }
  if (mode == "gpuverify" && argc == 6)
    return GpuVerify(argv[2], argv[3], argv[4], std::stoi(argv[5]));
  if (mode == "gpuhold" && argc == 4) return GpuHold(argv[2], argv[3]);
  if (mode == "mixed" && argc == 5) return Mixed(argv[2], std::stoi(argv[3]), std::stoi(argv[4]));
  if (mode == "putmany" && argc == 7) {
    return PutMany(argv[2], argv[3], std::stoi(argv[4]), std::stoull(argv[5]),
                   std::stoull(argv[6]));
  }
  if (mode == "verifymany" && argc == 8) {
    return VerifyMany(argv[2], argv[3], std::stoi(argv[4]), std::stoull(argv[5]),
                      std::stoull(argv[6]), std::stoi(argv[7]));
  }
  std::fprintf(stderr,
               "usage: it_client put|verify|hold|mixed|putmany|verifymany ... (see source)\n");
  return 3;
}
