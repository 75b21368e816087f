// TOML configuration (toml++) and the built-in presets.
#include "daemon/config.h"

#include <toml++/toml.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "daemon/codec/codec.h"
#include "daemon/settings.h"
#include "tensord/dtype.h"

namespace tensord {
namespace {

struct PresetClass {
  const char* name;
  DType dtype;
  std::vector<int64_t> shape;
  double share;
  const char* compression;  // of swap copies (CACHE tensors; DURABLE ones are never lossy)
  double error_budget;
  std::vector<std::string> codecs;
};

// The tensor classes of a Qwen3-VL deployment (DESIGN.md); the rest goes to the general pool.
// KV blocks and vision features are recomputable caches: swapped lossy within 1% relative RMSE
// (FP8 or INT8, half the bytes: tests/bench/codec_bench); weights and embeddings losslessly.
const std::vector<PresetClass>& Qwen3VlClasses() {
  static const std::vector<PresetClass> kClasses = {
      {"kv_cache", DType::kFloat16, {1, 32, 2048, 128}, 0.40, "lossy", 0.01, {"fp8_e4m3", "int8"}},
      {"image_features", DType::kFloat16, {1, 576, 1152}, 0.10, "lossy", 0.01, {}},
      {"text_embeddings", DType::kFloat16, {1, 512, 4096}, 0.10, "lossless", 0, {}},
      {"attention_weights", DType::kFloat16, {8, 1024, 1024}, 0.15, "lossless", 0, {}},
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

absl::Status ParsePool(const toml::table& t, absl::string_view table, PoolClassConfig* pool) {
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
    } else if (key == "compression" && v.is_string()) {
      pool->compression = *v.value<std::string>();
      if (auto c = codec::ParseCompression(pool->compression); !c.ok()) {
        return Bad(v, c.status().message());
      }
    } else if (key == "error_budget" && v.is_number()) {
      pool->error_budget = *v.value<double>();
      if (!(pool->error_budget > 0 && pool->error_budget < 1)) {
        return Bad(v, "error_budget is a relative RMSE in (0, 1), e.g. 0.01");
      }
    } else if (key == "codecs" && v.is_array()) {
      for (const auto& c : *v.as_array()) {
        if (!c.is_string()) return Bad(c, "codecs are names such as \"int8\"");
        if (auto k = codec::CodecNamed(*c.value<std::string>()); !k.ok()) {
          return Bad(c, k.status().message());
        }
        pool->codecs.push_back(*c.value<std::string>());
      }
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
      return Bad(v, absl::StrCat("unknown or ill-typed key ", table, ".", key));
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

// The text of a scalar TOML value, as a flag would carry it.
absl::StatusOr<std::string> ScalarText(const toml::node& v, const std::string& key) {
  if (auto s = v.value_exact<std::string>()) return *s;
  if (auto b = v.value_exact<bool>()) return std::string(*b ? "true" : "false");
  if (auto i = v.value_exact<int64_t>()) return absl::StrCat(*i);
  if (auto d = v.value_exact<double>()) return absl::StrCat(*d);
  return Bad(v, absl::StrCat(key, " must be a single value"));
}

// Reads one [section] table: table-driven settings, then the structured keys this section has.
absl::Status ParseSection(const std::string& section, const toml::table& t, DaemonConfig* config,
                          std::string* preset, SwapFileConfig* first_file) {
  for (const auto& [k, v] : t) {
    const std::string key = absl::StrCat(section, ".", std::string(k.str()));
    if (const Setting* s = FindSetting(key); s != nullptr) {
      auto text = ScalarText(v, key);
      if (!text.ok()) return text.status();
      if (absl::Status st = s->set(*config, *text); !st.ok()) return Bad(v, st.message());
    } else if (key == "host.preset" && v.is_string()) {
      *preset = *v.value<std::string>();
    } else if ((key == "host.pool" || key == "gpu.pool") && v.is_array_of_tables()) {
      auto& pools = key == "host.pool" ? config->host.pools : config->gpu.pools;
      for (const auto& p : *v.as_array()) {
        PoolClassConfig pool;
        if (auto st = ParsePool(*p.as_table(), key, &pool); !st.ok()) return st;
        pools.push_back(std::move(pool));
      }
    } else if (key == "ssd.path" && v.is_string()) {
      first_file->path = *v.value<std::string>();
    } else if (key == "ssd.size") {
      auto b = Bytes(v, key);
      if (!b.ok()) return b.status();
      first_file->size = *b;
    } else if (key == "ssd.file" && v.is_array_of_tables()) {
      for (const toml::node& f : *v.as_array()) {
        SwapFileConfig file;
        absl::Status st = ParseSwapFile(
            *f.as_table(), absl::StrCat("ssd.file[", config->ssd.files.size(), "]"), &file);
        if (!st.ok()) return st;
        config->ssd.files.push_back(file);
      }
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key ", key));
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

absl::Status Validate(const DaemonConfig& config) {
  if (config.ssd.low_watermark > config.ssd.high_watermark) {
    return absl::InvalidArgumentError("ssd.low_watermark is above ssd.high_watermark");
  }
  if (config.gpu.low_watermark > config.gpu.high_watermark) {
    return absl::InvalidArgumentError("gpu.low_watermark is above gpu.high_watermark");
  }
  return absl::OkStatus();
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
    pool.compression = c.compression;
    pool.error_budget = c.error_budget;
    pool.codecs = c.codecs;
    host->pools.push_back(std::move(pool));
  }
  return absl::OkStatus();
}

absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("config file ", path, " does not exist"));
  }
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, " is not a file"));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  std::string text(ec ? 0 : size, '\0');
  if (ec || !in.read(text.data(), static_cast<std::streamsize>(text.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, " cannot be read"));
  }
  return LoadConfigText(text, path);
}

absl::StatusOr<DaemonConfig> LoadConfigText(std::string_view text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.source().begin.line, ": ", std::string(e.description())));
  }
  DaemonConfig config;
  std::string preset;
  SwapFileConfig first_file{"", kDefaultSwapSize};  // [ssd] path/size
  for (const auto& [k, v] : root) {
    const std::string section(k.str());
    absl::Status st;
    if ((section == "daemon" || section == "host" || section == "ssd" || section == "gpu" ||
         section == "policy") &&
        v.is_table()) {
      st = ParseSection(section, *v.as_table(), &config, &preset, &first_file);
    } else {
      st = Bad(v, absl::StrCat("unknown section [", section, "]"));
    }
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  if (!first_file.path.empty()) {
    if (first_file.size == 0 || first_file.size % 4096 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ssd.size must be a positive multiple of 4 KiB"));
    }
    config.ssd.files.insert(config.ssd.files.begin(), first_file);
  }
  if (!preset.empty()) {
    if (!config.host.pools.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": host.preset and host.pool exclude each other"));
    }
    if (absl::Status st = ApplyPreset(preset, &config.host); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
    }
  }
  if (absl::Status st = Validate(config); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  return config;
}

}  // namespace tensord
