// gpu_bench: the GPU tier's figures against references measured in the same run.
//   promotion host -> GPU (Get want=GPU of a host tensor)  vs  cudaMemcpy from pinned memory
//   demotion GPU -> host (Evict of a GPU-only tensor)       vs  cudaMemcpy to pinned memory
//   IPC opens per arena after every Get of the run          (target: exactly 1)
//   Get round trip of a GPU-resident tensor                 vs  a host-resident one, and Ping
// Usage: gpu_bench [--reps N] [--iters N]. Starts its own tensord (4 GiB host tier, 4 GiB GPU
// arena) in a temporary directory. Exits 77, measuring nothing, where there is no usable GPU.
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/cuda.h"
#include "tensord/client.h"
#include "tests/bench/bench_daemon.h"

namespace {

using tensord::bench::Clock;
using tensord::bench::CpuModel;
using tensord::bench::Micros;
using tensord::bench::OwnDaemon;
using tensord::bench::Percentile;
namespace cuda = tensord::cuda;

template <typename T>
T Check(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    absl::FPrintF(stderr, "gpu_bench: %s: %s\n", what, v.status().ToString());
    std::exit(1);
  }
  return *std::move(v);
}

void Check(const absl::Status& st, const char* what) {
  if (!st.ok()) {
    absl::FPrintF(stderr, "gpu_bench: %s: %s\n", what, st.ToString());
    std::exit(1);
  }
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Row {
  uint64_t bytes;
  double up_gbs, ref_up_gbs, down_gbs, ref_down_gbs;
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, iters = 5000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--reps") reps = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--iters") iters = std::stoi(argv[i + 1]);
  }
  std::string why;
  if (cuda::DeviceCount(&why) == 0) {
    absl::FPrintF(stderr, "gpu_bench: no usable GPU (%s); nothing measured\n", why);
    return 77;
  }
  OwnDaemon own;
  const char* bin_env = std::getenv("TENSORD_BIN");  // a bundle run elsewhere
  const std::string bin = bin_env != nullptr && *bin_env != '\0' ? bin_env : TENSORD_BIN;
  const std::string socket = own.Start(bin, {"--host-capacity", "4GiB", "--set", "gpu.size=4GiB",
                                             "--set", "gpu.devices=0", "--log-level", "warn"});
  if (socket.empty()) {
    absl::FPrintF(stderr, "gpu_bench: cannot start %s\n", bin);
    return 1;
  }
  tensord::ClientOptions opts;
  opts.socket_path = socket;
  opts.client_name = "gpu_bench";
  opts.ns = "bench";
  auto client = Check(tensord::Client::Connect(opts), "connect");
  tensord::Client& c = *client;
  if (!c.gpu_usable()) {
    absl::FPrintF(stderr, "gpu_bench: the daemon has no GPU tier this process can open\n");
    return 1;
  }
  const cuda::DeviceInfo dev = Check(cuda::GetDeviceInfo(0), "device info");

  // 1-2. Bandwidth, alternating tensord and the reference so both see the same machine.
  std::vector<Row> rows;
  for (uint64_t bytes : {uint64_t{64} << 20, uint64_t{256} << 20, uint64_t{1} << 30}) {
    auto pinned = Check(cuda::PinnedBuffer::Allocate(bytes), "pinned buffer");
    auto device = Check(cuda::DeviceMemory::Allocate(0, bytes), "device buffer");
    std::memset(pinned.get(), 0x5A, bytes);
    {
      auto t =
          Check(c.Create("up", tensord::DType::kUInt8, {static_cast<int64_t>(bytes)}), "create");
      std::memset(t.data(), 0x3C, bytes);
      Check(t.Seal(), "seal");
    }
    std::vector<double> up, ref_up, down, ref_down;
    for (int rep = 0; rep < reps + 1; ++rep) {
      auto t0 = Clock::now();
      Check(cuda::Copy(device.get(), pinned.get(), bytes, cuda::CopyKind::kHostToDevice), "ref up");
      auto t1 = Clock::now();
      Check(cuda::Copy(pinned.get(), device.get(), bytes, cuda::CopyKind::kDeviceToHost),
            "ref down");
      auto t2 = Clock::now();
      // Promotion: a host tensor without a GPU copy, leased on the GPU.
      auto lease = Check(c.Get("up", tensord::Tier::kGpu, 0), "get gpu");
      auto t3 = Clock::now();
      Check(lease.Release(), "release");
      Check(c.Evict("up").status(), "drop the GPU copy");
      // Demotion: a tensor created on the GPU, evicted to host.
      tensord::CreateOptions on_gpu;
      on_gpu.tier = tensord::Tier::kGpu;
      on_gpu.device = 0;
      auto d =
          Check(c.Create("down", tensord::DType::kUInt8, {static_cast<int64_t>(bytes)}, on_gpu),
                "create gpu");
      Check(cuda::SetDevice(d.device()), "set device");
      Check(cuda::MemsetAsync(d.data(), 0x77, bytes, nullptr), "memset");
      Check(d.Seal(), "seal gpu");
      auto t4 = Clock::now();
      const std::string outcome = Check(c.Evict("down"), "evict");
      auto t5 = Clock::now();
      if (outcome != "demoted to host") {
        absl::FPrintF(stderr, "gpu_bench: evict said '%s'\n", outcome);
        return 1;
      }
      Check(c.Delete("down"), "delete");
      if (rep == 0) continue;  // warm-up
      ref_up.push_back(Seconds(t1 - t0));
      ref_down.push_back(Seconds(t2 - t1));
      up.push_back(Seconds(t3 - t2));
      down.push_back(Seconds(t5 - t4));
    }
    Check(c.Delete("up"), "delete up");
    const double b = static_cast<double>(bytes) / 1e9;
    rows.push_back(Row{bytes, b / Percentile(up, 0.5), b / Percentile(ref_up, 0.5),
                       b / Percentile(down, 0.5), b / Percentile(ref_down, 0.5)});
  }

  // 3-4. Get round trip: GPU-resident vs host-resident 4 KiB tensors, and Ping.
  {
    tensord::CreateOptions on_gpu;
    on_gpu.tier = tensord::Tier::kGpu;
    on_gpu.device = 0;
    auto g = Check(c.Create("small.gpu", tensord::DType::kFloat16, {2048}, on_gpu), "create");
    Check(g.Seal(), "seal");
    auto h = Check(c.Create("small.host", tensord::DType::kFloat16, {2048}), "create");
    Check(h.Seal(), "seal");
  }
  std::vector<double> gpu_us, host_us, ping_us;
  std::vector<tensord::Lease> held;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    Check(c.Ping(), "ping");
    auto t1 = Clock::now();
    auto lg = c.Get("small.gpu", tensord::Tier::kGpu);
    auto t2 = Clock::now();
    auto lh = c.Get("small.host", tensord::Tier::kHost);
    auto t3 = Clock::now();
    held.push_back(Check(std::move(lg), "get gpu"));
    held.push_back(Check(std::move(lh), "get host"));
    if (held.size() >= 256) {
      Check(c.ReleaseAll(held), "release");
      held.clear();
    }
    if (i >= iters / 10) {
      ping_us.push_back(Micros(t1 - t0));
      gpu_us.push_back(Micros(t2 - t1));
      host_us.push_back(Micros(t3 - t2));
    }
  }
  Check(c.ReleaseAll(held), "release");
  const std::vector<uint64_t> opens = c.GpuIpcOpens();

  absl::PrintF("machine: %s, %d cores; GPU 0: %s (sm_%d%d); median of %d reps\n\n", CpuModel(),
               std::thread::hardware_concurrency(), dev.name, dev.cc_major, dev.cc_minor, reps);
  absl::PrintF(
      "| tensor | promotion host→GPU GB/s | cudaMemcpy H2D pinned GB/s | ratio | demotion GPU→host "
      "GB/s | cudaMemcpy D2H pinned GB/s | ratio | target |\n|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    absl::PrintF("| %d MiB | %.2f | %.2f | %.2f× | %.2f | %.2f | %.2f× | ≥ 0.9× |\n", r.bytes >> 20,
                 r.up_gbs, r.ref_up_gbs, r.up_gbs / r.ref_up_gbs, r.down_gbs, r.ref_down_gbs,
                 r.down_gbs / r.ref_down_gbs);
  }
  const double g50 = Percentile(gpu_us, 0.5), h50 = Percentile(host_us, 0.5);
  const double p50 = Percentile(ping_us, 0.5);
  absl::PrintF("\n| measurement | value | reference (same run) | ratio |\n|---|---|---|---|\n");
  absl::PrintF("| Get p50, GPU-resident 4 KiB | %.1f µs | host-resident %.1f µs | %.2f× |\n", g50,
               h50, g50 / h50);
  absl::PrintF("| Get p50, GPU-resident 4 KiB | %.1f µs | empty gRPC call %.1f µs | %.2f× |\n", g50,
               p50, g50 / p50);
  std::string opens_text;
  for (uint64_t n : opens) opens_text += absl::StrFormat("%s%d", opens_text.empty() ? "" : ", ", n);
  absl::PrintF("| IPC opens per arena after %d GPU Gets | %s | target 1 | – |\n",
               static_cast<int>(gpu_us.size()) + 3 * reps, opens_text);
  return 0;
}
