// Request-field validation: every rule that protects the daemon from a bad client.
#include "daemon/store/validation.h"

#include <gtest/gtest.h>

namespace tensord::store {
namespace {

CreateParams Valid() {
  CreateParams p;
  p.key = "layer.0.k";
  p.dtype = DType::kFloat16;
  p.shape = {2, 3};
  return p;
}

TEST(Validation, AcceptsOrdinaryKeysAndUtf8) {
  EXPECT_TRUE(ValidateKey("layer.0.k").ok());
  EXPECT_TRUE(ValidateKey("prefix/blk:00ff").ok());
  EXPECT_TRUE(ValidateKey("\xC3\xA9\xE2\x82\xAC").ok());  // é€
  EXPECT_TRUE(ValidateKey(std::string(kMaxKeyBytes, 'k')).ok());
}

TEST(Validation, RejectsBadKeys) {
  EXPECT_EQ(ValidateKey("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey(std::string(kMaxKeyBytes + 1, 'k')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey(std::string("a\0b", 3)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey("a\nb").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey("\xFF\xFE").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey("\xC3").code(), absl::StatusCode::kInvalidArgument);      // truncated
  EXPECT_EQ(ValidateKey("\xC0\xAF").code(), absl::StatusCode::kInvalidArgument);  // overlong
}

TEST(Validation, Namespaces) {
  EXPECT_TRUE(ValidateNamespace("").ok());
  EXPECT_TRUE(ValidateNamespace("qwen3-vl_0.1").ok());
  EXPECT_EQ(ValidateNamespace("a/b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateNamespace(std::string(200, 'a')).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Validation, ComputesBytesFromShapeAndDtype) {
  auto bytes = ValidateCreate(Valid());
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, 12u);
  CreateParams p = Valid();
  p.nbytes = 12;
  EXPECT_TRUE(ValidateCreate(p).ok());
}

TEST(Validation, RejectsBadShapesDtypesAndSizes) {
  auto code = [](CreateParams p) { return ValidateCreate(p).status().code(); };
  CreateParams p = Valid();
  p.dtype = DType::kUnspecified;
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.dtype = static_cast<DType>(99);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.shape = {2, -3};
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.shape = {0, 3};
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.shape = {1LL << 40, 1LL << 40};  // overflows 64 bits times 2 bytes
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.shape = std::vector<int64_t>(kMaxDims + 1, 1);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.nbytes = 13;
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.durability = static_cast<Durability>(7);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Valid();
  p.scope = static_cast<Scope>(7);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tensord::store
