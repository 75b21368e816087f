// RAII POSIX shared-memory segment (Boost.Interprocess inside; its exceptions never escape).
// The daemon creates segments exclusively and removes them when the owner is destroyed;
// clients open and map existing ones.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace boost::interprocess {
class mapped_region;
}

namespace tensord {

class ShmSegment {
 public:
  // Creates `name` exclusively (never reusing an existing one), sets its size and `mode`
  // (umask does not apply), maps it read-write and, if `prefault`, touches every page so the
  // first client write does not fault. With a `group`, the segment is in that group before
  // anyone but its owner may open it. ALREADY_EXISTS if the name exists, PERMISSION_DENIED if
  // this user may not give it to `group`, INTERNAL otherwise.
  static constexpr gid_t kNoGroup = static_cast<gid_t>(-1);
  static absl::StatusOr<ShmSegment> Create(const std::string& name, uint64_t size, mode_t mode,
                                           bool prefault, gid_t group = kNoGroup);
  // Opens and maps an existing segment read-write. NOT_FOUND if absent,
  // PERMISSION_DENIED if the mode forbids it, INTERNAL otherwise.
  static absl::StatusOr<ShmSegment> Open(const std::string& name);
  // Takes over a segment an earlier instance of this daemon created (a warm restart): opens it
  // read-write and maps it only if it is a regular file owned by this user with exactly `mode`
  // and `size` bytes (and in `group`, when given), so nobody else can plant one. If `prefault`,
  // faults its pages in without changing them. The adopter owns the name (removes it when
  // destroyed, unless Keep). NOT_FOUND if absent, FAILED_PRECONDITION when owner, group, mode or
  // size differ, INTERNAL otherwise.
  static absl::StatusOr<ShmSegment> Adopt(const std::string& name, uint64_t size, mode_t mode,
                                          bool prefault, gid_t group = kNoGroup);
  // Unlinks `name`. Returns true if something was removed.
  static bool Remove(const std::string& name);
  // Returns the names in /dev/shm that start with `prefix` and are owned by this user.
  static std::vector<std::string> ListOwned(const std::string& prefix);

  ShmSegment(ShmSegment&&) noexcept;
  ShmSegment& operator=(ShmSegment&&) noexcept;
  ~ShmSegment();  // unmaps; the creating owner also unlinks the name

  // The name outlives this owner: it is not removed at destruction (a stop that keeps its
  // tensors for the next instance).
  void Keep() { owner_ = false; }

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  ShmSegment() = default;
  void Reset();

  std::unique_ptr<boost::interprocess::mapped_region> region_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string name_;
  bool owner_ = false;
  int guard_ = -1;  // the daemon's segments (Create, Adopt): shm_guard's slot
};

}  // namespace tensord
