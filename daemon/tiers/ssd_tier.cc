// Swap file, extents and checksums.
#include "daemon/tiers/ssd_tier.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

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
  if (config.files.empty()) return absl::InvalidArgumentError("the SSD tier needs a swap file");
  std::vector<UniqueFd> fds;
  auto fail = [](absl::Status st) { return st; };  // fds close themselves
  for (const SwapFileConfig& f : config.files) {
    if (f.size == 0 || f.size % kBlock != 0) {
      return fail(absl::InvalidArgumentError(absl::StrCat("swap file ", f.path, ": size ", f.size,
                                                          " is not a positive multiple of 4 KiB")));
    }
    UniqueFd owned(open(f.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!owned.valid()) return fail(io::ErrnoStatus(errno, absl::StrCat("open ", f.path)));
    const int fd = owned.get();
    fds.push_back(std::move(owned));
    if (int rc = posix_fallocate(fd, 0, static_cast<off_t>(f.size)); rc != 0) {
      return fail(io::ErrnoStatus(rc, absl::StrCat("fallocate ", f.path)));
    }
    // O_DIRECT bypasses the page cache: swap must not itself use the memory it frees.
    int flags = fcntl(fd, F_GETFL);
    if (fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) {
      spdlog::warn("{}: O_DIRECT not supported ({}); swap goes through the page cache", f.path,
                   std::strerror(errno));
    }
    spdlog::info("swap {}: {} bytes, engine {}", f.path, f.size, engine->mode());
  }
  return std::unique_ptr<SsdTier>(new SsdTier(config, std::move(fds), std::move(engine)));
}

SsdTier::SsdTier(const SsdTierConfig& config, std::vector<UniqueFd> fds,
                 std::unique_ptr<io::IoEngine> engine)
    : config_(config), engine_(std::move(engine)) {
  for (size_t i = 0; i < fds.size(); ++i) {
    files_.push_back(
        std::unique_ptr<File>(new File{config.files[i].path, std::move(fds[i]),
                                       memory::GeneralAllocator(0, config.files[i].size, kBlock)}));
  }
  engine_->set_fault_plan(&faults_);
  stats_.engine = engine_->mode();
}

absl::Status SsdTier::Claim(const SsdExtent& extent) {
  if (IsRam(extent) || extent.space >= files_.size() || extent.length == 0 ||
      extent.reserved != RoundUp(extent.length)) {
    return absl::InvalidArgumentError("not an extent of this SSD tier");
  }
  absl::MutexLock lock(&mu_);
  return files_[extent.space]->extents.Claim(extent.offset, extent.length);
}

void SsdTier::Sync() {
  for (const auto& f : files_) ::fdatasync(f->fd.get());
}

SsdTier::~SsdTier() {
  engine_.reset();  // joins the I/O threads before the fds close (with files_)
}

absl::Status SsdTier::RunPieces(io::Op op, std::span<const Piece> pieces) {
  // An aligned buffer goes to the device as it is, except for its last partial block; an
  // unaligned one (rare: arenas are page-aligned) goes whole through a bounce buffer.
  struct Bounce {
    std::unique_ptr<uint8_t, FreeDeleter> mem;
    uint8_t* user;
    uint64_t len;
  };
  std::vector<Bounce> bounces;
  std::vector<io::IoOp> ops;
  ops.reserve(pieces.size() * 2);
  uint64_t bytes = 0;
  for (const Piece& p : pieces) {
    const bool aligned = reinterpret_cast<uintptr_t>(p.buf) % kBlock == 0;
    const uint64_t direct = aligned ? p.len / kBlock * kBlock : 0;
    if (direct > 0) ops.push_back({op, p.fd, p.buf, direct, p.offset});
    if (const uint64_t rest = p.len - direct; rest > 0) {
      const uint64_t padded = RoundUp(rest);
      Bounce b{std::unique_ptr<uint8_t, FreeDeleter>(
                   static_cast<uint8_t*>(std::aligned_alloc(kBlock, padded))),
               p.buf + direct, rest};
      if (b.mem == nullptr) return absl::ResourceExhaustedError("no memory for a bounce buffer");
      if (op == io::Op::kWrite) {
        std::memcpy(b.mem.get(), b.user, rest);
        std::memset(b.mem.get() + rest, 0, padded - rest);
      }
      ops.push_back({op, p.fd, b.mem.get(), padded, p.offset + direct});
      bounces.push_back(std::move(b));
    }
    bytes += RoundUp(p.len);
  }
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = engine_->Run(ops);
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (st.ok() && op == io::Op::kRead) {
    for (const Bounce& b : bounces) std::memcpy(b.user, b.mem.get(), b.len);
  }
  Account(op, pieces.size(), bytes, static_cast<uint64_t>(ns), st);
  return st;
}

void SsdTier::Account(io::Op op, uint64_t count, uint64_t bytes, uint64_t ns,
                      const absl::Status& st) {
  absl::MutexLock lock(&mu_);
  int& failures = consecutive_failures_[op == io::Op::kRead ? 0 : 1];
  if (!st.ok()) {
    ++stats_.io_errors;
    if (++failures >= config_.degrade_after && !stats_.degraded) {
      stats_.degraded = true;
      spdlog::error("swap {} degraded after {} consecutive failed {}s: {}", files_[0]->path,
                    failures, op == io::Op::kRead ? "read" : "write", st.ToString());
    }
    return;
  }
  failures = 0;
  if (op == io::Op::kRead) {
    stats_.reads += count;
    stats_.bytes_read += bytes;
    stats_.read_ns += ns;
  } else {
    stats_.writes += count;
    stats_.bytes_written += bytes;
    stats_.write_ns += ns;
  }
}

absl::StatusOr<Range> SsdTier::ReserveImpl(uint64_t nbytes, const Placement& where) {
  if (config_.ram_capacity > 0 && where.decoded_bytes > 0 && !where.persistent) {
    if (std::optional<Range> r = ReserveRam(nbytes, where.decoded_bytes)) return *r;
  }
  absl::MutexLock lock(&mu_);
  return ReserveFile(nbytes);
}

absl::StatusOr<Range> SsdTier::ReserveFile(uint64_t nbytes) {
  if (stats_.degraded) return absl::UnavailableError("swap device is degraded");
  // Files take turns, so that a batch spreads over the devices; a full one is skipped.
  absl::StatusOr<uint64_t> offset = absl::ResourceExhaustedError("swap full");
  uint32_t f = 0;
  for (size_t tried = 0; tried < files_.size() && !offset.ok(); ++tried) {
    f = static_cast<uint32_t>(next_file_++ % files_.size());
    offset = files_[f]->extents.Allocate(nbytes);
  }
  if (!offset.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("swap full: no room for ", nbytes, " bytes (",
                                                     offset.status().message(), ")"));
  }
  return Range{f, *offset, nbytes, files_[f]->extents.Reserved(nbytes), 0};
}

void SsdTier::FreeImpl(const Range& extent) {
  if (IsRam(extent)) return FreeRam(extent);
  absl::MutexLock lock(&mu_);
  FreeFile(extent);
}

void SsdTier::FreeFile(const Range& extent) {
  if (absl::Status st = files_.at(extent.space)->extents.Free(extent.offset); !st.ok()) {
    spdlog::critical("swap extent invariant broken: {}", st.ToString());
    std::abort();
  }
}

std::vector<SsdTier::Piece> SsdTier::PiecesOf(std::span<const Transfer> items) const {
  std::vector<Piece> pieces;
  pieces.reserve(items.size());
  for (const Transfer& t : items) {
    if (t.range->space >= files_.size()) {
      spdlog::critical("swap extent names file {} of {}", t.range->space, files_.size());
      std::abort();
    }
    pieces.push_back(
        Piece{files_[t.range->space]->fd.get(), t.host, t.range->length, t.range->offset});
  }
  return pieces;
}

std::vector<absl::Status> SsdTier::TransferEach(io::Op op, std::span<const Piece> pieces) {
  std::vector<absl::Status> out(pieces.size());
  if (absl::Status batch = RunPieces(op, pieces); !batch.ok()) {
    // Attribute the failure: redo each alone (a transient fault costs a retry, not the batch).
    for (size_t i = 0; i < pieces.size(); ++i) {
      out[i] = pieces.size() == 1 ? batch : RunPieces(op, {&pieces[i], 1});
    }
  }
  return out;
}

// Splits a batch into its file part (one engine batch) and its RAM-front part.
std::vector<absl::Status> SsdTier::Split(
    std::span<const Transfer> items,
    absl::FunctionRef<std::vector<absl::Status>(std::span<const Transfer>)> files,
    absl::FunctionRef<absl::Status(const Transfer&)> ram) {
  std::vector<Transfer> on_file;
  std::vector<size_t> where;
  std::vector<absl::Status> out(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (IsRam(*items[i].range)) {
      out[i] = ram(items[i]);
    } else {
      on_file.push_back(items[i]);
      where.push_back(i);
    }
  }
  if (!on_file.empty()) {
    std::vector<absl::Status> st = files(on_file);
    for (size_t j = 0; j < where.size(); ++j) out[where[j]] = std::move(st[j]);
  }
  return out;
}

void SsdTier::WriteImpl(std::span<const Transfer> items, TransferDone done) {
  if (degraded()) {
    std::move(done)(
        std::vector<absl::Status>(items.size(), absl::UnavailableError("swap device is degraded")));
    return;
  }
  for (const Transfer& t : items) t.range->checksum = XXH3_64bits(t.host, t.range->length);
  std::move(done)(Split(
      items,
      [this](std::span<const Transfer> f) { return TransferEach(io::Op::kWrite, PiecesOf(f)); },
      [this](const Transfer& t) { return WriteRam(t); }));
}

void SsdTier::ReadImpl(std::span<const Transfer> items, TransferDone done) {
  std::vector<absl::Status> out = Split(
      items,
      [this](std::span<const Transfer> f) { return TransferEach(io::Op::kRead, PiecesOf(f)); },
      [this](const Transfer& t) { return ReadRam(t); });
  for (size_t i = 0; i < items.size(); ++i) {
    if (!out[i].ok()) continue;
    const Range& r = *items[i].range;
    if (XXH3_64bits(items[i].host, r.length) != r.checksum) {
      absl::MutexLock lock(&mu_);
      ++stats_.checksum_failures;
      out[i] =
          absl::DataLossError(absl::StrCat(IsRam(r) ? "compressed RAM entry " : "swap extent at ",
                                           r.offset, " failed its checksum"));
    }
  }
  std::move(done)(std::move(out));
}

absl::StatusOr<SsdExtent> SsdTier::Write(const uint8_t* src, uint64_t len) {
  auto extent = Reserve(len, {});
  if (!extent.ok()) return extent.status();
  const Transfer t{&*extent, const_cast<uint8_t*>(src)};
  absl::Status st = WriteAll({&t, 1})[0];
  if (!st.ok()) {
    Free(*extent);
    return st;
  }
  return extent;
}

absl::Status SsdTier::Read(const SsdExtent& extent, uint8_t* dst) {
  SsdExtent e = extent;
  const Transfer t{&e, dst};
  return ReadAll({&t, 1})[0];
}

TierUsage SsdTier::Usage() const {
  const SsdStats st = Stats();
  return TierUsage{st.capacity_bytes, st.used_bytes, st.largest_free_bytes};
}

SsdStats SsdTier::Stats() const {
  absl::MutexLock lock(&mu_);
  SsdStats s = stats_;
  for (const auto& f : files_) {
    const memory::AllocatorStats a = f->extents.Stats();
    s.capacity_bytes += a.capacity_bytes;
    s.used_bytes += a.used_bytes;
    s.free_bytes += a.free_bytes;
    s.largest_free_bytes = std::max(s.largest_free_bytes, a.largest_free_bytes);
  }
  AddRamStats(&s);
  return s;
}

bool SsdTier::Probe() {
  SsdExtent extent;
  {
    absl::MutexLock lock(&mu_);
    if (!stats_.degraded) return true;
    for (uint32_t f = 0; f < files_.size(); ++f) {
      if (auto offset = files_[f]->extents.Allocate(kBlock); offset.ok()) {
        extent = SsdExtent{f, *offset, kBlock, kBlock, 0};
        break;
      }
      if (f + 1 == files_.size()) return false;  // full: nothing to probe with
    }
  }
  std::unique_ptr<uint8_t, FreeDeleter> block(
      static_cast<uint8_t*>(std::aligned_alloc(kBlock, 2 * kBlock)));
  uint8_t* out = block.get();
  uint8_t* in = out + kBlock;
  for (uint64_t i = 0; i < kBlock; ++i) out[i] = static_cast<uint8_t>(i * 131 + 7);
  const int fd = files_[extent.space]->fd.get();
  Piece write{fd, out, kBlock, extent.offset}, read{fd, in, kBlock, extent.offset};
  const bool ok = RunPieces(io::Op::kWrite, {&write, 1}).ok() &&
                  RunPieces(io::Op::kRead, {&read, 1}).ok() && std::memcmp(in, out, kBlock) == 0;
  Free(extent);
  absl::MutexLock lock(&mu_);
  if (ok && stats_.degraded) {
    stats_.degraded = false;
    consecutive_failures_[0] = consecutive_failures_[1] = 0;
    spdlog::warn("swap tier ({}) works again: no longer degraded", files_[0]->path);
  }
  return ok;
}

bool SsdTier::degraded() {
  absl::MutexLock lock(&mu_);
  return stats_.degraded;
}

}  // namespace tensord::tiers
