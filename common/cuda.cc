// CUDA runtime wrappers (see cuda.h). With TENSORD_HAVE_CUDA unset, the same API answers
// UNAVAILABLE everywhere.
#include "common/cuda.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

#if TENSORD_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

namespace tensord::cuda {

#if TENSORD_HAVE_CUDA
namespace {

absl::Status Check(cudaError_t err, const char* call) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string text =
      absl::StrCat(call, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(text);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidResourceHandle:
      return absl::InvalidArgumentError(text);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::UnavailableError(text);
    default:
      return absl::InternalError(text);
  }
}

#define TENSORD_CUDA(call) Check((call), #call)
#define TENSORD_CUDA_RETURN(call)                                       \
  do {                                                                  \
    if (absl::Status st_ = Check((call), #call); !st_.ok()) return st_; \
  } while (0)

cudaMemcpyKind Kind(CopyKind kind) {
  switch (kind) {
    case CopyKind::kHostToDevice:
      return cudaMemcpyHostToDevice;
    case CopyKind::kDeviceToHost:
      return cudaMemcpyDeviceToHost;
    case CopyKind::kDeviceToDevice:
      return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

}  // namespace

bool Compiled() { return true; }

int DeviceCount(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why != nullptr) {
      *why = Check(err, "cudaGetDeviceCount").ToString();
      if (void* lib = dlopen("libcuda.so.1", RTLD_LAZY); lib == nullptr) {
        *why = "no NVIDIA driver is installed (libcuda.so.1 not found)";
      } else {
        dlclose(lib);
      }
    }
    cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  if (n == 0 && why != nullptr) *why = "the driver reports no CUDA device";
  return n;
}

absl::StatusOr<DeviceInfo> GetDeviceInfo(int device) {
  cudaDeviceProp prop;
  TENSORD_CUDA_RETURN(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.ordinal = device;
  info.name = prop.name;
  info.uuid.assign(prop.uuid.bytes, sizeof(prop.uuid.bytes));
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_bytes = prop.totalGlobalMem;
  return info;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo(int device) {
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  size_t free = 0, total = 0;
  TENSORD_CUDA_RETURN(cudaMemGetInfo(&free, &total));
  return std::make_pair(uint64_t{free}, uint64_t{total});
}

absl::StatusOr<int> DeviceByUuid(const std::string& uuid) {
  const int n = DeviceCount();
  for (int d = 0; d < n; ++d) {
    auto info = GetDeviceInfo(d);
    if (info.ok() && info->uuid == uuid) return d;
  }
  return absl::NotFoundError("no visible CUDA device has the daemon's device uuid");
}

absl::Status SetDevice(int device) { return TENSORD_CUDA(cudaSetDevice(device)); }

absl::StatusOr<DeviceMemory> DeviceMemory::Allocate(int device, uint64_t bytes) {
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  void* p = nullptr;
  TENSORD_CUDA_RETURN(cudaMalloc(&p, bytes));
  DeviceMemory m;
  m.ptr_ = static_cast<uint8_t*>(p);
  m.size_ = bytes;
  m.device_ = device;
  return m;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(size_, o.size_);
  std::swap(device_, o.device_);
  return *this;
}

DeviceMemory::~DeviceMemory() {
  if (ptr_ == nullptr) return;
  cudaSetDevice(device_);
  cudaFree(ptr_);
}

absl::StatusOr<std::string> DeviceMemory::IpcHandle() const {
  cudaIpcMemHandle_t h;
  TENSORD_CUDA_RETURN(cudaSetDevice(device_));
  TENSORD_CUDA_RETURN(cudaIpcGetMemHandle(&h, ptr_));
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

absl::StatusOr<Stream> Stream::Create(int device) {
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  cudaStream_t s = nullptr;
  TENSORD_CUDA_RETURN(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Stream out;
  out.stream_ = s;
  out.device_ = device;
  return out;
}

Stream& Stream::operator=(Stream&& o) noexcept {
  std::swap(stream_, o.stream_);
  std::swap(device_, o.device_);
  return *this;
}

Stream::~Stream() {
  if (stream_ == nullptr) return;
  cudaSetDevice(device_);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

absl::Status Stream::Synchronize() const {
  return TENSORD_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
}

absl::Status CopyAsync(void* dst, const void* src, uint64_t bytes, CopyKind kind, void* stream) {
  return TENSORD_CUDA(
      cudaMemcpyAsync(dst, src, bytes, Kind(kind), static_cast<cudaStream_t>(stream)));
}

absl::Status MemsetAsync(void* dst, int value, uint64_t bytes, void* stream) {
  return TENSORD_CUDA(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)));
}

absl::Status Copy(void* dst, const void* src, uint64_t bytes, CopyKind kind) {
  return TENSORD_CUDA(cudaMemcpy(dst, src, bytes, Kind(kind)));
}

absl::StatusOr<HostRegistration> HostRegistration::Register(void* ptr, uint64_t bytes) {
  TENSORD_CUDA_RETURN(cudaHostRegister(ptr, bytes, cudaHostRegisterPortable));
  HostRegistration r;
  r.ptr_ = ptr;
  return r;
}

HostRegistration& HostRegistration::operator=(HostRegistration&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}

HostRegistration::~HostRegistration() {
  if (ptr_ != nullptr) cudaHostUnregister(ptr_);
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(uint64_t bytes) {
  void* p = nullptr;
  TENSORD_CUDA_RETURN(cudaMallocHost(&p, bytes));
  PinnedBuffer b;
  b.ptr_ = static_cast<uint8_t*>(p);
  return b;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
}

absl::StatusOr<IpcMapping> IpcMapping::Open(int device, const std::string& handle) {
  if (handle.size() != sizeof(cudaIpcMemHandle_t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an IPC memory handle has ", sizeof(cudaIpcMemHandle_t), " bytes, not ", handle.size()));
  }
  cudaIpcMemHandle_t h;
  std::memcpy(&h, handle.data(), sizeof(h));
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  void* p = nullptr;
  TENSORD_CUDA_RETURN(cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess));
  IpcMapping m;
  m.ptr_ = static_cast<uint8_t*>(p);
  m.device_ = device;
  return m;
}

IpcMapping& IpcMapping::operator=(IpcMapping&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(device_, o.device_);
  return *this;
}

IpcMapping::~IpcMapping() {
  if (ptr_ == nullptr) return;
  cudaSetDevice(device_);
  cudaIpcCloseMemHandle(ptr_);
}

absl::StatusOr<IpcEvent> IpcEvent::Create(int device) {
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  TENSORD_CUDA_RETURN(cudaEventCreateWithFlags(&e, cudaEventInterprocess | cudaEventDisableTiming));
  IpcEvent out;
  out.event_ = e;
  out.device_ = device;
  return out;
}

IpcEvent& IpcEvent::operator=(IpcEvent&& o) noexcept {
  std::swap(event_, o.event_);
  std::swap(device_, o.device_);
  return *this;
}

IpcEvent::~IpcEvent() {
  if (event_ == nullptr) return;
  cudaSetDevice(device_);
  cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

absl::StatusOr<std::string> IpcEvent::RecordAndExport(void* stream) {
  TENSORD_CUDA_RETURN(cudaSetDevice(device_));
  TENSORD_CUDA_RETURN(
      cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(stream)));
  cudaIpcEventHandle_t h;
  TENSORD_CUDA_RETURN(cudaIpcGetEventHandle(&h, static_cast<cudaEvent_t>(event_)));
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

absl::Status IpcEvent::Synchronize() {
  return TENSORD_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

absl::Status WaitIpcEvent(int device, const std::string& handle, absl::Time deadline) {
  if (handle.size() != sizeof(cudaIpcEventHandle_t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an IPC event handle has ", sizeof(cudaIpcEventHandle_t), " bytes, not ", handle.size()));
  }
  cudaIpcEventHandle_t h;
  std::memcpy(&h, handle.data(), sizeof(h));
  TENSORD_CUDA_RETURN(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  if (absl::Status st = TENSORD_CUDA(cudaIpcOpenEventHandle(&e, h)); !st.ok()) {
    // A forged or stale handle is the client's error, not the daemon's.
    return absl::InvalidArgumentError(absl::StrCat("the Seal's CUDA event: ", st.message()));
  }
  absl::Duration pause = absl::Microseconds(5);
  absl::Status result;
  while (true) {
    const cudaError_t err = cudaEventQuery(e);
    if (err == cudaSuccess) break;
    if (err != cudaErrorNotReady) {
      result = TENSORD_CUDA(err);
      break;
    }
    if (absl::Now() >= deadline) {
      result = absl::DeadlineExceededError("the client's writes (its CUDA event) did not complete");
      break;
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(1));
  }
  cudaEventDestroy(e);
  return result;
}

#else  // !TENSORD_HAVE_CUDA

namespace {
absl::Status NoCuda() { return absl::UnavailableError("tensord was built without CUDA"); }
}  // namespace

bool Compiled() { return false; }
int DeviceCount(std::string* why) {
  if (why != nullptr) *why = "tensord was built without CUDA";
  return 0;
}
absl::StatusOr<DeviceInfo> GetDeviceInfo(int) { return NoCuda(); }
absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo(int) { return NoCuda(); }
absl::StatusOr<int> DeviceByUuid(const std::string&) { return NoCuda(); }
absl::Status SetDevice(int) { return NoCuda(); }
absl::StatusOr<DeviceMemory> DeviceMemory::Allocate(int, uint64_t) { return NoCuda(); }
DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}
DeviceMemory::~DeviceMemory() = default;
absl::StatusOr<std::string> DeviceMemory::IpcHandle() const { return NoCuda(); }
absl::StatusOr<Stream> Stream::Create(int) { return NoCuda(); }
Stream& Stream::operator=(Stream&& o) noexcept {
  std::swap(stream_, o.stream_);
  return *this;
}
Stream::~Stream() = default;
absl::Status Stream::Synchronize() const { return NoCuda(); }
absl::Status CopyAsync(void*, const void*, uint64_t, CopyKind, void*) { return NoCuda(); }
absl::Status MemsetAsync(void*, int, uint64_t, void*) { return NoCuda(); }
absl::Status Copy(void*, const void*, uint64_t, CopyKind) { return NoCuda(); }
absl::StatusOr<HostRegistration> HostRegistration::Register(void*, uint64_t) { return NoCuda(); }
HostRegistration& HostRegistration::operator=(HostRegistration&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}
HostRegistration::~HostRegistration() = default;
absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(uint64_t) { return NoCuda(); }
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}
PinnedBuffer::~PinnedBuffer() = default;
absl::StatusOr<IpcMapping> IpcMapping::Open(int, const std::string&) { return NoCuda(); }
IpcMapping& IpcMapping::operator=(IpcMapping&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  return *this;
}
IpcMapping::~IpcMapping() = default;
absl::StatusOr<IpcEvent> IpcEvent::Create(int) { return NoCuda(); }
IpcEvent& IpcEvent::operator=(IpcEvent&& o) noexcept {
  std::swap(event_, o.event_);
  return *this;
}
IpcEvent::~IpcEvent() = default;
absl::StatusOr<std::string> IpcEvent::RecordAndExport(void*) { return NoCuda(); }
absl::Status IpcEvent::Synchronize() { return NoCuda(); }
absl::Status WaitIpcEvent(int, const std::string&, absl::Time) { return NoCuda(); }

#endif

}  // namespace tensord::cuda
