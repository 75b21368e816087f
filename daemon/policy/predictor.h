// Prediction without hints (DESIGN.md "Policies"): from the keys each client reads, in order,
// a successor table (which key followed this one last time, confirmed when it happens again)
// and stride detection on numbered keys (`req.layer.7` after `.5`, `.6` predicts `.8`).
// Decisions only: the store turns predictions into look-ahead entries with a short life.
// Memory is bounded: at most max_keys learned successors (the oldest learned is forgotten
// first) and max_streams streams (beyond them a new stream is not tracked: no predictions for
// it until one ends). Not thread-safe: the store calls it under its lock.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace tensord::policy {

class Predictor {
 public:
  Predictor(size_t max_keys, size_t max_streams) : max_keys_(max_keys), max_streams_(max_streams) {}

  // Records that `stream` (a client session) read `key` (`ns` scopes it) and returns the keys
  // it is predicted to read next: a stride's next key once the same stride was seen twice in a
  // row, and the learned successor once the same successor followed twice.
  std::vector<std::string> Observe(uint64_t stream, absl::string_view ns, absl::string_view key);
  // Forgets a stream (its session ended).
  void EndStream(uint64_t stream) { streams_.erase(stream); }

  size_t learned() const { return successors_.size(); }
  size_t streams() const { return streams_.size(); }

  // A key split around its last run of digits: "req.layer.7.w" -> ("req.layer.", 7, ".w").
  struct Numbered {
    absl::string_view head, tail;
    uint64_t n = 0;
    int width = 0;        // digits
    bool padded = false;  // with leading zeros ("007"): its successors keep the width
    bool ok = false;
  };
  static Numbered Split(absl::string_view key);

 private:
  struct Stream {
    std::string last;  // the previous key (with its namespace)
    int64_t stride = 0;
    int stride_seen = 0;  // how many times in a row `stride` was seen
  };
  struct Successor {
    std::string next;
    int confirmed = 0;  // times `next` followed
  };
  void Learn(const std::string& prev, absl::string_view next);

  const size_t max_keys_, max_streams_;
  absl::flat_hash_map<uint64_t, Stream> streams_;
  absl::flat_hash_map<std::string, Successor> successors_;
  std::deque<std::string> learned_order_;  // oldest first
};

}  // namespace tensord::policy
