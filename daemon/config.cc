// TOML configuration (toml++) and the built-in presets.
#include "daemon/config.h"

#include <toml++/toml.h>

#include <charconv>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tensord/dtype.h"

namespace tensord {
namespace {

struct PresetClass {
  const char* name;
  DType dtype;
  std::vector<int64_t> shape;
  double share;
};

// The tensor classes of a Qwen3-VL deployment (DESIGN.md); the rest goes to the general pool.
const std::vector<PresetClass>& Qwen3VlClasses() {
  static const std::vector<PresetClass> kClasses = {
      {"kv_cache", DType::kFloat16, {1, 32, 2048, 128}, 0.40},
      {"image_features", DType::kFloat16, {1, 576, 1152}, 0.10},
      {"text_embeddings", DType::kFloat16, {1, 512, 4096}, 0.10},
      {"attention_weights", DType::kFloat16, {8, 1024, 1024}, 0.15},
  };
  return kClasses;
}

absl::Status Bad(const toml::node& node, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config line ", node.source().begin.line, ": ", what));
}

absl::StatusOr<uint64_t> Bytes(const toml::node& node, absl::string_view key) {
  if (auto v = node.value<int64_t>(); v && *v >= 0) return static_cast<uint64_t>(*v);
  if (auto s = node.value<std::string>()) {
    auto b = ParseBytes(*s);
    if (b.ok()) return b;
  }
  return Bad(node, absl::StrCat(key, " must be a byte size such as 1073741824 or \"1GiB\""));
}

absl::StatusOr<mode_t> Mode(const toml::node& node, absl::string_view key) {
  if (auto s = node.value<std::string>()) {
    auto m = ParseMode(*s);
    if (m.ok()) return m;
  }
  return Bad(node, absl::StrCat(key, " must be an octal mode string such as \"0600\""));
}

absl::Status ParsePool(const toml::table& t, PoolClassConfig* pool) {
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    if (key == "name" && v.is_string()) {
      pool->name = *v.value<std::string>();
    } else if (key == "block_size") {
      auto b = Bytes(v, key);
      if (!b.ok()) return b.status();
      pool->block_size = *b;
    } else if (key == "count" && v.is_integer() && *v.value<int64_t>() > 0) {
      pool->block_count = static_cast<uint64_t>(*v.value<int64_t>());
    } else if (key == "share" && v.is_number()) {
      pool->share = *v.value<double>();
    } else if (key == "dtype" && v.is_string()) {
      auto d = ParseDType(*v.value<std::string>());
      if (!d.ok()) return Bad(v, d.status().message());
      dtype = *d;
    } else if (key == "shape" && v.is_array()) {
      for (const auto& dim : *v.as_array()) {
        if (!dim.is_integer()) return Bad(dim, "shape must be integers");
        shape.push_back(*dim.value<int64_t>());
      }
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key host.pool.", key));
    }
  }
  if (dtype != DType::kUnspecified) {
    auto b = TensorBytes(dtype, shape);
    if (!b.ok()) return b.status();
    if (pool->block_size == 0) pool->block_size = *b;
  }
  if (pool->block_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool '", pool->name, "' needs block_size or dtype and shape"));
  }
  return absl::OkStatus();
}

absl::Status ParseHost(const toml::table& t, HostTierConfig* host) {
  std::string preset;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    if (key == "capacity") {
      auto b = Bytes(v, key);
      if (!b.ok()) return b.status();
      host->capacity = *b;
    } else if (key == "shm_mode") {
      auto m = Mode(v, key);
      if (!m.ok()) return m.status();
      host->shm_mode = *m;
    } else if (key == "prefault" && v.is_boolean()) {
      host->prefault = *v.value<bool>();
    } else if (key == "zero_on_free" && v.is_boolean()) {
      host->zero_on_free = *v.value<bool>();
    } else if (key == "preset" && v.is_string()) {
      preset = *v.value<std::string>();
    } else if (key == "pool" && v.is_array_of_tables()) {
      for (const auto& p : *v.as_array()) {
        PoolClassConfig pool;
        if (auto st = ParsePool(*p.as_table(), &pool); !st.ok()) return st;
        host->pools.push_back(std::move(pool));
      }
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key host.", key));
    }
  }
  if (!preset.empty()) {
    if (!host->pools.empty()) {
      return absl::InvalidArgumentError("host.preset and host.pool exclude each other");
    }
    return ApplyPreset(preset, host);
  }
  return absl::OkStatus();
}

absl::Status ParseSwapFile(const toml::table& t, const std::string& where, SwapFileConfig* file) {
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    if (key == "path" && v.is_string() && !v.value<std::string>()->empty()) {
      file->path = *v.value<std::string>();
    } else if (key == "size") {
      auto b = Bytes(v, where + ".size");
      if (!b.ok()) return b.status();
      file->size = *b;
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key ", where, ".", key));
    }
  }
  if (file->path.empty()) return absl::InvalidArgumentError(where + " needs a path");
  if (file->size == 0 || file->size % 4096 != 0) {
    return absl::InvalidArgumentError(where + ".size must be a positive multiple of 4 KiB");
  }
  return absl::OkStatus();
}

absl::Status ParseSsd(const toml::table& t, SsdConfig* ssd) {
  SwapFileConfig first{"", kDefaultSwapSize};  // [ssd] path/size: the first file
  bool has_first = false;
  std::vector<SwapFileConfig> more;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    auto fraction = [&](double* out) -> absl::Status {
      auto d = v.value<double>();
      if (!d || *d <= 0 || *d > 1) return Bad(v, absl::StrCat("ssd.", key, " must be in (0, 1]"));
      *out = *d;
      return absl::OkStatus();
    };
    absl::Status st;
    if (key == "path" && v.is_string()) {
      first.path = *v.value<std::string>();
      has_first = !first.path.empty();
    } else if (key == "size") {
      auto b = Bytes(v, "ssd.size");
      if (!b.ok()) return b.status();
      first.size = *b;
    } else if (key == "file" && v.is_array_of_tables()) {
      for (const toml::node& f : *v.as_array()) {
        SwapFileConfig file;
        st = ParseSwapFile(*f.as_table(), absl::StrCat("ssd.file[", more.size(), "]"), &file);
        if (!st.ok()) return st;
        more.push_back(file);
      }
    } else if (key == "min_mem_available") {
      auto b = Bytes(v, key);
      if (!b.ok()) return b.status();
      ssd->min_mem_available = *b;
    } else if (key == "io_threads" && v.is_integer() && *v.value<int64_t>() > 0 &&
               *v.value<int64_t>() <= 64) {
      ssd->io_threads = static_cast<int>(*v.value<int64_t>());
    } else if (key == "queue_depth" && v.is_integer() && *v.value<int64_t>() > 0 &&
               *v.value<int64_t>() <= 4096) {
      ssd->queue_depth = static_cast<int>(*v.value<int64_t>());
    } else if (key == "degrade_after" && v.is_integer() && *v.value<int64_t>() > 0) {
      ssd->degrade_after = static_cast<int>(*v.value<int64_t>());
    } else if (key == "force_fallback" && v.is_boolean()) {
      ssd->force_fallback = *v.value<bool>();
    } else if (key == "high_watermark") {
      st = fraction(&ssd->high_watermark);
    } else if (key == "low_watermark") {
      st = fraction(&ssd->low_watermark);
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key ssd.", key));
    }
    if (!st.ok()) return st;
  }
  if (has_first) {
    if (first.size == 0 || first.size % 4096 != 0) {
      return absl::InvalidArgumentError("ssd.size must be a positive multiple of 4 KiB");
    }
    ssd->files.push_back(first);
  }
  ssd->files.insert(ssd->files.end(), more.begin(), more.end());
  if (ssd->low_watermark > ssd->high_watermark) {
    return absl::InvalidArgumentError("ssd.low_watermark is above ssd.high_watermark");
  }
  return absl::OkStatus();
}

absl::Status ParseDaemon(const toml::table& t, DaemonConfig* config) {
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    if (key == "run_dir" && v.is_string()) {
      config->run_dir = *v.value<std::string>();
    } else if (key == "socket" && v.is_string()) {
      config->socket_path = *v.value<std::string>();
    } else if (key == "socket_mode") {
      auto m = Mode(v, key);
      if (!m.ok()) return m.status();
      config->socket_mode = *m;
    } else if (key == "log_level" && v.is_string()) {
      config->log_level = *v.value<std::string>();
    } else if (key == "max_leases_per_session" && v.is_integer() && *v.value<int64_t>() > 0) {
      config->max_leases_per_session = static_cast<uint64_t>(*v.value<int64_t>());
    } else if (key == "max_sessions" && v.is_integer() && *v.value<int64_t>() > 0) {
      config->max_sessions = static_cast<uint64_t>(*v.value<int64_t>());
    } else if (key == "drain_timeout_ms" && v.is_integer() && *v.value<int64_t>() >= 0) {
      config->drain_timeout_ms = *v.value<int64_t>();
    } else if (key == "metrics_port" && v.is_integer() && *v.value<int64_t>() >= 0 &&
               *v.value<int64_t>() <= 65535) {
      config->metrics_port = static_cast<int>(*v.value<int64_t>());
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key daemon.", key));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<mode_t> ParseMode(absl::string_view text) {
  uint32_t mode = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || mode > 0777) {
    return absl::InvalidArgumentError(absl::StrCat("not an octal file mode: '", text, "'"));
  }
  return static_cast<mode_t>(mode);
}

absl::Status ApplyPreset(absl::string_view preset, HostTierConfig* host) {
  if (preset != "qwen3-vl") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset '", preset, "' (known: qwen3-vl)"));
  }
  host->pools.clear();
  for (const PresetClass& c : Qwen3VlClasses()) {
    PoolClassConfig pool;
    pool.name = c.name;
    pool.block_size = *TensorBytes(c.dtype, c.shape);
    pool.share = c.share;
    host->pools.push_back(std::move(pool));
  }
  return absl::OkStatus();
}

absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("config file ", path, " does not exist"));
  }
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.source().begin.line, ": ", std::string(e.description())));
  }
  DaemonConfig config;
  for (const auto& [k, v] : root) {
    absl::Status st;
    if (k.str() == "daemon" && v.is_table()) {
      st = ParseDaemon(*v.as_table(), &config);
    } else if (k.str() == "host" && v.is_table()) {
      st = ParseHost(*v.as_table(), &config.host);
    } else if (k.str() == "ssd" && v.is_table()) {
      st = ParseSsd(*v.as_table(), &config.ssd);
    } else {
      st = Bad(v, absl::StrCat("unknown section [", std::string(k.str()), "]"));
    }
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  return config;
}

}  // namespace tensord
