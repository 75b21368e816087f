// Request-field validation: every rule that protects the daemon from a bad client.
#include "daemon/store/validation.h"

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"

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

TEST(Validation, RejectsWhatStrictUtf8Refuses) {
  // RFC 3629: shortest form only, no surrogates, nothing above U+10FFFF, no F5..FF lead bytes.
  for (const char* bad :
       {"k\xE0\x80\x80", "k\xF0\x80\x80\x80", "k\xED\xA0\x80", "k\xED\xBF\xBF", "k\xF4\x90\x80\x80",
        "k\xF5\x80\x80\x80", "k\xF8\x88\x80\x80\x80", "k\xFF", "k\xE2\x82", "k\x80"}) {
    const absl::Status st = ValidateKey(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << absl::CHexEscape(bad);
    EXPECT_NE(st.message().find("not valid UTF-8 at byte 1"), absl::string_view::npos)
        << st.message();
  }
  EXPECT_TRUE(ValidateKey("\xF4\x8F\xBF\xBF").ok()) << "U+10FFFF is the last code point";
  EXPECT_TRUE(ValidateKey("\xED\x9F\xBF").ok()) << "U+D7FF is just below the surrogates";
  EXPECT_TRUE(ValidateKey("\xF0\x9F\x98\x80").ok()) << "an emoji (4 bytes)";
}

TEST(Validation, RejectsC0C1AndDelControls) {
  EXPECT_EQ(ValidateKey("a\x7F").code(), absl::StatusCode::kInvalidArgument);
  const absl::Status c1 = ValidateKey("ab\xC2\x85");  // U+0085 NEXT LINE
  EXPECT_EQ(c1.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c1.message().find("U+0085 at byte 2"), absl::string_view::npos) << c1.message();
  EXPECT_EQ(ValidateKey("\xC2\x80").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey("\xC2\x9F").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateKey("\xC2\xA0").ok()) << "U+00A0 (no-break space) is not a control";
  EXPECT_TRUE(ValidateKey("\xE2\x80\x85").ok()) << "80 85 inside a 3-byte form is not C1";
}

TEST(Validation, ClientNames) {
  EXPECT_TRUE(ValidateClientName("").ok());
  EXPECT_TRUE(ValidateClientName(std::string(kMaxClientNameBytes, 'n')).ok());
  EXPECT_EQ(ValidateClientName(std::string(kMaxClientNameBytes + 1, 'n')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateClientName("n\xC0\xAF").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateClientName("a\nb").code(), absl::StatusCode::kInvalidArgument);
}

TEST(Validation, RequestLimitFitsTheLargestValidGet) {
  // 4096 keys of 1 KiB, each a length-delimited field: 1 tag byte, 2 length bytes.
  EXPECT_GE(kMaxRequestBytes, kMaxBatchKeys * (kMaxKeyBytes + 3) + 2 * kMaxNamespaceBytes);
  EXPECT_LT(kMaxRequestBytes, size_t{5} << 20) << "a far larger request is refused unparsed";
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

TEST(Validation, ParentHintIsAKeyButNotItself) {
  CreateParams p = Valid();
  p.parent = "kv.block.0";
  EXPECT_TRUE(ValidateCreate(p).ok());
  p.parent = "";
  EXPECT_TRUE(ValidateCreate(p).ok()) << "no parent";
  p.parent = p.key;
  EXPECT_EQ(ValidateCreate(p).status().message(), "parent is the key itself");
  p.parent = std::string("blk\x7f", 4);
  EXPECT_TRUE(absl::StrContains(ValidateCreate(p).status().message(), "parent has control"));
  p.parent = std::string(1025, 'p');
  EXPECT_TRUE(absl::StrContains(ValidateCreate(p).status().message(), "parent is 1025 bytes"));
}

}  // namespace
}  // namespace tensord::store
