// codec_bench: every codec of daemon/codec on model tensors: encode and decode GB/s with one
// thread and with the codec pool (all cores), each against memcpy of the same bytes in the same
// run, the ratio, and the round trip's relative RMSE and max error; then the automatic choice
// ("auto") under lossless and under lossy budgets of 1% and 5%.
//
// The tensors come from tests/bench/codec_data.py (the Qwen3-VL-shaped model's KV cache, vision
// features, weights and a ReLU activation), written to a directory with a manifest.json:
//
//   PYTHONPATH=build/python /usr/bin/python3 tests/bench/codec_data.py /tmp/codec_data
//   build/tests/bench/codec_bench --data /tmp/codec_data [--reps 5] [--csv out.csv]
//                                 [--codecs int8,fp8_e4m3,auto]
//
// Without --data it synthesizes stand-ins (Gaussian KV blocks with per-channel spread, N(0,0.02)
// weights, a half-zero activation) and says so. Medians of --reps runs; GB/s of the tensor's
// decoded size. The CSV feeds tests/bench/codec_plot.py (ratio against error).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/codec/codec.h"
#include "daemon/codec/float.h"
#include "daemon/codec/parallel.h"
#include "nlohmann/json.hpp"

namespace tensord {
namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  codec::TensorRef ref() const { return {dtype, shape, bytes}; }
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "codec_bench: %s\n", what.c_str());
  std::exit(1);
}

std::vector<Sample> Load(const std::string& dir) {
  std::ifstream f(dir + "/manifest.json");
  if (!f) Die("no " + dir + "/manifest.json (run tests/bench/codec_data.py " + dir + ")");
  std::vector<Sample> out;
  for (const auto& e : nlohmann::json::parse(f)) {
    Sample s;
    s.name = e["name"];
    auto d = ParseDType(std::string(e["dtype"]));
    if (!d.ok()) Die(std::string(d.status().message()));
    s.dtype = *d;
    for (int64_t x : e["shape"]) s.shape.push_back(x);
    std::ifstream b(dir + "/" + std::string(e["file"]), std::ios::binary);
    s.bytes.assign(std::istreambuf_iterator<char>(b), {});
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Sample> Synthesize() {
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0, 1);
  const auto half = [](DType d, const std::vector<float>& v) {
    std::vector<uint8_t> b(2 * v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = d == DType::kFloat16 ? codec::FloatToHalf(v[i]) : codec::FloatToBf16(v[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return b;
  };
  std::vector<float> kv(512 * 8 * 128), w(2048 * 2048), act(256 * 6144);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = g(rng) * (1 + float(i % 128 % 7));
  for (float& x : w) x = 0.02f * g(rng);
  for (float& x : act) x = std::max(0.0f, g(rng));
  std::vector<uint8_t> act_bytes(4 * act.size());
  std::memcpy(act_bytes.data(), act.data(), act_bytes.size());
  return {{"synthetic.kv.fp16", DType::kFloat16, {512, 8, 128}, half(DType::kFloat16, kv)},
          {"synthetic.weights.bf16", DType::kBFloat16, {2048, 2048}, half(DType::kBFloat16, w)},
          {"synthetic.activation.fp32", DType::kFloat32, {256, 6144}, act_bytes}};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

template <typename Fn>
double MedianSeconds(int reps, Fn&& fn) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Median(t);
}

double MemcpySeconds(size_t n, int reps) {
  std::vector<uint8_t> a(n, 1), b(n);
  return MedianSeconds(reps, [&] {
    std::memcpy(b.data(), a.data(), n);
    asm volatile("" : : "r"(b.data()) : "memory");
  });
}

struct Row {
  std::string tensor, codec;
  double ratio = 0, rel_rmse = 0, max_err = 0;
  double enc1 = 0, dec1 = 0, encn = 0, decn = 0;  // GB/s
  double memcpy_gbps = 0;
  bool applies = false;
  std::string note;
};

Row Measure(const Sample& s, const codec::Codec& c, double budget, int reps, double memcpy_gbps) {
  Row row{s.name, c.name()};
  row.memcpy_gbps = memcpy_gbps;
  auto enc = c.Encode(s.ref(), budget);
  if (!enc.ok()) {
    row.note = std::string(enc.status().message());
    return row;
  }
  row.applies = true;
  std::vector<uint8_t> back(s.bytes.size());
  if (!c.Decode(*enc, s.ref(), back).ok()) Die(absl::StrCat(c.name(), " does not decode"));
  const codec::Quality q = codec::Measure(s.dtype, s.bytes, back);
  row.ratio = double(s.bytes.size()) / double(enc->size());
  row.rel_rmse = q.rel_rmse;
  row.max_err = q.max_abs_error;
  const double gb = double(s.bytes.size()) / 1e9;
  for (int threads : {1, 0}) {
    codec::SetCodecThreads(threads);
    const double e = MedianSeconds(reps, [&] { (void)c.Encode(s.ref(), budget); });
    const double d = MedianSeconds(reps, [&] { (void)c.Decode(*enc, s.ref(), back); });
    (threads == 1 ? row.enc1 : row.encn) = gb / e;
    (threads == 1 ? row.dec1 : row.decn) = gb / d;
  }
  return row;
}

Row Auto(const Sample& s, const codec::Policy& p, const std::string& label, int reps,
         double memcpy_gbps) {
  Row row{s.name, label};
  row.memcpy_gbps = memcpy_gbps;
  row.applies = true;
  auto e = codec::EncodeFor(p, s.ref());
  if (!e.ok()) Die(std::string(e.status().message()));
  row.ratio = double(s.bytes.size()) / double(e->stored_bytes);
  row.rel_rmse = e->quality.rel_rmse;
  row.note =
      absl::StrCat("chose ", codec::CodecName(e->codec), e->over_budget ? " (over budget)" : "");
  const double gb = double(s.bytes.size()) / 1e9;
  for (int threads : {1, 0}) {
    codec::SetCodecThreads(threads);
    const double t = MedianSeconds(reps, [&] { (void)codec::EncodeFor(p, s.ref()); });
    (threads == 1 ? row.enc1 : row.encn) = gb / t;
  }
  return row;
}

}  // namespace
}  // namespace tensord

int main(int argc, char** argv) {
  using namespace tensord;
  std::string data, csv;
  std::vector<std::string> only;  // --codecs: these codecs ("auto": the automatic rows) alone
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--data") {
      data = value();
    } else if (flag == "--csv") {
      csv = value();
    } else if (flag == "--codecs") {
      only = absl::StrSplit(value(), ',');
    } else if (flag == "--reps") {
      reps = std::max(1, std::atoi(value().c_str()));
    } else {
      Die("unknown flag " + flag + " (see the header of tests/bench/codec_bench.cc)");
    }
  }
  const std::vector<Sample> samples = data.empty() ? Synthesize() : Load(data);
  codec::SetCodecThreads(0);
  const int all = codec::CodecThreads();
  std::printf("codec_bench: %zu tensors from %s; %d reps (medians); all threads = %d\n\n",
              samples.size(),
              data.empty() ? "synthetic stand-ins (no --data: run tests/bench/codec_data.py)"
                           : data.c_str(),
              reps, all);
  std::vector<Row> rows;
  for (const Sample& s : samples) {
    const double memcpy_gbps = double(s.bytes.size()) / 1e9 / MemcpySeconds(s.bytes.size(), reps);
    std::printf("## %s: %s %s, %.1f MiB (memcpy %.2f GB/s)\n\n", s.name.c_str(),
                std::string(DTypeName(s.dtype)).c_str(), absl::StrJoin(s.shape, "x").c_str(),
                double(s.bytes.size()) / (1 << 20), memcpy_gbps);
    std::printf(
        "| codec | ratio | rel RMSE | max abs err | enc GB/s 1T | dec GB/s 1T | enc GB/s %dT "
        "| dec GB/s %dT | enc/memcpy | dec/memcpy | note |\n",
        all, all);
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::vector<Row> these;
    const auto wanted = [&](const std::string& name) {
      return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
    };
    for (const codec::Codec* c : codec::AllCodecs()) {
      if (c->id() == codec::CodecId::kNone || !c->Accepts(s.ref()) || !wanted(c->name())) continue;
      these.push_back(Measure(s, *c, 0.01, reps, memcpy_gbps));
    }
    if (wanted("auto")) {
      these.push_back(Auto(s, {codec::Compression::kLossless}, "auto lossless", reps, memcpy_gbps));
      these.push_back(
          Auto(s, {codec::Compression::kLossy, 0.01}, "auto lossy 1%", reps, memcpy_gbps));
      these.push_back(
          Auto(s, {codec::Compression::kLossy, 0.05}, "auto lossy 5%", reps, memcpy_gbps));
    }
    for (const Row& r : these) {
      if (!r.applies) {
        std::printf("| %s | - | - | - | - | - | - | - | - | - | %s |\n", r.codec.c_str(),
                    r.note.c_str());
        continue;
      }
      std::printf("| %s | %.2f | %.2e | %.3g | %.2f | %s | %.2f | %s | %.3f | %s | %s |\n",
                  r.codec.c_str(), r.ratio, r.rel_rmse, r.max_err, r.enc1,
                  r.dec1 > 0 ? absl::StrFormat("%.2f", r.dec1).c_str() : "-", r.encn,
                  r.decn > 0 ? absl::StrFormat("%.2f", r.decn).c_str() : "-",
                  r.encn / r.memcpy_gbps,
                  r.decn > 0 ? absl::StrFormat("%.3f", r.decn / r.memcpy_gbps).c_str() : "-",
                  r.note.c_str());
      rows.push_back(r);
    }
    std::printf("\n");
  }
  if (!csv.empty()) {
    std::ofstream out(csv);
    out << "tensor,codec,ratio,rel_rmse,max_abs_error,enc_gbps_1t,dec_gbps_1t,enc_gbps_all,"
           "dec_gbps_all,memcpy_gbps\n";
    for (const Row& r : rows) {
      out << r.tensor << "," << r.codec << "," << r.ratio << "," << r.rel_rmse << "," << r.max_err
          << "," << r.enc1 << "," << r.dec1 << "," << r.encn << "," << r.decn << ","
          << r.memcpy_gbps << "\n";
    }
    std::printf("wrote %s\n", csv.c_str());
  }
  return 0;
}
