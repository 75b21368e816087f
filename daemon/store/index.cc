// The persistent object index: framed, checksummed records appended to one file, compacted by
// atomic replace.
#include "daemon/store/index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/store/object_table.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

// A frame: this header, then `len` payload bytes. `sum` is XXH3-64 of the payload seeded with
// the type and length, so a frame whose header or payload changed fails.
struct FrameHeader {
  uint32_t magic;
  uint32_t type;
  uint32_t len;
  uint32_t zero;
  uint64_t sum;
};
static_assert(sizeof(FrameHeader) == 24);
constexpr uint32_t kMagic = 0x58494454;  // "TDIX"
constexpr uint32_t kFileHeader = 1, kPut = 2, kErase = 3;
constexpr uint64_t kMaxPayload = 1 << 20;  // a record is a few hundred bytes; a key at most 1 KiB
constexpr absl::string_view kHeaderText = "tensord object index v1";

uint64_t Sum(uint32_t type, absl::string_view payload) {
  return XXH3_64bits_withSeed(payload.data(), payload.size(),
                              (uint64_t{type} << 32) | payload.size());
}

std::string Frame(uint32_t type, absl::string_view payload) {
  FrameHeader h{kMagic, type, static_cast<uint32_t>(payload.size()), 0, Sum(type, payload)};
  std::string out(sizeof(h) + payload.size(), '\0');
  std::memcpy(out.data(), &h, sizeof(h));
  std::memcpy(out.data() + sizeof(h), payload.data(), payload.size());
  return out;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(std::strerror(n < 0 ? errno : ENOSPC));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::string();
    return Errno("open", path);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Errno("stat", path);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("read", path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

void SyncDirOf(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  UniqueFd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.valid()) ::fsync(fd.get());
}

}  // namespace

LoadedIndex Index::Parse(absl::string_view bytes) {
  LoadedIndex out;
  size_t pos = 0;
  while (bytes.size() - pos >= sizeof(FrameHeader)) {
    FrameHeader h;
    std::memcpy(&h, bytes.data() + pos, sizeof(h));
    if (h.magic != kMagic || h.zero != 0 || h.len > kMaxPayload ||
        h.len > bytes.size() - pos - sizeof(h)) {
      break;
    }
    const absl::string_view payload = bytes.substr(pos + sizeof(h), h.len);
    if (Sum(h.type, payload) != h.sum) break;
    pos += sizeof(h) + h.len;
    ++out.frames;
    if (h.type == kPut) {
      index::Tensor t;
      if (!t.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        ++out.bad_records;
        continue;
      }
      std::string key = ObjectTable::TableKey(t.ns(), t.key());
      out.tensors[std::move(key)] = std::move(t);
    } else if (h.type == kErase) {
      index::Erased e;
      if (!e.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        ++out.bad_records;
        continue;
      }
      out.tensors.erase(ObjectTable::TableKey(e.ns(), e.key()));
    } else if (h.type != kFileHeader) {
      ++out.bad_records;  // a type this version does not know
    }
  }
  out.dropped_bytes = bytes.size() - pos;
  return out;
}

absl::StatusOr<std::unique_ptr<Index>> Index::Open(const std::string& path, LoadedIndex* loaded) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  *loaded = Parse(*bytes);
  if (loaded->dropped_bytes > 0 || loaded->bad_records > 0) {
    spdlog::warn("index {}: {} bytes of a torn or corrupt tail and {} bad records dropped", path,
                 loaded->dropped_bytes, loaded->bad_records);
    // More than a torn last record: keep the original for a post-mortem before it is rewritten.
    if (loaded->dropped_bytes > kMaxPayload + sizeof(FrameHeader) || loaded->bad_records > 0) {
      const std::string kept = path + ".corrupt";
      if (::link(path.c_str(), kept.c_str()) == 0 || errno == EEXIST) {
        spdlog::warn("index {}: the damaged original is kept as {}", path, kept);
      }
    }
  }
  std::unique_ptr<Index> index(new Index(path));
  {
    absl::MutexLock lock(&index->mu_);
    for (const auto& [key, tensor] : loaded->tensors) {
      std::string frame = Frame(kPut, tensor.SerializeAsString());
      index->live_bytes_ += frame.size();
      index->live_.emplace(key, std::move(frame));
    }
  }
  if (absl::Status st = index->Compact(); !st.ok()) return st;
  return index;
}

Index::~Index() {
  absl::MutexLock lock(&mu_);
  if (fd_.valid()) ::fdatasync(fd_.get());
}

void Index::Append(const std::string& frame) {
  ++stats_.appends;
  if (compacting_) during_compaction_.push_back(frame);
  if (!fd_.valid()) return;
  if (absl::Status st = WriteAll(fd_.get(), frame); !st.ok()) {
    if (stats_.write_errors++ == 0)
      spdlog::error("index {}: write failed: {}", path_, std::string(st.message()));
    // Cut a partial frame off: what follows it would be unreadable.
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_bytes_)) != 0) {
      spdlog::error("index {}: cannot cut a partial record: {}", path_, std::strerror(errno));
    }
    return;
  }
  file_bytes_ += frame.size();
  dirty_ = true;
}

void Index::Put(const std::string& table_key, const index::Tensor& tensor) {
  std::string frame = Frame(kPut, tensor.SerializeAsString());
  absl::MutexLock lock(&mu_);
  Append(frame);
  auto [it, fresh] = live_.try_emplace(table_key);
  if (!fresh) live_bytes_ -= it->second.size();
  live_bytes_ += frame.size();
  it->second = std::move(frame);
}

void Index::Erase(const std::string& table_key, absl::string_view ns, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(table_key);
  if (it == live_.end()) return;
  live_bytes_ -= it->second.size();
  live_.erase(it);
  index::Erased e;
  e.set_ns(std::string(ns));
  e.set_key(std::string(key));
  Append(Frame(kErase, e.SerializeAsString()));
}

void Index::Maintain() {
  bool compact = false;
  UniqueFd sync;  // a duplicate of the file's descriptor: the flush runs without the lock, which
                  // the store's Persist (under the store's lock) waits for
  {
    absl::MutexLock lock(&mu_);
    if (dirty_ && fd_.valid()) {
      sync = UniqueFd(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
      dirty_ = false;
      ++stats_.syncs;
    }
    compact = !compacting_ && file_bytes_ > (1u << 20) && file_bytes_ > 2 * live_bytes_;
  }
  if (sync.valid()) ::fdatasync(sync.get());
  if (compact) {
    if (absl::Status st = Compact(); !st.ok()) {
      spdlog::error("index {}: compaction failed: {}", path_, std::string(st.message()));
    }
  }
}

absl::Status Index::Compact() {
  std::string snapshot = Frame(kFileHeader, kHeaderText);
  {
    absl::MutexLock lock(&mu_);
    if (compacting_) return absl::OkStatus();
    compacting_ = true;
    during_compaction_.clear();
    snapshot.reserve(snapshot.size() + live_bytes_);
    for (const auto& [key, frame] : live_) snapshot += frame;
  }
  const std::string tmp = path_ + ".tmp";
  auto fail = [&](absl::Status st) {
    absl::MutexLock lock(&mu_);
    compacting_ = false;
    during_compaction_.clear();
    ::unlink(tmp.c_str());
    return st;
  };
  // O_APPEND: after a failed write is cut off (ftruncate), the next one lands at the new end,
  // never after a hole that would end the next read there.
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
  if (!fd.valid()) return fail(Errno("create", tmp));
  if (absl::Status st = WriteAll(fd.get(), snapshot); !st.ok()) return fail(st);
  if (::fdatasync(fd.get()) != 0) return fail(Errno("fdatasync", tmp));
  {
    absl::MutexLock lock(&mu_);
    uint64_t bytes = snapshot.size();
    for (const std::string& frame : during_compaction_) {
      if (absl::Status st = WriteAll(fd.get(), frame); !st.ok()) {
        compacting_ = false;
        during_compaction_.clear();
        ::unlink(tmp.c_str());
        return st;
      }
      bytes += frame.size();
    }
    if (::rename(tmp.c_str(), path_.c_str()) != 0) {
      compacting_ = false;
      during_compaction_.clear();
      return Errno("rename", tmp);
    }
    // Appends from now on go to the new file (O_APPEND: at its end).
    fd_ = std::move(fd);
    file_bytes_ = bytes;
    dirty_ = !during_compaction_.empty();
    compacting_ = false;
    during_compaction_.clear();
    ++stats_.compactions;
  }
  SyncDirOf(path_);
  return absl::OkStatus();
}

IndexStats Index::Stats() const {
  absl::MutexLock lock(&mu_);
  IndexStats s = stats_;
  s.live_records = live_.size();
  s.live_bytes = live_bytes_;
  s.file_bytes = file_bytes_;
  return s;
}

}  // namespace tensord::store
