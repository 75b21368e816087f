// Daemon start-up and shutdown sequencing.
#include "daemon/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/shm_guard.h"
#include "daemon/notify.h"
#include "daemon/service/front.h"
#include "daemon/service/metrics.h"
#include "daemon/service/tensord_service.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "daemon/tiers/gpu_tier.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/remote_tier.h"
#include "daemon/tiers/ssd_tier.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"

namespace tensord {
namespace {

// The remote tier's configuration from [remote]: the password read from its file, which must
// be the daemon's own and unreadable by anyone else (INVALID_ARGUMENT, PERMISSION_DENIED).
absl::StatusOr<tiers::RemoteTierConfig> RemoteTierConfigFrom(const RemoteConfig& r) {
  tiers::RemoteTierConfig c;
  for (absl::string_view a : absl::StrSplit(r.addresses, ',', absl::SkipWhitespace())) {
    auto e = tiers::redis::ParseEndpoint(absl::StripAsciiWhitespace(a));
    if (!e.ok()) return e.status();
    c.redis.seeds.push_back(*e);
  }
  c.redis.user = r.user;
  if (!r.password_file.empty()) {
    struct stat st {};
    if (stat(r.password_file.c_str(), &st) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("remote.password_file ", r.password_file, ": ", std::strerror(errno)));
    }
    if ((st.st_mode & 0077) != 0 || st.st_uid != geteuid()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "remote.password_file ", r.password_file,
          " must belong to the daemon's user and be readable by it alone (chmod 600)"));
    }
    std::ifstream in(r.password_file);
    std::string password((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c.redis.password = std::string(absl::StripTrailingAsciiWhitespace(password));
  }
  c.instance = r.instance;
  if (c.instance.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    c.instance = host;
  }
  c.prefix = r.prefix;
  for (absl::string_view ns : absl::StrSplit(r.shared_namespaces, ',', absl::SkipWhitespace())) {
    c.shared_namespaces.emplace_back(absl::StripAsciiWhitespace(ns));
  }
  c.chunk_bytes = r.chunk_size;
  c.capacity_bytes = r.capacity;
  c.redis.io_timeout = std::chrono::milliseconds(r.timeout_ms);
  c.redis.connect_timeout = std::chrono::milliseconds(std::min(r.timeout_ms, 1000));
  c.redis.connections_per_node = r.connections;
  return c;
}

// Takes the run directory's lock file. FAILED_PRECONDITION if another process holds it.
absl::StatusOr<int> LockRunDir(const std::string& run_dir) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create run directory ", run_dir, ": ", ec.message()));
  }
  const std::string path = run_dir + "/tensord.lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("another tensord is running with run directory ", run_dir));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || write(fd, pid.data(), pid.size()) < 0) {
    spdlog::warn("could not record pid in {}", path);
  }
  return fd;
}

// The store's compression defaults: [policy] compression for any pool, each [[host.pool]]'s own.
using CompressionDefaults = std::pair<codec::Policy, std::map<std::string, codec::Policy>>;

absl::StatusOr<codec::Policy> CompressionPolicy(const std::string& where, const std::string& mode,
                                                double budget,
                                                const std::vector<std::string>& codecs) {
  codec::Policy p;
  auto m = codec::ParseCompression(mode);
  if (!m.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", m.status().message()));
  p.mode = *m;
  if (p.mode == codec::Compression::kLossy) {
    p.budget = budget;
    auto mask = codec::CodecMask(codecs);
    if (!mask.ok())
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", mask.status().message()));
    p.allowed = *mask;
  }
  if (absl::Status st = codec::ValidatePolicy(p); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", st.message()));
  }
  return p;
}

absl::StatusOr<CompressionDefaults> CompressionOptions(const DaemonConfig& config) {
  CompressionDefaults out;
  auto all = CompressionPolicy("policy.compression", config.policy.compression,
                               config.policy.error_budget, {});
  if (!all.ok()) return all.status();
  out.first = *all;
  for (const PoolClassConfig& pool : config.host.pools) {
    if (pool.compression.empty()) continue;
    auto p = CompressionPolicy(
        absl::StrCat("host.pool '", pool.name, "'"), pool.compression,
        pool.error_budget > 0 ? pool.error_budget : config.policy.error_budget, pool.codecs);
    if (!p.ok()) return p.status();
    out.second[pool.name] = *p;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config) {
  std::unique_ptr<Daemon> d(new Daemon());
  shm_guard::Install();  // a client that truncates a segment must not kill the daemon
  auto lock = LockRunDir(config.run_dir);
  if (!lock.ok()) return lock.status();
  d->lock_fd_ = *lock;

  d->socket_path_ =
      config.socket_path.empty() ? config.run_dir + "/tensord.sock" : config.socket_path;
  if (d->socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path is longer than ", sizeof(sockaddr_un::sun_path) - 1, " bytes"));
  }
  // We hold the lock, so segments under our prefix belong to a dead instance: with persistence
  // the host tier takes over those its manifest lists (and removes the rest).
  const std::string prefix = tiers::ShmPrefixFor(config.run_dir);
  const std::string state_dir = config.state_dir.empty() ? config.run_dir : config.state_dir;
  d->persist_ = config.persist;
  d->state_dir_ = state_dir;
  if (d->persist_ && state_dir != config.run_dir) {
    // Another instance (another run directory) must not share this index and manifest.
    auto state_lock = LockRunDir(state_dir);
    if (!state_lock.ok()) return state_lock.status();
    d->state_lock_fd_ = *state_lock;
  } else if (!d->persist_) {
    // A later persistent start must not take over what an earlier one left and this one
    // overwrites (its segments go below; its swap extents are reused now).
    std::error_code ec;
    std::filesystem::remove(state_dir + "/index", ec);
    std::filesystem::remove(state_dir + "/segments", ec);
  }
  notify::Status(absl::StrCat("mapping ", FormatBytes(config.host.capacity), " of host memory",
                              config.host.prefault ? " (pre-faulting)" : ""));
  HostTierConfig host_config = config.host;
  if (!config.tenants.empty() && (host_config.shm_mode & 0077) != 0) {
    // The shared segments hold the operator's and unowned namespaces: no tenant may open them.
    spdlog::info("tenants configured: the shared segments get mode 0600, not {:o}",
                 host_config.shm_mode);
    host_config.shm_mode = 0600;
  }
  for (const TenantConfig& t : config.tenants) {  // tenant i + 1's segment is partition i
    host_config.partitions.push_back(
        HostPartition{t.name, t.host_bytes, t.segment_group, t.segment_mode});
  }
  auto host = tiers::HostTier::Create(host_config, prefix,
                                      d->persist_ ? state_dir + "/segments" : std::string());
  if (!host.ok()) return host.status();
  d->host_ = *std::move(host);
  store::LoadedIndex loaded;
  if (d->persist_) {
    auto index = store::Index::Open(state_dir + "/index", &loaded);
    if (!index.ok()) return index.status();
    d->index_ = *std::move(index);
  }
  if (!config.ssd.files.empty()) {
    notify::Status(absl::StrCat("opening ", config.ssd.files.size(), " swap file(s)"));
    tiers::SsdTierConfig sc;
    sc.files = config.ssd.files;
    sc.engine.threads = config.ssd.io_threads;
    sc.engine.queue_depth = config.ssd.queue_depth;
    sc.engine.force_sync = config.ssd.force_fallback;
    sc.degrade_after = config.ssd.degrade_after;
    sc.ram_capacity = config.ssd.compressed_ram;
    sc.ram_min_saving = config.ssd.compressed_min_saving;
    for (uint32_t i = 0; i < d->host_->segments().size(); ++i) {
      sc.engine.fixed_regions.push_back({d->host_->Address(i, 0), d->host_->segments()[i].size});
    }
    auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
    if (!ssd.ok()) return ssd.status();
    d->ssd_ = *std::move(ssd);
  }
  std::string gpu_absent;
  auto gpu = tiers::GpuTier::Open(config.gpu, d->host_.get(), &gpu_absent);
  if (!gpu.ok()) return gpu.status();
  d->gpu_ = *std::move(gpu);
  if (d->gpu_ == nullptr) spdlog::info("GPU tier absent: {}", gpu_absent);
  if (!config.remote.addresses.empty()) {
    auto rc = RemoteTierConfigFrom(config.remote);
    if (!rc.ok()) return rc.status();
    auto remote = tiers::RemoteTier::Create(*std::move(rc));
    if (!remote.ok()) return remote.status();
    d->remote_ = *std::move(remote);
    spdlog::info("remote tier: Redis at {} ({})", config.remote.addresses,
                 d->remote_->Healthy() ? "serving" : d->remote_->stats().last_error);
  }
  store::StoreOptions options;
  options.remote_publish_cache = config.remote.publish_cache;
  options.remote_publish_durable = config.remote.publish_durable;
  options.remote_demote_cache = config.remote.demote_cache;
  for (const PoolClassConfig& pool : config.host.pools) {
    if (!pool.remote.empty()) options.remote_publish_pools[pool.name] = pool.remote == "publish";
  }
  options.remote_lookup = config.remote.lookup;
  options.gpu_high_watermark = config.gpu.high_watermark;
  options.gpu_low_watermark = config.gpu.low_watermark;
  options.max_leases_per_session = config.max_leases_per_session;
  options.max_sessions = config.max_sessions;
  options.high_watermark = config.ssd.high_watermark;
  options.low_watermark = config.ssd.low_watermark;
  options.min_mem_available = config.ssd.min_mem_available;
  options.eviction = config.policy.eviction;
  options.s3fifo_small = config.policy.s3fifo_small;
  options.hint_share = config.policy.hint_share;
  options.predict = config.policy.predict;
  options.index = d->index_.get();
  options.tenants = store::Tenants(config.tenants);
  auto compression = CompressionOptions(config);
  if (!compression.ok()) return compression.status();
  options.default_compression = compression->first;
  options.class_compression = std::move(compression->second);
  d->store_ = std::make_unique<store::Store>(d->host_.get(), options, d->ssd_.get(), d->gpu_.get(),
                                             d->remote_.get());
  const absl::Time restore_start = absl::Now();
  if (d->persist_) {
    notify::Status(absl::StrCat("restoring ", loaded.tensors.size(), " tensors from the index"));
    d->store_->Restore(loaded, d->host_->reattached());
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  service::Front::Options front;
  front.socket_path = d->socket_path_;
  front.socket_mode = config.socket_mode;
  // No valid request is larger (a Get of 4096 keys of 1 KiB); a larger one is refused before it
  // is parsed, with RESOURCE_EXHAUSTED.
  front.max_message_bytes = static_cast<int>(store::kMaxRequestBytes);
  auto started = service::Front::Start(
      d->store_.get(), d->host_->segments(),
      d->gpu_ == nullptr ? std::vector<tiers::GpuArena>{} : d->gpu_->arenas(), front);
  if (!started.ok()) return started.status();
  d->front_ = *std::move(started);
  if (!config.tenants.empty()) {
    spdlog::info("{} tenants; peers in none of them may only Ping", config.tenants.size());
  }
  if (config.metrics_port > 0) {
    auto metrics = service::MetricsEndpoint::Start(
        config.metrics_port, [front = d->front_.get()] { return front->Snapshot(); });
    if (!metrics.ok()) return metrics.status();
    d->metrics_ = *std::move(metrics);
    spdlog::info("metrics on http://127.0.0.1:{}/metrics", d->metrics_->port());
  }
  d->front_->ForEachHealth([](grpc::HealthCheckServiceInterface* h) { h->SetServingStatus(true); });
  d->UpdateHealth();
  d->reaper_ = std::thread([raw = d.get()] { raw->ReapExpired(); });
  if (const uint64_t usec = notify::WatchdogUsec(); usec > 0) {
    d->watchdog_ = std::thread([raw = d.get(), usec] { raw->FeedWatchdog(usec); });
  }
  // Always: without an SSD tier it still reads system pressure for the stats.
  d->migrator_ = std::thread([raw = d.get()] { raw->store_->RunMigrator(&raw->migrator_stop_); });
  if (d->persist_) {
    spdlog::info(
        "serving {:.1f} ms after the restore began; checking restored tensors in the "
        "background",
        absl::ToDoubleMilliseconds(absl::Now() - restore_start));
    d->verifier_ = std::thread([raw = d.get(), restore_start] {
      const uint64_t bytes = raw->store_->VerifyRestored(&raw->migrator_stop_);
      if (bytes > 0) {
        spdlog::info("restored tensors checked: {} in {:.1f} ms after the restore began",
                     FormatBytes(bytes), absl::ToDoubleMilliseconds(absl::Now() - restore_start));
      }
    });
  }
  if (d->gpu_ != nullptr) {
    d->gpu_migrator_ =
        std::thread([raw = d.get()] { raw->store_->RunGpuMigrator(&raw->migrator_stop_); });
  }
  d->started_ = true;
  spdlog::info("tensord {} serving on unix:{} with {} of host memory in {} segments",
               TENSORD_VERSION, d->socket_path_, FormatBytes(config.host.capacity),
               d->host_->segments().size());
  return d;
}

absl::StatusOr<int> Daemon::Forget(const DaemonConfig& config) {
  auto lock = LockRunDir(config.run_dir);
  if (!lock.ok()) return lock.status();
  const std::string state_dir = config.state_dir.empty() ? config.run_dir : config.state_dir;
  const int removed = tiers::HostTier::RemoveStale(tiers::ShmPrefixFor(config.run_dir));
  std::error_code ec;
  for (const char* name : {"/segments", "/index", "/segments.tmp", "/index.tmp"}) {
    std::filesystem::remove(state_dir + name, ec);
  }
  close(*lock);
  return removed;
}

int Daemon::metrics_port() const { return metrics_ == nullptr ? 0 : metrics_->port(); }

void Daemon::ReapExpired() {
  for (uint64_t tick = 1; !stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100)); ++tick) {
    store_->ExpireDue();
    if (const uint64_t repairs = shm_guard::Repairs(); repairs != truncations_seen_) {
      spdlog::warn(
          "a client truncated a shared-memory segment; its size was restored ({} times so far, "
          "the bytes it cut off are lost)",
          repairs);
      truncations_seen_ = repairs;
    }
    if (index_ != nullptr && tick % 10 == 0) index_->Maintain();  // fdatasync once a second
    UpdateHealth();
    front_->TickWatchers();
  }
}

void Daemon::UpdateHealth() {
  absl::MutexLock lock(&health_mu_);
  if (front_ == nullptr || draining_) return;
  const bool ssd = ssd_ != nullptr && !ssd_->degraded();
  // NOT_SERVING: the tier is absent, or a device stopped answering (a sticky CUDA error).
  const bool gpu = gpu_ != nullptr && gpu_->Healthy();
  const bool remote = remote_ != nullptr && remote_->Healthy();
  front_->ForEachHealth([&](grpc::HealthCheckServiceInterface* health) {
    health->SetServingStatus("tensord.remote", remote);
    health->SetServingStatus("tensord.v1.Tensord", true);
    health->SetServingStatus("tensord.host", true);
    health->SetServingStatus("tensord.ssd", ssd);
    health->SetServingStatus("tensord.gpu", gpu);
  });
}

void Daemon::FeedWatchdog(uint64_t interval_usec) {
  const absl::Duration every = absl::Microseconds(static_cast<int64_t>(interval_usec / 2));
  do {
    store_->Stats();  // a wedged store (its lock held forever) stops the pings
    notify::Watchdog();
  } while (!stop_.WaitForNotificationWithTimeout(every));
}

uint64_t Daemon::Drain(absl::Duration timeout, const std::function<bool()>& abort) {
  {
    absl::MutexLock lock(&health_mu_);
    draining_ = true;
    if (front_ != nullptr) {
      front_->ForEachHealth(
          [](grpc::HealthCheckServiceInterface* h) { h->SetServingStatus(false); });
    }
  }
  if (front_ != nullptr) front_->StartDraining();
  const absl::Time give_up = absl::Now() + timeout;
  uint64_t leases = store_->Stats().leases;
  while (leases > 0 && absl::Now() < give_up && !abort()) {
    notify::Status(absl::StrCat("draining: ", leases, " leases held, ",
                                absl::ToInt64Seconds(give_up - absl::Now()), " s left"));
    absl::SleepFor(absl::Milliseconds(50));
    leases = store_->Stats().leases;
  }
  if (leases > 0) spdlog::warn("drain timed out with {} leases still held", leases);
  return leases;
}

void Daemon::Shutdown(int grace_ms) {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (watchdog_.joinable()) watchdog_.join();
  if (reaper_.joinable()) reaper_.join();
  metrics_.reset();  // its scrapes read the service
  absl::MutexLock lock(&health_mu_);
  if (front_ == nullptr) return;
  front_->ForEachHealth([](grpc::HealthCheckServiceInterface* h) { h->SetServingStatus(false); });
  front_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  front_.reset();
  unlink(socket_path_.c_str());
}

Daemon::~Daemon() {
  Shutdown();
  migrator_stop_.Notify();
  if (migrator_.joinable()) migrator_.join();
  if (gpu_migrator_.joinable()) gpu_migrator_.join();
  if (verifier_.joinable()) verifier_.join();
  store_.reset();
  // A start that failed half way keeps what the last instance left (nothing was served yet):
  // the segments it took over, and the manifest when it got no host tier (another instance may
  // hold the state directory); segments it created afresh hold nothing and go.
  const bool failed_start = !started_ && (host_ == nullptr || host_->reattached());
  if (persist_ && (failed_start || (index_ != nullptr && index_->Stats().live_records > 0))) {
    // The next instance takes over: the segments stay, the swap files and the index reach
    // the device.
    if (ssd_ != nullptr) ssd_->Sync();
    if (host_ != nullptr) host_->Keep();
  } else if (persist_) {
    std::error_code ec;
    std::filesystem::remove(state_dir_ + "/segments", ec);  // nothing to keep: the segments go
  }
  index_.reset();
  gpu_.reset();   // unpins the host arenas and frees the GPU arenas
  ssd_.reset();   // its engine has the arenas registered: it goes first
  host_.reset();  // unlinks the shared-memory segments
  if (state_lock_fd_ >= 0) close(state_lock_fd_);
  if (lock_fd_ >= 0) close(lock_fd_);
}

}  // namespace tensord
