// The host tier across restarts: the manifest that names the segments of the last instance, the
// trailer at the end of each segment that ties it to that manifest, and taking them over.
#include <fcntl.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/unique_fd.h"
#include "daemon/tiers/host_tier.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {
namespace {

// Written once, when a segment is created, in its last kTrailerBytes.
struct Trailer {
  uint64_t magic;
  uint64_t generation;
  uint64_t layout;
  uint32_t index, count;
  uint64_t size;
  uint64_t sum;  // XXH3-64 of the fields above
};
constexpr uint64_t kTrailerMagic = 0x3147455344534e54;  // "TNSDSEG1"
constexpr absl::string_view kManifestHead = "tensord-segments 1";

uint64_t TrailerSum(const Trailer& t) { return XXH3_64bits(&t, offsetof(Trailer, sum)); }

struct Manifest {
  uint64_t generation = 0, layout = 0;
  std::vector<std::pair<std::string, uint64_t>> segments;  // name, size
};

// Parses a manifest; the last line is the XXH3-64 of everything before it.
absl::StatusOr<Manifest> ParseManifest(const std::string& text) {
  const size_t last = text.rfind("sum ");
  if (last == std::string::npos) return absl::DataLossError("no checksum line");
  uint64_t sum = 0;
  if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(text.substr(last + 4)), &sum) ||
      sum != XXH3_64bits(text.data(), last)) {
    return absl::DataLossError("checksum mismatch");
  }
  Manifest m;
  std::vector<std::string> lines = absl::StrSplit(text.substr(0, last), '\n', absl::SkipEmpty());
  if (lines.empty()) return absl::DataLossError("empty");
  std::vector<std::string> head = absl::StrSplit(lines[0], ' ');
  if (head.size() != 4 || absl::StrCat(head[0], " ", head[1]) != kManifestHead ||
      !absl::SimpleHexAtoi(head[2], &m.generation) || !absl::SimpleHexAtoi(head[3], &m.layout)) {
    return absl::DataLossError("bad first line");
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], ' ');
    uint64_t size = 0;
    if (f.size() != 2 || !absl::SimpleAtoi(f[1], &size)) return absl::DataLossError("bad line");
    m.segments.emplace_back(f[0], size);
  }
  return m;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid())
      return absl::InternalError(absl::StrCat("create ", tmp, ": ", strerror(errno)));
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
        ::fsync(fd.get()) != 0) {
      return absl::InternalError(absl::StrCat("write ", tmp, ": ", strerror(errno)));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", tmp, ": ", strerror(errno)));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  UniqueFd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.valid()) ::fsync(d.get());
  return absl::OkStatus();
}

}  // namespace

bool HostTier::Reattach(const std::vector<Plan>& plans, const std::string& manifest,
                        const std::string& name_prefix, const HostTierConfig& config) {
  std::ifstream in(manifest);
  if (!in) return false;  // a first start
  std::stringstream text;
  text << in.rdbuf();
  auto m = ParseManifest(text.str());
  auto refuse = [&](absl::string_view why) {
    spdlog::warn(
        "not taking over the last instance's shared memory ({}): {}; its host copies "
        "are dropped",
        manifest, std::string(why));
    shm_.clear();  // adopted segments are removed with their owners
    return false;
  };
  if (!m.ok()) return refuse(m.status().message());
  if (m->layout != layout_ || m->segments.size() != plans.size()) {
    return refuse("the host tier's layout changed (capacity, pool classes, tenants or mode)");
  }
  for (uint32_t i = 0; i < plans.size(); ++i) {
    const auto& [name, size] = m->segments[i];
    if (!absl::StartsWith(name, name_prefix) || absl::StrContains(name, '/') ||
        size != plans[i].size) {
      return refuse(absl::StrCat("segment ", i, " is not one of this run directory's"));
    }
    auto seg = ShmSegment::Adopt(name, size, plans[i].mode, config.prefault, plans[i].group);
    if (!seg.ok()) return refuse(seg.status().message());
    Trailer t;
    std::memcpy(&t, seg->data() + size - kTrailerBytes, sizeof(t));
    const Trailer want{
        kTrailerMagic, m->generation, layout_, i, static_cast<uint32_t>(plans.size()), size, t.sum};
    if (std::memcmp(&t, &want, sizeof(t)) != 0 || t.sum != TrailerSum(t)) {
      shm_.push_back(*std::move(seg));
      return refuse(absl::StrCat("segment ", name, " does not carry this manifest's trailer"));
    }
    shm_.push_back(*std::move(seg));
  }
  generation_ = m->generation;
  // Anything else under our prefix is a leftover (we hold the run directory's lock).
  absl::flat_hash_set<std::string> kept;
  for (const ShmSegment& seg : shm_) kept.insert(seg.name());
  for (const std::string& name : ShmSegment::ListOwned(name_prefix)) {
    if (!kept.contains(name) && ShmSegment::Remove(name)) {
      spdlog::warn("removed stale shared-memory segment /dev/shm/{}", name);
    }
  }
  spdlog::info("took over {} shared-memory segments of generation {:016x}", shm_.size(),
               generation_);
  return true;
}

absl::Status HostTier::Publish(const std::string& manifest) {
  std::string text = absl::StrFormat("%s %016x %016x\n", kManifestHead, generation_, layout_);
  for (uint32_t i = 0; i < shm_.size(); ++i) {
    Trailer t{kTrailerMagic,
              generation_,
              layout_,
              i,
              static_cast<uint32_t>(shm_.size()),
              shm_[i].size(),
              0};
    t.sum = TrailerSum(t);
    std::memcpy(shm_[i].data() + shm_[i].size() - kTrailerBytes, &t, sizeof(t));
    absl::StrAppend(&text, shm_[i].name(), " ", shm_[i].size(), "\n");
  }
  absl::StrAppendFormat(&text, "sum %016x\n", XXH3_64bits(text.data(), text.size()));
  return WriteFileAtomically(manifest, text);
}

}  // namespace tensord::tiers
