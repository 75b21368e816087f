// The Tier interface's public half: range checks and transfer counters shared by every tier.
#include "daemon/tiers/tier.h"

#include <memory>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace tensord::tiers {

const char* TierName(TierId t) {
  switch (t) {
    case TierId::kGpu:
      return "gpu";
    case TierId::kHost:
      return "host";
    case TierId::kSsd:
      return "ssd";
    case TierId::kRemote:
      return "remote";
  }
  return "?";
}

absl::StatusOr<Range> Tier::Reserve(uint64_t nbytes, const Placement& where) {
  if (nbytes == 0) return absl::InvalidArgumentError("a range holds at least one byte");
  return ReserveImpl(nbytes, where);
}

void Tier::Free(const Range& range) { FreeImpl(range); }

void Tier::Write(std::span<const Transfer> items, TransferDone done) {
  Run(true, items, std::move(done));
}

void Tier::Read(std::span<const Transfer> items, TransferDone done) {
  Run(false, items, std::move(done));
}

void Tier::Run(bool write, std::span<const Transfer> items, TransferDone done) {
  // Items that do not fit their range never reach the implementation; the rest go as one batch
  // and their results are merged back in order.
  std::vector<Transfer> valid;
  std::vector<size_t> index;
  auto out = std::make_shared<std::vector<absl::Status>>(items.size());
  uint64_t bytes = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const Range& r = *items[i].range;
    if (r.length > r.reserved || items[i].host == nullptr) {
      (*out)[i] = absl::InternalError(absl::StrCat(TierName(id()), " transfer of ", r.length,
                                                   " bytes into a range of ", r.reserved));
      continue;
    }
    valid.push_back(items[i]);
    index.push_back(i);
    bytes += r.length;
  }
  auto finish = [this, write, out, index = std::move(index), bytes,
                 done = std::move(done)](std::vector<absl::Status> results) mutable {
    for (size_t j = 0; j < index.size(); ++j) (*out)[index[j]] = std::move(results[j]);
    uint64_t failed = 0;
    for (const absl::Status& st : *out) failed += st.ok() ? 0 : 1;
    (write ? writes_ : reads_) += index.size();
    (write ? bytes_written_ : bytes_read_) += bytes;
    failures_ += failed;
    std::move(done)(std::move(*out));
  };
  if (valid.empty()) {
    finish({});
    return;
  }
  if (write) {
    WriteImpl(valid, std::move(finish));
  } else {
    ReadImpl(valid, std::move(finish));
  }
}

namespace {

std::vector<absl::Status> Wait(absl::FunctionRef<void(TransferDone)> start) {
  std::vector<absl::Status> result;
  absl::Notification done;
  start([&](std::vector<absl::Status> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

}  // namespace

std::vector<absl::Status> Tier::WriteAll(std::span<const Transfer> items) {
  return Wait([&](TransferDone d) { Write(items, std::move(d)); });
}

std::vector<absl::Status> Tier::ReadAll(std::span<const Transfer> items) {
  return Wait([&](TransferDone d) { Read(items, std::move(d)); });
}

TransferCounters Tier::counters() const {
  return TransferCounters{writes_.load(), reads_.load(), bytes_written_.load(), bytes_read_.load(),
                          failures_.load()};
}

}  // namespace tensord::tiers
