// trace_bench: replays a Mooncake-format KV-cache block trace (JSON lines: timestamp ms,
// input_length, output_length, hash_ids) against the eviction policies, and against the real
// store with a host tier of a given share of the trace's unique blocks and an SSD tier beneath.
//
// Each request is served the way a serving engine uses a prefix cache: it looks its blocks up
// in order, reads the leading run it finds (a prefix lookup stops at the first missing block),
// recomputes the rest and stores each new block with its predecessor as `parent`. Reported per
// policy and capacity (5%, 10%, 25% by default): block and prefix hit ratios per tier, the
// offline optimum (Belady, every block access counted, the trace's README definition) computed
// in the same run, and the policy's CPU time per access.
//
//   --mode policy   the policies alone (daemon/policy), capacity in blocks: hit ratios, Belady,
//                   and the CPU cost per access, also at 10^5 tracked tensors
//   --mode store    the daemon's store in this process: host tier (shared memory) + SSD tier
//                   (io_uring on --dir), the migrator running; arrivals from the trace's
//                   timestamps divided by --speedup (0: back to back), a service time of
//                   --compute-us per block recomputed. Every hit's bytes are checked.
//
//   --mode layers   no trace: a model reading 32 layers from SSD in order, prediction off/on
//
// Usage: trace_bench [--trace FILE] [--mode policy|store|both|layers] [--policies a,b]
//                    [--capacities 0.05,0.1,0.25] [--requests N] [--block-bytes B] [--dir DIR]
//                    [--speedup X] [--compute-us U] [--lookahead N] [--predict] [--tail-class]
//                    [--s3fifo-small F] [--ghost F] [--history F]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/logging.h"
#include "common/random.h"
#include "daemon/policy/eviction.h"
#include "daemon/store/store.h"
#include "nlohmann/json.hpp"

namespace tensord {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr uint32_t kBlockTokens = 512;

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Die(const std::string& what) {
  absl::FPrintF(stderr, "trace_bench: %s\n", what);
  std::exit(1);
}

void Check(const absl::Status& st, const std::string& what) {
  if (!st.ok()) Die(absl::StrCat(what, ": ", st.ToString()));
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Request {
  double t_ms = 0;
  std::vector<uint64_t> blocks;
  bool tail_partial = false;  // the last block holds fewer than 512 tokens
};

std::vector<Request> LoadTrace(const std::string& path, size_t limit) {
  std::ifstream in(path);
  if (!in) Die("cannot open " + path);
  std::vector<Request> out;
  std::string line;
  while (std::getline(in, line) && out.size() < limit) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("hash_ids")) Die("not a trace line: " + line);
    Request r;
    r.t_ms = j.value("timestamp", 0.0);
    r.blocks = j["hash_ids"].get<std::vector<uint64_t>>();
    r.tail_partial = j.value("input_length", uint64_t{0}) % kBlockTokens != 0;
    if (!r.blocks.empty()) out.push_back(std::move(r));
  }
  return out;
}

struct Ratios {
  uint64_t accesses = 0;
  uint64_t block_hits = 0, prefix_hits = 0;              // the first (fastest) tier
  uint64_t lower_block_hits = 0, lower_prefix_hits = 0;  // found below it (SSD): still no recompute
  double Block() const { return accesses ? double(block_hits) / double(accesses) : 0; }
  double Prefix() const { return accesses ? double(prefix_hits) / double(accesses) : 0; }
  double AnyPrefix() const {
    return accesses ? double(prefix_hits + lower_prefix_hits) / double(accesses) : 0;
  }
};

// --- The offline optimum: Belady's MIN over every block access, capacity in blocks.
Ratios Belady(const std::vector<Request>& trace, size_t capacity) {
  std::vector<uint64_t> seq;
  for (const Request& r : trace) seq.insert(seq.end(), r.blocks.begin(), r.blocks.end());
  constexpr size_t kNever = SIZE_MAX;
  std::vector<size_t> next(seq.size(), kNever);
  absl::flat_hash_map<uint64_t, size_t> last;
  for (size_t i = seq.size(); i-- > 0;) {
    auto [it, fresh] = last.try_emplace(seq[i], i);
    if (!fresh) {
      next[i] = it->second;
      it->second = i;
    }
  }
  absl::flat_hash_map<uint64_t, size_t> cached;          // block -> its next use
  std::priority_queue<std::pair<size_t, uint64_t>> far;  // (next use, block), lazy
  Ratios r;
  size_t i = 0;
  for (const Request& req : trace) {
    bool prefix = true;
    for (uint64_t b : req.blocks) {
      ++r.accesses;
      auto it = cached.find(b);
      const bool hit = it != cached.end();
      r.block_hits += hit;
      prefix = prefix && hit;
      r.prefix_hits += prefix;
      if (hit) {
        it->second = next[i];
      } else {
        while (cached.size() >= capacity) {
          auto [n, victim] = far.top();
          far.pop();
          auto v = cached.find(victim);
          if (v != cached.end() && v->second == n) cached.erase(v);
        }
        cached.emplace(b, next[i]);
      }
      far.emplace(next[i], b);
      ++i;
    }
  }
  return r;
}

// --- Policy mode: the policy alone, as the store drives it.
struct PolicyRun {
  Ratios ratios;
  double ns_per_access = 0;
  std::vector<policy::ClassLifetime> lifetimes;
};

policy::Footprint BlockFootprint(const Request& r, size_t i, bool tail_class) {
  const uint32_t space = tail_class && r.tail_partial && i + 1 == r.blocks.size() ? 1 : 0;
  return {space, 1, r.blocks[i] + 1, i == 0 ? 0 : r.blocks[i - 1] + 1};
}

PolicyRun ReplayPolicy(const std::vector<Request>& trace, const std::string& name, size_t capacity,
                       bool tail_class, const policy::PolicyOptions& po) {
  auto made = policy::MakeEvictionPolicy(name, po);
  Check(made.status(), "policy");
  policy::EvictionPolicy& p = **made;
  // Handles are block ids + 1 (never 0), as the store's are object addresses.
  absl::flat_hash_set<uint64_t> cached;
  PolicyRun run;
  std::vector<policy::Handle> victims;
  const auto t0 = SteadyClock::now();
  for (const Request& r : trace) {
    size_t prefix = 0;
    bool in_prefix = true;
    for (uint64_t b : r.blocks) {
      const bool hit = cached.contains(b);
      run.ratios.block_hits += hit;
      in_prefix = in_prefix && hit;
      prefix += in_prefix;
    }
    run.ratios.accesses += r.blocks.size();
    run.ratios.prefix_hits += prefix;
    for (size_t i = 0; i < prefix; ++i) p.Access(r.blocks[i] + 1);  // the prefix is read
    for (size_t i = prefix; i < r.blocks.size(); ++i) {             // the rest is stored
      if (cached.contains(r.blocks[i])) continue;                   // ALREADY_EXISTS
      while (cached.size() >= capacity) {
        victims.clear();
        p.Victims(policy::Demand{{}, 1}, [&](policy::Handle h) {
          victims.push_back(h);
          return policy::Verdict::kTake;
        });
        if (victims.empty()) Die("the policy offered no victim");
        for (policy::Handle h : victims) {
          p.Remove(h, policy::RemovalReason::kEvicted);
          cached.erase(h - 1);
        }
      }
      cached.insert(r.blocks[i]);
      p.Insert(r.blocks[i] + 1, BlockFootprint(r, i, tail_class));
    }
  }
  run.ns_per_access = Seconds(SteadyClock::now() - t0) * 1e9 / double(run.ratios.accesses);
  run.lifetimes = p.Lifetimes();
  return run;
}

// The policy's cost with 10^5 tracked tensors: 80% accesses, 20% inserts that evict one.
double PolicyCostAt(const std::string& name, size_t tracked, size_t ops) {
  auto p = *policy::MakeEvictionPolicy(name);
  std::mt19937_64 rng(7);
  std::vector<policy::Handle> live;  // what is tracked, and where each is in `live`
  absl::flat_hash_map<policy::Handle, size_t> where;
  auto add = [&](policy::Handle h) {
    p->Insert(h, {0, 1, h, h % 64 == 1 ? 0 : h - 1});  // chains of 64
    where[h] = live.size();
    live.push_back(h);
  };
  policy::Handle next = 1;
  while (next <= tracked) add(next++);
  const auto t0 = SteadyClock::now();
  for (size_t i = 0; i < ops; ++i) {
    if (rng() % 5 != 0) {
      p->Access(live[rng() % live.size()]);
      continue;
    }
    policy::Handle victim = 0;
    p->Victims(policy::Demand{{}, 1}, [&](policy::Handle h) {
      victim = h;
      return policy::Verdict::kTake;
    });
    p->Remove(victim, policy::RemovalReason::kEvicted);
    const size_t at = where[victim];
    where[live.back()] = at;
    live[at] = live.back();
    live.pop_back();
    where.erase(victim);
    add(next++);
  }
  return Seconds(SteadyClock::now() - t0) * 1e9 / double(ops);
}

// --- Store mode: the daemon's store with host and SSD tiers.
struct StoreRun {
  Ratios ratios;  // first tier: host; lower: SSD
  double wall_s = 0, cpu_us_per_access = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0;
  uint64_t promoted_bytes = 0, demoted_bytes = 0;
  uint64_t wrong_bytes = 0;
  store::Counters counters;
};

struct StoreFlags {
  std::string dir = "/var/tmp";
  uint64_t block_bytes = 16 << 10;
  double speedup = 0;
  double compute_us = 0;
  size_t lookahead = 0;  // hint the blocks of this many queued requests ahead (0: no hints)
  bool predict = false;  // the daemon's prediction (its successors would mix into the hints)
};

std::string BlockKey(uint64_t b) { return absl::StrCat("b", b); }

StoreRun ReplayStore(const std::vector<Request>& trace, const std::string& name, double share,
                     uint64_t unique, const StoreFlags& f) {
  HostTierConfig host;
  // The host tier holds `share` of the unique blocks at its high watermark.
  constexpr double kHigh = 0.97, kLow = 0.93;
  host.capacity =
      std::max<uint64_t>(4 << 20, uint64_t(double(unique) * share * double(f.block_bytes) / kHigh));
  host.prefault = false;
  auto tier = tiers::HostTier::Create(host, "tensord.tracebench." + RandomHex(4) + ".");
  Check(tier.status(), "host tier");
  tiers::SsdTierConfig sc;
  const uint64_t swap = (unique + 1024) * (f.block_bytes + 4096) * 2;
  sc.files = {{f.dir + "/tensord-trace-bench.swap", swap}};
  sc.engine.fixed_regions = {{(*tier)->Address(0, 0), (*tier)->segments()[0].size}};
  auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
  Check(ssd.status(), "swap file");
  store::StoreOptions options;
  options.eviction = name;
  options.predict = f.predict;
  options.high_watermark = kHigh;
  options.low_watermark = kLow;
  store::Store st((*tier).get(), options, (*ssd).get());
  absl::Notification stop;
  std::thread migrator([&] { st.RunMigrator(&stop); });
  const std::string session = *st.OpenSession("trace_bench");

  StoreRun run;
  std::vector<double> latencies;
  const auto start = SteadyClock::now();
  const double cpu0 = CpuSeconds();
  const double t_first = trace.front().t_ms;
  std::vector<std::string> keys;
  size_t hinted_upto = 0;  // requests [0, hinted_upto) were hinted
  auto arrival = [&](const Request& r) {
    return start + std::chrono::duration_cast<SteadyClock::duration>(
                       std::chrono::duration<double, std::milli>((r.t_ms - t_first) /
                                                                 std::max(f.speedup, 1e-9)));
  };
  for (size_t ri = 0; ri < trace.size(); ++ri) {
    const Request& r = trace[ri];
    // The scheduler's look-ahead: the blocks of the requests queued behind this one (arrived
    // by now), in the order they will be read.
    if (f.lookahead > 0) {
      std::vector<std::string> ahead;
      const auto now = SteadyClock::now();
      hinted_upto = std::max(hinted_upto, ri);
      while (hinted_upto < std::min(trace.size(), ri + 1 + f.lookahead) &&
             (f.speedup <= 0 || arrival(trace[hinted_upto]) <= now)) {
        for (uint64_t b : trace[hinted_upto].blocks) ahead.push_back(BlockKey(b));
        ++hinted_upto;
      }
      if (!ahead.empty()) Check(st.Hint("trace", ahead).status(), "hint");
    }
    if (f.speedup > 0) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<SteadyClock::duration>(
                      std::chrono::duration<double, std::milli>((r.t_ms - t_first) / f.speedup)));
    }
    const auto arrived =
        f.speedup > 0
            ? start + std::chrono::duration_cast<SteadyClock::duration>(
                          std::chrono::duration<double, std::milli>((r.t_ms - t_first) / f.speedup))
            : SteadyClock::now();
    // Look up: where each block is now.
    size_t prefix = 0, host_prefix = 0;
    bool in_prefix = true, in_host = true;
    for (uint64_t b : r.blocks) {
      auto info = st.Stat("trace", BlockKey(b));
      const bool on_host = info.ok() && info->on_host;
      const bool found = info.ok() && (info->on_host || info->on_ssd);
      run.ratios.block_hits += on_host;
      run.ratios.lower_block_hits += found && !on_host;
      in_prefix = in_prefix && found;
      in_host = in_host && on_host;
      prefix += in_prefix;
      host_prefix += in_host;
    }
    run.ratios.accesses += r.blocks.size();
    run.ratios.prefix_hits += host_prefix;
    run.ratios.lower_prefix_hits += prefix - host_prefix;
    // Read the prefix (SSD blocks come up) and check its bytes.
    keys.clear();
    for (size_t i = 0; i < prefix; ++i) keys.push_back(BlockKey(r.blocks[i]));
    size_t usable = prefix;
    if (!keys.empty()) {
      auto got =
          st.Get(session, "trace", keys, store::WantTier::kHost, absl::Now() + absl::Seconds(30));
      Check(got.status(), "get");
      std::vector<uint64_t> leases;
      for (size_t i = 0; i < got->size(); ++i) {
        const store::GetOutcome& g = (*got)[i];
        if (!g.status.ok()) {  // evicted between the look-up and the read: recompute from here
          usable = std::min(usable, i);
          continue;
        }
        uint64_t stamp = 0;
        std::memcpy(&stamp, st.Address(g.info.location), sizeof(stamp));
        run.wrong_bytes += stamp != r.blocks[i];
        leases.push_back(g.lease_id);
      }
      if (!leases.empty()) Check(st.Release(session, leases), "release");
    }
    // Recompute and store the rest.
    if (f.compute_us > 0 && usable < r.blocks.size()) {
      std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(
          f.compute_us * double(r.blocks.size() - usable)));
    }
    for (size_t i = usable; i < r.blocks.size(); ++i) {
      store::CreateParams p;
      p.ns = "trace";
      p.key = BlockKey(r.blocks[i]);
      p.dtype = DType::kUInt8;
      p.shape = {int64_t(f.block_bytes)};
      p.durability = store::Durability::kCache;
      if (i > 0) p.parent = BlockKey(r.blocks[i - 1]);
      auto info = st.Create(session, p, absl::Now() + absl::Seconds(30));
      if (info.status().code() == absl::StatusCode::kAlreadyExists) continue;
      Check(info.status(), "create");
      uint8_t* dst = st.Address(info->location);
      std::memcpy(dst, &r.blocks[i], sizeof(uint64_t));
      std::memset(dst + sizeof(uint64_t), int(r.blocks[i] & 0xFF), 64);
      Check(st.Seal(session, "trace", p.key), "seal");
    }
    latencies.push_back(Seconds(SteadyClock::now() - arrived) * 1e3);
  }
  run.wall_s = Seconds(SteadyClock::now() - start);
  run.cpu_us_per_access = (CpuSeconds() - cpu0) * 1e6 / double(run.ratios.accesses);
  std::sort(latencies.begin(), latencies.end());
  run.latency_p50_ms = latencies[latencies.size() / 2];
  run.latency_p99_ms = latencies[latencies.size() * 99 / 100];
  const store::StoreStats stats = st.Stats();
  run.counters = stats.counters;
  run.promoted_bytes = stats.counters.promoted_bytes;
  run.demoted_bytes = stats.counters.demoted_bytes;
  st.CloseSession(session);
  stop.Notify();
  migrator.join();
  return run;
}

// --- Layers mode: a model reads its layers one by one, every pass, from a host tier that holds
// half of them (the SSD the rest): the predictor's case. With prediction off every Get of a
// cycle larger than the tier is a swap-in; with it on the next layer comes up while this one
// computes.
struct LayerRun {
  double from_ssd = 0;  // share of Gets that read the SSD themselves
  double get_p50_ms = 0, get_mean_ms = 0, wall_s = 0;
  store::Counters counters;
};

LayerRun ReplayLayers(bool predict, const StoreFlags& f, int layers, int passes,
                      uint64_t layer_bytes) {
  HostTierConfig host;
  host.capacity = uint64_t(layers) * layer_bytes / 2;
  host.prefault = false;
  auto tier = tiers::HostTier::Create(host, "tensord.layerbench." + RandomHex(4) + ".");
  Check(tier.status(), "host tier");
  tiers::SsdTierConfig sc;
  sc.files = {{f.dir + "/tensord-layer-bench.swap", uint64_t(layers) * (layer_bytes + 4096) * 2}};
  sc.engine.fixed_regions = {{(*tier)->Address(0, 0), (*tier)->segments()[0].size}};
  auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
  Check(ssd.status(), "swap file");
  store::StoreOptions options;
  options.predict = predict;
  store::Store st((*tier).get(), options, (*ssd).get());
  absl::Notification stop;
  std::thread migrator([&] { st.RunMigrator(&stop); });
  const std::string session = *st.OpenSession("layer_bench");
  for (int i = 0; i < layers; ++i) {
    store::CreateParams p;
    p.key = absl::StrCat("model.layer.", i);
    p.dtype = DType::kUInt8;
    p.shape = {int64_t(layer_bytes)};
    auto info = st.Create(session, p, absl::Now() + absl::Seconds(30));
    Check(info.status(), "create");
    std::memset(st.Address(info->location), i & 0xFF, layer_bytes);
    Check(st.Seal(session, "", p.key), "seal");
  }
  const auto t0 = SteadyClock::now();
  uint64_t wrong = 0, from_ssd = 0;
  std::vector<double> gets;
  for (int pass = 0; pass < passes; ++pass) {
    for (int i = 0; i < layers; ++i) {
      std::vector<std::string> k = {absl::StrCat("model.layer.", i)};
      const uint64_t read = st.Stats().ssd.bytes_read;
      const auto g0 = SteadyClock::now();
      auto got = st.Get(session, "", k, store::WantTier::kHost, absl::Now() + absl::Seconds(30));
      gets.push_back(Seconds(SteadyClock::now() - g0) * 1e3);
      from_ssd += st.Stats().ssd.bytes_read != read;
      Check(got.status(), "get");
      Check((*got)[0].status, "get " + k[0]);
      wrong += st.Address((*got)[0].info.location)[layer_bytes - 1] != (i & 0xFF);
      Check(st.Release(session, {&(*got)[0].lease_id, 1}), "release");
      if (f.compute_us > 0) {
        std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(f.compute_us));
      }
    }
  }
  LayerRun run;
  run.wall_s = Seconds(SteadyClock::now() - t0);
  run.counters = st.Stats().counters;
  run.from_ssd = double(from_ssd) / double(gets.size());
  double sum = 0;
  for (double g : gets) sum += g;
  run.get_mean_ms = sum / double(gets.size());
  std::sort(gets.begin(), gets.end());
  run.get_p50_ms = gets[gets.size() / 2];
  if (wrong != 0) Die("a layer was served with wrong bytes");
  st.CloseSession(session);
  stop.Notify();
  migrator.join();
  return run;
}

std::vector<std::string> Split(const std::string& s) { return absl::StrSplit(s, ','); }

int Main(int argc, char** argv) {
  std::string trace_path = "../shared/data/mooncake_synthetic_trace.jsonl";
  std::string mode = "both";
  std::vector<std::string> policies = {"lru",          "lru+chain", "s3fifo",
                                       "s3fifo+chain", "slru",      "slru+chain"};
  std::vector<double> capacities = {0.05, 0.10, 0.25};
  size_t limit = SIZE_MAX;
  bool tail_class = false;
  policy::PolicyOptions po;
  StoreFlags sf;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--trace") {
      trace_path = value();
    } else if (flag == "--mode") {
      mode = value();
    } else if (flag == "--policies") {
      policies = Split(value());
    } else if (flag == "--capacities") {
      capacities.clear();
      for (const std::string& c : Split(value())) capacities.push_back(std::stod(c));
    } else if (flag == "--requests") {
      limit = std::stoull(value());
    } else if (flag == "--block-bytes") {
      sf.block_bytes = std::stoull(value());
    } else if (flag == "--dir") {
      sf.dir = value();
    } else if (flag == "--speedup") {
      sf.speedup = std::stod(value());
    } else if (flag == "--compute-us") {
      sf.compute_us = std::stod(value());
    } else if (flag == "--s3fifo-small") {
      po.s3fifo_small = std::stod(value());
    } else if (flag == "--ghost") {
      po.ghost_factor = std::stod(value());
    } else if (flag == "--history") {
      po.history_factor = std::stod(value());
    } else if (flag == "--predict") {
      sf.predict = true;
    } else if (flag == "--lookahead") {
      sf.lookahead = std::stoull(value());
    } else if (flag == "--tail-class") {
      tail_class = true;
    } else {
      Die("unknown flag " + flag + " (see the header of tests/bench/trace_bench.cc)");
    }
  }
  Check(SetupLogging("warn"), "logging");
  if (mode == "layers") {
    constexpr int kLayers = 32, kPasses = 4;
    constexpr uint64_t kLayerBytes = 4 << 20;
    absl::PrintF(
        "\n## A model reading %d layers of %d MiB in order, %d passes, host tier = half "
        "of them, SSD on %s, %g us of compute per layer\n\n| prediction | Gets reading SSD |"
        " Get p50 / mean ms | predicted | used | late | wasted | wall s |\n"
        "|---|---|---|---|---|---|---|---|\n",
        kLayers, kLayerBytes >> 20, kPasses, sf.dir, sf.compute_us);
    for (bool predict : {false, true}) {
      const LayerRun run = ReplayLayers(predict, sf, kLayers, kPasses, kLayerBytes);
      const store::Counters& c = run.counters;
      absl::PrintF("| %s | %.3f | %.2f / %.2f | %d | %d | %d | %d | %.2f |\n",
                   predict ? "on" : "off", run.from_ssd, run.get_p50_ms, run.get_mean_ms,
                   c.lookahead_predicted, c.lookahead_used, c.lookahead_late, c.lookahead_wasted,
                   run.wall_s);
    }
    return 0;
  }
  const std::vector<Request> trace = LoadTrace(trace_path, limit);
  absl::flat_hash_set<uint64_t> unique_set;
  uint64_t accesses = 0;
  for (const Request& r : trace) {
    unique_set.insert(r.blocks.begin(), r.blocks.end());
    accesses += r.blocks.size();
  }
  const uint64_t unique = unique_set.size();
  absl::PrintF("trace: %s: %d requests, %d block accesses, %d unique blocks\n", trace_path,
               trace.size(), accesses, unique);

  if (mode == "policy" || mode == "both") {
    absl::PrintF(
        "\n## Policies alone (capacity in blocks; a request reads its cached prefix and stores "
        "the rest%s)\n\n",
        tail_class ? "; partial last blocks in their own class" : "");
    absl::PrintF(
        "| capacity | policy | block hit | prefix hit | prefix vs lru | optimum block"
        " | optimum prefix | ns/access |\n|---|---|---|---|---|---|---|---|\n");
    for (double share : capacities) {
      const size_t cap = std::max<size_t>(1, size_t(double(unique) * share));
      const Ratios opt = Belady(trace, cap);
      double lru_prefix = 0;
      for (const std::string& name : policies) {
        const PolicyRun run = ReplayPolicy(trace, name, cap, tail_class, po);
        if (name == "lru") lru_prefix = run.ratios.Prefix();
        absl::PrintF("| %.0f%% (%d) | %s | %.3f | %.3f | %s | %.3f | %.3f | %.0f |\n", share * 100,
                     cap, name, run.ratios.Block(), run.ratios.Prefix(),
                     lru_prefix > 0 ? absl::StrFormat("%.3f", run.ratios.Prefix() / lru_prefix)
                                    : std::string("-"),
                     opt.Block(), opt.Prefix(), run.ns_per_access);
      }
    }
    absl::PrintF(
        "\n## Policy cost at 10^5 tracked tensors (80%% accesses, 20%% insert + evict)"
        "\n\n| policy | ns per operation |\n|---|---|\n");
    for (const std::string& name : policies) {
      absl::PrintF("| %s | %.0f |\n", name, PolicyCostAt(name, 100'000, 2'000'000));
    }
  }
  if (mode == "store" || mode == "both") {
    absl::PrintF(
        "\n## The store: host tier (%d KiB blocks) + SSD tier on %s, speedup %s, %g us of "
        "compute per recomputed block, look-ahead %s\n\n",
        sf.block_bytes >> 10, sf.dir,
        sf.speedup > 0 ? absl::StrCat(sf.speedup) : "none (back to back)", sf.compute_us,
        sf.lookahead > 0 ? absl::StrCat(sf.lookahead, " queued requests") : "off");
    absl::PrintF(
        "| capacity | policy | host block hit | host prefix hit | vs lru | SSD block hit |"
        " host+SSD prefix hit | latency p50 / p99 ms | promoted MiB | demoted MiB |"
        " CPU us/access | wall s | wrong | prefetch issued / used / wasted / late |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (double share : capacities) {
      double lru_prefix = 0;
      for (const std::string& name : policies) {
        const StoreRun run = ReplayStore(trace, name, share, unique, sf);
        if (name == "lru") lru_prefix = run.ratios.Prefix();
        const store::Counters& c = run.counters;
        const double issued = double(std::max<uint64_t>(1, c.lookahead_issued));
        absl::PrintF(
            "| %.0f%% | %s | %.3f | %.3f | %s | %.3f | %.3f | %.2f / %.2f | %.0f | %.0f | %.2f | "
            "%.1f | %d | %d / %d (%.0f%%) / %d / %d (%.1f%%) |\n",
            share * 100, name, run.ratios.Block(), run.ratios.Prefix(),
            lru_prefix > 0 ? absl::StrFormat("%.3f", run.ratios.Prefix() / lru_prefix)
                           : std::string("-"),
            double(run.ratios.lower_block_hits) / double(run.ratios.accesses),
            run.ratios.AnyPrefix(), run.latency_p50_ms, run.latency_p99_ms,
            double(run.promoted_bytes) / (1 << 20), double(run.demoted_bytes) / (1 << 20),
            run.cpu_us_per_access, run.wall_s, run.wrong_bytes, c.lookahead_issued,
            c.lookahead_used, 100.0 * double(c.lookahead_used) / issued, c.lookahead_wasted,
            c.lookahead_late, 100.0 * double(c.lookahead_late) / issued);
        if (run.wrong_bytes != 0) Die("a hit served wrong bytes");
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace tensord

int main(int argc, char** argv) { return tensord::Main(argc, argv); }
