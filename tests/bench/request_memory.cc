// How much memory the daemon keeps after a stream of hostile requests, and why. Sends 20,000
// requests over the raw protocol (random kinds and fields, 5% of them 1..15 MiB), three times,
// reading the daemon's RssAnon before and after each round: with tensord's own malloc setting,
// with a 32 MiB mmap threshold (what glibc's dynamic threshold grows to) and with one arena. Growth
// that levels off between rounds is memory kept for reuse, not memory held per request; the malloc
// settings tell whose. The reference is the daemon's own RSS before any request.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/str_format.h"
#include "grpcpp/grpcpp.h"
#include "tensord/v1/tensord.grpc.pb.h"
#include "tests/bench/bench_daemon.h"

namespace tensord::bench {
namespace {

constexpr int kRequests = 20000;

uint64_t RssAnonKiB(pid_t pid) {
  std::ifstream in(absl::StrFormat("/proc/%d/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "RssAnon: %llu kB", &kb) == 1) return kb;
  }
  return 0;
}

struct Sender {
  std::unique_ptr<v1::Tensord::Stub> stub;
  std::string session;
  std::mt19937_64 rng{42};
  int refused_large = 0;

  std::string Bytes(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  }
  // A field of random size: mostly small, 5% large (1..15 MiB).
  std::string Field() {
    if (rng() % 20 == 0) return std::string(1 + rng() % (15 << 20), 'x');
    return Bytes(rng() % 2048);
  }
  void One() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st;
    switch (rng() % 4) {
      case 0: {
        v1::CreateRequest r;
        r.set_session_id(session);
        r.set_key(Field());
        r.set_dtype(static_cast<v1::DType>(rng() % 16));
        for (int i = 0, n = static_cast<int>(rng() % 10); i < n; ++i) r.add_shape(rng() % 4096);
        v1::CreateResponse resp;
        st = stub->Create(&ctx, r, &resp);
        if (st.ok()) {  // do not fill the tier: abort what was created
          grpc::ClientContext actx;
          v1::AbortRequest a;
          a.set_session_id(session);
          a.set_key(r.key());
          v1::AbortResponse ar;
          stub->Abort(&actx, a, &ar).IgnoreError();
        }
        break;
      }
      case 1: {
        v1::GetRequest r;
        r.set_session_id(session);
        for (int i = 0, n = static_cast<int>(1 + rng() % 8); i < n; ++i) r.add_keys(Field());
        v1::GetResponse resp;
        st = stub->Get(&ctx, r, &resp);
        break;
      }
      case 2: {
        v1::StatRequest r;
        r.set_key(Field());
        v1::TensorMeta resp;
        st = stub->Stat(&ctx, r, &resp);
        break;
      }
      default: {
        v1::DeleteRequest r;
        r.set_session_id(session);
        r.set_key(Field());
        v1::DeleteResponse resp;
        st = stub->Delete(&ctx, r, &resp);
        break;
      }
    }
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused_large;
  }
};

struct Row {
  std::string malloc_mode;
  uint64_t idle_kib = 0;
  uint64_t after_kib[3] = {};  // after each round of kRequests
  int refused = 0;
};

// Starts a daemon with `env` ("NAME=value", or "" for none) in its environment.
Row Measure(const std::string& env) {
  const size_t eq = env.find('=');
  const std::string name = eq == std::string::npos ? "" : env.substr(0, eq);
  if (!name.empty()) setenv(name.c_str(), env.substr(eq + 1).c_str(), 1);
  OwnDaemon d;
  const std::string socket = d.Start(
      TENSORD_BIN, {"--host-capacity", "64MiB", "--log-level", "error", "--set", "gpu.mode=off"});
  if (!name.empty()) unsetenv(name.c_str());
  if (socket.empty()) {
    std::fprintf(stderr, "tensord did not start\n");
    std::exit(1);
  }
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  Sender s;
  s.stub = v1::Tensord::NewStub(
      grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext attach_ctx;
  auto stream = s.stub->Attach(&attach_ctx, v1::AttachRequest());
  v1::AttachEvent ev;
  if (!stream->Read(&ev)) {
    std::fprintf(stderr, "attach failed\n");
    std::exit(1);
  }
  s.session = ev.welcome().session_id();
  Row row{std::string(env).empty() ? "tensord's own (mmap threshold 256 KiB)" : env};
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  row.idle_kib = RssAnonKiB(d.pid);
  for (uint64_t& after : row.after_kib) {
    for (int i = 0; i < kRequests; ++i) s.One();
    after = RssAnonKiB(d.pid);
  }
  if (std::getenv("REQUEST_MEMORY_HOLD") != nullptr) {  // for a look with gdb: pid, then Enter
    std::fprintf(stderr, "daemon pid %d; press Enter to go on\n", d.pid);
    std::getchar();
  }
  row.refused = s.refused_large;
  attach_ctx.TryCancel();
  return row;
}

}  // namespace
}  // namespace tensord::bench

int main() {
  using namespace tensord::bench;
  std::printf(
      "# request_memory: daemon RssAnon around 3 rounds of %d hostile requests, 5%% of "
      "them 1..15 MiB\n# %s\n\n",
      kRequests, CpuModel().c_str());
  std::printf(
      "| daemon's malloc | RssAnon idle | after %dk | after %dk | after %dk | growth | "
      "refused as too large |\n|---|---|---|---|---|---|---|\n",
      kRequests / 1000, 2 * kRequests / 1000, 3 * kRequests / 1000);
  // "": tensord's own setting (a fixed 256 KiB mmap threshold: large freed buffers are
  // unmapped at once). 32 MiB: where glibc's dynamic threshold ends up after large frees, so
  // buffers up to 32 MiB come from (and stay in) its heaps — glibc's default behaviour, the
  // reference. One arena: glibc's per-thread arenas off as well.
  for (const char* env : {"MALLOC_MMAP_THRESHOLD_=33554432", "", "MALLOC_ARENA_MAX=1"}) {
    const Row r = Measure(env);
    std::printf("| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %+.1f MiB | %d |\n",
                r.malloc_mode.c_str(), r.idle_kib / 1024.0, r.after_kib[0] / 1024.0,
                r.after_kib[1] / 1024.0, r.after_kib[2] / 1024.0,
                (static_cast<double>(r.after_kib[2]) - static_cast<double>(r.idle_kib)) / 1024.0,
                r.refused);
  }
  return 0;
}
