// The low-rank codec: a 2-D float matrix (the last dimension as columns) stored as the leading
// factors of its SVD, the rank the smallest whose discarded singular values keep the relative
// error within the budget. Eigen's divide-and-conquer SVD (BDCSVD).
#include <Eigen/Dense>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>

#include "daemon/codec/internal.h"

namespace tensord::codec::internal {
namespace {

// An SVD of more elements than this takes seconds: refused, the caller tries another codec.
constexpr size_t kMaxElements = size_t(1) << 22;

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Payload: u32 rank k, then A = U_k * S_k (rows x k) and B = V_k (cols x k), float32, row-major.
class LowRank final : public Codec {
 public:
  CodecId id() const override { return CodecId::kLowRank; }
  const char* name() const override { return "lowrank"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override {
    if (!IsFloat(t.dtype) || t.shape.size() < 2) return false;
    const auto [rows, cols] = Matrix(t);
    return std::min(rows, cols) >= 8 && rows * cols <= kMaxElements;
  }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double budget, Bytes* out,
                             Quality*) const override {
    const auto [rows, cols] = Matrix(t);
    RowMatrix m(rows, cols);
    for (size_t i = 0; i < rows * cols; ++i) {
      const float v = Load(t.dtype, t.bytes.data(), i);
      if (!std::isfinite(v)) return absl::FailedPreconditionError("lowrank: NaN or Inf values");
      m.data()[i] = v;
    }
    Eigen::BDCSVD<RowMatrix> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXf& s = svd.singularValues();
    double total = 0;
    for (int i = 0; i < s.size(); ++i) total += double(s[i]) * s[i];
    // The smallest k whose tail energy stays under the budget (with a margin for the float32
    // factors' own rounding; the round trip is measured afterwards anyway).
    const double allowed = total * (0.9 * budget) * (0.9 * budget);
    size_t k = size_t(s.size());
    double tail = 0;
    while (k > 0 && tail + double(s[k - 1]) * s[k - 1] <= allowed) {
      tail += double(s[k - 1]) * s[k - 1];
      --k;
    }
    const size_t bytes = 4 + 4 * k * (rows + cols);
    if (double(bytes) > (1.0 - kMinSaving) * double(t.bytes.size())) {
      return absl::FailedPreconditionError(
          absl::StrCat("lowrank: rank ", k, " of ", s.size(), " does not pay"));
    }
    const RowMatrix a = svd.matrixU().leftCols(k) * s.head(k).asDiagonal();
    const RowMatrix b = svd.matrixV().leftCols(k);
    Append(out, uint32_t(k));
    const size_t base = out->size();
    out->resize(base + 4 * k * (rows + cols));
    if (k > 0) {  // rank 0 (an all-zero matrix): no factors, and Eigen's are null
      std::memcpy(out->data() + base, a.data(), 4 * k * rows);
      std::memcpy(out->data() + base + 4 * k * rows, b.data(), 4 * k * cols);
    }
    return absl::OkStatus();
  }

  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const auto [rows, cols] = Matrix(like);
    Reader r(payload);
    uint32_t k = 0;
    std::span<const uint8_t> a_bytes, b_bytes;
    if (!r.Read(&k) || k > std::min(rows, cols) || !r.Take(4 * size_t(k) * rows, &a_bytes) ||
        !r.Take(4 * size_t(k) * cols, &b_bytes) || r.left() != 0) {
      return Damaged(name(), "wrong size");
    }
    RowMatrix a(rows, k), b(cols, k);
    if (k > 0) {
      std::memcpy(a.data(), a_bytes.data(), a_bytes.size());
      std::memcpy(b.data(), b_bytes.data(), b_bytes.size());
    }
    const RowMatrix m = k == 0 ? RowMatrix::Zero(rows, cols) : RowMatrix(a * b.transpose());
    for (size_t i = 0; i < rows * cols; ++i) Store(like.dtype, out.data(), i, m.data()[i]);
    return absl::OkStatus();
  }
};

}  // namespace

const Codec& LowRankCodec() {
  static const LowRank c;
  return c;
}

}  // namespace tensord::codec::internal
