#include "daemon/settings.h"

#include <charconv>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon/codec/codec.h"
#include "daemon/config.h"
#include "daemon/policy/eviction.h"
#include "daemon/tiers/redis.h"

namespace tensord {
namespace {

absl::Status Invalid(const std::string& key, absl::string_view text, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat(key, ": '", text, "' is not valid (", want, ")"));
}

std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\"");
}

// A byte size exactly, in the largest unit that divides it: "1GiB", "4096".
std::string ExactBytes(uint64_t v) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {{uint64_t{1} << 40, "TiB"},
                                                                {uint64_t{1} << 30, "GiB"},
                                                                {uint64_t{1} << 20, "MiB"},
                                                                {uint64_t{1} << 10, "KiB"}};
  for (const auto& [unit, name] : kUnits) {
    if (v != 0 && v % unit == 0) return Quote(absl::StrCat(v / unit, name));
  }
  return Quote(absl::StrCat(v));
}

template <typename Ref>
Setting String(std::string key, std::string help, Ref ref, std::string example = "",
               std::function<absl::Status(absl::string_view)> check = nullptr) {
  Setting s{key, "string", std::move(help), false, std::move(example), nullptr, nullptr};
  s.set = [ref, check](DaemonConfig& c, absl::string_view text) {
    if (check) {
      if (absl::Status st = check(text); !st.ok()) return st;
    }
    ref(c) = std::string(text);
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) { return Quote(ref(const_cast<DaemonConfig&>(c))); };
  return s;
}

template <typename Ref>
Setting Bytes(std::string key, std::string help, Ref ref, std::string example = "") {
  Setting s{key, "bytes", std::move(help), false, std::move(example), nullptr, nullptr};
  s.set = [ref, key](DaemonConfig& c, absl::string_view text) {
    auto b = ParseBytes(text);
    if (!b.ok()) return Invalid(key, text, "a byte size such as 4096, \"64MiB\" or \"1GiB\"");
    ref(c) = *b;
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) { return ExactBytes(ref(const_cast<DaemonConfig&>(c))); };
  return s;
}

template <typename Ref>
Setting Int(std::string key, std::string help, Ref ref, int64_t min, int64_t max,
            std::string example = "") {
  Setting s{key, "int", std::move(help), false, std::move(example), nullptr, nullptr};
  s.set = [ref, key, min, max](DaemonConfig& c, absl::string_view text) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
      return Invalid(key, text, absl::StrCat("an integer from ", min, " to ", max));
    }
    ref(c) = static_cast<std::remove_reference_t<decltype(ref(c))>>(v);
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) { return absl::StrCat(ref(const_cast<DaemonConfig&>(c))); };
  return s;
}

template <typename Ref>
Setting Bool(std::string key, std::string help, Ref ref, std::string example = "") {
  Setting s{key, "bool", std::move(help), false, std::move(example), nullptr, nullptr};
  s.set = [ref, key](DaemonConfig& c, absl::string_view text) {
    if (text != "true" && text != "false") return Invalid(key, text, "true or false");
    ref(c) = text == "true";
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) {
    return std::string(ref(const_cast<DaemonConfig&>(c)) ? "true" : "false");
  };
  return s;
}

template <typename Ref>
Setting Mode(std::string key, std::string help, Ref ref, std::string example = "") {
  Setting s{key, "mode", std::move(help), false, std::move(example), nullptr, nullptr};
  s.set = [ref, key](DaemonConfig& c, absl::string_view text) {
    auto m = ParseMode(text);
    if (!m.ok()) return Invalid(key, text, "an octal file mode such as \"0600\"");
    ref(c) = *m;
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) {
    return Quote(absl::StrFormat("%04o", ref(const_cast<DaemonConfig&>(c))));
  };
  return s;
}

template <typename Ref>
Setting Fraction(std::string key, std::string help, Ref ref) {
  Setting s{key, "fraction", std::move(help), false, "", nullptr, nullptr};
  s.set = [ref, key](DaemonConfig& c, absl::string_view text) {
    double v = 0;
    if (!absl::SimpleAtod(text, &v) || !(v > 0 && v <= 1)) {
      return Invalid(key, text, "a fraction in (0, 1]");
    }
    ref(c) = v;
    return absl::OkStatus();
  };
  s.get = [ref](const DaemonConfig& c) {
    return absl::StrFormat("%.2f", ref(const_cast<DaemonConfig&>(c)));
  };
  return s;
}

absl::Status CheckLevel(absl::string_view text) {
  for (const char* level : {"trace", "debug", "info", "warn", "error"}) {
    if (text == level) return absl::OkStatus();
  }
  return Invalid("daemon.log_level", text, "trace, debug, info, warn or error");
}

absl::Status CheckCompression(absl::string_view text) {
  return codec::ParseCompression(text).status();
}

absl::Status CheckEviction(absl::string_view text) {
  auto p = policy::MakeEvictionPolicy(text);
  if (!p.ok())
    return absl::InvalidArgumentError(absl::StrCat("policy.eviction: ", p.status().message()));
  return absl::OkStatus();
}

absl::Status CheckGpuMode(absl::string_view text) {
  if (text == "auto" || text == "on" || text == "off") return absl::OkStatus();
  return Invalid("gpu.mode", text, "auto, on or off");
}

absl::Status CheckDevices(absl::string_view text) {
  if (ParseDeviceList(text).ok()) return absl::OkStatus();
  return Invalid("gpu.devices", text, "\"all\" or ordinals such as \"0,2\"");
}

absl::Status CheckAddresses(absl::string_view text) {
  for (absl::string_view a : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    if (auto e = tiers::redis::ParseEndpoint(absl::StripAsciiWhitespace(a)); !e.ok()) {
      return Invalid("remote.addresses", text, "host:port[,host:port...]");
    }
  }
  return absl::OkStatus();
}

Setting Reloadable(Setting s) {
  s.reloadable = true;
  return s;
}

#define TENSORD_FIELD(expr) \
  [](DaemonConfig & c) -> auto& { return c.expr; }

std::vector<Setting> MakeSettings() {
  std::vector<Setting> s;
  // [daemon]
  s.push_back(String("daemon.run_dir", "Directory of the lock file and the default socket.",
                     TENSORD_FIELD(run_dir), "\"/run/tensord\""));
  s.push_back(String("daemon.socket", "Unix socket path; empty: <run_dir>/tensord.sock.",
                     TENSORD_FIELD(socket_path)));
  s.push_back(Bool("daemon.persist",
                   "Keep sealed tensors across a restart, clean or crash: segments stay, an "
                   "object index records where each tensor is.",
                   TENSORD_FIELD(persist)));
  s.push_back(String("daemon.state_dir",
                     "Directory of the object index; empty: run_dir. On persistent storage, "
                     "swapped-out tensors survive a reboot too.",
                     TENSORD_FIELD(state_dir), "\"/var/lib/tensord\""));
  s.push_back(Mode("daemon.socket_mode", "File mode of the socket (0660: group members connect).",
                   TENSORD_FIELD(socket_mode), "\"0660\""));
  s.push_back(Reloadable(String("daemon.log_level", "trace, debug, info, warn or error.",
                                TENSORD_FIELD(log_level), "", CheckLevel)));
  s.back().type = "level";
  s.push_back(Int("daemon.max_leases_per_session", "Leases one session may hold at once.",
                  TENSORD_FIELD(max_leases_per_session), 1, int64_t{1} << 40));
  s.push_back(Int("daemon.max_sessions", "Attached sessions at once.", TENSORD_FIELD(max_sessions),
                  1, 1 << 20));
  s.push_back(Reloadable(Int("daemon.drain_timeout_ms",
                             "On SIGTERM, how long clients get to release their leases.",
                             TENSORD_FIELD(drain_timeout_ms), 0, 3600000)));
  s.push_back(Int("daemon.metrics_port", "Prometheus text on 127.0.0.1:PORT/metrics; 0: off.",
                  TENSORD_FIELD(metrics_port), 0, 65535));
  // [host]
  s.push_back(
      Bytes("host.capacity", "Size of the shared-memory host tier.", TENSORD_FIELD(host.capacity)));
  s.push_back(Mode("host.shm_mode", "File mode of the segments (0660: group members map them).",
                   TENSORD_FIELD(host.shm_mode), "\"0660\""));
  s.push_back(Bool("host.prefault", "Touch every page at start: no page faults on the hot path.",
                   TENSORD_FIELD(host.prefault)));
  s.push_back(Bool("host.zero_on_free",
                   "Zero freed memory before reuse: no tenant reads "
                   "another's data.",
                   TENSORD_FIELD(host.zero_on_free)));
  // [ssd]
  s.push_back(Int("ssd.io_threads", "I/O threads, one io_uring ring each.",
                  TENSORD_FIELD(ssd.io_threads), 1, 64));
  s.push_back(Int("ssd.queue_depth", "Transfers in flight per ring (1 MiB chunks).",
                  TENSORD_FIELD(ssd.queue_depth), 1, 4096));
  s.push_back(Bool("ssd.force_fallback", "pread/pwrite instead of io_uring.",
                   TENSORD_FIELD(ssd.force_fallback)));
  s.push_back(Int("ssd.degrade_after",
                  "Consecutive failed transfers before the device is "
                  "marked degraded.",
                  TENSORD_FIELD(ssd.degrade_after), 1, 1000000));
  s.push_back(Fraction("ssd.high_watermark",
                       "Demote host tensors to SSD above this share of "
                       "the host tier ...",
                       TENSORD_FIELD(ssd.high_watermark)));
  s.push_back(
      Fraction("ssd.low_watermark", "... down to this share.", TENSORD_FIELD(ssd.low_watermark)));
  s.push_back(Bytes("ssd.min_mem_available",
                    "Also demote while MemAvailable is below this "
                    "(0: ignore).",
                    TENSORD_FIELD(ssd.min_mem_available)));
  s.push_back(Bytes("ssd.compressed_ram",
                    "RAM for swap copies kept compressed in memory in front of the swap files "
                    "(the oldest are written back when it is full; 0: off).",
                    TENSORD_FIELD(ssd.compressed_ram)));
  s.push_back(Fraction("ssd.compressed_min_saving",
                       "A swap copy stays in the compressed RAM only if its codec saved at least "
                       "this share of its bytes.",
                       TENSORD_FIELD(ssd.compressed_min_saving)));
  // [gpu]
  s.push_back(String("gpu.mode", "auto (GPUs if any), on (fail without one) or off.",
                     TENSORD_FIELD(gpu.mode), "", CheckGpuMode));
  s.back().type = "gpu-mode";
  s.push_back(String("gpu.devices", "\"all\" or device ordinals, e.g. \"0,2\".",
                     TENSORD_FIELD(gpu.devices), "", CheckDevices));
  s.push_back(Bytes("gpu.size", "Arena per device; 0: memory_fraction of its free memory.",
                    TENSORD_FIELD(gpu.size)));
  s.push_back(Fraction("gpu.memory_fraction", "Share of free device memory when size is 0.",
                       TENSORD_FIELD(gpu.memory_fraction)));
  s.push_back(Fraction("gpu.high_watermark",
                       "Demote GPU tensors to host above this share of the arena ...",
                       TENSORD_FIELD(gpu.high_watermark)));
  s.push_back(
      Fraction("gpu.low_watermark", "... down to this share.", TENSORD_FIELD(gpu.low_watermark)));
  s.push_back(Bool("gpu.pin_host", "Register host arenas with the driver: pinned, async copies.",
                   TENSORD_FIELD(gpu.pin_host)));
  // [remote]
  s.push_back(String("remote.addresses",
                     "Redis 7 (standalone, or any nodes of a Cluster) as host:port, "
                     "comma-separated; empty: no remote tier.",
                     TENSORD_FIELD(remote.addresses), "", CheckAddresses));
  s.push_back(String("remote.user", "Redis ACL user; empty: the default user.",
                     TENSORD_FIELD(remote.user)));
  s.push_back(String("remote.password_file",
                     "A file holding the Redis password, readable by the daemon's user only.",
                     TENSORD_FIELD(remote.password_file)));
  s.push_back(String("remote.instance",
                     "This daemon's name in Redis keys of namespaces not shared; empty: the "
                     "host name.",
                     TENSORD_FIELD(remote.instance)));
  s.push_back(
      String("remote.prefix", "The prefix of every Redis key.", TENSORD_FIELD(remote.prefix)));
  s.push_back(String("remote.shared_namespaces",
                     "Namespaces shared with the other daemons on the same Redis, comma-"
                     "separated (a trailing * matches a prefix); the rest stay this daemon's.",
                     TENSORD_FIELD(remote.shared_namespaces)));
  s.push_back(Bytes("remote.chunk_size", "Bytes per Redis value of a tensor.",
                    TENSORD_FIELD(remote.chunk_size)));
  s.push_back(Bytes("remote.capacity",
                    "Bytes this daemon may keep in Redis; 0: bounded by Redis's maxmemory.",
                    TENSORD_FIELD(remote.capacity)));
  s.push_back(Int("remote.timeout_ms", "Timeout of every Redis connect, send and receive.",
                  TENSORD_FIELD(remote.timeout_ms), 10, 600000));
  s.push_back(Int("remote.connections", "Connections per Redis node.",
                  TENSORD_FIELD(remote.connections), 1, 256));
  s.push_back(Bool("remote.publish_cache", "Write CACHE tensors to Redis when they are sealed.",
                   TENSORD_FIELD(remote.publish_cache)));
  s.push_back(Bool("remote.publish_durable", "... and DURABLE ones.",
                   TENSORD_FIELD(remote.publish_durable)));
  s.push_back(Bool("remote.demote_cache",
                   "CACHE tensors the full SSD tier (or host memory, without a usable SSD tier) "
                   "lets go are moved to Redis instead of being dropped (those not published "
                   "when sealed).",
                   TENSORD_FIELD(remote.demote_cache)));
  s.push_back(Bool("remote.lookup", "A Get that finds nothing here looks in Redis.",
                   TENSORD_FIELD(remote.lookup)));
  // [policy]
  s.push_back(String("policy.eviction",
                     "Eviction policy of the host and GPU tiers: lru, s3fifo, slru, lru+chain, "
                     "s3fifo+chain, slru+chain.",
                     TENSORD_FIELD(policy.eviction), "", CheckEviction));
  s.push_back(Fraction("policy.s3fifo_small",
                       "S3-FIFO's small (probation) queue: its share of a tier's tensors' bytes.",
                       TENSORD_FIELD(policy.s3fifo_small)));
  s.push_back(Fraction("policy.hint_share",
                       "Look-ahead: the share of each tier that hinted tensors may hold "
                       "protected from eviction (and be promoted into).",
                       TENSORD_FIELD(policy.hint_share)));
  s.push_back(Bool("policy.predict",
                   "Without hints, learn each client's next key (successors, strides on "
                   "numbered keys like layer.7) and promote it ahead.",
                   TENSORD_FIELD(policy.predict)));
  s.push_back(String("policy.compression",
                     "How swap copies are stored when neither the Create nor its pool class "
                     "says: none, lossless, or lossy (CACHE tensors; DURABLE ones get lossless).",
                     TENSORD_FIELD(policy.compression), "", CheckCompression));
  s.push_back(Fraction("policy.error_budget",
                       "The largest relative RMSE of a lossy copy that names no budget.",
                       TENSORD_FIELD(policy.error_budget)));
  return s;
}

#undef TENSORD_FIELD

std::string SwapFilesToml(const DaemonConfig& c) {
  std::string out;
  for (size_t i = 0; i < c.ssd.files.size(); ++i) {
    absl::StrAppend(&out, "\n[[ssd.file]]\npath = ", Quote(c.ssd.files[i].path),
                    "\nsize = ", ExactBytes(c.ssd.files[i].size), "\n");
  }
  return out;
}

}  // namespace

std::string Setting::flag() const {
  std::string name = absl::StrReplaceAll(key, {{"_", "-"}, {".", "-"}});
  if (absl::StartsWith(name, "daemon-")) name = name.substr(7);
  return "--" + name;
}

const std::vector<Setting>& Settings() {
  static const std::vector<Setting> kSettings = MakeSettings();
  return kSettings;
}

const Setting* FindSetting(absl::string_view key) {
  for (const Setting& s : Settings()) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

std::string PrintConfig(const DaemonConfig& config) {
  std::string out = "# tensord --print-config: the effective configuration\n";
  std::string section;
  for (const Setting& s : Settings()) {
    const std::string sec = s.key.substr(0, s.key.find('.'));
    if (sec != section) {
      absl::StrAppend(&out, "\n[", sec, "]\n");
      section = sec;
    }
    absl::StrAppend(&out, s.key.substr(sec.size() + 1), " = ", s.get(config), "\n");
  }
  for (const auto& [table, pools] :
       {std::pair{"host.pool", &config.host.pools}, std::pair{"gpu.pool", &config.gpu.pools}}) {
    for (const PoolClassConfig& p : *pools) {
      absl::StrAppend(&out, "\n[[", table, "]]\nname = ", Quote(p.name),
                      "\nblock_size = ", ExactBytes(p.block_size), "\n");
      if (p.block_count > 0) {
        absl::StrAppend(&out, "count = ", p.block_count, "\n");
      } else {
        absl::StrAppend(&out, "share = ", absl::StrFormat("%.2f", p.share), "\n");
      }
      if (!p.compression.empty())
        absl::StrAppend(&out, "compression = ", Quote(p.compression), "\n");
      if (p.error_budget > 0) absl::StrAppend(&out, "error_budget = ", p.error_budget, "\n");
      if (!p.codecs.empty()) {
        std::vector<std::string> quoted;
        for (const std::string& c : p.codecs) quoted.push_back(Quote(c));
        absl::StrAppend(&out, "codecs = [", absl::StrJoin(quoted, ", "), "]\n");
      }
      if (!p.remote.empty()) absl::StrAppend(&out, "remote = ", Quote(p.remote), "\n");
    }
  }
  absl::StrAppend(&out, SwapFilesToml(config));
  return out;
}

std::string ExampleConfig() {
  std::string out =
      "# tensord configuration, as installed to /etc/tensord/tensord.toml for the systemd "
      "service.\n"
      "# Generated by `tensord --print-example-config` from the settings table "
      "(daemon/settings.cc).\n"
      "# Every key is optional: the built-in default (shown commented out) applies where one is\n"
      "# absent. Flags override keys (tensord --help). Sizes accept 4096, \"64KiB\", \"16MiB\", "
      "\"1GiB\".\n"
      "# (reloadable): SIGHUP (systemctl reload tensord) applies a change; the rest at restart.\n";
  std::string section;
  for (const Setting& s : Settings()) {
    const std::string sec = s.key.substr(0, s.key.find('.'));
    if (sec != section) {
      absl::StrAppend(&out, "\n[", sec, "]\n");
      if (sec == "ssd") {
        absl::StrAppend(&out,
                        "# The SSD tier is off until a swap file is named: path and size here, "
                        "more files as\n# [[ssd.file]] tables (path, size), e.g. one per NVMe "
                        "device. Swap files may live in\n# /var/lib/tensord (the service's "
                        "StateDirectory=).\n# path = \"/var/lib/tensord/swap\"\n"
                        "# size = \"4GiB\"\n");
      }
      section = sec;
    }
    absl::StrAppend(&out, "# ", s.help, s.reloadable ? " (reloadable)" : "", "\n");
    if (s.example.empty()) {
      absl::StrAppend(&out, "# ", s.key.substr(sec.size() + 1), " = ", s.default_value(), "\n");
    } else {
      absl::StrAppend(&out, s.key.substr(sec.size() + 1), " = ", s.example, "\n");
    }
    if (s.key == "host.zero_on_free") {
      absl::StrAppend(&out,
                      "# Pool classes: preset = \"qwen3-vl\", or [[host.pool]] tables with name, "
                      "and block_size\n# or dtype + shape, and count or share of the tier; "
                      "optionally compression (none, lossless,\n# lossy), error_budget and "
                      "codecs for its swap copies, and remote (publish or never: whether\n# "
                      "its tensors go to the remote tier when sealed, over [remote]'s "
                      "publish_cache/durable).\n# qwen3-vl swaps KV blocks and image\n"
                      "# features lossy within 1% (fp8_e4m3/int8), weights and embeddings "
                      "losslessly.\n"
                      "# preset = \"qwen3-vl\"\n");
    }
    if (s.key == "gpu.pin_host") {
      absl::StrAppend(&out,
                      "# Fixed pool classes carved from every device's arena, named "
                      "\"gpu<N>.<name>\":\n# [[gpu.pool]] tables like [[host.pool]] (share: "
                      "of the arena); the rest is the general pool.\n");
    }
  }
  absl::StrAppend(
      &out,
      "\n# Tenants (read at start): without [[tenant]] tables every peer that can open the socket "
      "may use\n# every namespace. With them, a peer is the tenant that lists its uid (or one of "
      "its groups),\n# by the kernel's SO_PEERCRED; root and the daemon's user are the operator; "
      "anyone else may\n# only Ping. Let the tenants' users reach the socket (daemon.socket_mode, "
      "or its group).\n"
      "# [[tenant]]\n"
      "# name = \"llm\"\n"
      "# uids = [\"vllm\"]                 # names or numbers\n"
      "# gids = [\"llm\"]                  # its segment's group, unless segment_group says\n"
      "# namespaces = [\"llm\", \"llm.*\"]   # exact, or a prefix ending in *\n"
      "# host_bytes = \"8GiB\"             # its own segment, out of host.capacity\n"
      "# ssd_bytes = \"64GiB\"             # its swap copies (0: no limit)\n"
      "# max_leases = 100000\n"
      "# max_sessions = 64\n");
  return out;
}

}  // namespace tensord
