// host_bench: the host tier's figures against references measured in the same run.
//   Get round trip of a resident tensor (p50/p99)   vs  an empty gRPC call (Ping), same socket
//   batched Get of 256 keys                          vs  256 single Gets
//   put of a 256 MiB tensor (Create + write + Seal)  vs  memcpy into pre-faulted memory
//   daemon CPU per Get of a 64 MiB tensor            vs  the CPU a copy of it would take
// Usage: host_bench [--socket PATH] [--iters N]. Without --socket it starts its own tensord
// (1 GiB host tier) in a temporary directory and stops it at the end.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "tensord/client.h"
#include "tests/bench/bench_daemon.h"

namespace {

using tensord::bench::Clock;
using tensord::bench::CpuModel;
using tensord::bench::Micros;
using tensord::bench::OwnDaemon;
using tensord::bench::Percentile;

void Check(const absl::Status& st, const char* what) {
  if (!st.ok()) {
    absl::FPrintF(stderr, "host_bench: %s: %s\n", what, st.ToString());
    std::exit(1);
  }
}

// Returns utime + stime of `pid` in seconds, from /proc/<pid>/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket;
  int iters = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--socket") socket = argv[i + 1];
    if (std::string(argv[i]) == "--iters") iters = std::stoi(argv[i + 1]);
  }
  OwnDaemon own;
  if (socket.empty()) {
    socket = own.Start(TENSORD_BIN, {"--host-capacity", "1GiB", "--log-level", "warn"});
    if (socket.empty()) {
      absl::FPrintF(stderr, "host_bench: cannot start %s\n", TENSORD_BIN);
      return 1;
    }
  }
  tensord::ClientOptions opts;
  opts.socket_path = socket;
  opts.client_name = "host_bench";
  opts.ns = "bench";
  auto client = tensord::Client::Connect(opts);
  Check(client.status(), "connect");
  tensord::Client& c = **client;

  // 1. Get round trip vs Ping, interleaved so both see the same machine noise.
  {
    auto t = c.Create("small", tensord::DType::kFloat16, {2048});
    Check(t.status(), "create small");
    Check(t->Seal(), "seal small");
  }
  std::vector<double> get_us, ping_us;
  std::vector<tensord::Lease> held;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    Check(c.Ping(), "ping");
    auto t1 = Clock::now();
    auto lease = c.Get("small");
    auto t2 = Clock::now();
    Check(lease.status(), "get");
    held.push_back(*std::move(lease));
    if (held.size() == 256) {
      Check(c.ReleaseAll(held), "release");
      held.clear();
    }
    if (i >= iters / 10) {  // warm-up excluded
      ping_us.push_back(Micros(t1 - t0));
      get_us.push_back(Micros(t2 - t1));
    }
  }
  Check(c.ReleaseAll(held), "release");
  held.clear();

  // 2. Batched Get of 256 keys.
  std::vector<std::string> keys;
  for (int i = 0; i < 256; ++i) {
    keys.push_back("batch." + std::to_string(i));
    auto t = c.Create(keys.back(), tensord::DType::kFloat16, {2048});
    Check(t.status(), "create batch");
    Check(t->Seal(), "seal batch");
  }
  std::vector<double> batch_us;
  for (int i = 0; i < std::max(50, iters / 100); ++i) {
    auto t0 = Clock::now();
    auto batch = c.GetBatch(keys);
    auto t1 = Clock::now();
    Check(batch.status(), "batch get");
    std::vector<tensord::Lease> leases;
    for (auto& r : *batch) {
      Check(r.status(), "batch item");
      leases.push_back(*std::move(r));
    }
    Check(c.ReleaseAll(leases), "release batch");
    batch_us.push_back(Micros(t1 - t0));
  }

  // 3. Put of 256 MiB vs memcpy into pre-faulted memory, alternating, median of 7.
  const size_t big = size_t{256} << 20;
  std::vector<uint8_t> src(big), dst(big);
  for (size_t i = 0; i < big; i += 4096) {
    src[i] = static_cast<uint8_t>(i >> 12);
    dst[i] = 1;  // pre-fault
  }
  std::vector<double> put_s, memcpy_s;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), big);
    auto t1 = Clock::now();
    auto t = c.Create("big", tensord::DType::kUInt8, {static_cast<int64_t>(big)});
    Check(t.status(), "create big");
    std::memcpy(t->data(), src.data(), big);
    Check(t->Seal(), "seal big");
    auto t2 = Clock::now();
    memcpy_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    put_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    Check(c.Delete("big"), "delete big");
  }

  // 4. Daemon CPU per Get of a 64 MiB tensor: a copy would cost at least size / memcpy rate.
  double cpu_per_get_us = -1;
  const size_t mid = size_t{64} << 20;
  {
    auto t = c.Create("mid", tensord::DType::kUInt8, {static_cast<int64_t>(mid)});
    Check(t.status(), "create mid");
    Check(t->Seal(), "seal mid");
  }
  const int mid_gets = 2000;
  if (own.pid > 0) {
    const double cpu0 = CpuSeconds(own.pid);
    for (int i = 0; i < mid_gets; ++i) {
      auto lease = c.Get("mid");
      Check(lease.status(), "get mid");
      held.push_back(*std::move(lease));
      if (held.size() == 256) {
        Check(c.ReleaseAll(held), "release");
        held.clear();
      }
    }
    Check(c.ReleaseAll(held), "release");
    cpu_per_get_us = (CpuSeconds(own.pid) - cpu0) * 1e6 / mid_gets;
  }

  const double memcpy_gbs = static_cast<double>(big) / Percentile(memcpy_s, 0.5) / 1e9;
  const double put_gbs = static_cast<double>(big) / Percentile(put_s, 0.5) / 1e9;
  const double copy_us = static_cast<double>(mid) / (memcpy_gbs * 1e9) * 1e6;
  const double get50 = Percentile(get_us, 0.5), ping50 = Percentile(ping_us, 0.5);
  const double get99 = Percentile(get_us, 0.99), ping99 = Percentile(ping_us, 0.99);
  const double batch50 = Percentile(batch_us, 0.5);

  absl::PrintF("machine: %s, %d cores; %d Get samples, 7 put reps\n\n", CpuModel(),
               std::thread::hardware_concurrency(), static_cast<int>(get_us.size()));
  absl::PrintF("| measurement | tensord | reference (same run) | ratio | target |\n");
  absl::PrintF("|---|---|---|---|---|\n");
  absl::PrintF(
      "| Get round trip p50, resident 4 KiB tensor | %.1f µs | empty gRPC call %.1f µs | "
      "%.2f× | ≤ 1.5× |\n",
      get50, ping50, get50 / ping50);
  absl::PrintF("| Get round trip p99 | %.1f µs | empty gRPC call %.1f µs | %.2f× | – |\n", get99,
               ping99, get99 / ping99);
  absl::PrintF(
      "| batched Get, 256 keys, p50 | %.1f µs (%.2f µs/key) | 256 single Gets %.1f µs "
      "| %.3f× | – |\n",
      batch50, batch50 / 256, 256 * get50, batch50 / (256 * get50));
  absl::PrintF(
      "| put 256 MiB (Create + write + Seal), median | %.2f GB/s | memcpy to pre-faulted "
      "memory %.2f GB/s | %.2f× | ≥ 0.8× |\n",
      put_gbs, memcpy_gbs, put_gbs / memcpy_gbs);
  if (cpu_per_get_us >= 0) {
    absl::PrintF(
        "| daemon CPU per Get of a 64 MiB tensor | %.1f µs | one copy of it %.0f µs | "
        "%.4f× | 0 bytes copied |\n",
        cpu_per_get_us, copy_us, cpu_per_get_us / copy_us);
    absl::PrintF(
        "\nbytes copied by the daemon per Get: 0 (the lease is the creator's shared-memory "
        "range; daemon CPU per Get bounds any copy to < %.0f bytes)\n",
        cpu_per_get_us * 1e-6 * memcpy_gbs * 1e9);
  }
  return 0;
}
