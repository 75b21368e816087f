// swap_bench: the SSD tier against fio on the same file system, every figure in one run.
//   swap-out (migrator demotion of host tensors)  1, 16, 64 MiB tensors
//   swap-in  (Get of SSD-resident tensors, batches of up to 64 keys)
//     vs fio --ioengine=io_uring --direct=1 --bs=1M --iodepth=32, and fio psync, same file system
//   swap-out/in with compression=lossless (the codec stage: zstd), float32 activations (half
//   zeros, as after a ReLU; the rest normal): logical GB/s, and the ratio achieved
//   swap-in latency of one 16 MiB tensor (a Get)  vs  16 MiB / fio io_uring read bandwidth
//   the naive way: one ordinary file per tensor, buffered stdio writes (+ fsync so the data is
//   on the device and not in the page cache) and reads (after POSIX_FADV_DONTNEED)
// The store, host tier and SSD tier are the daemon's own, in this process (no gRPC: the
// latency is the swap path's). Usage: swap_bench [--dir DIR] [--total MiB] [--reps N]
// (default /var/tmp, 1024 MiB, 3; figures are medians of the reps).
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/random.h"
#include "daemon/store/store.h"

namespace tensord {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1 << 20;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

[[noreturn]] void Die(const std::string& what) {
  absl::FPrintF(stderr, "swap_bench: %s\n", what);
  std::exit(1);
}

void Check(const absl::Status& st, const std::string& what) {
  if (!st.ok()) Die(absl::StrCat(what, ": ", st.ToString()));
}

// Runs fio once and returns its bandwidth in bytes/s (terse output: field 7 is read KiB/s,
// field 48 write KiB/s).
double Fio(const std::string& file, uint64_t total, const std::string& engine, bool write) {
  const std::string cmd =
      absl::StrCat("fio --name=ref --filename=", file, " --size=", total, " --ioengine=", engine,
                   " --direct=1 --bs=1M --iodepth=", engine == "psync" ? 1 : 32,
                   " --rw=", write ? "write" : "read", " --output-format=terse 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) Die("cannot run fio");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  if (pclose(p) != 0) Die("fio failed (is it installed? deploy/install-deps.sh installs it)");
  std::vector<std::string> fields = absl::StrSplit(out, ';');
  const size_t index = write ? 47 : 6;
  if (fields.size() <= index) Die("unexpected fio output: " + out);
  return std::stod(fields[index]) * 1024;
}

store::CreateParams Params(const std::string& key, uint64_t bytes) {
  store::CreateParams p;
  p.key = key;
  p.dtype = DType::kUInt8;
  p.shape = {static_cast<int64_t>(bytes)};
  return p;
}

struct SwapFigures {
  double out_bps = 0, in_bps = 0;
  double ratio = 1;  // logical bytes / bytes on swap
};

// Float32 activations: half zeros (as after a ReLU), the rest normally distributed.
void FillActivations(uint8_t* p, uint64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (uint64_t i = 0; i + 4 <= size; i += 4) {
    const float f = (rng() & 1) != 0 ? std::abs(normal(rng)) : 0.0f;
    std::memcpy(p + i, &f, 4);
  }
}

// Fills a store with total/size tensors, demotes them all (timed), then Gets them back in
// batches (timed). Checks a few bytes of each tensor after the swap-in.
SwapFigures MeasureSwap(const std::string& dir, uint64_t total, uint64_t size, int reps,
                        codec::Compression compression = codec::Compression::kNone) {
  HostTierConfig host;
  host.capacity = total + 64 * kMiB;
  auto tier = tiers::HostTier::Create(host, "tensord.swapbench." + RandomHex(4) + ".");
  Check(tier.status(), "host tier");
  tiers::SsdTierConfig sc;
  sc.files = {{dir + "/tensord-bench.swap", total + 64 * kMiB}};
  sc.engine.fixed_regions = {{(*tier)->Address(0, 0), (*tier)->segments()[0].size}};
  auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
  Check(ssd.status(), "swap file");
  store::StoreOptions options;
  options.high_watermark = 0.001;  // demote everything
  options.low_watermark = 0.0;
  store::Store st((*tier).get(), options, (*ssd).get());
  const std::string session = *st.OpenSession("swap_bench");
  const int n = static_cast<int>(total / size);
  std::vector<std::string> keys;
  std::vector<double> outs, ins, ratios;
  for (int rep = 0; rep < reps; ++rep) {
    keys.clear();
    for (int i = 0; i < n; ++i) {
      keys.push_back(absl::StrCat("r", rep, ".t", i));
      store::CreateParams params = Params(keys.back(), size);
      params.compression = {compression};
      auto info = st.Create(session, params);
      Check(info.status(), "create");
      uint8_t* p = st.Address(info->location);
      if (compression == codec::Compression::kNone) {
        std::memset(p, i & 0xFF, size);
      } else {
        FillActivations(p, size, static_cast<uint32_t>(i));
        p[size - 1] = static_cast<uint8_t>(i & 0xFF);
      }
      std::memcpy(p, &i, sizeof(i));
      Check(st.Seal(session, "", keys.back()), "seal");
    }
    auto t0 = Clock::now();
    while (st.DemoteOnce() > 0) {
    }
    outs.push_back(static_cast<double>(total) / Seconds(Clock::now() - t0));
    if (st.Stats().used_bytes != 0) Die("demotion left tensors on the host");
    ratios.push_back(static_cast<double>(total) / static_cast<double>(st.Stats().ssd.used_bytes));

    t0 = Clock::now();
    std::vector<uint64_t> leases;
    for (size_t first = 0; first < keys.size(); first += 64) {
      std::span<const std::string> batch(keys.data() + first, std::min<size_t>(64, n - first));
      auto got = st.Get(session, "", batch, store::WantTier::kAny);
      Check(got.status(), "get");
      for (const store::GetOutcome& r : *got) {
        Check(r.status, "get " + r.info.key);
        leases.push_back(r.lease_id);
      }
    }
    ins.push_back(static_cast<double>(total) / Seconds(Clock::now() - t0));
    for (size_t first = 0; first < leases.size(); first += 64) {
      Check(st.Release(session, {leases.data() + first, std::min<size_t>(64, n - first)}),
            "release");
    }
    for (int i = 0; i < n; ++i) {
      auto info = st.Stat("", keys[i]);
      const uint8_t* p = st.Address(info->location);
      int head = -1;
      std::memcpy(&head, p, sizeof(head));
      if (head != i || p[size - 1] != (i & 0xFF)) Die("swap-in returned wrong bytes");
      Check(st.Delete(session, "", keys[i]), "delete");
    }
  }
  return {Median(outs), Median(ins), Median(ratios)};
}

// Where a swap-in's time goes: the Get, the SSD tier's read alone (engine + checksum), and the
// checksum alone; medians in µs.
struct Latency {
  double get_us = 0, tier_read_us = 0, checksum_us = 0;
};

// Median latency of a Get that swaps in one tensor of `size` bytes.
Latency MeasureSwapInLatency(const std::string& dir, uint64_t size, int samples) {
  HostTierConfig host;
  host.capacity = 2 * size + 16 * kMiB;
  auto tier = tiers::HostTier::Create(host, "tensord.swapbench." + RandomHex(4) + ".");
  Check(tier.status(), "host tier");
  tiers::SsdTierConfig sc;
  sc.files = {{dir + "/tensord-bench.swap", 2 * size}};
  sc.engine.fixed_regions = {{(*tier)->Address(0, 0), (*tier)->segments()[0].size}};
  auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
  Check(ssd.status(), "swap file");
  store::StoreOptions options;
  options.high_watermark = 0.001;
  options.low_watermark = 0.0;
  store::Store st((*tier).get(), options, (*ssd).get());
  const std::string session = *st.OpenSession("swap_bench");
  auto info = st.Create(session, Params("one", size));
  Check(info.status(), "create");
  std::memset(st.Address(info->location), 0x5A, size);
  Check(st.Seal(session, "", "one"), "seal");
  std::vector<double> us;
  const std::string key = "one";
  for (int i = 0; i < samples; ++i) {
    while (st.DemoteOnce() > 0) {  // the SSD copy stays clean: no write after the first
    }
    const auto t0 = Clock::now();
    auto got = st.Get(session, "", {&key, 1}, store::WantTier::kAny);
    us.push_back(Seconds(Clock::now() - t0) * 1e6);
    Check(got.status(), "get");
    Check((*got)[0].status, "get one");
    Check(st.Release(session, {&(*got)[0].lease_id, 1}), "release");
  }
  // The tier alone: a read of an extent of the same size into the same host arena.
  std::vector<double> tier_us, hash_us;
  auto extent = (*ssd)->Reserve(size, {});
  Check(extent.status(), "extent");
  auto scratch = (*tier)->Reserve(size, {});
  Check(scratch.status(), "host range");
  uint8_t* dst = (*tier)->Address(*scratch);
  std::memset(dst, 0x3C, size);
  const tiers::Transfer t{&*extent, dst};
  Check((*ssd)->WriteAll({&t, 1})[0], "extent write");
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    Check((*ssd)->ReadAll({&t, 1})[0], "extent read");
    tier_us.push_back(Seconds(Clock::now() - t0) * 1e6);
    t0 = Clock::now();
    volatile uint64_t h = XXH3_64bits(dst, size);
    (void)h;
    hash_us.push_back(Seconds(Clock::now() - t0) * 1e6);
  }
  (*ssd)->Free(*extent);
  return {Median(us), Median(tier_us), Median(hash_us)};
}

// One ordinary file per tensor: buffered stdio write + fsync, then buffered read after
// dropping the file's cached pages.
SwapFigures MeasureNaive(const std::string& dir, uint64_t total, uint64_t size, int reps) {
  const int n = static_cast<int>(total / size);
  std::vector<uint8_t> buf(size, 0x33);
  std::vector<double> outs, ins;
  for (int rep = 0; rep < reps; ++rep) {
    auto name = [&](int i) { return absl::StrCat(dir, "/tensord-bench-naive.", i, ".bin"); };
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      FILE* f = std::fopen(name(i).c_str(), "wb");
      if (f == nullptr || std::fwrite(buf.data(), 1, size, f) != size || std::fflush(f) != 0 ||
          fsync(fileno(f)) != 0) {
        Die("naive write failed");
      }
      std::fclose(f);
    }
    outs.push_back(static_cast<double>(total) / Seconds(Clock::now() - t0));
    for (int i = 0; i < n; ++i) {
      int fd = open(name(i).c_str(), O_RDONLY);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
    t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      FILE* f = std::fopen(name(i).c_str(), "rb");
      if (f == nullptr || std::fread(buf.data(), 1, size, f) != size) Die("naive read failed");
      std::fclose(f);
    }
    ins.push_back(static_cast<double>(total) / Seconds(Clock::now() - t0));
    for (int i = 0; i < n; ++i) unlink(name(i).c_str());
  }
  return {Median(outs), Median(ins)};
}

std::string CpuModel() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  char line[512];
  std::string model = "?";
  while (f != nullptr && std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "model name", 10) == 0) {
      model = std::string(line + 13);
      model.pop_back();
      break;
    }
  }
  if (f != nullptr) std::fclose(f);
  return model;
}

int Main(int argc, char** argv) {
  std::string dir = "/var/tmp";
  uint64_t total = 1024 * kMiB;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dir") {
      dir = argv[i + 1];
    } else if (flag == "--total") {
      total = std::stoull(argv[i + 1]) * kMiB;
    } else if (flag == "--reps") {
      reps = std::max(1, std::stoi(argv[i + 1]));
    } else {
      Die("usage: swap_bench [--dir DIR] [--total MiB] [--reps N]");
    }
  }
  if (total < 64 * kMiB || total % (64 * kMiB) != 0) Die("--total must be a multiple of 64");
  SetupLogging("warn").IgnoreError();

  const std::string fio_file = dir + "/tensord-bench.fio";
  std::vector<double> uw, ur, pw, pr;
  for (int rep = 0; rep < reps; ++rep) {
    uw.push_back(Fio(fio_file, total, "io_uring", true));
    ur.push_back(Fio(fio_file, total, "io_uring", false));
    pw.push_back(Fio(fio_file, total, "psync", true));
    pr.push_back(Fio(fio_file, total, "psync", false));
  }
  unlink(fio_file.c_str());
  const double uring_w = Median(uw), uring_r = Median(ur), psync_w = Median(pw),
               psync_r = Median(pr);

  absl::PrintF("machine: %s, %d cores; file system of %s; %d MiB per measurement, median of %d\n",
               CpuModel(), std::thread::hardware_concurrency(), dir, total / kMiB, reps);
  absl::PrintF(
      "fio (bs=1M, direct): io_uring QD32 write %.2f GB/s, read %.2f GB/s; "
      "psync write %.2f GB/s, read %.2f GB/s\n\n",
      uring_w / 1e9, uring_r / 1e9, psync_w / 1e9, psync_r / 1e9);
  absl::PrintF(
      "| tensor | swap-out GB/s | ÷ fio io_uring | ÷ fio psync | swap-in GB/s | "
      "÷ fio io_uring | ÷ fio psync | naive out / in GB/s | naive ÷ fio io_uring "
      "(out / in) |\n");
  absl::PrintF("|---|---|---|---|---|---|---|---|---|\n");
  for (uint64_t size : {kMiB, 16 * kMiB, 64 * kMiB}) {
    const SwapFigures t = MeasureSwap(dir, total, size, reps);
    const SwapFigures nv = MeasureNaive(dir, total, size, reps);
    absl::PrintF(
        "| %d MiB | %.2f | %.2f× | %.2f× | %.2f | %.2f× | %.2f× | %.2f / %.2f | "
        "%.2f× / %.2f× |\n",
        size / kMiB, t.out_bps / 1e9, t.out_bps / uring_w, t.out_bps / psync_w, t.in_bps / 1e9,
        t.in_bps / uring_r, t.in_bps / psync_r, nv.out_bps / 1e9, nv.in_bps / 1e9,
        nv.out_bps / uring_w, nv.in_bps / uring_r);
  }
  {
    const uint64_t size = 16 * kMiB;
    const SwapFigures t = MeasureSwap(dir, total, size, reps, codec::Compression::kLossless);
    absl::PrintF(
        "\n| compression=lossless, 16 MiB float32 activations | swap-out %.2f GB/s logical "
        "(%.2f× fio io_uring write) | swap-in %.2f GB/s logical (%.2f× fio io_uring read) | "
        "ratio %.2f× (logical ÷ bytes on swap) |\n",
        t.out_bps / 1e9, t.out_bps / uring_w, t.in_bps / 1e9, t.in_bps / uring_r, t.ratio);
  }
  unlink((dir + "/tensord-bench.swap").c_str());
  const uint64_t one = 16 * kMiB;
  const Latency lat = MeasureSwapInLatency(dir, one, 21);
  unlink((dir + "/tensord-bench.swap").c_str());
  const double floor_us = static_cast<double>(one) / uring_r * 1e6;
  absl::PrintF(
      "\n| swap-in latency, one 16 MiB tensor (Get, median of 21) | %.0f µs | "
      "16 MiB ÷ fio read bandwidth %.0f µs | %.2f× | target ≤ 1.2× + 200 µs = %.0f µs |\n",
      lat.get_us, floor_us, lat.get_us / floor_us, 1.2 * floor_us + 200);
  absl::PrintF(
      "| where it goes | SSD tier read alone (engine + checksum) %.0f µs | of which XXH3 "
      "checksum %.0f µs | store (executor, booking, lease) %.0f µs |\n",
      lat.tier_read_us, lat.checksum_us, lat.get_us - lat.tier_read_us);
  return 0;
}

}  // namespace
}  // namespace tensord

int main(int argc, char** argv) { return tensord::Main(argc, argv); }
