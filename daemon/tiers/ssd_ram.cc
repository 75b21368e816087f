// The SSD tier's compressed RAM front (Linux zswap's idea, for tensors): encoded swap copies
// that compress well stay in RAM, so the host keeps more tensors without a disk read; when the
// front is full, its oldest entries are written back to the swap files. A Range there carries
// space kRamSpace and the entry's handle; reads and frees find the entry wherever it lives.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/tiers/ssd_tier.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {

std::optional<Range> SsdTier::ReserveRam(uint64_t nbytes, uint64_t decoded) {
  // Only encodings that save enough: a raw copy in RAM would be the host tier over again.
  if (nbytes > (1.0 - config_.ram_min_saving) * double(decoded)) return std::nullopt;
  if (nbytes > config_.ram_capacity || degraded()) return std::nullopt;
  if (!MakeRamRoom(nbytes)) return std::nullopt;
  absl::MutexLock lock(&mu_);
  if (ram_used_ + nbytes > config_.ram_capacity) return std::nullopt;  // taken meanwhile
  const uint64_t handle = next_ram_handle_++;
  RamEntry& e = ram_[handle];
  e.length = nbytes;
  e.decoded = decoded;
  ram_used_ += nbytes;
  ram_logical_ += decoded;
  return Range{kRamSpace, handle, nbytes, nbytes, 0};
}

bool SsdTier::MakeRamRoom(uint64_t nbytes) {
  struct Job {
    uint64_t handle;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    Range extent;
  };
  std::vector<Job> jobs;
  {
    absl::MutexLock lock(&mu_);
    const auto fits = [&](uint64_t leaving) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ram_used_ - leaving + nbytes <= config_.ram_capacity;
    };
    if (fits(0)) return true;
    if (fits(ram_leaving_) || stats_.degraded) return false;  // others are making room already
    // The oldest written entries go to the files; those still being written are passed over.
    uint64_t leaving = ram_leaving_;
    for (auto it = ram_.begin(); it != ram_.end() && !fits(leaving); ++it) {
      RamEntry& entry = it->second;
      if (entry.bytes == nullptr || entry.writing_back) continue;
      auto extent = ReserveFile(entry.length);
      if (!extent.ok()) break;  // the files are full: the new copy goes there or nowhere
      entry.writing_back = true;
      leaving += entry.length;
      ram_leaving_ += entry.length;
      jobs.push_back({it->first, entry.bytes, *extent});
    }
    if (!fits(leaving)) {  // not enough can leave: undo, and the copy goes to a file instead
      for (const Job& j : jobs) {
        FreeFile(j.extent);
        ram_.at(j.handle).writing_back = false;
        ram_leaving_ -= j.bytes->size();
      }
      return false;
    }
  }
  std::vector<Piece> pieces;
  for (Job& j : jobs) {
    j.extent.length = j.bytes->size();  // reads verify against the store's Range checksum
    pieces.push_back(Piece{files_[j.extent.space]->fd.get(), const_cast<uint8_t*>(j.bytes->data()),
                           j.extent.length, j.extent.offset});
  }
  const std::vector<absl::Status> st = TransferEach(io::Op::kWrite, pieces);
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < jobs.size(); ++i) {
    auto it = ram_.find(jobs[i].handle);
    RamEntry& e = it->second;
    e.writing_back = false;
    ram_leaving_ -= e.length;
    if (st[i].ok()) {
      ++ram_writebacks_;
      ram_writeback_bytes_ += e.length;
    } else {
      spdlog::warn("compressed RAM write-back failed: {}", st[i].ToString());
    }
    if (!st[i].ok() || e.freed) FreeFile(jobs[i].extent);
    if (!st[i].ok() && !e.freed) continue;  // stays in RAM
    if (!e.freed) ram_on_file_[jobs[i].handle] = jobs[i].extent;
    ram_used_ -= e.length;
    ram_logical_ -= e.decoded;
    ram_.erase(it);
  }
  return ram_used_ + nbytes <= config_.ram_capacity;
}

absl::Status SsdTier::WriteRam(const Transfer& t) {
  auto bytes = std::make_shared<const std::vector<uint8_t>>(t.host, t.host + t.range->length);
  absl::MutexLock lock(&mu_);
  auto e = ram_.find(t.range->offset);
  if (e == ram_.end() || e->second.length != t.range->length || e->second.bytes != nullptr) {
    return absl::InternalError(
        absl::StrCat("compressed RAM entry ", t.range->offset, " is not reserved for this write"));
  }
  e->second.bytes = std::move(bytes);
  return absl::OkStatus();
}

absl::Status SsdTier::ReadRam(const Transfer& t) {
  std::shared_ptr<const std::vector<uint8_t>> bytes;
  Range extent;
  {
    absl::MutexLock lock(&mu_);
    if (auto f = ram_on_file_.find(t.range->offset); f != ram_on_file_.end()) {
      extent = f->second;
    } else {
      auto e = ram_.find(t.range->offset);
      if (e == ram_.end() || e->second.freed || e->second.bytes == nullptr ||
          e->second.length != t.range->length) {
        return absl::InternalError(
            absl::StrCat("compressed RAM entry ", t.range->offset, " does not hold this copy"));
      }
      bytes = e->second.bytes;
      ++ram_reads_;
    }
  }
  if (bytes != nullptr) {  // copied outside the lock: a write-back or a Free may run meanwhile
    std::memcpy(t.host, bytes->data(), bytes->size());
    return absl::OkStatus();
  }
  const Piece p{files_.at(extent.space)->fd.get(), t.host, extent.length, extent.offset};
  return TransferEach(io::Op::kRead, {&p, 1})[0];  // the caller verifies the checksum
}

void SsdTier::FreeRam(const Range& r) {
  absl::MutexLock lock(&mu_);
  if (auto f = ram_on_file_.find(r.offset); f != ram_on_file_.end()) {
    FreeFile(f->second);
    ram_on_file_.erase(f);
    return;
  }
  auto e = ram_.find(r.offset);
  if (e == ram_.end() || e->second.freed) {
    spdlog::critical("compressed RAM entry {} freed twice or never reserved", r.offset);
    std::abort();
  }
  if (e->second.writing_back) {
    e->second.freed = true;  // the write-back, when it ends, frees what it wrote
    return;
  }
  ram_used_ -= e->second.length;
  ram_logical_ -= e->second.decoded;
  ram_.erase(e);
}

void SsdTier::AddRamStats(SsdStats* s) const {
  s->ram_capacity = config_.ram_capacity;
  s->ram_used_bytes = ram_used_;
  s->ram_logical_bytes = ram_logical_;
  s->ram_entries = ram_.size();
  s->ram_reads = ram_reads_;
  s->ram_writebacks = ram_writebacks_;
  s->ram_writeback_bytes = ram_writeback_bytes_;
}

}  // namespace tensord::tiers
