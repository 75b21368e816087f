// Field-by-field mapping between the store's types and the protocol.
#include "daemon/service/convert.h"

namespace tensord::service {
namespace {

v1::Compression ToProto(codec::Compression c) {
  switch (c) {
    case codec::Compression::kLossless:
      return v1::COMPRESSION_LOSSLESS;
    case codec::Compression::kLossy:
      return v1::COMPRESSION_LOSSY;
    case codec::Compression::kDefault:
      return v1::COMPRESSION_DEFAULT;
    case codec::Compression::kNone:
      break;
  }
  return v1::COMPRESSION_NONE;
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

void ToProto(const store::TensorInfo& info, v1::TensorMeta* out) {
  out->set_ns(info.ns);
  out->set_key(info.key);
  out->set_dtype(static_cast<v1::DType>(info.dtype));
  for (int64_t d : info.shape) out->add_shape(d);
  out->set_nbytes(info.nbytes);
  out->set_pool(info.pool);
  out->set_durability(static_cast<v1::Durability>(info.durability));
  out->set_scope(static_cast<v1::Scope>(info.scope));
  out->set_sealed(info.sealed);
  auto set = [](const store::Location& from, v1::Location* to) {
    to->set_tier(static_cast<v1::Tier>(from.tier));
    to->set_arena(from.arena);
    to->set_offset(from.offset);
    to->set_length(from.length);
  };
  set(info.location, out->mutable_location());
  if (info.on_gpu) set(info.gpu_location, out->mutable_gpu_location());
  out->set_leases(info.leases);
  out->set_created_unix_ms(info.created_unix_ms);
  out->set_ttl_ms(info.ttl_ms);
  out->set_compression(ToProto(info.compression.mode));
  out->set_error_budget(info.compression.budget);
  for (const std::string& name : codec::CodecNames(info.compression.allowed)) {
    out->add_codecs(name);
  }
  out->set_ssd_stored_bytes(info.ssd_stored_bytes);
  if (info.on_ssd) {
    v1::Encoding* e = out->mutable_ssd_encoding();
    e->set_codec(codec::CodecName(info.ssd_codec));
    e->set_stored_bytes(info.ssd_stored_bytes);
    e->set_rel_rmse(info.ssd_rel_rmse);
  }
  out->set_parent(info.parent);
  out->set_remote_stored_bytes(info.remote_stored_bytes);
}

void ToProto(const store::StoreStats& stats, uint64_t uptime_ms, v1::Stats* out) {
  const store::Counters& c = stats.counters;
  for (const store::TenantStats& t : stats.tenants) {
    v1::TenantStats* ts = out->add_tenants();
    ts->set_tenant(t.name);
    ts->set_sessions(t.sessions);
    ts->set_leases(t.leases);
    ts->set_host_capacity_bytes(t.host_capacity_bytes);
    ts->set_host_used_bytes(t.host_used_bytes);
    ts->set_ssd_bytes(t.ssd_bytes);
    ts->set_gpu_bytes(t.gpu_bytes);
    ts->set_quota_rejections(t.quota_rejections);
    ts->set_denied_requests(t.denied_requests);
  }
  v1::TierStats* host = out->add_tiers();
  host->set_tier(v1::TIER_HOST);
  host->set_present(true);
  host->set_capacity_bytes(stats.capacity_bytes);
  host->set_used_bytes(stats.used_bytes);
  host->set_pinned_bytes(stats.pinned_bytes);
  // A Get served by a promotion from SSD is a host miss and an SSD hit. (Promotions also count
  // Prefetches' and the look-ahead's, which are no Gets: never below zero.)
  const uint64_t host_hits = c.get_hits > c.promotions ? c.get_hits - c.promotions : 0;
  host->set_hits(host_hits);
  host->set_misses(c.get_misses + c.promotions);
  const uint64_t lookups = c.get_hits + c.get_misses;
  host->set_hit_ratio(lookups == 0 ? 0.0 : static_cast<double>(host_hits) / lookups);
  host->set_evictions(c.evictions);
  v1::TierStats* gpu = out->add_tiers();
  gpu->set_tier(v1::TIER_GPU);
  gpu->set_present(stats.gpu_present);
  if (stats.gpu_present) {
    gpu->set_capacity_bytes(stats.gpu_capacity_bytes);
    gpu->set_used_bytes(stats.gpu_used_bytes);
    gpu->set_pinned_bytes(stats.gpu_pinned_bytes);
    gpu->set_hits(c.gpu_hits);
    gpu->set_misses(c.gpu_misses);
    const uint64_t gpu_lookups = c.gpu_hits + c.gpu_misses;
    gpu->set_hit_ratio(gpu_lookups == 0 ? 0.0 : static_cast<double>(c.gpu_hits) / gpu_lookups);
    gpu->set_evictions(c.gpu_evictions);
    for (const store::GpuDeviceStats& g : stats.gpus) {
      v1::GpuStats* gs = out->add_gpus();
      gs->set_gpu(g.name);
      gs->set_model(g.model);
      gs->set_arena(g.arena);
      gs->set_arena_bytes(g.arena_bytes);
      gs->set_used_bytes(g.used_bytes);
      gs->set_device_free_bytes(g.device_free_bytes);
      gs->set_device_total_bytes(g.device_total_bytes);
      gs->set_host_pinned(stats.gpu_host_pinned);
    }
  }
  v1::TierStats* ssd = out->add_tiers();
  ssd->set_tier(v1::TIER_SSD);
  ssd->set_present(stats.ssd_present);
  if (stats.ssd_present) {
    const tiers::SsdStats& s = stats.ssd;
    ssd->set_capacity_bytes(s.capacity_bytes);
    ssd->set_used_bytes(s.used_bytes);
    ssd->set_hits(c.promotions);
    ssd->set_misses(c.swap_misses);
    const uint64_t lookups = c.promotions + c.swap_misses;
    ssd->set_hit_ratio(lookups == 0 ? 0.0 : static_cast<double>(c.promotions) / lookups);
    v1::SwapStats* w = out->mutable_swap();
    w->set_engine(s.engine);
    w->set_degraded(s.degraded);
    w->set_reads(s.reads);
    w->set_writes(s.writes);
    w->set_bytes_read(s.bytes_read);
    w->set_bytes_written(s.bytes_written);
    w->set_read_mbps(s.read_ns == 0 ? 0.0 : s.bytes_read * 1e3 / s.read_ns);
    w->set_write_mbps(s.write_ns == 0 ? 0.0 : s.bytes_written * 1e3 / s.write_ns);
    w->set_io_errors(s.io_errors);
    w->set_checksum_failures(s.checksum_failures);
    w->set_largest_free_bytes(s.largest_free_bytes);
    w->set_ram_capacity_bytes(s.ram_capacity);
    w->set_ram_used_bytes(s.ram_used_bytes);
    w->set_ram_entries(s.ram_entries);
    w->set_ram_logical_bytes(s.ram_logical_bytes);
    w->set_ram_reads(s.ram_reads);
    w->set_ram_writebacks(s.ram_writebacks);
    w->set_ram_writeback_bytes(s.ram_writeback_bytes);
    w->set_fragmentation(s.free_bytes == 0 ? 0.0
                                           : 1.0 - static_cast<double>(s.largest_free_bytes) /
                                                       static_cast<double>(s.free_bytes));
  }
  if (stats.remote_present) {
    const tiers::RemoteStats& s = stats.remote;
    v1::RemoteStats* r = out->mutable_remote();
    r->set_addresses(s.addresses);
    r->set_cluster(s.cluster);
    r->set_degraded(s.degraded);
    r->set_nodes(s.nodes);
    r->set_lookups(s.lookups);
    r->set_hits(s.hits);
    r->set_misses(s.misses);
    r->set_puts(s.puts);
    r->set_gets(s.gets);
    r->set_put_bytes(s.put_bytes);
    r->set_get_bytes(s.get_bytes);
    r->set_put_mbps(s.put_ns == 0 ? 0.0 : s.put_bytes * 1e3 / s.put_ns);
    r->set_get_mbps(s.get_ns == 0 ? 0.0 : s.get_bytes * 1e3 / s.get_ns);
    r->set_put_latency_ms(s.puts == 0 ? 0.0 : s.put_ns / 1e6 / s.puts);
    r->set_get_latency_ms(s.gets == 0 ? 0.0 : s.get_ns / 1e6 / s.gets);
    r->set_errors(s.errors);
    r->set_checksum_failures(s.checksum_failures);
    r->set_degradations(s.degradations);
    r->set_redirections(s.redirections);
    r->set_stored_bytes(s.stored_bytes);
    r->set_entries(s.entries);
    r->set_redis_used_bytes(s.redis_used_bytes);
    r->set_redis_max_bytes(s.redis_max_bytes);
    r->set_last_error(s.last_error);
    r->set_pending_deletes(s.pending_deletes);
    r->set_deletes_replayed(s.deletes_replayed);
    r->set_deletes_dropped(s.deletes_dropped);
  }
  v1::PressureStats* p = out->mutable_pressure();
  p->set_host_used_ratio(stats.capacity_bytes == 0 ? 0.0
                                                   : static_cast<double>(stats.used_bytes) /
                                                         static_cast<double>(stats.capacity_bytes));
  p->set_high_watermark(stats.high_watermark);
  p->set_low_watermark(stats.low_watermark);
  // Unset (not 0) where the kernel gives no reading: 0 would say "out of memory".
  if (stats.system.mem_available_known) {
    p->set_mem_available_bytes(stats.system.mem_available_bytes);
  }
  if (stats.system.psi_available) {
    p->set_psi_some_avg10(stats.system.psi_some_avg10);
    p->set_psi_full_avg10(stats.system.psi_full_avg10);
  }
  if (stats.gpu_present) {
    p->set_gpu_used_ratio(stats.gpu_capacity_bytes == 0
                              ? 0.0
                              : static_cast<double>(stats.gpu_used_bytes) /
                                    static_cast<double>(stats.gpu_capacity_bytes));
    p->set_gpu_high_watermark(stats.gpu_high_watermark);
    p->set_gpu_low_watermark(stats.gpu_low_watermark);
  }
  for (const store::PoolStatsEntry& p : stats.pools) {
    v1::PoolStats* ps = out->add_pools();
    ps->set_name(p.name);
    ps->set_kind(p.fixed ? "fixed" : "general");
    ps->set_tier(p.gpu ? v1::TIER_GPU : v1::TIER_HOST);
    ps->set_arena(p.arena);
    ps->set_capacity_bytes(p.stats.capacity_bytes);
    ps->set_used_bytes(p.stats.used_bytes);
    ps->set_block_size(p.stats.block_size);
    ps->set_blocks_total(p.stats.blocks_total);
    ps->set_blocks_used(p.stats.blocks_used);
    ps->set_largest_free_bytes(p.stats.largest_free_bytes);
    ps->set_fragmentation(p.stats.Fragmentation());
    ps->set_allocations(p.stats.allocations);
    ps->set_allocation_failures(p.stats.allocation_failures);
    ps->set_lifetime_copies(p.lifetime.inserted);
    ps->set_reuse_after_1(p.lifetime.ReuseAfter1());
    ps->set_reuse_after_2(p.lifetime.ReuseAfter2());
    ps->set_idle_samples(p.lifetime.idle_samples);
    ps->set_idle_mean_s(p.lifetime.idle_mean_s);
    ps->set_idle_median_s(p.lifetime.idle_median_s);
  }
  auto* counters = out->mutable_counters();
  store::ForEachCounter(c, [&](const char* name, uint64_t v) { (*counters)[name] = v; });
  out->set_sessions(stats.sessions);
  out->set_leases(stats.leases);
  out->set_objects(stats.objects);
  out->set_uptime_ms(uptime_ms);
  const auto gbps = [](uint64_t bytes, double s) { return s > 0 ? double(bytes) / s / 1e9 : 0.0; };
  for (const store::CodecStat& k : stats.codecs) {
    v1::CodecStats* cs = out->add_codecs();
    cs->set_codec(codec::CodecName(k.codec));
    cs->set_encodes(k.encodes);
    cs->set_encode_in_bytes(k.encode_in_bytes);
    cs->set_encode_out_bytes(k.encode_out_bytes);
    cs->set_ratio(k.encode_out_bytes ? double(k.encode_in_bytes) / double(k.encode_out_bytes) : 0);
    cs->set_encode_gbps(gbps(k.encode_in_bytes, k.encode_seconds));
    cs->set_decodes(k.decodes);
    cs->set_decode_in_bytes(k.decode_in_bytes);
    cs->set_decode_out_bytes(k.decode_out_bytes);
    cs->set_decode_gbps(gbps(k.decode_out_bytes, k.decode_seconds));
    cs->set_decode_failures(k.decode_failures);
    cs->set_tried(k.tried);
    cs->set_over_budget(k.over_budget);
    cs->set_max_rel_rmse(k.max_rel_rmse);
  }
}

store::CreateParams FromProto(const v1::CreateRequest& request) {
  store::CreateParams p;
  p.ns = request.ns();
  p.key = request.key();
  p.dtype = static_cast<DType>(request.dtype());
  p.shape.assign(request.shape().begin(), request.shape().end());
  p.nbytes = request.nbytes();
  p.pool = request.pool();
  p.parent = request.parent();
  p.ttl_ms = request.ttl_ms();
  p.tier = static_cast<store::WantTier>(request.tier());
  p.device = request.has_device() ? request.device() : -1;
  if (request.has_device() && request.device() < 0) p.device = -2;  // rejected by validation
  // Unset enums take the safe defaults; unknown values pass through and are rejected.
  p.durability = request.durability() == v1::DURABILITY_DEFAULT
                     ? store::Durability::kDurable
                     : static_cast<store::Durability>(request.durability());
  p.scope = request.scope() == v1::SCOPE_DEFAULT ? store::Scope::kGlobal
                                                 : static_cast<store::Scope>(request.scope());
  // An unknown value stays unknown (0xff) for validation to reject, not truncated to a known one.
  switch (request.compression()) {
    case v1::COMPRESSION_DEFAULT:
      p.compression.mode = codec::Compression::kDefault;
      break;
    case v1::COMPRESSION_NONE:
      p.compression.mode = codec::Compression::kNone;
      break;
    case v1::COMPRESSION_LOSSLESS:
      p.compression.mode = codec::Compression::kLossless;
      break;
    case v1::COMPRESSION_LOSSY:
      p.compression.mode = codec::Compression::kLossy;
      break;
    default:
      p.compression.mode = static_cast<codec::Compression>(0xff);
  }
  p.compression.budget = request.error_budget();
  for (const std::string& name : request.codecs()) {
    auto c = codec::CodecNamed(name);
    // An unknown name sets a bit no codec has, for validation to reject.
    p.compression.allowed |= c.ok() ? 1u << int((*c)->id()) : 1u << 31;
  }
  return p;
}

}  // namespace tensord::service
