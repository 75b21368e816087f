// Internal to the client library: one attached session (the Attach stream and its watcher
// thread), the gRPC stub and the cache of mapped segments. Shared by the Client and every
// Lease / WritableTensor it hands out, so the session ends only when the last of them is gone.
// A session belongs to one daemon instance: once its stream ends it is dead for good, and the
// Client opens a new one (with new mappings) instead of reviving it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda.h"
#include "common/shm_segment.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tensord/v1/tensord.grpc.pb.h"

namespace tensord::internal {

class Session {
 public:
  // Connects, attaches and reads the welcome. UNAVAILABLE if the daemon does not answer within
  // `connect_timeout` (options.deadline in the first form), or refuses the session as draining.
  static absl::StatusOr<std::shared_ptr<Session>> Open(const ClientOptions& options);
  static absl::StatusOr<std::shared_ptr<Session>> Open(const ClientOptions& options,
                                                       std::chrono::milliseconds connect_timeout);
  ~Session();  // cancels the Attach stream: the daemon ends the session

  // Whether the daemon still holds this session: false once the Attach stream ended for any
  // reason but our own cancel (the daemon stopped, was killed, or dropped us), or once MarkDead
  // was called. Never true again.
  bool alive() const { return alive_.load(std::memory_order_acquire); }
  // Records that the daemon no longer knows this session (e.g. it answered "unknown or closed
  // session") and wakes WaitDead. Idempotent; any thread.
  void MarkDead();
  // Waits up to `timeout` for the session to die; returns !alive().
  bool WaitDead(std::chrono::milliseconds timeout) const;
  // The daemon instance that welcomed this session (Welcome.instance_id; empty from a daemon
  // that does not send one).
  const std::string& instance_id() const { return instance_id_; }

  // Returns a context whose deadline is now + options.deadline.
  std::unique_ptr<grpc::ClientContext> Context() const;
  v1::Tensord::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& id() const { return session_id_; }
  const std::string& ns() const { return options_.ns; }

  // Returns this process's address of a location: for a host location, mapping its segment on
  // first use; for a GPU location, a device pointer, opening the arena's IPC handle on first
  // use (once per arena for the life of the session). INTERNAL if the location lies outside
  // its arena, NOT_FOUND for an unknown arena, FAILED_PRECONDITION if this process cannot
  // reach the GPU. *device gets the local CUDA ordinal of a GPU location (else -1).
  absl::StatusOr<uint8_t*> Address(const v1::Location& location, int* device = nullptr);
  std::pair<const uint8_t*, uint64_t> Mapping(uint32_t arena) const;
  // Whether the daemon has a GPU tier and this process can open its arenas' devices.
  bool gpu_usable() const;
  // Times each GPU arena's IPC handle was opened by this session (1 once used, then never
  // again), by arena id.
  std::vector<uint64_t> GpuIpcOpens() const;
  const std::vector<v1::GpuArena>& gpu_arenas() const { return gpu_arenas_; }

  absl::Status Release(const std::vector<uint64_t>& lease_ids);
  // `cuda_event`: for a GPU tensor, the handle of an event recorded after the writes.
  absl::Status Seal(const std::string& key, const std::string& cuda_event = "");
  // The daemon's ordinal of this process's CUDA device `local` (matched by uuid, cached); -1
  // for -1. FAILED_PRECONDITION without a GPU tier or without CUDA here, INVALID_ARGUMENT when
  // the daemon has no arena on that device.
  absl::StatusOr<int> DaemonDevice(int local);
  absl::Status Abort(const std::string& key);

 private:
  explicit Session(const ClientOptions& options);
  void Watch();

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Tensord::Stub> stub_;
  grpc::ClientContext attach_ctx_;
  std::unique_ptr<grpc::ClientReader<v1::AttachEvent>> attach_;
  std::thread watcher_;
  std::string session_id_;            // immutable after Open
  std::string instance_id_;           // immutable after Open
  std::atomic<bool> alive_{true};     // cleared once (MarkDead), under mu_
  std::atomic<bool> closing_{false};  // set by the destructor before it cancels the stream

  static constexpr uint32_t kMaxSegments = 1 << 16;
  std::vector<v1::Segment> segments_;  // immutable after Open; index = segment id
  mutable std::mutex mu_;
  mutable std::condition_variable dead_cv_;        // with mu_: signalled when alive_ clears
  std::vector<std::optional<ShmSegment>> mapped_;  // guarded by mu_; index = segment id
  std::vector<v1::GpuArena> gpu_arenas_;           // immutable after Open
  struct GpuMapping {
    int device = -1;  // local ordinal
    std::optional<cuda::IpcMapping> mapping;
    uint64_t opens = 0;
  };
  std::vector<GpuMapping> gpu_mapped_;  // guarded by mu_; index = arena id
  std::map<int, int> daemon_device_;    // guarded by mu_; local -> daemon ordinal
  mutable std::once_flag gpu_probe_;
  mutable bool gpu_usable_ = false;  // set once under gpu_probe_
};

absl::Status FromGrpc(const grpc::Status& status);

}  // namespace tensord::internal
