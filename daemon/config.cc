// TOML configuration (toml++) and the built-in presets.
#include "daemon/config.h"

#include <grp.h>
#include <pwd.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/codec/codec.h"
#include "daemon/settings.h"
#include "daemon/store/validation.h"
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
  if (auto v = node.value_exact<int64_t>(); v && *v >= 0) return static_cast<uint64_t>(*v);
  // A whole float (1e9) is a size too. toml++'s own float-to-integer cast is undefined past
  // int64's range (the config fuzzer found it), so the range is checked here first.
  if (auto d = node.value_exact<double>(); d && *d >= 0 && *d < 0x1p63 && *d == std::floor(*d)) {
    return static_cast<uint64_t>(*d);
  }
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
      if (!(pool->share > 0 && pool->share <= 1)) {
        return Bad(v, "share is a fraction of the host tier in (0, 1], e.g. 0.25");
      }
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
    } else if (key == "remote" && v.is_string() && table == "host.pool") {
      pool->remote = *v.value<std::string>();
      if (pool->remote != "publish" && pool->remote != "never") {
        return Bad(v, "remote is \"publish\" or \"never\" (unset: [remote]'s publish_cache and "
                      "publish_durable)");
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

// A user or group given by number or by name (resolved now, through NSS).
template <bool kUser>
absl::StatusOr<uint32_t> IdOf(const toml::node& v) {
  if (auto i = v.value_exact<int64_t>(); i && *i >= 0 && *i < (int64_t{1} << 31)) {
    return static_cast<uint32_t>(*i);
  }
  if (auto name = v.value_exact<std::string>()) {
    std::vector<char> buf(16384);
    if constexpr (kUser) {
      passwd pw, *found = nullptr;
      if (getpwnam_r(name->c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found) {
        return found->pw_uid;
      }
    } else {
      group gr, *found = nullptr;
      if (getgrnam_r(name->c_str(), &gr, buf.data(), buf.size(), &found) == 0 && found) {
        return found->gr_gid;
      }
    }
    return Bad(v, absl::StrCat("no ", kUser ? "user" : "group", " named '", *name, "'"));
  }
  return Bad(v, kUser ? "uids are user ids or names" : "gids are group ids or names");
}

template <bool kUser, typename Id>
absl::Status Ids(const toml::node& v, std::vector<Id>* out) {
  if (!v.is_array()) return Bad(v, "must be a list");
  for (const toml::node& e : *v.as_array()) {
    auto id = IdOf<kUser>(e);
    if (!id.ok()) return id.status();
    out->push_back(static_cast<Id>(*id));
  }
  return absl::OkStatus();
}

absl::Status ParseTenant(const toml::table& t, TenantConfig* tenant) {
  bool group_set = false;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    absl::Status st;
    if (key == "name" && v.is_string()) {
      tenant->name = *v.value<std::string>();
    } else if (key == "uids") {
      st = Ids<true>(v, &tenant->uids);
    } else if (key == "gids") {
      st = Ids<false>(v, &tenant->gids);
    } else if (key == "namespaces" && v.is_array()) {
      for (const toml::node& n : *v.as_array()) {
        if (!n.is_string()) return Bad(n, "namespaces are strings (a trailing * makes a prefix)");
        std::string ns = *n.value<std::string>();
        absl::string_view name = ns;
        if (absl::EndsWith(name, "*")) name.remove_suffix(1);
        if (absl::Status st = store::ValidateNamespace(name); !st.ok()) {
          return Bad(n, absl::StrCat("namespace '", ns, "': ", st.message()));
        }
        tenant->namespaces.push_back(std::move(ns));
      }
    } else if (key == "host_bytes" || key == "ssd_bytes" || key == "gpu_bytes") {
      auto b = Bytes(v, key);
      if (!b.ok()) return b.status();
      (key == "host_bytes"  ? tenant->host_bytes
       : key == "ssd_bytes" ? tenant->ssd_bytes
                            : tenant->gpu_bytes) = *b;
    } else if ((key == "max_leases" || key == "max_sessions") && v.is_integer() &&
               *v.value<int64_t>() >= 0) {
      (key == "max_leases" ? tenant->max_leases : tenant->max_sessions) =
          static_cast<uint64_t>(*v.value<int64_t>());
    } else if (key == "segment_group") {
      auto g = IdOf<false>(v);
      if (!g.ok()) return g.status();
      tenant->segment_group = *g;
      group_set = true;
    } else if (key == "segment_mode" && v.is_string()) {
      auto m = ParseMode(*v.value<std::string>());
      if (!m.ok()) return Bad(v, m.status().message());
      tenant->segment_mode = *m;
    } else {
      return Bad(v, absl::StrCat("unknown or ill-typed key tenant.", key));
    }
    if (!st.ok()) return st;
  }
  const std::string who = absl::StrCat("tenant '", tenant->name, "'");
  if (tenant->name.empty() || tenant->name.size() > 64 ||
      !std::all_of(tenant->name.begin(), tenant->name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
      })) {
    return absl::InvalidArgumentError(
        "a tenant needs a name of 1 to 64 letters, digits, '_' or '-'");
  }
  if (tenant->uids.empty() && tenant->gids.empty()) {
    return absl::InvalidArgumentError(who + " needs uids or gids: who it is");
  }
  if (tenant->namespaces.empty()) {
    return absl::InvalidArgumentError(who + " needs namespaces: what it owns");
  }
  if (tenant->host_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(who + " needs host_bytes of at least 1 MiB: its segment");
  }
  if (!group_set) {
    if (tenant->gids.empty()) {
      return absl::InvalidArgumentError(
          who + " needs gids or segment_group: its segment is shared through a group");
    }
    tenant->segment_group = tenant->gids[0];
  }
  if ((tenant->segment_mode & 0007) != 0) {
    return absl::InvalidArgumentError(who + ": segment_mode must give others no access");
  }
  return absl::OkStatus();
}

// Whether a namespace can belong to both `a` and `b` (exact names or prefixes ending in '*').
bool Overlap(absl::string_view a, absl::string_view b) {
  const bool pa = absl::EndsWith(a, "*"), pb = absl::EndsWith(b, "*");
  if (pa) a.remove_suffix(1);
  if (pb) b.remove_suffix(1);
  if (pa && pb) return absl::StartsWith(a, b) || absl::StartsWith(b, a);
  if (pa) return absl::StartsWith(b, a);
  if (pb) return absl::StartsWith(a, b);
  return a == b;
}

absl::Status ValidateTenants(const DaemonConfig& config) {
  absl::flat_hash_map<std::string, std::string> names;
  absl::flat_hash_map<uint32_t, std::string> uids, gids, segment_groups;
  uint64_t host = 0;
  const auto& ts = config.tenants;
  for (size_t i = 0; i < ts.size(); ++i) {
    const TenantConfig& t = ts[i];
    if (!names.emplace(t.name, t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("two tenants are named '", t.name, "'"));
    }
    for (uid_t u : t.uids) {
      if (auto [it, fresh] = uids.emplace(u, t.name); !fresh && it->second != t.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("uid ", u, " is in tenants '", it->second, "' and '", t.name, "'"));
      }
    }
    for (gid_t g : t.gids) {
      if (auto [it, fresh] = gids.emplace(g, t.name); !fresh && it->second != t.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("gid ", g, " is in tenants '", it->second, "' and '", t.name, "'"));
      }
    }
    if (auto [it, fresh] = segment_groups.emplace(t.segment_group, t.name); !fresh) {
      return absl::InvalidArgumentError(absl::StrCat("tenants '", it->second, "' and '", t.name,
                                                     "' share segment group ", t.segment_group,
                                                     ": each could map the other's memory"));
    }
    for (size_t j = 0; j < i; ++j) {
      for (const std::string& a : t.namespaces) {
        for (const std::string& b : ts[j].namespaces) {
          if (Overlap(a, b)) {
            return absl::InvalidArgumentError(absl::StrCat("namespaces '", a, "' of tenant '",
                                                           t.name, "' and '", b, "' of tenant '",
                                                           ts[j].name, "' overlap"));
          }
        }
      }
    }
    host += t.host_bytes;
  }
  for (const auto& [g, owner] : segment_groups) {  // another tenant's members may not be in it
    if (auto it = gids.find(g); it != gids.end() && it->second != owner) {
      return absl::InvalidArgumentError(absl::StrCat("tenant '", owner, "' segment group ", g,
                                                     " is a group of tenant '", it->second, "'"));
    }
  }
  for (const TenantConfig& t : ts) {
    if (t.gpu_bytes > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tenant '", t.name,
          "': gpu_bytes must be 0 (a GPU arena is one CUDA IPC handle: the GPU tier serves the "
          "operator only while tenants are configured)"));
    }
  }
  if (host > config.host.capacity) {
    return absl::InvalidArgumentError(absl::StrCat("tenants' host_bytes add up to ", host,
                                                   ", more than host.capacity ",
                                                   config.host.capacity));
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
  return ValidateTenants(config);
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
         section == "remote" || section == "policy") &&
        v.is_table()) {
      st = ParseSection(section, *v.as_table(), &config, &preset, &first_file);
    } else if (section == "tenant" && v.is_array_of_tables()) {
      for (const toml::node& t : *v.as_array()) {
        TenantConfig tenant;
        st = ParseTenant(*t.as_table(), &tenant);
        if (!st.ok()) break;
        config.tenants.push_back(std::move(tenant));
      }
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
