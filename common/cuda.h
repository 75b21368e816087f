// Small RAII wrappers over the CUDA runtime API, for the GPU tier and the client. Every CUDA error
// becomes an absl::Status naming the call. Built without CUDA (TENSORD_HAVE_CUDA unset), every
// call answers UNAVAILABLE and DeviceCount() is 0, so callers need no #if of their own.
// Device pointers are plain uint8_t*; streams are opaque (void*) so no CUDA header leaks out.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tensord::cuda {

inline constexpr size_t kIpcHandleBytes = 64;  // cudaIpcMemHandle_t and cudaIpcEventHandle_t
inline constexpr size_t kUuidBytes = 16;

// Whether this build has the CUDA runtime.
bool Compiled();

// Number of usable devices; 0 when there is no driver, no device, or no CUDA in this build, with
// the reason in *why.
int DeviceCount(std::string* why = nullptr);

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  std::string uuid;  // kUuidBytes raw bytes: the same GPU has the same uuid in every process
  int cc_major = 0, cc_minor = 0;
  uint64_t total_bytes = 0;
};
absl::StatusOr<DeviceInfo> GetDeviceInfo(int device);
// Free and total memory of the device, as the driver sees it (all processes).
absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo(int device);
// The local ordinal of the device with this uuid; NOT_FOUND if this process cannot see it.
absl::StatusOr<int> DeviceByUuid(const std::string& uuid);
// Makes `device` current for the calling thread.
absl::Status SetDevice(int device);

// Device memory from cudaMalloc; freed on destruction.
class DeviceMemory {
 public:
  static absl::StatusOr<DeviceMemory> Allocate(int device, uint64_t bytes);
  DeviceMemory() = default;
  DeviceMemory(DeviceMemory&& o) noexcept { *this = std::move(o); }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  ~DeviceMemory();
  uint8_t* get() const { return ptr_; }
  uint64_t size() const { return size_; }
  int device() const { return device_; }
  // The cudaIpcMemHandle_t (kIpcHandleBytes) another process opens with IpcMapping.
  absl::StatusOr<std::string> IpcHandle() const;

 private:
  uint8_t* ptr_ = nullptr;
  uint64_t size_ = 0;
  int device_ = 0;
};

// A non-blocking stream on one device.
class Stream {
 public:
  static absl::StatusOr<Stream> Create(int device);
  Stream() = default;
  Stream(Stream&& o) noexcept { *this = std::move(o); }
  Stream& operator=(Stream&& o) noexcept;
  ~Stream();
  void* handle() const { return stream_; }
  int device() const { return device_; }
  absl::Status Synchronize() const;

 private:
  void* stream_ = nullptr;
  int device_ = 0;
};

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
// Enqueues a copy on `stream` (nullptr: the legacy default stream). Asynchronous with pinned
// host memory; synchronous with pageable memory.
absl::Status CopyAsync(void* dst, const void* src, uint64_t bytes, CopyKind kind, void* stream);
absl::Status MemsetAsync(void* dst, int value, uint64_t bytes, void* stream);
// Copies synchronously (cudaMemcpy).
absl::Status Copy(void* dst, const void* src, uint64_t bytes, CopyKind kind);

// Host memory registered with the driver (page-locked), unregistered on destruction.
class HostRegistration {
 public:
  static absl::StatusOr<HostRegistration> Register(void* ptr, uint64_t bytes);
  HostRegistration() = default;
  HostRegistration(HostRegistration&& o) noexcept { *this = std::move(o); }
  HostRegistration& operator=(HostRegistration&& o) noexcept;
  ~HostRegistration();

 private:
  void* ptr_ = nullptr;
};

// Page-locked host memory from cudaMallocHost (benchmarks' reference copies).
class PinnedBuffer {
 public:
  static absl::StatusOr<PinnedBuffer> Allocate(uint64_t bytes);
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  ~PinnedBuffer();
  uint8_t* get() const { return ptr_; }

 private:
  uint8_t* ptr_ = nullptr;
};

// Another process's device memory, opened from its IPC handle on `device`; closed on
// destruction (the exporter's memory is unaffected).
class IpcMapping {
 public:
  static absl::StatusOr<IpcMapping> Open(int device, const std::string& handle);
  IpcMapping() = default;
  IpcMapping(IpcMapping&& o) noexcept { *this = std::move(o); }
  IpcMapping& operator=(IpcMapping&& o) noexcept;
  ~IpcMapping();
  uint8_t* get() const { return ptr_; }

 private:
  uint8_t* ptr_ = nullptr;
  int device_ = 0;
};

// An interprocess event: a client records it after its writes and sends the handle with Seal;
// the daemon waits on it (WaitIpcEvent) before the tensor becomes visible.
class IpcEvent {
 public:
  static absl::StatusOr<IpcEvent> Create(int device);
  IpcEvent() = default;
  IpcEvent(IpcEvent&& o) noexcept { *this = std::move(o); }
  IpcEvent& operator=(IpcEvent&& o) noexcept;
  ~IpcEvent();
  // Records the event on `stream` (nullptr: the legacy default stream) and returns its handle.
  absl::StatusOr<std::string> RecordAndExport(void* stream);
  // Waits until the recorded work is complete.
  absl::Status Synchronize();

 private:
  void* event_ = nullptr;
  int device_ = 0;
};

// Opens another process's event handle and waits until it completes, polling until `deadline`.
// INVALID_ARGUMENT for a malformed handle, DEADLINE_EXCEEDED, or the CUDA error.
absl::Status WaitIpcEvent(int device, const std::string& handle, absl::Time deadline);

}  // namespace tensord::cuda
