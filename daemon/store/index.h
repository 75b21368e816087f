// The persistent object index (DESIGN.md "Persistence and restart"): one record per sealed,
// global tensor with its metadata, the ranges of its host and SSD copies and the checksum of its
// bytes, so that a restarted daemon finds its tensors again. A log of framed records, each
// checksummed (XXH3-64), appended with write(2) before the store acknowledges the change: a
// `kill -9` loses nothing acknowledged (the page cache keeps it), and the file is fdatasync'd
// once a second and at a clean stop. When it grows past twice its live records it is rewritten
// (write a new file, fsync, rename: an atomic replace) from the records kept in memory.
// Reading stops at the first frame that is truncated or fails its checksum (a torn tail); a
// record that parses but makes no sense is the store's to refuse (store/restart.cc).
// Thread-safe: mu_ guards the file and the records.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "tensord/index/index.pb.h"

namespace tensord::store {

// What reading an index file found.
struct LoadedIndex {
  std::map<std::string, index::Tensor> tensors;  // by table key (ObjectTable::TableKey)
  uint64_t frames = 0;                           // good frames read
  uint64_t bad_records = 0;                      // frames whose payload did not parse (skipped)
  uint64_t dropped_bytes = 0;  // bytes after the first bad frame (a torn or corrupt tail)
};

struct IndexStats {
  uint64_t live_records = 0, live_bytes = 0, file_bytes = 0;
  uint64_t appends = 0, syncs = 0, compactions = 0, write_errors = 0;
};

class Index {
 public:
  // Reads `path` (absent: empty) into *loaded, rewrites it with the live records only (atomic
  // replace) and opens it for appending. INTERNAL (errno) when the file cannot be read or
  // written; a corrupt file is not an error: what could be read is in *loaded.
  static absl::StatusOr<std::unique_ptr<Index>> Open(const std::string& path, LoadedIndex* loaded);
  // Parses an index file's bytes (Open's reader; fuzzed).
  static LoadedIndex Parse(absl::string_view bytes);
  ~Index();  // fdatasyncs

  // Records a tensor's state (replacing its earlier record) or its end. The write is in the file
  // (page cache) when they return; a failed write is logged and counted, and the file is cut
  // back to its last whole frame.
  void Put(const std::string& table_key, const index::Tensor& tensor) ABSL_LOCKS_EXCLUDED(mu_);
  void Erase(const std::string& table_key, absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);
  // fdatasyncs what was appended since the last call, and compacts the file when it is more
  // than twice its live records (and over 1 MiB). For a background thread (the reaper).
  void Maintain() ABSL_LOCKS_EXCLUDED(mu_);
  IndexStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  explicit Index(std::string path) : path_(std::move(path)) {}
  // Writes every live record to path_.tmp, fsyncs it and renames it over path_; the appends
  // that arrive meanwhile go to both files. Returns the new file.
  absl::Status Compact() ABSL_LOCKS_EXCLUDED(mu_);
  void Append(const std::string& frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  mutable absl::Mutex mu_;
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  uint64_t file_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // The live records' frames, by table key: what a compaction writes.
  absl::flat_hash_map<std::string, std::string> live_ ABSL_GUARDED_BY(mu_);
  uint64_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool compacting_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> during_compaction_ ABSL_GUARDED_BY(mu_);
  IndexStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tensord::store
