// Element types and shapes of tensors, shared by the client API and the daemon. The numeric
// values equal proto's tensord.v1.DType so that conversion at the service edge is a cast.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"

namespace tensord {

enum class DType : int32_t {
  kUnspecified = 0,
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat64 = 4,
  kInt8 = 5,
  kUInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kBool = 10,
};

inline constexpr int kMaxDims = 8;

// Returns the size of one element in bytes, or 0 for kUnspecified and unknown values.
size_t ItemSize(DType dtype);

// Returns the lower-case name ("float16"), or "unknown".
std::string_view DTypeName(DType dtype);

// Parses a name such as "float16", "fp16", "f16" or "half". INVALID_ARGUMENT when unknown.
absl::StatusOr<DType> ParseDType(std::string_view name);

// Returns the byte size of a contiguous tensor. INVALID_ARGUMENT for an unknown dtype, more than
// kMaxDims dimensions, a negative dimension, or a product that overflows 64 bits.
absl::StatusOr<uint64_t> TensorBytes(DType dtype, std::span<const int64_t> shape);

}  // namespace tensord
