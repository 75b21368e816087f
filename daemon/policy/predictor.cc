// The successor table and stride detection.
#include "daemon/policy/predictor.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tensord::policy {
namespace {

constexpr size_t kMaxDigits = 18;  // fits int64 with room for a stride
constexpr int kConfirmations = 2;  // a successor or a stride predicts once seen this often

std::string Full(absl::string_view ns, absl::string_view key) {
  return absl::StrCat(ns, absl::string_view("\0", 1), key);
}

}  // namespace

Predictor::Numbered Predictor::Split(absl::string_view key) {
  size_t end = key.size();
  while (end > 0 && !absl::ascii_isdigit(static_cast<unsigned char>(key[end - 1]))) --end;
  size_t start = end;
  while (start > 0 && absl::ascii_isdigit(static_cast<unsigned char>(key[start - 1]))) --start;
  Numbered out;
  if (start == end || end - start > kMaxDigits) return out;
  out.head = key.substr(0, start);
  out.tail = key.substr(end);
  for (size_t i = start; i < end; ++i) out.n = out.n * 10 + uint64_t(key[i] - '0');
  out.width = int(end - start);
  out.padded = out.width > 1 && key[start] == '0';
  out.ok = true;
  return out;
}

void Predictor::Learn(const std::string& prev, absl::string_view next) {
  auto [it, fresh] = successors_.try_emplace(prev);
  if (fresh) {
    learned_order_.push_back(prev);
    while (successors_.size() > max_keys_) {
      successors_.erase(learned_order_.front());
      learned_order_.pop_front();
    }
    it = successors_.find(prev);
    if (it == successors_.end()) return;  // max_keys_ 0
  }
  Successor& s = it->second;
  if (s.next == next) {
    ++s.confirmed;
  } else {
    s.next = std::string(next);
    s.confirmed = 1;
  }
}

std::vector<std::string> Predictor::Observe(uint64_t stream, absl::string_view ns,
                                            absl::string_view key) {
  auto sit = streams_.find(stream);
  if (sit == streams_.end()) {
    if (streams_.size() >= max_streams_) return {};
    sit = streams_.emplace(stream, Stream{}).first;
  }
  Stream& s = sit->second;
  const std::string full = Full(ns, key);
  const Numbered now = Split(key);
  const size_t cut = s.last.find('\0');
  const bool same_ns = cut != std::string::npos && absl::string_view(s.last).substr(0, cut) == ns;
  if (same_ns && s.last != full) {
    Learn(s.last, key);
    const Numbered before = Split(absl::string_view(s.last).substr(cut + 1));
    if (before.ok && now.ok && before.head == now.head && before.tail == now.tail &&
        (!(before.padded || now.padded) || before.width == now.width)) {
      const int64_t d = int64_t(now.n) - int64_t(before.n);
      s.stride_seen =
          d != 0 && d == s.stride ? std::min(s.stride_seen + 1, kConfirmations) : (d != 0 ? 1 : 0);
      s.stride = d;
    } else {
      s.stride = 0;
      s.stride_seen = 0;
    }
  } else if (!same_ns) {
    s.stride = 0;
    s.stride_seen = 0;
  }
  s.last = full;

  std::vector<std::string> out;
  if (s.stride_seen >= kConfirmations && now.ok) {
    const int64_t n = int64_t(now.n) + s.stride;
    if (n >= 0) {
      out.push_back(absl::StrFormat("%s%0*d%s", now.head, now.padded ? now.width : 1, n, now.tail));
    }
  }
  if (auto it = successors_.find(full); it != successors_.end() &&
                                        it->second.confirmed >= kConfirmations &&
                                        (out.empty() || out.front() != it->second.next)) {
    out.push_back(it->second.next);
  }
  return out;
}

}  // namespace tensord::policy
