#include "daemon/service/metrics.h"

#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "prometheus/exposer.h"

namespace tensord::service {
namespace {

using prometheus::MetricType;
using Labels = std::vector<prometheus::ClientMetric::Label>;

struct MetricSpec {
  const char* field;  // path in v1::Stats; a repeated or message field's children by "a.b"
  const char* name;
  MetricType type;
  const char* help;
  double scale = 1.0;  // to base units (ms -> s, percent -> ratio)
};

// clang-format off
constexpr MetricSpec kMetrics[] = {
  {"sessions", "tensord_sessions", MetricType::Gauge, "Attached client sessions."},
  {"leases", "tensord_leases", MetricType::Gauge, "Leases held by clients."},
  {"objects", "tensord_objects", MetricType::Gauge, "Tensors in the store."},
  {"uptime_ms", "tensord_uptime_seconds", MetricType::Gauge, "Time since the daemon started.", 1e-3},
  {"tiers.present", "tensord_tier_present", MetricType::Gauge, "1 if the tier exists in this daemon."},
  {"tiers.capacity_bytes", "tensord_tier_capacity_bytes", MetricType::Gauge, "Capacity of the tier."},
  {"tiers.used_bytes", "tensord_tier_used_bytes", MetricType::Gauge, "Bytes allocated in the tier."},
  {"tiers.pinned_bytes", "tensord_tier_pinned_bytes", MetricType::Gauge, "Bytes held by leases."},
  {"tiers.hits", "tensord_tier_hits_total", MetricType::Counter, "Gets served by the tier."},
  {"tiers.misses", "tensord_tier_misses_total", MetricType::Counter, "Gets the tier could not serve."},
  {"tiers.hit_ratio", "tensord_tier_hit_ratio", MetricType::Gauge, "Hits over lookups since start."},
  {"tiers.evictions", "tensord_tier_evictions_total", MetricType::Counter, "CACHE tensors dropped."},
  {"pools.arena", "tensord_pool_arena", MetricType::Gauge, "Arena (segment) id of the pool."},
  {"pools.capacity_bytes", "tensord_pool_capacity_bytes", MetricType::Gauge, "Capacity of the pool."},
  {"pools.used_bytes", "tensord_pool_used_bytes", MetricType::Gauge, "Bytes allocated in the pool."},
  {"pools.block_size", "tensord_pool_block_size_bytes", MetricType::Gauge, "Block size (0: general pool)."},
  {"pools.blocks_total", "tensord_pool_blocks", MetricType::Gauge, "Blocks in a fixed pool."},
  {"pools.blocks_used", "tensord_pool_blocks_used", MetricType::Gauge, "Blocks in use in a fixed pool."},
  {"pools.largest_free_bytes", "tensord_pool_largest_free_bytes", MetricType::Gauge, "Largest free range."},
  {"pools.fragmentation", "tensord_pool_fragmentation_ratio", MetricType::Gauge, "1 - largest free / free bytes."},
  {"pools.allocations", "tensord_pool_allocations_total", MetricType::Counter, "Allocations made."},
  {"pools.allocation_failures", "tensord_pool_allocation_failures_total", MetricType::Counter, "Allocations refused for lack of room."},
  {"pools.lifetime_copies", "tensord_pool_lifetime_copies_total", MetricType::Counter, "Copies the eviction policy tracked in the pool."},
  {"pools.reuse_after_1", "tensord_pool_reuse_after_1_ratio", MetricType::Gauge, "Share of the pool's copies used again after their first use."},
  {"pools.reuse_after_2", "tensord_pool_reuse_after_2_ratio", MetricType::Gauge, "Share used a third time of those used twice."},
  {"pools.idle_samples", "tensord_pool_idle_samples_total", MetricType::Counter, "Gaps between uses seen."},
  {"pools.idle_mean_s", "tensord_pool_idle_mean_seconds", MetricType::Gauge, "Mean idle time between uses."},
  {"pools.idle_median_s", "tensord_pool_idle_median_seconds", MetricType::Gauge, "Median idle time between uses (within a factor of 2)."},
  {"swap.degraded", "tensord_swap_degraded", MetricType::Gauge, "1 while the swap device is degraded."},
  {"swap.reads", "tensord_swap_reads_total", MetricType::Counter, "Tensors read from swap."},
  {"swap.writes", "tensord_swap_writes_total", MetricType::Counter, "Tensors written to swap."},
  {"swap.bytes_read", "tensord_swap_read_bytes_total", MetricType::Counter, "Bytes read from swap."},
  {"swap.bytes_written", "tensord_swap_written_bytes_total", MetricType::Counter, "Bytes written to swap."},
  {"swap.read_mbps", "tensord_swap_read_throughput_bytes_per_second", MetricType::Gauge, "Read throughput over time spent reading.", 1e6},
  {"swap.write_mbps", "tensord_swap_write_throughput_bytes_per_second", MetricType::Gauge, "Write throughput over time spent writing.", 1e6},
  {"swap.io_errors", "tensord_swap_io_errors_total", MetricType::Counter, "Failed swap transfers."},
  {"swap.checksum_failures", "tensord_swap_checksum_failures_total", MetricType::Counter, "Swap extents that failed their checksum."},
  {"swap.largest_free_bytes", "tensord_swap_largest_free_bytes", MetricType::Gauge, "Largest free extent."},
  {"swap.fragmentation", "tensord_swap_fragmentation_ratio", MetricType::Gauge, "1 - largest free / free bytes."},
  {"swap.ram_capacity_bytes", "tensord_swap_ram_capacity_bytes", MetricType::Gauge, "Size of the compressed RAM front of the swap files."},
  {"swap.ram_used_bytes", "tensord_swap_ram_used_bytes", MetricType::Gauge, "Encoded bytes held in the compressed RAM front."},
  {"swap.ram_entries", "tensord_swap_ram_entries", MetricType::Gauge, "Tensors held in the compressed RAM front."},
  {"swap.ram_logical_bytes", "tensord_swap_ram_logical_bytes", MetricType::Gauge, "Decoded size of the tensors in the compressed RAM front."},
  {"swap.ram_reads", "tensord_swap_ram_reads_total", MetricType::Counter, "Swap-ins served from the compressed RAM front."},
  {"swap.ram_writebacks", "tensord_swap_ram_writebacks_total", MetricType::Counter, "Entries written back from the compressed RAM front to the swap files."},
  {"swap.ram_writeback_bytes", "tensord_swap_ram_writeback_bytes_total", MetricType::Counter, "Bytes written back from the compressed RAM front."},
  {"remote.cluster", "tensord_remote_cluster", MetricType::Gauge, "1 if the remote tier is a Redis Cluster."},
  {"remote.degraded", "tensord_remote_degraded", MetricType::Gauge, "1 while the remote tier is degraded (Redis unreachable, slow or refusing)."},
  {"remote.nodes", "tensord_remote_nodes", MetricType::Gauge, "Redis nodes known."},
  {"remote.lookups", "tensord_remote_lookups_total", MetricType::Counter, "Gets that looked in the remote tier."},
  {"remote.hits", "tensord_remote_hits_total", MetricType::Counter, "Remote lookups that found the tensor."},
  {"remote.misses", "tensord_remote_misses_total", MetricType::Counter, "Remote lookups that did not."},
  {"remote.puts", "tensord_remote_puts_total", MetricType::Counter, "Tensors written to the remote tier."},
  {"remote.gets", "tensord_remote_gets_total", MetricType::Counter, "Tensors read from the remote tier."},
  {"remote.put_bytes", "tensord_remote_put_bytes_total", MetricType::Counter, "Bytes written to the remote tier."},
  {"remote.get_bytes", "tensord_remote_get_bytes_total", MetricType::Counter, "Bytes read from the remote tier."},
  {"remote.put_mbps", "tensord_remote_put_throughput_bytes_per_second", MetricType::Gauge, "Write throughput over time spent writing.", 1e6},
  {"remote.get_mbps", "tensord_remote_get_throughput_bytes_per_second", MetricType::Gauge, "Read throughput over time spent reading.", 1e6},
  {"remote.put_latency_ms", "tensord_remote_put_latency_seconds", MetricType::Gauge, "Mean time to write one tensor.", 1e-3},
  {"remote.get_latency_ms", "tensord_remote_get_latency_seconds", MetricType::Gauge, "Mean time to read one tensor.", 1e-3},
  {"remote.errors", "tensord_remote_errors_total", MetricType::Counter, "Failed remote operations."},
  {"remote.checksum_failures", "tensord_remote_checksum_failures_total", MetricType::Counter, "Remote values that failed their checksum."},
  {"remote.degradations", "tensord_remote_degradations_total", MetricType::Counter, "Times the remote tier became degraded."},
  {"remote.redirections", "tensord_remote_redirections_total", MetricType::Counter, "Redis Cluster MOVED/ASK answers followed."},
  {"remote.pending_deletes", "tensord_remote_pending_deletes", MetricType::Gauge, "Deletes waiting for Redis to answer again."},
  {"remote.deletes_replayed", "tensord_remote_deletes_replayed_total", MetricType::Counter, "Deletes done once Redis answered again."},
  {"remote.deletes_dropped", "tensord_remote_deletes_dropped_total", MetricType::Counter, "Waiting deletes dropped past the queue's bound."},
  {"remote.stored_bytes", "tensord_remote_stored_bytes", MetricType::Gauge, "Bytes this daemon keeps in the remote tier."},
  {"remote.entries", "tensord_remote_entries", MetricType::Gauge, "Remote tensors this daemon references."},
  {"remote.redis_used_bytes", "tensord_remote_redis_used_bytes", MetricType::Gauge, "Redis used_memory (first node)."},
  {"remote.redis_max_bytes", "tensord_remote_redis_max_bytes", MetricType::Gauge, "Redis maxmemory (0: none)."},
  {"pressure.host_used_ratio", "tensord_host_used_ratio", MetricType::Gauge, "Host tier use over capacity."},
  {"pressure.high_watermark", "tensord_host_high_watermark_ratio", MetricType::Gauge, "Demotion starts above this."},
  {"pressure.low_watermark", "tensord_host_low_watermark_ratio", MetricType::Gauge, "Demotion stops below this."},
  {"pressure.mem_available_bytes", "tensord_system_memory_available_bytes", MetricType::Gauge, "MemAvailable."},
  {"pressure.psi_some_avg10", "tensord_system_memory_pressure_some_ratio", MetricType::Gauge, "PSI memory some avg10.", 1e-2},
  {"pressure.psi_full_avg10", "tensord_system_memory_pressure_full_ratio", MetricType::Gauge, "PSI memory full avg10.", 1e-2},
  {"pressure.gpu_used_ratio", "tensord_gpu_used_ratio", MetricType::Gauge, "GPU tier use over capacity."},
  {"pressure.gpu_high_watermark", "tensord_gpu_high_watermark_ratio", MetricType::Gauge, "GPU demotion starts above this."},
  {"pressure.gpu_low_watermark", "tensord_gpu_low_watermark_ratio", MetricType::Gauge, "GPU demotion stops below this."},
  {"tenants.sessions", "tensord_tenant_sessions", MetricType::Gauge, "Sessions of the tenant."},
  {"tenants.leases", "tensord_tenant_leases", MetricType::Gauge, "Leases held by the tenant's sessions."},
  {"tenants.host_capacity_bytes", "tensord_tenant_host_capacity_bytes", MetricType::Gauge, "The tenant's host memory (its segment)."},
  {"tenants.host_used_bytes", "tensord_tenant_host_used_bytes", MetricType::Gauge, "Bytes allocated in the tenant's host memory."},
  {"tenants.ssd_bytes", "tensord_tenant_ssd_bytes", MetricType::Gauge, "Bytes of the tenant's swap copies."},
  {"tenants.gpu_bytes", "tensord_tenant_gpu_bytes", MetricType::Gauge, "Bytes of the tenant's GPU copies."},
  {"tenants.quota_rejections", "tensord_tenant_quota_rejections_total", MetricType::Counter, "Requests refused for one of the tenant's quotas."},
  {"tenants.denied_requests", "tensord_tenant_denied_requests_total", MetricType::Counter, "Requests refused for touching another tenant's namespace or session."},
  {"gpus.arena", "tensord_gpu_arena", MetricType::Gauge, "GPU arena id of the device."},
  {"gpus.arena_bytes", "tensord_gpu_arena_bytes", MetricType::Gauge, "Size of the device's arena."},
  {"gpus.used_bytes", "tensord_gpu_arena_used_bytes", MetricType::Gauge, "Bytes allocated in the arena."},
  {"gpus.device_free_bytes", "tensord_gpu_device_free_bytes", MetricType::Gauge, "Free memory of the device (all processes)."},
  {"gpus.device_total_bytes", "tensord_gpu_device_total_bytes", MetricType::Gauge, "Memory of the device."},
  {"gpus.host_pinned", "tensord_gpu_host_pinned", MetricType::Gauge, "1 if host arenas are pinned for async copies."},
  {"codecs.encodes", "tensord_codec_encodes_total", MetricType::Counter, "Tensors stored encoded by the codec."},
  {"codecs.encode_in_bytes", "tensord_codec_encode_in_bytes_total", MetricType::Counter, "Bytes the codec encoded."},
  {"codecs.encode_out_bytes", "tensord_codec_encode_out_bytes_total", MetricType::Counter, "Bytes its encodings take."},
  {"codecs.ratio", "tensord_codec_ratio", MetricType::Gauge, "Bytes in over bytes out."},
  {"codecs.encode_gbps", "tensord_codec_encode_throughput_bytes_per_second", MetricType::Gauge, "Encode throughput over time spent encoding.", 1e9},
  {"codecs.decodes", "tensord_codec_decodes_total", MetricType::Counter, "Copies decoded."},
  {"codecs.decode_in_bytes", "tensord_codec_decode_in_bytes_total", MetricType::Counter, "Encoded bytes decoded."},
  {"codecs.decode_out_bytes", "tensord_codec_decode_out_bytes_total", MetricType::Counter, "Bytes decoded into."},
  {"codecs.decode_gbps", "tensord_codec_decode_throughput_bytes_per_second", MetricType::Gauge, "Decode throughput over time spent decoding.", 1e9},
  {"codecs.decode_failures", "tensord_codec_decode_failures_total", MetricType::Counter, "Copies that did not decode (DATA_LOSS)."},
  {"codecs.tried", "tensord_codec_tried_total", MetricType::Counter, "Encodes tried by the automatic choice."},
  {"codecs.over_budget", "tensord_codec_over_budget_total", MetricType::Counter, "Tries whose measured error exceeded the budget."},
  {"codecs.max_rel_rmse", "tensord_codec_max_relative_rmse", MetricType::Gauge, "Largest relative RMSE of a stored encoding."},
};
// clang-format on

namespace pb = google::protobuf;

double Number(const pb::Message& m, const pb::FieldDescriptor* f) {
  const pb::Reflection* r = m.GetReflection();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return static_cast<double>(r->GetUInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return static_cast<double>(r->GetUInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return static_cast<double>(r->GetInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return static_cast<double>(r->GetInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return r->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return r->GetBool(m, f) ? 1.0 : 0.0;
    default:
      return 0.0;
  }
}

// Labels that identify an element of a repeated message, or a singular message: its string
// fields (pool name and kind, swap engine) and enums (tier).
Labels LabelsOf(const pb::Message& m) {
  Labels labels;
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
      labels.push_back({f->name() == "name" ? "pool" : f->name(), r->GetString(m, f)});
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
      std::string v = absl::AsciiStrToLower(r->GetEnum(m, f)->name());
      if (absl::StartsWith(v, f->name() + "_")) v = v.substr(f->name().size() + 1);
      labels.push_back({f->name(), v});
    }
  }
  return labels;
}

prometheus::ClientMetric Sample(MetricType type, double value, Labels labels) {
  prometheus::ClientMetric c;
  c.label = std::move(labels);
  if (type == MetricType::Counter) {
    c.counter.value = value;
  } else {
    c.gauge.value = value;
  }
  return c;
}

}  // namespace

std::vector<std::string> MetricFieldPaths() {
  std::vector<std::string> out;
  for (const MetricSpec& s : kMetrics) out.push_back(s.field);
  return out;
}

std::vector<prometheus::MetricFamily> StatsToMetrics(const v1::Stats& stats) {
  std::vector<prometheus::MetricFamily> families;
  const pb::Descriptor* root = stats.GetDescriptor();
  const pb::Reflection* rr = stats.GetReflection();
  for (const MetricSpec& s : kMetrics) {
    prometheus::MetricFamily fam{s.name, s.help, s.type, {}};
    const std::vector<std::string> path = absl::StrSplit(s.field, '.');
    const pb::FieldDescriptor* top = root->FindFieldByName(path[0]);
    if (top == nullptr) continue;  // caught by the unit test
    if (path.size() == 1) {
      fam.metric.push_back(Sample(s.type, Number(stats, top) * s.scale, {}));
    } else if (top->is_repeated()) {
      for (int i = 0; i < rr->FieldSize(stats, top); ++i) {
        const pb::Message& m = rr->GetRepeatedMessage(stats, top, i);
        const pb::FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(path[1]);
        if (f != nullptr) fam.metric.push_back(Sample(s.type, Number(m, f) * s.scale, LabelsOf(m)));
      }
    } else if (rr->HasField(stats, top)) {  // an absent swap section: no samples
      const pb::Message& m = rr->GetMessage(stats, top);
      const pb::FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(path[1]);
      // An optional reading left unset (no PSI on this kernel): no sample, rather than a 0.
      const bool unset = f != nullptr && f->has_presence() && !m.GetReflection()->HasField(m, f);
      if (f != nullptr && !unset) {
        fam.metric.push_back(Sample(s.type, Number(m, f) * s.scale, LabelsOf(m)));
      }
    }
    if (!fam.metric.empty()) families.push_back(std::move(fam));
  }
  for (const auto& [counter, value] : stats.counters()) {
    // "bytes_created" -> tensord_created_bytes_total: the unit goes last, before _total.
    std::string name = counter;
    if (absl::StartsWith(name, "bytes_")) name = absl::StrCat(name.substr(6), "_bytes");
    families.push_back(
        prometheus::MetricFamily{absl::StrCat("tensord_", name, "_total"),
                                 absl::StrCat("Store counter ", counter, "."),
                                 MetricType::Counter,
                                 {Sample(MetricType::Counter, static_cast<double>(value), {})}});
  }
  return families;
}

namespace {

class StatsCollectable final : public prometheus::Collectable {
 public:
  explicit StatsCollectable(std::function<v1::Stats()> snapshot) : snapshot_(std::move(snapshot)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    return StatsToMetrics(snapshot_());
  }

 private:
  std::function<v1::Stats()> snapshot_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    int port, std::function<v1::Stats()> snapshot) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " is out of range"));
  }
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  try {
    e->exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat("127.0.0.1:", port), 1);
  } catch (const std::exception& ex) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on 127.0.0.1:", port, ": ", ex.what()));
  }
  e->collectable_ = std::make_shared<StatsCollectable>(std::move(snapshot));
  e->exposer_->RegisterCollectable(e->collectable_);
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  e->port_ = ports.empty() ? port : ports[0];
  return e;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (exposer_ != nullptr) exposer_->RemoveCollectable(collectable_);
}

}  // namespace tensord::service
