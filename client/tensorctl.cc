// tensorctl: the operator's command line for a running tensord. Exit codes: 0 success,
// 1 the daemon refused the request (message on stderr), 2 usage or local I/O error.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "tensord/client.h"

namespace {

int Fail(const absl::Status& st) {
  std::cerr << "tensorctl: " << absl::StatusCodeToString(st.code()) << ": " << st.message() << "\n";
  return 1;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return "(" + absl::StrJoin(shape, ",") + ")";
}

const char* TierName(tensord::Tier t) {
  return t == tensord::Tier::kHost     ? "host"
         : t == tensord::Tier::kGpu    ? "gpu"
         : t == tensord::Tier::kRemote ? "remote"
                                       : "ssd";
}

void PrintStatsOf(const tensord::Stats* stats) {
  absl::PrintF("uptime %.1fs  sessions %d  leases %d  objects %d\n", stats->uptime_ms / 1000.0,
               stats->sessions, stats->leases, stats->objects);
  absl::PrintF("\n%-6s %-8s %12s %12s %12s %10s %10s %9s %10s\n", "TIER", "PRESENT", "CAPACITY",
               "USED", "PINNED", "HITS", "MISSES", "HIT%", "EVICTIONS");
  for (const auto& t : stats->tiers) {
    const char* name = TierName(t.tier);
    if (!t.present) {
      absl::PrintF("%-6s %-8s\n", name, "no");
      continue;
    }
    absl::PrintF("%-6s %-8s %12s %12s %12s %10d %10d %8.1f%% %10d\n", name, "yes",
                 tensord::FormatBytes(t.capacity_bytes), tensord::FormatBytes(t.used_bytes),
                 tensord::FormatBytes(t.pinned_bytes), t.hits, t.misses, 100 * t.hit_ratio,
                 t.evictions);
  }
  absl::PrintF("\n%-18s %-5s %-7s %12s %12s %10s %13s %8s\n", "POOL", "TIER", "KIND", "CAPACITY",
               "USED", "BLOCK", "BLOCKS", "FRAG");
  for (const auto& p : stats->pools) {
    const std::string blocks =
        p.block_size ? absl::StrCat(p.blocks_used, "/", p.blocks_total) : std::string("-");
    absl::PrintF("%-18s %-5s %-7s %12s %12s %10s %13s %7.1f%%\n", p.name, TierName(p.tier), p.kind,
                 tensord::FormatBytes(p.capacity_bytes), tensord::FormatBytes(p.used_bytes),
                 p.block_size ? tensord::FormatBytes(p.block_size) : "-", blocks,
                 100 * p.fragmentation);
  }
  // What the eviction policy learned of each pool's copies (pools it saw nothing of omitted).
  absl::PrintF("\n%-18s %-5s %10s %9s %9s %11s %11s\n", "LIFETIME", "TIER", "COPIES", "REUSE@1",
               "REUSE@2", "IDLE MEAN", "IDLE P50");
  for (const auto& p : stats->pools) {
    if (p.lifetime_copies == 0) continue;
    const auto seconds = [&](double s) {
      return p.idle_samples ? absl::StrFormat("%.3gs", s) : std::string("-");
    };
    absl::PrintF("%-18s %-5s %10d %8.1f%% %8.1f%% %11s %11s\n", p.name, TierName(p.tier),
                 p.lifetime_copies, 100 * p.reuse_after_1, 100 * p.reuse_after_2,
                 seconds(p.idle_mean_s), seconds(p.idle_median_s));
  }
  if (!stats->tenants.empty()) {  // the operator sees every tenant, a tenant itself
    absl::PrintF("\n%-18s %8s %8s %12s %12s %12s %12s %8s %8s\n", "TENANT", "SESSIONS", "LEASES",
                 "HOST", "HOST USED", "SSD", "GPU", "QUOTA", "DENIED");
    for (const tensord::TenantStats& t : stats->tenants) {
      absl::PrintF("%-18s %8d %8d %12s %12s %12s %12s %8d %8d\n",
                   t.tenant.empty() ? "(shared)" : t.tenant, t.sessions, t.leases,
                   tensord::FormatBytes(t.host_capacity_bytes),
                   tensord::FormatBytes(t.host_used_bytes), tensord::FormatBytes(t.ssd_bytes),
                   tensord::FormatBytes(t.gpu_bytes), t.quota_rejections, t.denied_requests);
    }
  }
  const tensord::PressureStats& pr = stats->pressure;
  const std::string mem = pr.mem_available_bytes ? tensord::FormatBytes(*pr.mem_available_bytes)
                                                 : std::string("not available");
  const std::string psi = pr.psi_some_avg10
                              ? absl::StrFormat("some %.2f%% full %.2f%%", *pr.psi_some_avg10,
                                                pr.psi_full_avg10.value_or(0))
                              : std::string("not available");
  absl::PrintF("\nPRESSURE  host %.1f%% used (watermarks %.0f%%/%.0f%%)  MemAvailable %s  PSI %s\n",
               100 * pr.host_used_ratio, 100 * pr.high_watermark, 100 * pr.low_watermark, mem, psi);
  for (const tensord::GpuStats& g : stats->gpus) {
    absl::PrintF("GPU       %s (%s): arena %s, %s used; device %s free of %s; host %s\n", g.gpu,
                 g.model, tensord::FormatBytes(g.arena_bytes), tensord::FormatBytes(g.used_bytes),
                 tensord::FormatBytes(g.device_free_bytes),
                 tensord::FormatBytes(g.device_total_bytes),
                 g.host_pinned ? "pinned" : "NOT pinned (slower copies)");
  }
  if (const tensord::SwapStats& w = stats->swap; w.present) {
    absl::PrintF(
        "SWAP      engine %s%s  read %s in %d ops (%.0f MB/s)  written %s in %d ops "
        "(%.0f MB/s)\n          io errors %d  checksum failures %d  largest free %s  "
        "fragmentation %.1f%%\n",
        w.engine, w.degraded ? " DEGRADED" : "", tensord::FormatBytes(w.bytes_read), w.reads,
        w.read_mbps, tensord::FormatBytes(w.bytes_written), w.writes, w.write_mbps, w.io_errors,
        w.checksum_failures, tensord::FormatBytes(w.largest_free_bytes), 100 * w.fragmentation);
    if (w.ram_capacity_bytes > 0) {
      absl::PrintF(
          "          compressed RAM %s of %s: %d tensors of %s (%.2fx)  reads %d  written back "
          "%d (%s)\n",
          tensord::FormatBytes(w.ram_used_bytes), tensord::FormatBytes(w.ram_capacity_bytes),
          w.ram_entries, tensord::FormatBytes(w.ram_logical_bytes),
          w.ram_used_bytes == 0 ? 0.0 : double(w.ram_logical_bytes) / double(w.ram_used_bytes),
          w.ram_reads, w.ram_writebacks, tensord::FormatBytes(w.ram_writeback_bytes));
    }
  }
  if (const tensord::RemoteStats& r = stats->remote; r.present) {
    absl::PrintF(
        "REMOTE    redis %s%s (%d node%s)%s  lookups %d: %d hits, %d misses\n"
        "          put %d tensors, %s (%.0f MB/s, %.2f ms each)  got %d, %s (%.0f MB/s, %.2f ms "
        "each)\n          stored %s in %d entries  redis memory %s of %s  errors %d  checksum "
        "failures %d  redirections %d\n",
        r.addresses, r.cluster ? " cluster" : "", r.nodes, r.nodes == 1 ? "" : "s",
        r.degraded ? " DEGRADED" : "", r.lookups, r.hits, r.misses, r.puts,
        tensord::FormatBytes(r.put_bytes), r.put_mbps, r.put_latency_ms, r.gets,
        tensord::FormatBytes(r.get_bytes), r.get_mbps, r.get_latency_ms,
        tensord::FormatBytes(r.stored_bytes), r.entries, tensord::FormatBytes(r.redis_used_bytes),
        r.redis_max_bytes == 0 ? std::string("no limit") : tensord::FormatBytes(r.redis_max_bytes),
        r.errors, r.checksum_failures, r.redirections);
    if (r.pending_deletes + r.deletes_replayed + r.deletes_dropped > 0) {
      absl::PrintF("          deletes waiting for Redis %d, replayed %d, dropped %d\n",
                   r.pending_deletes, r.deletes_replayed, r.deletes_dropped);
    }
    if (r.degraded && !r.last_error.empty())
      absl::PrintF("          last error: %s\n", r.last_error);
  }
  if (stats->codecs.empty()) return;
  absl::PrintF("\n%-10s %8s %11s %7s %9s %8s %9s %7s %6s %6s %9s\n", "CODEC", "ENCODES", "BYTES IN",
               "RATIO", "ENC GB/s", "DECODES", "DEC GB/s", "FAILED", "TRIED", "OVER", "MAX ERR");
  for (const tensord::CodecStats& k : stats->codecs) {
    absl::PrintF("%-10s %8d %11s %6.2fx %9.2f %8d %9.2f %7d %6d %6d %8.3g%%\n", k.codec, k.encodes,
                 tensord::FormatBytes(k.encode_in_bytes), k.ratio, k.encode_gbps, k.decodes,
                 k.decode_gbps, k.decode_failures, k.tried, k.over_budget, 100 * k.max_rel_rmse);
  }
}

int PrintStats(tensord::Client& c, bool json) {
  if (json) {
    auto text = c.GetStatsJson();
    if (!text.ok()) return Fail(text.status());
    absl::PrintF("%s\n", *text);
    return 0;
  }
  auto stats = c.GetStats();
  if (!stats.ok()) return Fail(stats.status());
  PrintStatsOf(&*stats);
  absl::PrintF("\nCOUNTERS\n");
  for (const auto& [name, value] : stats->counters) absl::PrintF("  %-20s %d\n", name, value);
  return 0;
}

// A live view: the stats table every interval, with per-second rates of the busiest counters.
int Top(tensord::Client& c, int interval_ms, int count) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  std::optional<tensord::Stats> last;
  int frames = 0;
  absl::Status st = c.WatchStats(std::chrono::milliseconds(interval_ms), [&](const auto& s) {
    if (tty) absl::PrintF("\x1b[H\x1b[2J");  // home, clear
    absl::PrintF("tensorctl top: every %d ms (Ctrl-C quits)\n", interval_ms);
    PrintStatsOf(&s);
    if (last.has_value()) {
      const double secs = std::max(1e-3, (s.uptime_ms - last->uptime_ms) / 1000.0);
      auto rate = [&](const char* name) {
        auto now = s.counters.find(name), was = last->counters.find(name);
        if (now == s.counters.end() || was == last->counters.end()) return 0.0;
        return static_cast<double>(now->second - was->second) / secs;
      };
      absl::PrintF(
          "\nRATES/s   gets %.0f  creates %.0f  evictions %.0f  promotions %.0f  "
          "demotions %.0f  swap in %s/s  out %s/s\n",
          rate("gets"), rate("creates"), rate("evictions"), rate("promotions"), rate("demotions"),
          tensord::FormatBytes(
              static_cast<uint64_t>((s.swap.bytes_read - last->swap.bytes_read) / secs)),
          tensord::FormatBytes(
              static_cast<uint64_t>((s.swap.bytes_written - last->swap.bytes_written) / secs)));
      if (!s.gpus.empty()) {
        absl::PrintF("          gpu up %s/s  down %s/s  gpu gets %.0f\n",
                     tensord::FormatBytes(static_cast<uint64_t>(rate("gpu_promoted_bytes"))),
                     tensord::FormatBytes(static_cast<uint64_t>(rate("gpu_demoted_bytes"))),
                     rate("gpu_gets"));
      }
    }
    std::fflush(stdout);
    last = s;
    return count <= 0 || ++frames < count;
  });
  return st.ok() ? 0 : Fail(st);
}

int PrintHealth(tensord::Client& c) {
  auto health = c.Health();
  if (!health.ok()) return Fail(health.status());
  bool serving = false;
  for (const auto& [service, state] : *health) {
    absl::PrintF("%-20s %s\n", service.empty() ? "(overall)" : service, state);
    if (service.empty()) serving = state == "SERVING";
  }
  return serving ? 0 : 1;
}

int PrintTensor(tensord::Client& c, const std::string& key) {
  auto t = c.Stat(key);
  if (!t.ok()) return Fail(t.status());
  absl::PrintF(
      "key        %s\ndtype      %s\nshape      %s\nsize       %s (%d bytes)\n"
      "pool       %s\ndurability %s\nscope      %s\nsealed     %s\nleases     %d\n"
      "location   %s arena %d offset %d\ncreated    %d (unix ms)\nttl        %s\n",
      t->key, tensord::DTypeName(t->dtype), ShapeText(t->shape), tensord::FormatBytes(t->nbytes),
      t->nbytes, t->pool, t->durability == tensord::Durability::kDurable ? "durable" : "cache",
      t->scope == tensord::Scope::kSession ? "session" : "global", t->sealed ? "yes" : "no",
      t->leases, TierName(t->location.tier), t->location.arena, t->location.offset,
      t->created_unix_ms, t->ttl_ms > 0 ? absl::StrCat(t->ttl_ms, " ms") : "none");
  std::string policy(tensord::CompressionName(t->compression));
  if (t->compression == tensord::Compression::kLossy) {
    absl::StrAppend(&policy, absl::StrFormat(" (budget %.3g%%", 100 * t->error_budget),
                    t->codecs.empty() ? "" : absl::StrCat(", ", absl::StrJoin(t->codecs, ", ")),
                    ")");
  }
  absl::PrintF("compress   %s\n", policy);
  if (t->ssd_stored_bytes > 0) {
    absl::PrintF("swap copy  %s, %s (%.2fx)%s\n", t->ssd_codec.empty() ? "none" : t->ssd_codec,
                 tensord::FormatBytes(t->ssd_stored_bytes),
                 double(t->nbytes) / double(t->ssd_stored_bytes),
                 t->ssd_rel_rmse > 0 ? absl::StrFormat(", error %.3g%%", 100 * t->ssd_rel_rmse)
                                     : std::string());
  }
  if (t->remote_stored_bytes > 0) {
    absl::PrintF("remote     %s in Redis\n", tensord::FormatBytes(t->remote_stored_bytes));
  }
  if (!t->parent.empty()) absl::PrintF("parent     %s\n", t->parent);
  return 0;
}

// Filters of `ls`; empty or zero: no filter.
struct ListFilter {
  std::string durability;  // "cache" or "durable"
  std::string tier;        // "host" or "ssd"
  std::string pool;
  bool leased = false;
  uint64_t min_bytes = 0;
};

int PrintList(tensord::Client& c, const std::string& prefix, uint32_t limit, const ListFilter& f) {
  auto list = c.List(prefix, limit);
  if (!list.ok()) return Fail(list.status());
  absl::PrintF("%-40s %-9s %-20s %10s %-18s %-8s %-5s %-6s %s\n", "KEY", "DTYPE", "SHAPE", "SIZE",
               "POOL", "DURABLE", "TIER", "SEALED", "LEASES");
  for (const auto& t : *list) {
    const char* durability = t.durability == tensord::Durability::kDurable ? "durable" : "cache";
    const char* tier = TierName(t.location.tier);
    if ((!f.durability.empty() && f.durability != durability) ||
        (!f.tier.empty() && f.tier != tier) || (!f.pool.empty() && f.pool != t.pool) ||
        (f.leased && t.leases == 0) || t.nbytes < f.min_bytes) {
      continue;
    }
    absl::PrintF("%-40s %-9s %-20s %10s %-18s %-8s %-5s %-6s %d\n", t.key,
                 tensord::DTypeName(t.dtype), ShapeText(t.shape), tensord::FormatBytes(t.nbytes),
                 t.pool, durability, tier, t.sealed ? "yes" : "no", t.leases);
  }
  return 0;
}

int Put(tensord::Client& c, const std::string& file, const std::string& key,
        const std::string& dtype_name, std::vector<int64_t> shape,
        const tensord::CreateOptions& opts) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) {
    std::cerr << "tensorctl: cannot read " << file << "\n";
    return 2;
  }
  const auto size = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  auto dtype = tensord::ParseDType(dtype_name);
  if (!dtype.ok()) return Fail(dtype.status());
  if (shape.empty()) {
    const auto item = static_cast<int64_t>(tensord::ItemSize(*dtype));
    if (size % item != 0) {
      std::cerr << "tensorctl: " << size << " bytes are not a whole number of " << dtype_name
                << "\n";
      return 2;
    }
    shape = {size / item};
  }
  auto t = c.Create(key, *dtype, shape, opts);
  if (!t.ok()) return Fail(t.status());
  if (t->nbytes() != static_cast<uint64_t>(size)) {
    std::cerr << "tensorctl: file has " << size << " bytes, the shape needs " << t->nbytes()
              << "\n";
    return 2;  // the WritableTensor aborts itself
  }
  if (!in.read(static_cast<char*>(t->data()), size)) {
    std::cerr << "tensorctl: read error on " << file << "\n";
    return 2;
  }
  if (auto st = t->Seal(); !st.ok()) return Fail(st);
  absl::PrintF("put %s: %s %s, %s, pool %s\n", key, tensord::DTypeName(*dtype), ShapeText(shape),
               tensord::FormatBytes(size), t->info().pool);
  return 0;
}

int GetToFile(tensord::Client& c, const std::string& key, const std::string& file) {
  auto lease = c.Get(key);
  if (!lease.ok()) return Fail(lease.status());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out.write(lease->data_as<char>(), static_cast<std::streamsize>(lease->nbytes()))) {
    std::cerr << "tensorctl: cannot write " << file << "\n";
    return 2;
  }
  absl::PrintF("got %s: %s %s, %s\n", key, tensord::DTypeName(lease->info().dtype),
               ShapeText(lease->info().shape), tensord::FormatBytes(lease->nbytes()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tensorctl: inspect and drive a running tensord"};
  app.require_subcommand(1);
  tensord::ClientOptions options;
  options.client_name = "tensorctl";
  int deadline_ms = 10000;
  app.add_option("-s,--socket", options.socket_path,
                 "daemon socket (default $TENSORD_SOCKET or ./run/tensord.sock)");
  app.add_option("-n,--namespace", options.ns, "namespace of the keys");
  app.add_option("--deadline-ms", deadline_ms, "deadline of each call");

  auto* stats = app.add_subcommand("stats", "show tier, pool and counter statistics");
  bool json = false;
  stats->add_flag("--json", json, "print GetStats as JSON (proto field names)");
  int interval_ms = 1000, count = 0;
  auto* top = app.add_subcommand("top", "live view of the statistics (WatchStats)");
  top->add_option("-i,--interval-ms", interval_ms, "refresh interval (100 to 60000, default 1000)");
  top->add_option("--count", count, "stop after this many frames (default: until Ctrl-C)");
  auto* health = app.add_subcommand("health", "grpc.health.v1 status, overall and per tier");
  auto* stat = app.add_subcommand("stat", "show one tensor's metadata");
  auto* evict = app.add_subcommand("evict", "move an unleased tensor one tier down now");
  std::vector<std::string> keys;
  std::string to_tier = "host";
  auto* prefetch =
      app.add_subcommand("prefetch", "promote tensors to host (or the GPU) without leasing them");
  prefetch->add_option("keys", keys, "keys to promote")->required();
  prefetch->add_option("--tier", to_tier, "host (default) or gpu")
      ->check(CLI::IsMember({"host", "gpu"}));
  uint32_t hint_ttl_ms = 0;
  auto* hint = app.add_subcommand(
      "hint", "say which tensors the next requests read, in order: kept and promoted ahead");
  hint->add_option("keys", keys, "keys, in the order they will be read")->required();
  hint->add_option("--tier", to_tier, "host (default) or gpu")
      ->check(CLI::IsMember({"host", "gpu"}));
  hint->add_option("--ttl-ms", hint_ttl_ms, "how long the hint lasts (default: the daemon's, 30 s)")
      ->check(CLI::Range(0, 3'600'000));
  std::string prefix;
  uint32_t limit = 0;
  auto* ls = app.add_subcommand("ls", "list tensors");
  ls->add_option("prefix", prefix, "key prefix");
  ls->add_option("--limit", limit, "at most this many (default 1000)");
  ListFilter filter;
  std::string min_size;
  ls->add_option("--durability", filter.durability, "only cache or durable tensors")
      ->check(CLI::IsMember({"cache", "durable"}));
  ls->add_option("--tier", filter.tier, "only tensors on host, on the GPU only, or on ssd only")
      ->check(CLI::IsMember({"host", "gpu", "ssd"}));
  ls->add_option("--pool", filter.pool, "only tensors of this pool");
  ls->add_flag("--leased", filter.leased, "only tensors someone holds a lease on");
  ls->add_option("--min-size", min_size, "only tensors of at least this size, e.g. 16MiB");
  std::string file, key, dtype = "uint8", pool;
  std::vector<int64_t> shape;
  bool cache = false;
  auto* put = app.add_subcommand("put", "store a file's bytes as a tensor");
  put->add_option("file", file)->required();
  put->add_option("key", key)->required();
  put->add_option("--dtype", dtype, "element type (default uint8)");
  put->add_option("--shape", shape, "dimensions (default: 1-D over the file)")->delimiter(',');
  put->add_option("--pool", pool, "pool class (default: best fit)");
  put->add_flag("--cache", cache, "CACHE durability (evictable) instead of DURABLE");
  std::string compression = "default";
  put->add_option("--compression", compression,
                  "how its swap copy may be stored: default (the pool class's), none, lossless, "
                  "or lossy within --error-budget")
      ->check(CLI::IsMember({"default", "none", "lossless", "lossy"}));
  double error_budget = 0;
  put->add_option("--error-budget", error_budget,
                  "lossy: the largest relative RMSE of the round trip, e.g. 0.01");
  std::vector<std::string> codecs;
  put->add_option("--codecs", codecs, "lossy: the codecs allowed, e.g. fp8_e4m3,int8")
      ->delimiter(',');
  std::string parent;
  put->add_option("--parent", parent,
                  "the key this tensor continues (e.g. a KV chain's previous block)");
  auto* get = app.add_subcommand("get", "write a tensor's bytes to a file");
  get->add_option("key", key)->required();
  get->add_option("file", file)->required();
  auto* rm = app.add_subcommand("rm", "delete a tensor");
  rm->add_option("key", key)->required();
  stat->add_option("key", key)->required();
  evict->add_option("key", key)->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; any usage error: 2
  }

  options.deadline = std::chrono::milliseconds(deadline_ms);
  auto client = tensord::Client::Connect(options);
  if (!client.ok()) return Fail(client.status());
  tensord::Client& c = **client;
  if (*stats) return PrintStats(c, json);
  if (*top) return Top(c, interval_ms, count);
  if (*health) return PrintHealth(c);
  if (*stat) return PrintTensor(c, key);
  if (*evict) {
    auto outcome = c.Evict(key);
    if (!outcome.ok()) return Fail(outcome.status());
    absl::PrintF("%s: %s\n", key, *outcome);
    return 0;
  }
  if (*ls) {
    if (!min_size.empty()) {
      auto bytes = tensord::ParseBytes(min_size);
      if (!bytes.ok()) {
        std::cerr << "tensorctl: --min-size: " << bytes.status().message() << "\n";
        return 2;
      }
      filter.min_bytes = *bytes;
    }
    return PrintList(c, prefix, limit, filter);
  }
  if (*put) {
    tensord::CreateOptions opts;
    opts.pool = pool;
    opts.durability = cache ? tensord::Durability::kCache : tensord::Durability::kDurable;
    opts.compression = compression == "none"       ? tensord::Compression::kNone
                       : compression == "lossless" ? tensord::Compression::kLossless
                       : compression == "lossy"    ? tensord::Compression::kLossy
                                                   : tensord::Compression::kDefault;
    opts.error_budget = error_budget;
    opts.codecs = codecs;
    opts.parent = parent;
    return Put(c, file, key, dtype, shape, opts);
  }
  if (*hint) {
    auto r = c.Hint(keys, to_tier == "gpu" ? tensord::Tier::kGpu : tensord::Tier::kHost,
                    std::chrono::milliseconds(hint_ttl_ms));
    if (!r.ok()) return Fail(r.status());
    absl::PrintF(
        "hinted %d keys: %d queued, %d already queued, %d unknown, %d dropped, %d looked up in "
        "the remote tier\n",
        keys.size(), r->accepted, r->refreshed, r->unknown, r->dropped, r->remote);
    return 0;
  }
  if (*prefetch) {
    auto results = c.Prefetch(keys, to_tier == "gpu" ? tensord::Tier::kGpu : tensord::Tier::kHost);
    if (!results.ok()) return Fail(results.status());
    int failed = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      const tensord::PrefetchResult& r = (*results)[i];
      if (r.status.ok()) {
        absl::PrintF("%s: %s\n", keys[i],
                     r.moved ? "promoted to " + to_tier : "already on " + to_tier);
      } else {
        ++failed;
        absl::PrintF("%s: %s: %s\n", keys[i], absl::StatusCodeToString(r.status.code()),
                     r.status.message());
      }
    }
    return failed == 0 ? 0 : 1;
  }
  if (*get) return GetToFile(c, key, file);
  if (*rm) {
    if (auto st = c.Delete(key); !st.ok()) return Fail(st);
    absl::PrintF("deleted %s\n", key);
    return 0;
  }
  return 2;
}
