// Field validation for client requests.
#include "daemon/store/validation.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/common.h"

namespace tensord::store {
namespace {

// Returns the first control character (C0, DEL or C1) in `s`, which must be valid UTF-8, as
// (byte offset, code point), or nullopt. In valid UTF-8 a C1 control (U+0080..U+009F) is exactly
// the pair C2 80..C2 9F, and no other sequence contains those bytes in that order at a boundary.
std::optional<std::pair<size_t, uint32_t>> FindControl(absl::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) return std::make_pair(i, uint32_t{c});
    if (c == 0xC2 && i + 1 < s.size()) {
      const auto next = static_cast<unsigned char>(s[i + 1]);
      if (next >= 0x80 && next <= 0x9F) return std::make_pair(i, uint32_t{next});
    }
  }
  return std::nullopt;
}

}  // namespace

absl::Status ValidateText(absl::string_view field, absl::string_view text) {
  // Protobuf's own check: exactly what strict parsers apply to `string` fields (RFC 3629:
  // shortest form, no surrogates, nothing above U+10FFFF).
  if (!google::protobuf::internal::IsStructurallyValidUTF8(text.data(),
                                                           static_cast<int>(text.size()))) {
    const int good = google::protobuf::internal::UTF8SpnStructurallyValid(
        google::protobuf::StringPiece(text.data(), text.size()));
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8 at byte ", good));
  }
  if (auto control = FindControl(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has control character U+",
                                                   absl::Hex(control->second, absl::kZeroPad4),
                                                   " at byte ", control->first));
  }
  return absl::OkStatus();
}

absl::Status ValidateKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("key is ", key.size(), " bytes; at most ", kMaxKeyBytes));
  }
  return ValidateText("key", key);
}

absl::Status ValidateClientName(absl::string_view name) {
  if (name.size() > kMaxClientNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("client_name is ", name.size(), " bytes; at most ", kMaxClientNameBytes));
  }
  return ValidateText("client_name", name);
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
  if (!params.parent.empty()) {
    if (params.parent.size() > kMaxKeyBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("parent is ", params.parent.size(), " bytes; at most ", kMaxKeyBytes));
    }
    if (auto st = ValidateText("parent", params.parent); !st.ok()) return st;
    // A chain that loops on itself would send an eviction policy walking it in circles.
    if (params.parent == params.key) return absl::InvalidArgumentError("parent is the key itself");
  }
  if (params.durability != Durability::kDurable && params.durability != Durability::kCache) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown durability ", static_cast<int>(params.durability)));
  }
  if (params.scope != Scope::kGlobal && params.scope != Scope::kSession) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown scope ", static_cast<int>(params.scope)));
  }
  if (absl::Status st = codec::ValidatePolicy(params.compression); !st.ok()) return st;
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
  if (auto st = ValidateText("pool", params.pool); !st.ok()) return st;  // echoed in messages
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
