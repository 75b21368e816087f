// Element type tables and overflow-checked shape arithmetic.
#include "tensord/dtype.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace tensord {
namespace {

struct DTypeInfo {
  DType dtype;
  size_t size;
  std::string_view name;
  std::array<std::string_view, 3> aliases;
};

constexpr std::array<DTypeInfo, 10> kInfos = {{
    {DType::kFloat32, 4, "float32", {"fp32", "f32", "float"}},
    {DType::kFloat16, 2, "float16", {"fp16", "f16", "half"}},
    {DType::kBFloat16, 2, "bfloat16", {"bf16", "", ""}},
    {DType::kFloat64, 8, "float64", {"fp64", "f64", "double"}},
    {DType::kInt8, 1, "int8", {"i8", "", ""}},
    {DType::kUInt8, 1, "uint8", {"u8", "byte", ""}},
    {DType::kInt16, 2, "int16", {"i16", "", ""}},
    {DType::kInt32, 4, "int32", {"i32", "", ""}},
    {DType::kInt64, 8, "int64", {"i64", "", ""}},
    {DType::kBool, 1, "bool", {"", "", ""}},
}};

const DTypeInfo* Find(DType dtype) {
  for (const auto& info : kInfos) {
    if (info.dtype == dtype) return &info;
  }
  return nullptr;
}

}  // namespace

size_t ItemSize(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->size : 0;
}

std::string_view DTypeName(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->name : "unknown";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const auto& info : kInfos) {
    if (name == info.name) return info.dtype;
    for (auto alias : info.aliases) {
      if (!alias.empty() && name == alias) return info.dtype;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", absl::string_view(name.data(), name.size()), "'"));
}

absl::StatusOr<uint64_t> TensorBytes(DType dtype, std::span<const int64_t> shape) {
  const size_t item = ItemSize(dtype);
  if (item == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown or unspecified dtype ", static_cast<int>(dtype)));
  }
  if (shape.size() > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape has ", shape.size(), " dimensions; at most ", kMaxDims));
  }
  uint64_t total = item;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape dimension ", i, " is negative (", shape[i], ")"));
    }
    if (__builtin_mul_overflow(total, static_cast<uint64_t>(shape[i]), &total)) {
      return absl::InvalidArgumentError("shape x dtype size overflows 64 bits");
    }
  }
  return total;
}

}  // namespace tensord
