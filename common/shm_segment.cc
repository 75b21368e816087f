// Boost.Interprocess-backed shared-memory segments. Every Boost exception is converted to an
// absl::Status here, at the boundary where it enters.
#include "common/shm_segment.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/shm_guard.h"

namespace tensord {
namespace bip = boost::interprocess;

namespace {

absl::Status FromBoost(const bip::interprocess_exception& e, const std::string& what) {
  const std::string msg = absl::StrCat(what, ": ", e.what());
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return absl::AlreadyExistsError(msg);
    case bip::not_found_error:
      return absl::NotFoundError(msg);
    case bip::security_error:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

void Prefault(uint8_t* data, uint64_t size) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(data, size, MADV_POPULATE_WRITE) == 0) return;
#endif
  // Older kernels: write one byte per page, the byte it holds (an adopted segment has data).
  const long page = sysconf(_SC_PAGESIZE);
  volatile uint8_t* p = data;
  for (uint64_t off = 0; off < size; off += static_cast<uint64_t>(page)) p[off] = p[off];
}

}  // namespace

absl::StatusOr<ShmSegment> ShmSegment::Create(const std::string& name, uint64_t size, mode_t mode,
                                              bool prefault, gid_t group) {
  ShmSegment seg;
  try {
    // With a group to give it to: nobody but us until it is in that group.
    bip::permissions perm(group == kNoGroup ? mode : (mode & 0700));
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, perm);
    seg.owner_ = true;  // from here on the name is ours to remove, even if sizing fails
    seg.name_ = name;
    if (group != kNoGroup && fchown(shm.get_mapping_handle().handle, -1, group) != 0) {
      const int err = errno;
      const std::string what =
          absl::StrCat("giving shared memory ", name, " to group ", group, ": ", strerror(err));
      if (err == EPERM) return absl::PermissionDeniedError(what);
      return absl::InternalError(what);
    }
    // Boost creates with the mode but the process umask still applies; set it exactly.
    if (fchmod(shm.get_mapping_handle().handle, mode) != 0) {
      return absl::InternalError(absl::StrCat("fchmod ", name, ": ", std::strerror(errno)));
    }
    shm.truncate(static_cast<bip::offset_t>(size));
    seg.region_ = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    seg.guard_ = shm_guard::Register(static_cast<uint8_t*>(seg.region_->get_address()), size,
                                     shm.get_mapping_handle().handle);
  } catch (const bip::interprocess_exception& e) {
    return FromBoost(e, absl::StrCat("creating shared memory ", name));
  }
  seg.data_ = static_cast<uint8_t*>(seg.region_->get_address());
  seg.size_ = size;
  if (prefault) Prefault(seg.data_, size);
  return seg;
}

absl::StatusOr<ShmSegment> ShmSegment::Open(const std::string& name) {
  ShmSegment seg;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    seg.region_ = std::make_unique<bip::mapped_region>(shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    return FromBoost(e, absl::StrCat("opening shared memory ", name));
  }
  seg.name_ = name;
  seg.data_ = static_cast<uint8_t*>(seg.region_->get_address());
  seg.size_ = seg.region_->get_size();
  return seg;
}

absl::StatusOr<ShmSegment> ShmSegment::Adopt(const std::string& name, uint64_t size, mode_t mode,
                                             bool prefault, gid_t group) {
  ShmSegment seg;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    struct stat st;
    if (fstat(shm.get_mapping_handle().handle, &st) != 0) {
      return absl::InternalError(absl::StrCat("stat ", name, ": ", std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != mode ||
        static_cast<uint64_t>(st.st_size) != size || (group != kNoGroup && st.st_gid != group)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "shared memory %s is not the segment this daemon left (owner %d, mode %o, %d bytes; "
          "expected owner %d, mode %o, %d bytes)",
          name, st.st_uid, st.st_mode & 07777, st.st_size, geteuid(), mode, size));
    }
    seg.region_ = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    seg.guard_ = shm_guard::Register(static_cast<uint8_t*>(seg.region_->get_address()), size,
                                     shm.get_mapping_handle().handle);
  } catch (const bip::interprocess_exception& e) {
    return FromBoost(e, absl::StrCat("adopting shared memory ", name));
  }
  seg.owner_ = true;
  seg.name_ = name;
  seg.data_ = static_cast<uint8_t*>(seg.region_->get_address());
  seg.size_ = size;
  if (prefault) Prefault(seg.data_, size);
  return seg;
}

bool ShmSegment::Remove(const std::string& name) {
  try {
    return bip::shared_memory_object::remove(name.c_str());
  } catch (const bip::interprocess_exception&) {
    return false;
  }
}

std::vector<std::string> ShmSegment::ListOwned(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return out;
  while (dirent* ent = readdir(dir)) {
    if (!absl::StartsWith(ent->d_name, prefix)) continue;
    struct stat st;
    if (fstatat(dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (st.st_uid == geteuid() && S_ISREG(st.st_mode)) out.emplace_back(ent->d_name);
  }
  closedir(dir);
  return out;
}

ShmSegment::ShmSegment(ShmSegment&& other) noexcept { *this = std::move(other); }

ShmSegment& ShmSegment::operator=(ShmSegment&& other) noexcept {
  if (this != &other) {
    Reset();
    region_ = std::move(other.region_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    name_ = std::move(other.name_);
    owner_ = std::exchange(other.owner_, false);
    guard_ = std::exchange(other.guard_, -1);
  }
  return *this;
}

ShmSegment::~ShmSegment() { Reset(); }

void ShmSegment::Reset() {
  shm_guard::Unregister(std::exchange(guard_, -1));
  region_.reset();
  if (owner_) Remove(name_);
  owner_ = false;
  data_ = nullptr;
  size_ = 0;
}

}  // namespace tensord
