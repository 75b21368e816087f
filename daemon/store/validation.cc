// Field validation for client requests.
#include "daemon/store/validation.h"

#include "absl/strings/str_cat.h"

namespace tensord::store {
namespace {

// Returns the length of the UTF-8 sequence at s[i], or 0 if it is not well-formed.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  if (len == 2 && c < 0xC2) return 0;  // overlong
  return len;
}

}  // namespace

absl::Status ValidateKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("key is ", key.size(), " bytes; at most ", kMaxKeyBytes));
  }
  for (size_t i = 0; i < key.size();) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c == 0x7F) {
      return absl::InvalidArgumentError(
          absl::StrCat("key has control character 0x", absl::Hex(c), " at byte ", i));
    }
    const size_t len = Utf8SequenceLength(key, i);
    if (len == 0) {
      return absl::InvalidArgumentError(absl::StrCat("key is not valid UTF-8 at byte ", i));
    }
    i += len;
  }
  return absl::OkStatus();
}

absl::Status ValidateNamespace(absl::string_view ns) {
  if (ns.size() > kMaxNamespaceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("namespace is ", ns.size(), " bytes; at most ", kMaxNamespaceBytes));
  }
  for (char c : ns) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError("namespace may only contain [A-Za-z0-9._-]");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ValidateCreate(const CreateParams& params) {
  if (auto st = ValidateNamespace(params.ns); !st.ok()) return st;
  if (auto st = ValidateKey(params.key); !st.ok()) return st;
  if (params.durability != Durability::kDurable && params.durability != Durability::kCache) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown durability ", static_cast<int>(params.durability)));
  }
  if (params.scope != Scope::kGlobal && params.scope != Scope::kSession) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown scope ", static_cast<int>(params.scope)));
  }
  if (params.ttl_ms < 0 || params.ttl_ms > kMaxTtlMs) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms ", params.ttl_ms, " is outside [0, ", kMaxTtlMs, "]"));
  }
  if (params.tier != WantTier::kAny && params.tier != WantTier::kHost &&
      params.tier != WantTier::kGpu) {
    return absl::InvalidArgumentError("a tensor is created on the HOST or GPU tier only");
  }
  if (params.device < -1 || params.device > 63) {
    return absl::InvalidArgumentError(absl::StrCat("device ", params.device, " is out of range"));
  }
  if (params.device >= 0 && params.tier != WantTier::kGpu) {
    return absl::InvalidArgumentError("device is for tensors created on the GPU tier");
  }
  if (params.pool.size() > kMaxNamespaceBytes) {
    return absl::InvalidArgumentError("pool name is too long");
  }
  auto bytes = TensorBytes(params.dtype, params.shape);
  if (!bytes.ok()) return bytes.status();
  if (*bytes == 0) {
    return absl::InvalidArgumentError("tensor has 0 bytes (a dimension is 0)");
  }
  if (params.nbytes != 0 && params.nbytes != *bytes) {
    return absl::InvalidArgumentError(absl::StrCat("nbytes ", params.nbytes, " does not match ",
                                                   *bytes, " = shape x ",
                                                   std::string(DTypeName(params.dtype))));
  }
  return *bytes;
}

}  // namespace tensord::store
