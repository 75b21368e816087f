// tensord._core: the Python binding of the C++ client (pybind11). No second implementation of
// the protocol: every call goes through tensord::Client. Host tensors come back as objects with
// the buffer protocol and __dlpack__, so numpy.asarray() and torch.from_dlpack() alias the
// shared memory. A lease lives exactly as long as some view of it (shared_ptr in every view).
#include <dlpack/dlpack.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "tensord/client.h"

namespace py = pybind11;

namespace tensord::python {
namespace {

// The exception type raised for every daemon error; carries .code (int) and .code_name.
PyObject* g_error_type = nullptr;

struct StatusError {
  absl::Status status;
};

[[noreturn]] void Throw(const absl::Status& status) { throw StatusError{status}; }

template <typename T>
T Unwrap(absl::StatusOr<T>&& v) {
  if (!v.ok()) Throw(v.status());
  return *std::move(v);
}

void Check(const absl::Status& st) {
  if (!st.ok()) Throw(st);
}

// Returns the DLPack type of a tensord dtype.
DLDataType ToDl(DType dtype) {
  const auto bits = static_cast<uint8_t>(ItemSize(dtype) * 8);
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kFloat64:
      return {kDLFloat, bits, 1};
    case DType::kBFloat16:
      return {kDLBfloat, 16, 1};
    case DType::kUInt8:
      return {kDLUInt, 8, 1};
    case DType::kBool:
      return {kDLUInt, 8, 1};  // DLPack 0.6 has no bool; torch maps uint8
    default:
      return {kDLInt, bits, 1};
  }
}

// The buffer-protocol format character of a dtype ("e" half, "f" float...).
const char* BufferFormat(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "f";
    case DType::kFloat16:
      return "e";
    case DType::kFloat64:
      return "d";
    case DType::kInt8:
      return "b";
    case DType::kUInt8:
      return "B";
    case DType::kInt16:
      return "h";
    case DType::kInt32:
      return "i";
    case DType::kInt64:
      return "q";
    case DType::kBool:
      return "?";
    default:
      return "B";  // bfloat16: numpy has no type; exposed as raw 2-byte units below
  }
}

// Memory shared by a Python view and DLPack consumers: a lease, or a writable tensor's mapping.
struct Region {
  std::shared_ptr<Lease> lease;              // set for sealed tensors
  std::shared_ptr<WritableTensor> writable;  // set while being written
  void* data = nullptr;
  TensorInfo info;
  bool readonly = true;
  int device = -1;  // a GPU tensor: the CUDA ordinal of this process; data is a device pointer
};

struct DlContext {
  std::shared_ptr<Region> region;  // keeps the lease alive while torch holds the tensor
  std::vector<int64_t> shape;
  DLManagedTensor managed{};
};

py::capsule ToDlpack(const std::shared_ptr<Region>& region) {
  auto* ctx = new DlContext{region, region->info.shape, {}};
  DLTensor& t = ctx->managed.dl_tensor;
  t.data = region->data;
  t.device = region->device >= 0 ? DLDevice{kDLCUDA, region->device} : DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(ctx->shape.size());
  t.dtype = ToDl(region->info.dtype);
  t.shape = ctx->shape.data();
  t.strides = nullptr;  // contiguous
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = [](DLManagedTensor* self) {
    // May run without the GIL: releasing a lease touches no Python object.
    delete static_cast<DlContext*>(self->manager_ctx);
  };
  // Consumers rename a used capsule to "used_dltensor"; an unused one is freed here.
  return py::capsule(&ctx->managed, "dltensor", [](PyObject* cap) {
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      m->deleter(m);
    }
  });
}

// numpy's type string of a dtype, for __cuda_array_interface__ (bfloat16 as raw 2-byte units).
const char* TypeString(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "<f4";
    case DType::kFloat16:
      return "<f2";
    case DType::kFloat64:
      return "<f8";
    case DType::kInt8:
      return "|i1";
    case DType::kUInt8:
      return "|u1";
    case DType::kInt16:
      return "<i2";
    case DType::kInt32:
      return "<i4";
    case DType::kInt64:
      return "<i8";
    case DType::kBool:
      return "|b1";
    default:
      return "<u2";
  }
}

py::buffer_info ToBuffer(const Region& r) {
  if (r.device >= 0) {
    throw py::buffer_error(
        "a GPU tensor has no host buffer: use torch.from_dlpack() or __cuda_array_interface__");
  }
  std::vector<py::ssize_t> shape(r.info.shape.begin(), r.info.shape.end());
  const bool bf16 = r.info.dtype == DType::kBFloat16;
  const auto item = static_cast<py::ssize_t>(bf16 ? 2 : ItemSize(r.info.dtype));
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = item;
  for (size_t i = shape.size(); i > 0; --i) {
    strides[i - 1] = stride;
    stride *= shape[i - 1];
  }
  return py::buffer_info(r.data, item, bf16 ? "H" : BufferFormat(r.info.dtype),
                         static_cast<py::ssize_t>(shape.size()), shape, strides, r.readonly);
}

const char* TierName(Tier t) {
  return t == Tier::kHost     ? "host"
         : t == Tier::kGpu    ? "gpu"
         : t == Tier::kRemote ? "remote"
                              : "ssd";
}

py::dict InfoDict(const TensorInfo& i) {
  py::dict d;
  d["key"] = i.key;
  d["dtype"] = std::string(DTypeName(i.dtype));
  d["shape"] = py::tuple(py::cast(i.shape));
  d["nbytes"] = i.nbytes;
  d["pool"] = i.pool;
  d["durability"] = i.durability == Durability::kCache ? "cache" : "durable";
  d["scope"] = i.scope == Scope::kSession ? "session" : "global";
  d["sealed"] = i.sealed;
  d["leases"] = i.leases;
  d["created_unix_ms"] = i.created_unix_ms;
  d["ttl_ms"] = i.ttl_ms;
  d["tier"] = TierName(i.location.tier);  // where the tensor is served from by default
  d["on_gpu"] = i.on_gpu;
  d["compression"] = CompressionName(i.compression);
  d["error_budget"] = i.error_budget;
  d["codecs"] = i.codecs;
  d["ssd_stored_bytes"] = i.ssd_stored_bytes;
  d["remote_stored_bytes"] = i.remote_stored_bytes;
  d["ssd_codec"] = i.ssd_codec;
  d["ssd_rel_rmse"] = i.ssd_rel_rmse;
  d["parent"] = i.parent;
  return d;
}

DType ParseDTypeOrThrow(const std::string& name) { return Unwrap(ParseDType(name)); }

Durability ParseDurability(const std::string& s) {
  if (s == "durable") return Durability::kDurable;
  if (s == "cache") return Durability::kCache;
  throw py::value_error("durability must be 'durable' or 'cache', not '" + s + "'");
}

Compression ParseCompression(const std::string& s) {
  if (s == "default") return Compression::kDefault;
  if (s == "none") return Compression::kNone;
  if (s == "lossless") return Compression::kLossless;
  if (s == "lossy") return Compression::kLossy;
  throw py::value_error("compression must be 'default', 'none', 'lossless' or 'lossy', not '" + s +
                        "'");
}

Scope ParseScope(const std::string& s) {
  if (s == "global") return Scope::kGlobal;
  if (s == "session") return Scope::kSession;
  throw py::value_error("scope must be 'global' or 'session', not '" + s + "'");
}

// "cpu" -> (kHost, -1); "cuda" -> (kGpu, -1: any GPU); "cuda:N" -> (kGpu, N).
std::pair<Tier, int> ParseDevice(const std::string& device) {
  if (device == "cpu") return {Tier::kHost, -1};
  if (device == "cuda") return {Tier::kGpu, -1};
  if (device.rfind("cuda:", 0) == 0) {
    try {
      size_t used = 0;
      const int n = std::stoi(device.substr(5), &used);
      if (n >= 0 && used == device.size() - 5) return {Tier::kGpu, n};
    } catch (const std::exception&) {
    }
  }
  throw py::value_error("device must be 'cpu', 'cuda' or 'cuda:N', not '" + device + "'");
}

class PyClient {
 public:
  PyClient(std::optional<std::string> socket, std::string ns, std::string name, double timeout,
           double reconnect_timeout) {
    if (!(reconnect_timeout >= 0)) {
      throw py::value_error("reconnect_timeout must be >= 0 seconds (0: never reconnect)");
    }
    ClientOptions o;
    o.socket_path = socket.value_or("");
    o.ns = std::move(ns);
    o.client_name = std::move(name);
    o.deadline = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000));
    o.reconnect_timeout = std::chrono::milliseconds(static_cast<int64_t>(reconnect_timeout * 1000));
    py::gil_scoped_release nogil;
    client_ = Unwrap(Client::Connect(o));
  }

  Client& c() {
    if (client_ == nullptr) throw py::value_error("client is closed");
    return *client_;
  }

  uint64_t Reconnects() { return c().reconnects(); }

  void Close() { client_.reset(); }

  std::shared_ptr<Region> Create(const std::string& key, std::vector<int64_t> shape,
                                 const std::string& dtype, const std::string& durability,
                                 const std::string& pool, const std::string& scope, double ttl,
                                 const std::string& device, const std::string& compression,
                                 const std::string& parent, double error_budget,
                                 std::vector<std::string> codecs) {
    CreateOptions o;
    o.parent = parent;
    o.compression = ParseCompression(compression);
    o.error_budget = error_budget;
    o.codecs = std::move(codecs);
    std::tie(o.tier, o.device) = ParseDevice(device);
    o.durability = ParseDurability(durability);
    o.scope = ParseScope(scope);
    o.pool = pool;
    o.ttl_ms = static_cast<int64_t>(ttl * 1000);
    const DType dt = ParseDTypeOrThrow(dtype);
    auto region = std::make_shared<Region>();
    {
      py::gil_scoped_release nogil;
      region->writable =
          std::make_shared<WritableTensor>(Unwrap(c().Create(key, dt, std::move(shape), o)));
    }
    region->data = region->writable->data();
    region->info = region->writable->info();
    region->readonly = false;
    region->device = region->writable->device();
    return region;
  }

  std::shared_ptr<Region> Get(const std::string& key, const std::string& device) {
    const auto [want, ordinal] = ParseDevice(device);
    py::gil_scoped_release nogil;
    return FromLease(Unwrap(c().Get(key, want, ordinal)));
  }

  std::vector<std::shared_ptr<Region>> GetMany(const std::vector<std::string>& keys,
                                               const std::string& device) {
    const auto [want, ordinal] = ParseDevice(device);
    py::gil_scoped_release nogil;
    auto batch = Unwrap(c().GetBatch(keys, want, ordinal));
    std::vector<std::shared_ptr<Region>> out;
    for (auto& r : batch) {
      if (!r.ok()) Throw(r.status());  // earlier leases release as `out` unwinds
      out.push_back(FromLease(*std::move(r)));
    }
    return out;
  }

  // {"accepted", "refreshed", "unknown", "dropped", "remote"}.
  py::dict Hint(const std::vector<std::string>& keys, const std::string& device, double ttl) {
    const auto [tier, ordinal] = ParseDevice(device);
    if (!(ttl >= 0 && ttl <= 3600)) Throw(absl::InvalidArgumentError("ttl: 0 to 3600 seconds"));
    HintResult r;
    {
      py::gil_scoped_release nogil;
      r = Unwrap(c().Hint(keys, tier, std::chrono::milliseconds(int64_t(ttl * 1000)), ordinal));
    }
    py::dict d;
    d["accepted"] = r.accepted;
    d["refreshed"] = r.refreshed;
    d["unknown"] = r.unknown;
    d["dropped"] = r.dropped;
    d["remote"] = r.remote;
    return d;
  }

  // One dict per key: {"key", "ok", "moved", "code", "message"}.
  py::list Prefetch(const std::vector<std::string>& keys, const std::string& device) {
    const auto [tier, ordinal] = ParseDevice(device);
    std::vector<PrefetchResult> results;
    {
      py::gil_scoped_release nogil;
      results = Unwrap(c().Prefetch(keys, tier, ordinal));
    }
    py::list out;
    for (size_t i = 0; i < results.size(); ++i) {
      py::dict d;
      d["key"] = keys[i];
      d["ok"] = results[i].status.ok();
      d["moved"] = results[i].moved;
      d["code"] = absl::StatusCodeToString(results[i].status.code());
      d["message"] = std::string(results[i].status.message());
      out.append(d);
    }
    return out;
  }

  void Delete(const std::string& key) {
    py::gil_scoped_release nogil;
    Check(c().Delete(key));
  }

  std::string Evict(const std::string& key) {
    absl::StatusOr<std::string> outcome;
    {
      py::gil_scoped_release nogil;
      outcome = c().Evict(key);
    }
    Check(outcome.status());
    return *outcome;
  }

  py::dict Stat(const std::string& key) {
    TensorInfo info;
    {
      py::gil_scoped_release nogil;
      info = Unwrap(c().Stat(key));
    }
    return InfoDict(info);
  }

  py::list List(const std::string& prefix, uint32_t limit) {
    std::vector<TensorInfo> infos;
    {
      py::gil_scoped_release nogil;
      infos = Unwrap(c().List(prefix, limit));
    }
    py::list out;
    for (const auto& i : infos) out.append(InfoDict(i));
    return out;
  }

  py::dict GetStats() {
    Stats s;
    {
      py::gil_scoped_release nogil;
      s = Unwrap(c().GetStats());
    }
    py::dict d;
    d["sessions"] = s.sessions;
    d["leases"] = s.leases;
    d["objects"] = s.objects;
    d["uptime_ms"] = s.uptime_ms;
    d["counters"] = s.counters;
    py::list tiers, pools;
    for (const auto& t : s.tiers) {
      py::dict td;
      td["tier"] = TierName(t.tier);
      td["present"] = t.present;
      td["capacity_bytes"] = t.capacity_bytes;
      td["used_bytes"] = t.used_bytes;
      td["pinned_bytes"] = t.pinned_bytes;
      td["hits"] = t.hits;
      td["misses"] = t.misses;
      td["hit_ratio"] = t.hit_ratio;
      td["evictions"] = t.evictions;
      tiers.append(td);
    }
    for (const auto& p : s.pools) {
      py::dict pd;
      pd["name"] = p.name;
      pd["tier"] = TierName(p.tier);
      pd["kind"] = p.kind;
      pd["capacity_bytes"] = p.capacity_bytes;
      pd["used_bytes"] = p.used_bytes;
      pd["block_size"] = p.block_size;
      pd["blocks_total"] = p.blocks_total;
      pd["blocks_used"] = p.blocks_used;
      pd["fragmentation"] = p.fragmentation;
      pd["lifetime_copies"] = p.lifetime_copies;
      pd["reuse_after_1"] = p.reuse_after_1;
      pd["reuse_after_2"] = p.reuse_after_2;
      pd["idle_samples"] = p.idle_samples;
      pd["idle_mean_s"] = p.idle_mean_s;
      pd["idle_median_s"] = p.idle_median_s;
      pools.append(pd);
    }
    d["tiers"] = tiers;
    d["pools"] = pools;
    const PressureStats& pr = s.pressure;
    py::dict pd;
    pd["host_used_ratio"] = pr.host_used_ratio;
    pd["high_watermark"] = pr.high_watermark;
    pd["low_watermark"] = pr.low_watermark;
    // None where the daemon's kernel gives no reading.
    pd["mem_available_bytes"] = pr.mem_available_bytes;
    pd["psi_some_avg10"] = pr.psi_some_avg10;
    pd["psi_full_avg10"] = pr.psi_full_avg10;
    pd["gpu_used_ratio"] = pr.gpu_used_ratio;
    pd["gpu_high_watermark"] = pr.gpu_high_watermark;
    pd["gpu_low_watermark"] = pr.gpu_low_watermark;
    d["pressure"] = pd;
    py::list gpus;
    for (const GpuStats& g : s.gpus) {
      py::dict gd;
      gd["gpu"] = g.gpu;
      gd["model"] = g.model;
      gd["arena_bytes"] = g.arena_bytes;
      gd["used_bytes"] = g.used_bytes;
      gd["device_free_bytes"] = g.device_free_bytes;
      gd["device_total_bytes"] = g.device_total_bytes;
      gd["host_pinned"] = g.host_pinned;
      gpus.append(gd);
    }
    d["gpus"] = gpus;
    py::list tenants;
    for (const TenantStats& t : s.tenants) {
      py::dict td;
      td["tenant"] = t.tenant;
      td["sessions"] = t.sessions;
      td["leases"] = t.leases;
      td["host_capacity_bytes"] = t.host_capacity_bytes;
      td["host_used_bytes"] = t.host_used_bytes;
      td["ssd_bytes"] = t.ssd_bytes;
      td["gpu_bytes"] = t.gpu_bytes;
      td["quota_rejections"] = t.quota_rejections;
      td["denied_requests"] = t.denied_requests;
      tenants.append(td);
    }
    d["tenants"] = tenants;
    py::list codecs;
    for (const CodecStats& k : s.codecs) {
      py::dict kd;
      kd["codec"] = k.codec;
      kd["encodes"] = k.encodes;
      kd["encode_in_bytes"] = k.encode_in_bytes;
      kd["encode_out_bytes"] = k.encode_out_bytes;
      kd["ratio"] = k.ratio;
      kd["encode_gbps"] = k.encode_gbps;
      kd["decodes"] = k.decodes;
      kd["decode_in_bytes"] = k.decode_in_bytes;
      kd["decode_out_bytes"] = k.decode_out_bytes;
      kd["decode_gbps"] = k.decode_gbps;
      kd["decode_failures"] = k.decode_failures;
      kd["tried"] = k.tried;
      kd["over_budget"] = k.over_budget;
      kd["max_rel_rmse"] = k.max_rel_rmse;
      codecs.append(kd);
    }
    d["codecs"] = codecs;
    if (const SwapStats& w = s.swap; w.present) {
      py::dict wd;
      wd["engine"] = w.engine;
      wd["degraded"] = w.degraded;
      wd["reads"] = w.reads;
      wd["writes"] = w.writes;
      wd["bytes_read"] = w.bytes_read;
      wd["bytes_written"] = w.bytes_written;
      wd["read_mbps"] = w.read_mbps;
      wd["write_mbps"] = w.write_mbps;
      wd["io_errors"] = w.io_errors;
      wd["checksum_failures"] = w.checksum_failures;
      wd["largest_free_bytes"] = w.largest_free_bytes;
      wd["fragmentation"] = w.fragmentation;
      wd["ram_capacity_bytes"] = w.ram_capacity_bytes;
      wd["ram_used_bytes"] = w.ram_used_bytes;
      wd["ram_entries"] = w.ram_entries;
      wd["ram_logical_bytes"] = w.ram_logical_bytes;
      wd["ram_reads"] = w.ram_reads;
      wd["ram_writebacks"] = w.ram_writebacks;
      wd["ram_writeback_bytes"] = w.ram_writeback_bytes;
      d["swap"] = wd;
    } else {
      d["swap"] = py::none();
    }
    if (const RemoteStats& r = s.remote; r.present) {
      py::dict rd;
      rd["addresses"] = r.addresses;
      rd["cluster"] = r.cluster;
      rd["degraded"] = r.degraded;
      rd["nodes"] = r.nodes;
      rd["lookups"] = r.lookups;
      rd["hits"] = r.hits;
      rd["misses"] = r.misses;
      rd["puts"] = r.puts;
      rd["gets"] = r.gets;
      rd["put_bytes"] = r.put_bytes;
      rd["get_bytes"] = r.get_bytes;
      rd["put_mbps"] = r.put_mbps;
      rd["get_mbps"] = r.get_mbps;
      rd["put_latency_ms"] = r.put_latency_ms;
      rd["get_latency_ms"] = r.get_latency_ms;
      rd["errors"] = r.errors;
      rd["checksum_failures"] = r.checksum_failures;
      rd["degradations"] = r.degradations;
      rd["redirections"] = r.redirections;
      rd["stored_bytes"] = r.stored_bytes;
      rd["entries"] = r.entries;
      rd["redis_used_bytes"] = r.redis_used_bytes;
      rd["redis_max_bytes"] = r.redis_max_bytes;
      rd["last_error"] = r.last_error;
      rd["pending_deletes"] = r.pending_deletes;
      rd["deletes_replayed"] = r.deletes_replayed;
      rd["deletes_dropped"] = r.deletes_dropped;
      d["remote"] = rd;
    } else {
      d["remote"] = py::none();
    }
    return d;
  }

  py::tuple Segment(uint32_t arena) {
    auto [base, size] = c().SegmentMapping(arena);
    return py::make_tuple(reinterpret_cast<uintptr_t>(base), size);
  }

 private:
  static std::shared_ptr<Region> FromLease(Lease&& lease) {
    auto region = std::make_shared<Region>();
    region->info = lease.info();
    region->data = const_cast<void*>(lease.data());
    region->device = lease.device();
    region->lease = std::make_shared<Lease>(std::move(lease));
    return region;
  }

  std::unique_ptr<Client> client_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "tensord C++ client binding; use the `tensord` package";
  g_error_type = PyErr_NewExceptionWithDoc(
      "tensord.Error", "A tensord request failed; .code is the gRPC code, .code_name its name.",
      PyExc_RuntimeError, nullptr);
  m.attr("Error") = py::handle(g_error_type);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::object err =
          py::reinterpret_borrow<py::object>(g_error_type)(std::string(e.status.message()));
      err.attr("code") = static_cast<int>(e.status.code());
      err.attr("code_name") = absl::StatusCodeToString(e.status.code());
      PyErr_SetObject(g_error_type, err.ptr());
    }
  });

  py::class_<Region, std::shared_ptr<Region>>(m, "Tensor", py::buffer_protocol(),
                                              "A tensor in tensord's shared memory.")
      .def_buffer([](Region& r) { return ToBuffer(r); })
      .def(
          "__dlpack__",
          [](const std::shared_ptr<Region>& r, py::object /*stream*/) { return ToDlpack(r); },
          py::arg("stream") = py::none())
      .def("__dlpack_device__",
           [](const Region& r) {
             return r.device >= 0 ? py::make_tuple(int{kDLCUDA}, r.device)
                                  : py::make_tuple(int{kDLCPU}, 0);
           })
      .def_property_readonly("__cuda_array_interface__",
                             [](const Region& r) -> py::dict {
                               if (r.device < 0)
                                 throw py::attribute_error("a host tensor has no CUDA interface");
                               py::dict d;
                               d["shape"] = py::tuple(py::cast(r.info.shape));
                               d["typestr"] = TypeString(r.info.dtype);
                               d["data"] =
                                   py::make_tuple(reinterpret_cast<uintptr_t>(r.data), r.readonly);
                               d["strides"] = py::none();
                               d["version"] = 3;
                               return d;
                             })
      .def_property_readonly("device",
                             [](const Region& r) {
                               return r.device >= 0 ? "cuda:" + std::to_string(r.device)
                                                    : std::string("cpu");
                             })
      .def_property_readonly("key", [](const Region& r) { return r.info.key; })
      .def_property_readonly("shape",
                             [](const Region& r) { return py::tuple(py::cast(r.info.shape)); })
      .def_property_readonly("dtype",
                             [](const Region& r) { return std::string(DTypeName(r.info.dtype)); })
      .def_property_readonly("nbytes", [](const Region& r) { return r.info.nbytes; })
      .def_property_readonly("pool", [](const Region& r) { return r.info.pool; })
      .def_property_readonly("arena", [](const Region& r) { return r.info.location.arena; })
      .def_property_readonly("data_ptr",
                             [](const Region& r) { return reinterpret_cast<uintptr_t>(r.data); })
      .def_property_readonly("sealed", [](const Region& r) { return r.writable == nullptr; })
      .def_property_readonly("lease_id",
                             [](const Region& r) { return r.lease ? r.lease->lease_id() : 0; })
      .def_property_readonly(
          "valid",
          [](const Region& r) {
            return r.lease ? r.lease->valid() : r.writable ? r.writable->valid() : false;
          },
          "False once the daemon that served this tensor restarted (or ended the session): the "
          "lease pins nothing any more and the memory may be reused; get() it again.")
      .def(
          "seal",
          [](Region& r, uintptr_t stream) {
            if (r.writable == nullptr) Throw(absl::FailedPreconditionError("not being written"));
            py::gil_scoped_release nogil;
            Check(r.writable->Seal(reinterpret_cast<void*>(stream)));
          },
          py::arg("stream") = 0,
          "Publishes a created tensor: visible to every client, immutable from now on. For a GPU "
          "tensor, `stream` is the cudaStream_t its writes were issued on (0: the legacy default "
          "stream; e.g. torch.cuda.current_stream().cuda_stream): the daemon publishes it once "
          "they are complete.")
      .def(
          "abort",
          [](Region& r) {
            if (r.writable == nullptr) Throw(absl::FailedPreconditionError("not being written"));
            py::gil_scoped_release nogil;
            Check(r.writable->Abort());
          },
          "Drops a created tensor that was not sealed.")
      .def(
          "release",
          [](Region& r) {
            if (r.lease == nullptr) Throw(absl::FailedPreconditionError("not a leased tensor"));
            py::gil_scoped_release nogil;
            Check(r.lease->Release());
          },
          "Ends the lease now instead of at garbage collection; views made from this tensor must "
          "not be used afterwards. Raises tensord.Error (FAILED_PRECONDITION) for a lease from "
          "before a daemon restart (see .valid); a second release does nothing.");

  py::class_<PyClient>(m, "_Client")
      .def(py::init<std::optional<std::string>, std::string, std::string, double, double>(),
           py::arg("socket") = py::none(), py::arg("namespace") = "", py::arg("name") = "python",
           py::arg("timeout") = 10.0, py::arg("reconnect_timeout") = 30.0)
      .def("close", &PyClient::Close)
      .def_property_readonly("reconnects", &PyClient::Reconnects)
      .def("create", &PyClient::Create, py::arg("key"), py::arg("shape"), py::arg("dtype"),
           py::arg("durability") = "durable", py::arg("pool") = "", py::arg("scope") = "global",
           py::arg("ttl") = 0.0, py::arg("device") = "cpu", py::arg("compression") = "default",
           py::arg("parent") = "", py::arg("error_budget") = 0.0,
           py::arg("codecs") = std::vector<std::string>{})
      .def("prefetch", &PyClient::Prefetch, py::arg("keys"), py::arg("device") = "cpu")
      .def("hint", &PyClient::Hint, py::arg("keys"), py::arg("device") = "cpu",
           py::arg("ttl") = 0.0)
      .def("get", &PyClient::Get, py::arg("key"), py::arg("device") = "cpu")
      .def("get_many", &PyClient::GetMany, py::arg("keys"), py::arg("device") = "cpu")
      .def("delete", &PyClient::Delete, py::arg("key"))
      .def("evict", &PyClient::Evict, py::arg("key"))
      .def("stat", &PyClient::Stat, py::arg("key"))
      .def("ls", &PyClient::List, py::arg("prefix") = "", py::arg("limit") = 0)
      .def("stats", &PyClient::GetStats)
      .def("segment", &PyClient::Segment, py::arg("arena"));
}

}  // namespace tensord::python
