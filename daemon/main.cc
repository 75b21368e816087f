// tensord: the memory daemon. Parses flags over the configuration, starts the daemon and runs
// until SIGINT or SIGTERM, then drains (new work refused, leases given time to end) and shuts
// down cleanly (segments and socket removed). Speaks systemd's notify protocol.
#include <csignal>
#include <cstdio>
#include <ctime>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/notify.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  CLI::App app{"tensord: shared tensor memory daemon for ML inference"};
  std::string config_path, run_dir, socket, capacity, preset, shm_mode, log_level;
  bool no_prefault = false, no_zero = false, swap_fallback = false;
  std::vector<std::string> swap_files;
  std::string swap_size;
  app.add_option("-c,--config", config_path, "TOML configuration file");
  app.add_option("--run-dir", run_dir, "directory for the socket and lock (default ./run)");
  app.add_option("--socket", socket, "Unix socket path (default <run-dir>/tensord.sock)");
  app.add_option("--host-capacity", capacity, "host tier size, e.g. 1GiB");
  app.add_option("--preset", preset, "pool-class preset: qwen3-vl");
  app.add_option("--shm-mode", shm_mode, "octal mode of shared-memory segments (default 0600)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.add_option("--swap-file", swap_files,
                 "enable the SSD tier with this swap file (repeat for several devices)");
  app.add_option("--swap-size", swap_size, "size of each --swap-file, e.g. 64GiB (default 4GiB)");
  app.add_flag("--swap-fallback", swap_fallback, "use pread/pwrite instead of io_uring");
  int64_t drain_timeout_ms = -1;
  int metrics_port = -1;
  app.add_option("--metrics-port", metrics_port,
                 "serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: off, the default)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--drain-timeout-ms", drain_timeout_ms,
                 "on SIGTERM, wait this long for clients to release leases (default 10000)");
  app.add_flag("--no-prefault", no_prefault, "do not touch segment pages at start");
  app.add_flag("--no-zero-on-free", no_zero, "do not zero freed memory before reuse");
  app.set_version_flag("--version", TENSORD_VERSION);
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "tensord: %s\n", std::string(st.message()).c_str());
    return 2;
  };
  tensord::DaemonConfig config;
  if (!config_path.empty()) {
    auto loaded = tensord::LoadConfigFile(config_path);
    if (!loaded.ok()) return fail(loaded.status());
    config = *std::move(loaded);
  }
  if (!run_dir.empty()) config.run_dir = run_dir;
  if (!socket.empty()) config.socket_path = socket;
  if (!log_level.empty()) config.log_level = log_level;
  if (!capacity.empty()) {
    auto bytes = tensord::ParseBytes(capacity);
    if (!bytes.ok()) return fail(bytes.status());
    config.host.capacity = *bytes;
  }
  if (!shm_mode.empty()) {
    auto mode = tensord::ParseMode(shm_mode);
    if (!mode.ok()) return fail(mode.status());
    config.host.shm_mode = *mode;
  }
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
  if (swap_fallback) config.ssd.force_fallback = true;
  if (drain_timeout_ms >= 0) config.drain_timeout_ms = drain_timeout_ms;
  if (metrics_port >= 0) config.metrics_port = metrics_port;
  if (no_prefault) config.host.prefault = false;
  if (no_zero) config.host.zero_on_free = false;
  if (auto st = tensord::SetupLogging(config.log_level); !st.ok()) return fail(st);

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
  // SIGHUP reloads the configuration file: the log level takes effect now; other settings
  // need a restart, and the log says which changed.
  sigset_t waited = stop;
  sigaddset(&waited, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &waited, nullptr);
  int sig = 0;
  while (sigwait(&waited, &sig) == 0 && sig == SIGHUP) {
    tensord::notify::Reloading();
    if (config_path.empty()) {
      spdlog::info("SIGHUP: no configuration file to reload (started without --config)");
    } else if (auto fresh = tensord::LoadConfigFile(config_path); !fresh.ok()) {
      spdlog::error("SIGHUP: {} not reloaded: {}", config_path, fresh.status().ToString());
    } else {
      if (!log_level.empty()) fresh->log_level = log_level;  // flags still win
      if (auto st = tensord::SetupLogging(fresh->log_level); st.ok()) {
        config.log_level = fresh->log_level;
      } else {
        spdlog::error("SIGHUP: log_level: {}", st.ToString());
      }
      spdlog::info("SIGHUP: reloaded {} (log_level {}); other settings apply at restart",
                   config_path, config.log_level);
    }
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
