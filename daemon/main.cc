// tensord: the memory daemon. Parses flags over the configuration, starts the daemon and runs
// until SIGINT or SIGTERM, then drains (new work refused, leases given time to end) and shuts
// down cleanly (segments and socket removed). Speaks systemd's notify protocol.
#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/notify.h"
#include "daemon/settings.h"
#include "spdlog/spdlog.h"

namespace {

// Flag values in command-line order, applied over the file (and again after a reload).
using Overrides = std::vector<std::pair<const tensord::Setting*, std::string>>;

absl::Status ApplyOverrides(const Overrides& overrides, tensord::DaemonConfig* config) {
  for (const auto& [setting, value] : overrides) {
    if (absl::Status st = setting->set(*config, value); !st.ok()) return st;
  }
  return tensord::Validate(*config);
}

// SIGHUP: re-reads the file, applies the reloadable settings that changed and says which other
// ones changed (they apply at restart).
void Reload(const std::string& path, const Overrides& overrides, tensord::DaemonConfig* config) {
  if (path.empty()) {
    spdlog::info("SIGHUP: no configuration file to reload (started without --config)");
    return;
  }
  auto fresh = tensord::LoadConfigFile(path);
  absl::Status st = fresh.ok() ? ApplyOverrides(overrides, &*fresh) : fresh.status();
  if (!st.ok()) {
    spdlog::error("SIGHUP: {} not reloaded: {}", path, st.ToString());
    return;
  }
  for (const tensord::Setting& s : tensord::Settings()) {
    const std::string now = s.get(*config), then = s.get(*fresh);
    if (now == then) continue;
    if (!s.reloadable) {
      spdlog::warn("SIGHUP: {} changed to {}: applies at restart", s.key, then);
      continue;
    }
    if (s.key == "daemon.log_level") {
      if (absl::Status level = tensord::SetupLogging(fresh->log_level); !level.ok()) {
        spdlog::error("SIGHUP: {}", level.ToString());
        continue;
      }
    }
    s.set(*config, absl::StripPrefix(absl::StripSuffix(then, "\""), "\"")).IgnoreError();
    spdlog::info("SIGHUP: {} = {}", s.key, then);
  }
}

// The --help section of a setting, by its table section.
std::string FlagGroup(const std::string& key) {
  const std::string section = key.substr(0, key.find('.'));
  if (section == "host") return "Host tier";
  if (section == "ssd") return "SSD tier";
  if (section == "gpu") return "GPU tier";
  if (section == "remote") return "Remote tier (Redis)";
  if (section == "policy") return "Policies";
  return "Daemon";
}

}  // namespace

int main(int argc, char** argv) {
  // Request buffers of 256 KiB and more (batched Gets, hostile oversized messages) get their
  // own mappings, returned to the system when freed. glibc's default raises this threshold
  // after each such free, so freed large buffers stayed in its heaps: RssAnon grew by ~30 MiB
  // over 60,000 fuzzed requests, ~6 MiB with a fixed threshold (tests/bench/request_memory).
  // An operator's own setting (MALLOC_MMAP_THRESHOLD_, or the glibc tunable) stays in force.
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr &&
      (tunables == nullptr || std::strstr(tunables, "mmap_threshold") == nullptr)) {
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
  }
  CLI::App app{
      "tensord: shared tensor memory daemon for ML inference.\n"
      "Settings come from the built-in defaults, then --config FILE, then flags."};
  std::string config_path, preset, swap_size;
  bool no_prefault = false, no_zero = false, swap_fallback = false, print_config = false,
       print_example = false, forget = false;
  std::vector<std::string> swap_files, sets;
  Overrides overrides;
  app.add_option("-c,--config", config_path, "TOML configuration file");
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");
  app.add_flag("--print-example-config", print_example,
               "print the commented example configuration and exit");
  app.add_flag("--forget", forget,
               "remove what a stopped instance kept for a warm restart (its shared memory, the "
               "object index) and exit");
  app.add_option("--set", sets, "KEY=VALUE for any setting, e.g. --set ssd.queue_depth=64");
  // One flag per setting of the table, its help and default from the table.
  for (const tensord::Setting& s : tensord::Settings()) {
    app.add_option_function<std::string>(
           s.flag(), [&overrides, &s](const std::string& v) { overrides.emplace_back(&s, v); },
           absl::StrCat(s.help, s.reloadable ? " [reloadable]" : ""))
        ->type_name(s.type)
        ->default_str(s.default_value())
        ->group(FlagGroup(s.key));
  }
  app.add_option("--preset", preset, "pool-class preset: qwen3-vl")->group("Host tier");
  app.add_flag("--no-prefault", no_prefault, "same as --host-prefault false")->group("Host tier");
  app.add_flag("--no-zero-on-free", no_zero, "same as --host-zero-on-free false")
      ->group("Host tier");
  app.add_option(
         "--shm-mode",
         [&overrides](const std::vector<std::string>& v) {
           overrides.emplace_back(tensord::FindSetting("host.shm_mode"), v.back());
           return true;
         },
         "same as --host-shm-mode")
      ->group("Host tier");
  app.add_option("--swap-file", swap_files,
                 "enable the SSD tier with this swap file (repeat for several devices)")
      ->group("SSD tier");
  app.add_option("--swap-size", swap_size, "size of each --swap-file, e.g. 64GiB (default 4GiB)")
      ->group("SSD tier");
  app.add_flag("--swap-fallback", swap_fallback, "same as --ssd-force-fallback true")
      ->group("SSD tier");
  app.set_version_flag("--version", TENSORD_VERSION);
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "tensord: %s\n", std::string(st.message()).c_str());
    return 2;
  };
  if (print_example) {
    std::fputs(tensord::ExampleConfig().c_str(), stdout);
    return 0;
  }
  for (const std::string& kv : sets) {
    const size_t eq = kv.find('=');
    const tensord::Setting* s =
        eq == std::string::npos ? nullptr : tensord::FindSetting(kv.substr(0, eq));
    if (s == nullptr) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("--set ", kv, ": not KEY=VALUE with a known key (tensord --help)")));
    }
    overrides.emplace_back(s, kv.substr(eq + 1));
  }
  if (no_prefault) overrides.emplace_back(tensord::FindSetting("host.prefault"), "false");
  if (no_zero) overrides.emplace_back(tensord::FindSetting("host.zero_on_free"), "false");
  if (swap_fallback) overrides.emplace_back(tensord::FindSetting("ssd.force_fallback"), "true");

  tensord::DaemonConfig config;
  if (!config_path.empty()) {
    auto loaded = tensord::LoadConfigFile(config_path);
    if (!loaded.ok()) return fail(loaded.status());
    config = *std::move(loaded);
  }
  if (absl::Status st = ApplyOverrides(overrides, &config); !st.ok()) return fail(st);
  if (!preset.empty()) {
    if (auto st = tensord::ApplyPreset(preset, &config.host); !st.ok()) return fail(st);
  }
  if (!swap_files.empty()) {
    uint64_t size = tensord::kDefaultSwapSize;
    if (!swap_size.empty()) {
      auto bytes = tensord::ParseBytes(swap_size);
      if (!bytes.ok()) return fail(bytes.status());
      size = *bytes;
    }
    config.ssd.files.clear();  // flags replace the file's swap files
    for (const std::string& path : swap_files) config.ssd.files.push_back({path, size});
  } else if (!swap_size.empty()) {
    return fail(absl::InvalidArgumentError("--swap-size needs --swap-file"));
  }
  if (print_config) {
    std::fputs(tensord::PrintConfig(config).c_str(), stdout);
    return 0;
  }
  if (auto st = tensord::SetupLogging(config.log_level); !st.ok()) return fail(st);
  if (forget) {
    auto removed = tensord::Daemon::Forget(config);
    if (!removed.ok()) return fail(removed.status());
    std::printf("removed %d shared-memory segments and the object index of %s\n", *removed,
                config.run_dir.c_str());
    return 0;
  }

  // Block the stop signals in every thread (gRPC's included) and take them here.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto daemon = tensord::Daemon::Start(config);
  if (!daemon.ok()) {
    spdlog::error("cannot start: {}", daemon.status().ToString());
    return 1;
  }
  tensord::notify::Ready(absl::StrCat("serving on unix:", (*daemon)->socket_path()));
  // SIGHUP reloads the configuration file (the reloadable settings; the log names the others).
  sigset_t waited = stop;
  sigaddset(&waited, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &waited, nullptr);
  int sig = 0;
  while (sigwait(&waited, &sig) == 0 && sig == SIGHUP) {
    tensord::notify::Reloading();
    Reload(config_path, overrides, &config);
    tensord::notify::Ready(absl::StrCat("serving on unix:", (*daemon)->socket_path()));
  }
  spdlog::info("signal {}: draining (up to {} ms; a second signal stops at once)", sig,
               config.drain_timeout_ms);
  tensord::notify::Stopping("draining");
  const uint64_t left = (*daemon)->Drain(absl::Milliseconds(config.drain_timeout_ms), [&stop] {
    timespec now{0, 0};
    return sigtimedwait(&stop, nullptr, &now) > 0;
  });
  tensord::notify::Status(absl::StrCat("stopping (", left, " leases still held)"));
  (*daemon)->Shutdown();
  daemon->reset();
  spdlog::info("stopped");
  return 0;
}
