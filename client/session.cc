// Client session: attach, watch, segment mapping cache.
#include "client/session.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tensord::internal {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Session::Session(const ClientOptions& options) : options_(options) {
  if (options_.socket_path.empty()) {
    const char* env = std::getenv("TENSORD_SOCKET");
    options_.socket_path = env != nullptr ? env : "./run/tensord.sock";
  }
}

absl::StatusOr<std::shared_ptr<Session>> Session::Open(const ClientOptions& options) {
  return Open(options, options.deadline);
}

absl::StatusOr<std::shared_ptr<Session>> Session::Open(const ClientOptions& options,
                                                       std::chrono::milliseconds connect_timeout) {
  std::shared_ptr<Session> s(new Session(options));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // gRPC's own reconnect backoff starts at 1 s and grows to 2 min; a restarted daemon on a
  // local socket is back in well under a second, so retry sooner and never wait more than 1 s
  // between attempts. (MIN_RECONNECT_BACKOFF is the connect timeout: left at its default.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  s->channel_ = grpc::CreateCustomChannel("unix:" + s->options_.socket_path,
                                          grpc::InsecureChannelCredentials(), args);
  if (!s->channel_->WaitForConnected(std::chrono::system_clock::now() + connect_timeout)) {
    return absl::UnavailableError(
        absl::StrCat("no tensord answers on unix:", s->options_.socket_path));
  }
  s->stub_ = v1::Tensord::NewStub(s->channel_);
  v1::AttachRequest request;
  request.set_client_name(options.client_name);
  s->attach_ = s->stub_->Attach(&s->attach_ctx_, request);
  v1::AttachEvent event;
  if (!s->attach_->Read(&event) || !event.has_welcome()) {
    absl::Status st = FromGrpc(s->attach_->Finish());
    s->attach_.reset();
    return st.ok() ? absl::UnavailableError("tensord closed the session at once") : st;
  }
  s->session_id_ = event.welcome().session_id();
  s->instance_id_ = event.welcome().instance_id();
  // By segment id: a tenant is offered only its own segments, so the ids may have gaps (a
  // missing one has no name).
  for (const v1::Segment& seg : event.welcome().segments()) {
    if (seg.id() >= kMaxSegments) return absl::InternalError("the daemon named too many segments");
    if (seg.id() >= s->segments_.size()) s->segments_.resize(seg.id() + 1);
    s->segments_[seg.id()] = seg;
  }
  s->mapped_.resize(s->segments_.size());
  s->gpu_arenas_.assign(event.welcome().gpu_arenas().begin(), event.welcome().gpu_arenas().end());
  s->gpu_mapped_.resize(s->gpu_arenas_.size());
  s->watcher_ = std::thread([raw = s.get()] { raw->Watch(); });
  return s;
}

void Session::Watch() {
  // Events beyond the welcome are informational for now; reading keeps the stream healthy
  // and tells us when the daemon goes away.
  v1::AttachEvent event;
  while (attach_->Read(&event)) {
  }
  // The daemon ended the stream (stopped, killed, or dropped the session): everything this
  // session holds there is gone, so its leases must say so.
  if (!closing_.load()) MarkDead();
}

void Session::MarkDead() {
  std::lock_guard<std::mutex> lock(mu_);
  if (alive_.exchange(false, std::memory_order_acq_rel)) {
    // The next instance may take these segments over and hand their memory to someone else:
    // writes through pointers of this session (a tensor being filled, a numpy/torch view) must
    // not reach it. Each mapping becomes a private copy-on-write mapping of the same segment in
    // place: reads still see the segment (a DURABLE tensor the next instance restores is still
    // there, so a model's weight views keep working), writes land in private pages only, nothing
    // faults. A segment already removed is left mapped as it is: nobody can be handed it again.
    for (std::optional<ShmSegment>& m : mapped_) {
      if (!m.has_value() || m->data() == nullptr) continue;
      const std::string name = m->name().starts_with('/') ? m->name() : "/" + m->name();
      const int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
      if (fd < 0) continue;
      void* at =
          ::mmap(m->data(), m->size(), PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE, fd, 0);
      ::close(fd);
      if (at == MAP_FAILED) std::abort();  // the shared mapping would let stale writes through
    }
  }
  dead_cv_.notify_all();
}

bool Session::WaitDead(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return dead_cv_.wait_for(lock, timeout, [this] { return !alive(); });
}

Session::~Session() {
  if (attach_ != nullptr) {
    closing_.store(true);
    attach_ctx_.TryCancel();
    if (watcher_.joinable()) watcher_.join();
    attach_->Finish();
  }
}

std::unique_ptr<grpc::ClientContext> Session::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + options_.deadline);
  return ctx;
}

bool Session::gpu_usable() const {
  // Usable when this process sees at least one of the daemon's GPUs (by uuid: another
  // CUDA_VISIBLE_DEVICES may hide them all). Probed once: it initialises CUDA.
  std::call_once(gpu_probe_, [this] {
    if (gpu_arenas_.empty() || cuda::DeviceCount() == 0) return;
    for (const v1::GpuArena& a : gpu_arenas_) {
      if (cuda::DeviceByUuid(a.uuid()).ok()) gpu_usable_ = true;
    }
  });
  return gpu_usable_;
}

absl::StatusOr<int> Session::DaemonDevice(int local) {
  if (local < 0) return -1;
  if (gpu_arenas_.empty()) {
    return absl::FailedPreconditionError("the GPU tier is not present in this daemon");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = daemon_device_.find(local); it != daemon_device_.end()) return it->second;
  }
  auto info = cuda::GetDeviceInfo(local);
  if (!info.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this process cannot use CUDA device ", local, ": ", info.status().message()));
  }
  for (const v1::GpuArena& a : gpu_arenas_) {
    if (a.uuid() == info->uuid) {
      std::lock_guard<std::mutex> lock(mu_);
      daemon_device_[local] = a.device();
      return a.device();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the daemon has no GPU arena on this process's CUDA device ", local));
}

std::vector<uint64_t> Session::GpuIpcOpens() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> out;
  for (const GpuMapping& m : gpu_mapped_) out.push_back(m.opens);
  return out;
}

absl::StatusOr<uint8_t*> Session::Address(const v1::Location& location, int* device) {
  if (device != nullptr) *device = -1;
  if (location.tier() == v1::TIER_GPU) {
    const uint32_t arena = location.arena();
    if (arena >= gpu_arenas_.size()) {
      return absl::NotFoundError(absl::StrCat("daemon named unknown GPU arena ", arena));
    }
    const v1::GpuArena& a = gpu_arenas_[arena];
    if (location.offset() > a.size() || location.length() > a.size() - location.offset()) {
      return absl::InternalError(absl::StrCat("location [", location.offset(), ", +",
                                              location.length(), ") lies outside GPU arena ",
                                              arena));
    }
    std::lock_guard<std::mutex> lock(mu_);
    GpuMapping& m = gpu_mapped_[arena];
    if (!m.mapping.has_value()) {
      auto local = cuda::DeviceByUuid(a.uuid());
      if (!local.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("this process cannot reach the daemon's GPU ", a.device(), ": ",
                         local.status().message(), "; Get with want=HOST instead"));
      }
      auto mapping = cuda::IpcMapping::Open(*local, a.ipc_handle());
      if (!mapping.ok()) return mapping.status();
      m.device = *local;
      m.mapping.emplace(*std::move(mapping));
      ++m.opens;
    }
    if (device != nullptr) *device = m.device;
    return m.mapping->get() + location.offset();
  }
  if (location.tier() != v1::TIER_HOST) {
    return absl::InternalError("the daemon returned a location that cannot be mapped");
  }
  const uint32_t arena = location.arena();
  if (arena >= segments_.size() || segments_[arena].shm_name().empty()) {
    return absl::NotFoundError(absl::StrCat("daemon named unknown segment ", arena));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!mapped_[arena].has_value()) {
    auto seg = ShmSegment::Open(segments_[arena].shm_name());
    if (!seg.ok()) return seg.status();
    mapped_[arena].emplace(*std::move(seg));
  }
  const ShmSegment& seg = *mapped_[arena];
  if (location.offset() > seg.size() || location.length() > seg.size() - location.offset()) {
    return absl::InternalError(absl::StrCat("location [", location.offset(), ", +",
                                            location.length(), ") lies outside segment ", arena));
  }
  return seg.data() + location.offset();
}

std::pair<const uint8_t*, uint64_t> Session::Mapping(uint32_t arena) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (arena >= mapped_.size() || !mapped_[arena].has_value()) return {nullptr, 0};
  return {mapped_[arena]->data(), mapped_[arena]->size()};
}

absl::Status Session::Release(const std::vector<uint64_t>& lease_ids) {
  v1::ReleaseRequest request;
  request.set_session_id(session_id_);
  for (uint64_t id : lease_ids) request.add_lease_ids(id);
  v1::ReleaseResponse response;
  return FromGrpc(stub_->Release(Context().get(), request, &response));
}

absl::Status Session::Seal(const std::string& key, const std::string& cuda_event) {
  v1::SealRequest request;
  request.set_session_id(session_id_);
  request.set_ns(options_.ns);
  request.set_key(key);
  request.set_cuda_event(cuda_event);
  v1::SealResponse response;
  return FromGrpc(stub_->Seal(Context().get(), request, &response));
}

absl::Status Session::Abort(const std::string& key) {
  v1::AbortRequest request;
  request.set_session_id(session_id_);
  request.set_ns(options_.ns);
  request.set_key(key);
  v1::AbortResponse response;
  return FromGrpc(stub_->Abort(Context().get(), request, &response));
}

}  // namespace tensord::internal
