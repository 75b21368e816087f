// Swap file, extents and checksums.
#include "daemon/tiers/ssd_tier.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {
namespace {

constexpr uint64_t kBlock = 4096;

uint64_t RoundUp(uint64_t v) { return (v + kBlock - 1) / kBlock * kBlock; }

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SsdTier>> SsdTier::Create(const SsdTierConfig& config,
                                                         std::unique_ptr<io::IoEngine> engine) {
  if (config.size == 0 || config.size % kBlock != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("swap size ", config.size, " is not a positive multiple of 4 KiB"));
  }
  int fd = open(config.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return io::ErrnoStatus(errno, absl::StrCat("open ", config.path));
  if (int rc = posix_fallocate(fd, 0, static_cast<off_t>(config.size)); rc != 0) {
    close(fd);
    return io::ErrnoStatus(rc, absl::StrCat("fallocate ", config.path));
  }
  // O_DIRECT bypasses the page cache: swap must not itself use the memory it frees.
  int flags = fcntl(fd, F_GETFL);
  if (fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) {
    spdlog::warn("{}: O_DIRECT not supported ({}); swap goes through the page cache", config.path,
                 std::strerror(errno));
  }
  spdlog::info("swap {}: {} bytes, engine {}", config.path, config.size, engine->mode());
  return std::unique_ptr<SsdTier>(new SsdTier(config, fd, std::move(engine)));
}

SsdTier::SsdTier(const SsdTierConfig& config, int fd, std::unique_ptr<io::IoEngine> engine)
    : config_(config), fd_(fd), engine_(std::move(engine)), extents_(0, config.size, kBlock) {
  engine_->set_fault_plan(&faults_);
  stats_.engine = engine_->mode();
}

SsdTier::~SsdTier() {
  engine_.reset();  // joins the I/O threads before the fd goes
  close(fd_);
}

absl::Status SsdTier::Transfer(io::Op op, uint8_t* buf, uint64_t len, uint64_t offset) {
  const uint64_t padded = RoundUp(len);
  const bool aligned = reinterpret_cast<uintptr_t>(buf) % kBlock == 0 && padded == len;
  std::unique_ptr<uint8_t, FreeDeleter> bounce;
  uint8_t* io_buf = buf;
  if (!aligned) {
    bounce.reset(static_cast<uint8_t*>(std::aligned_alloc(kBlock, padded)));
    if (bounce == nullptr) return absl::ResourceExhaustedError("no memory for a bounce buffer");
    io_buf = bounce.get();
    if (op == io::Op::kWrite) {
      std::memcpy(io_buf, buf, len);
      std::memset(io_buf + len, 0, padded - len);
    }
  }
  const io::IoOp ops[] = {{op, fd_, io_buf, padded, offset}};
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = engine_->Run(ops);
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (st.ok() && !aligned && op == io::Op::kRead) std::memcpy(buf, io_buf, len);
  Account(op, padded, static_cast<uint64_t>(ns), st);
  return st;
}

void SsdTier::Account(io::Op op, uint64_t bytes, uint64_t ns, const absl::Status& st) {
  absl::MutexLock lock(&mu_);
  if (!st.ok()) {
    ++stats_.io_errors;
    if (++consecutive_failures_ >= config_.degrade_after && !stats_.degraded) {
      stats_.degraded = true;
      spdlog::error("swap {} degraded after {} consecutive failures: {}", config_.path,
                    consecutive_failures_, st.ToString());
    }
    return;
  }
  consecutive_failures_ = 0;
  if (op == io::Op::kRead) {
    ++stats_.reads;
    stats_.bytes_read += bytes;
    stats_.read_ns += ns;
  } else {
    ++stats_.writes;
    stats_.bytes_written += bytes;
    stats_.write_ns += ns;
  }
}

absl::StatusOr<SsdExtent> SsdTier::Write(const uint8_t* src, uint64_t len) {
  SsdExtent extent;
  {
    absl::MutexLock lock(&mu_);
    if (stats_.degraded) return absl::UnavailableError("swap device is degraded");
    auto offset = extents_.Allocate(len);
    if (!offset.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat("swap full: ", offset.status().message()));
    }
    extent = SsdExtent{*offset, len, extents_.Reserved(len), 0};
  }
  extent.checksum = XXH3_64bits(src, len);
  absl::Status st = Transfer(io::Op::kWrite, const_cast<uint8_t*>(src), len, extent.offset);
  if (!st.ok()) {
    Free(extent);
    return st;
  }
  return extent;
}

absl::Status SsdTier::Read(const SsdExtent& extent, uint8_t* dst) {
  if (absl::Status st = Transfer(io::Op::kRead, dst, extent.length, extent.offset); !st.ok()) {
    return st;
  }
  if (XXH3_64bits(dst, extent.length) != extent.checksum) {
    absl::MutexLock lock(&mu_);
    ++stats_.checksum_failures;
    return absl::DataLossError(
        absl::StrCat("swap extent at ", extent.offset, " failed its checksum"));
  }
  return absl::OkStatus();
}

void SsdTier::Free(const SsdExtent& extent) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = extents_.Free(extent.offset); !st.ok()) {
    spdlog::critical("swap extent invariant broken: {}", st.ToString());
    std::abort();
  }
}

SsdStats SsdTier::Stats() {
  absl::MutexLock lock(&mu_);
  SsdStats s = stats_;
  const memory::AllocatorStats a = extents_.Stats();
  s.capacity_bytes = a.capacity_bytes;
  s.used_bytes = a.used_bytes;
  s.free_bytes = a.free_bytes;
  s.largest_free_bytes = a.largest_free_bytes;
  return s;
}

bool SsdTier::degraded() {
  absl::MutexLock lock(&mu_);
  return stats_.degraded;
}

}  // namespace tensord::tiers
