// Validation of every client-supplied field, before the store touches its state. Each function
// returns INVALID_ARGUMENT with a message naming the field and what is wrong with it.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/store/types.h"

namespace tensord::store {

inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr size_t kMaxNamespaceBytes = 128;
inline constexpr size_t kMaxBatchKeys = 4096;
inline constexpr size_t kMaxClientNameBytes = 128;
// The largest request message a valid request needs: a batch of kMaxBatchKeys keys of
// kMaxKeyBytes each (1 tag byte + a 2-byte length + the key), plus room for the session id,
// namespace and small fields. The daemon's gRPC receive limit.
inline constexpr size_t kMaxRequestBytes = kMaxBatchKeys * (kMaxKeyBytes + 3) + (64 << 10);
inline constexpr int64_t kMaxTtlMs = int64_t{366} * 24 * 3600 * 1000;

// Text fields that reach a proto `string` (a response field or a message): valid UTF-8 (RFC
// 3629, as protobuf checks it) with no control character (C0, DEL, C1). `field` names it in the
// error.
absl::Status ValidateText(absl::string_view field, absl::string_view text);
// Keys: 1..1024 bytes of valid UTF-8 with no control characters (NUL included).
absl::Status ValidateKey(absl::string_view key);
// A client's free-text name (Attach): 0..128 bytes of text as ValidateText checks it.
absl::Status ValidateClientName(absl::string_view name);
// Namespaces: 0..128 bytes of [A-Za-z0-9._-]; empty is the default namespace.
absl::Status ValidateNamespace(absl::string_view ns);
// Checks dtype, shape, nbytes, names and enums of a Create; returns the tensor's byte size.
absl::StatusOr<uint64_t> ValidateCreate(const CreateParams& params);

}  // namespace tensord::store
