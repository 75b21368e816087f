// A table of bad requests sent over the raw protocol (no client-library checks in the way):
// each gets its exact gRPC code, and afterwards the daemon still serves and another client's
// tensor is intact.
#include <gtest/gtest.h>

#include <cmath>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "google/protobuf/stubs/common.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

using grpc::StatusCode;

// Opens a raw session; keeps the Attach stream open while alive.
struct RawSession {
  explicit RawSession(v1::Tensord::Stub& stub) {
    stream = stub.Attach(&ctx, v1::AttachRequest());
    v1::AttachEvent ev;
    EXPECT_TRUE(stream->Read(&ev));
    id = ev.welcome().session_id();
  }
  ~RawSession() { ctx.TryCancel(); }
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::AttachEvent>> stream;
  std::string id;
};

v1::CreateRequest GoodCreate(const std::string& session, const std::string& key) {
  v1::CreateRequest r;
  r.set_session_id(session);
  r.set_key(key);
  r.set_dtype(v1::FLOAT16);
  r.add_shape(4);
  r.add_shape(8);
  return r;
}

TEST(BadRequests, EachGetsItsCodeAndTheDaemonKeepsServing) {
  Daemon d({"--host-capacity", "64MiB", "--set", "gpu.mode=off"});  // the same answers anywhere
  ASSERT_TRUE(d.ok());
  v1::Tensord::Stub& stub = d.stub();

  // Another client's tensor that no bad request may damage.
  ClientOptions opts;
  opts.socket_path = d.socket();
  auto victim_client = Client::Connect(opts);
  ASSERT_TRUE(victim_client.ok());
  auto victim = (*victim_client)->Create("victim", DType::kUInt8, {1 << 20});
  ASSERT_TRUE(victim.ok());
  std::memset(victim->data(), 0x3C, victim->nbytes());
  const uint64_t victim_hash = XXH3_64bits(victim->data(), victim->nbytes());
  ASSERT_TRUE(victim->Seal().ok());
  auto victim_lease = (*victim_client)->Get("victim");
  ASSERT_TRUE(victim_lease.ok());

  RawSession s(stub), other(stub);
  auto call = [&](auto method, const auto& request, auto response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return (stub.*method)(&ctx, request, &response);
  };
  auto create = [&](v1::CreateRequest r) {
    return call(&v1::Tensord::Stub::Create, r, v1::CreateResponse());
  };
  auto seal = [&](const std::string& session, const std::string& key,
                  const std::string& cuda_event = "") {
    v1::SealRequest r;
    r.set_session_id(session);
    r.set_key(key);
    r.set_cuda_event(cuda_event);
    return call(&v1::Tensord::Stub::Seal, r, v1::SealResponse());
  };
  // Returns the whole-call status, or the first result's code if the call succeeded.
  auto get = [&](std::vector<std::string> keys, v1::Tier want = v1::TIER_ANY,
                 v1::GetResponse* out = nullptr) {
    v1::GetRequest r;
    r.set_session_id(s.id);
    for (auto& k : keys) r.add_keys(k);
    r.set_want(want);
    grpc::ClientContext ctx;
    v1::GetResponse resp;
    grpc::Status st = stub.Get(&ctx, r, &resp);
    if (out != nullptr) *out = resp;
    if (!st.ok()) return st;
    return grpc::Status(static_cast<StatusCode>(resp.results(0).code()), resp.results(0).message());
  };
  // Returns the whole-call status, or the first result's code if the call succeeded.
  auto prefetch = [&](std::vector<std::string> keys, v1::Tier tier = v1::TIER_HOST,
                      v1::PrefetchResponse* out = nullptr) {
    v1::PrefetchRequest r;
    for (auto& k : keys) r.add_keys(k);
    r.set_tier(tier);
    grpc::ClientContext ctx;
    v1::PrefetchResponse resp;
    grpc::Status st = stub.Prefetch(&ctx, r, &resp);
    if (out != nullptr) *out = resp;
    if (!st.ok()) return st;
    return grpc::Status(static_cast<StatusCode>(resp.results(0).code()), resp.results(0).message());
  };
  auto del = [&](const std::string& session, const std::string& key) {
    v1::DeleteRequest r;
    r.set_session_id(session);
    r.set_key(key);
    return call(&v1::Tensord::Stub::Delete, r, v1::DeleteResponse());
  };
  // Returns the status an Attach with `name` ends with (OK if it was welcomed).
  auto attach = [&](const std::string& name) {
    grpc::ClientContext ctx;
    v1::AttachRequest r;
    r.set_client_name(name);
    auto stream = stub.Attach(&ctx, r);
    v1::AttachEvent ev;
    if (stream->Read(&ev)) {
      ctx.TryCancel();
      stream->Finish().IgnoreError();
      return grpc::Status::OK;
    }
    return stream->Finish();
  };
  auto release = [&](const std::string& session, std::vector<uint64_t> ids) {
    v1::ReleaseRequest r;
    r.set_session_id(session);
    for (auto id : ids) r.add_lease_ids(id);
    return call(&v1::Tensord::Stub::Release, r, v1::ReleaseResponse());
  };

  ASSERT_TRUE(create(GoodCreate(s.id, "sealed")).ok());
  ASSERT_TRUE(seal(s.id, "sealed").ok());
  ASSERT_TRUE(create(GoodCreate(s.id, "open")).ok());
  v1::GetResponse granted;
  ASSERT_TRUE(get({"sealed"}, v1::TIER_ANY, &granted).ok());
  const uint64_t lease = granted.results(0).lease_id();

  struct Row {
    const char* what;
    std::function<grpc::Status()> send;
    StatusCode want;
  };
  auto modified = [&](std::function<void(v1::CreateRequest&)> edit) {
    return [&, edit] {
      v1::CreateRequest r = GoodCreate(s.id, "fresh");
      edit(r);
      return create(r);
    };
  };
  const std::vector<Row> rows = {
      {"empty key", modified([](auto& r) { r.set_key(""); }), StatusCode::INVALID_ARGUMENT},
      {"key over 1 KiB", modified([](auto& r) { r.set_key(std::string(1025, 'k')); }),
       StatusCode::INVALID_ARGUMENT},
      {"key with NUL", modified([](auto& r) { r.set_key(std::string("a\0b", 3)); }),
       StatusCode::INVALID_ARGUMENT},
      {"key not UTF-8", modified([](auto& r) { r.set_key("\xFF\xFE"); }),
       StatusCode::INVALID_ARGUMENT},
      // Not strict UTF-8 (RFC 3629), each of which a strict proto3 parser refuses in a string.
      {"key with an overlong 3-byte form", modified([](auto& r) { r.set_key("k\xE0\x80\x80"); }),
       StatusCode::INVALID_ARGUMENT},
      {"key with an overlong 4-byte form",
       modified([](auto& r) { r.set_key("k\xF0\x80\x80\x80"); }), StatusCode::INVALID_ARGUMENT},
      {"key with a UTF-16 surrogate", modified([](auto& r) { r.set_key("k\xED\xA0\x80"); }),
       StatusCode::INVALID_ARGUMENT},
      {"key above U+10FFFF", modified([](auto& r) { r.set_key("k\xF4\x90\x80\x80"); }),
       StatusCode::INVALID_ARGUMENT},
      {"key with lead byte F5", modified([](auto& r) { r.set_key("k\xF5\x80\x80\x80"); }),
       StatusCode::INVALID_ARGUMENT},
      {"key with a C1 control (U+0085)", modified([](auto& r) { r.set_key("k\xC2\x85"); }),
       StatusCode::INVALID_ARGUMENT},
      {"pool name not UTF-8", modified([](auto& r) { r.set_pool("p\xED\xA0\x80"); }),
       StatusCode::INVALID_ARGUMENT},
      {"bad namespace", modified([](auto& r) { r.set_ns("../etc"); }),
       StatusCode::INVALID_ARGUMENT},
      {"dtype unspecified", modified([](auto& r) { r.set_dtype(v1::DTYPE_UNSPECIFIED); }),
       StatusCode::INVALID_ARGUMENT},
      {"dtype unknown", modified([](auto& r) { r.set_dtype(static_cast<v1::DType>(99)); }),
       StatusCode::INVALID_ARGUMENT},
      {"negative dimension", modified([](auto& r) { r.set_shape(0, -4); }),
       StatusCode::INVALID_ARGUMENT},
      {"zero-size tensor", modified([](auto& r) { r.set_shape(0, 0); }),
       StatusCode::INVALID_ARGUMENT},
      {"shape x dtype overflow", modified([](auto& r) {
         r.set_shape(0, int64_t{1} << 62);
         r.set_shape(1, 1 << 10);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"nine dimensions", modified([](auto& r) {
         for (int i = 0; i < 7; ++i) r.add_shape(1);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"nbytes mismatch", modified([](auto& r) { r.set_nbytes(65); }),
       StatusCode::INVALID_ARGUMENT},
      {"unknown pool", modified([](auto& r) { r.set_pool("kv_cache"); }),
       StatusCode::INVALID_ARGUMENT},
      {"larger than the tier", modified([](auto& r) { r.set_shape(0, int64_t{1} << 30); }),
       StatusCode::INVALID_ARGUMENT},
      {"unknown durability",
       modified([](auto& r) { r.set_durability(static_cast<v1::Durability>(9)); }),
       StatusCode::INVALID_ARGUMENT},
      {"unknown scope", modified([](auto& r) { r.set_scope(static_cast<v1::Scope>(9)); }),
       StatusCode::INVALID_ARGUMENT},
      {"unknown compression",
       modified([](auto& r) { r.set_compression(static_cast<v1::Compression>(7)); }),
       StatusCode::INVALID_ARGUMENT},
      {"lossy without an error budget",
       modified([](auto& r) { r.set_compression(v1::COMPRESSION_LOSSY); }),
       StatusCode::INVALID_ARGUMENT},
      {"lossy with a budget of 1 or more",
       modified([](auto& r) {
         r.set_compression(v1::COMPRESSION_LOSSY);
         r.set_error_budget(1.0);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"lossy with a NaN budget",
       modified([](auto& r) {
         r.set_compression(v1::COMPRESSION_LOSSY);
         r.set_error_budget(std::nan(""));
       }),
       StatusCode::INVALID_ARGUMENT},
      {"an error budget without lossy compression",
       modified([](auto& r) {
         r.set_compression(v1::COMPRESSION_LOSSLESS);
         r.set_error_budget(0.01);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"an unknown codec",
       modified([](auto& r) {
         r.set_compression(v1::COMPRESSION_LOSSY);
         r.set_error_budget(0.01);
         r.add_codecs("gzip");
       }),
       StatusCode::INVALID_ARGUMENT},
      {"codecs without lossy compression",
       modified([](auto& r) { r.add_codecs("int8"); }),
       StatusCode::INVALID_ARGUMENT},
      {"parent with a control character",
       modified([](auto& r) { r.set_parent(std::string("blk\x01", 4)); }),
       StatusCode::INVALID_ARGUMENT},
      {"parent over 1 KiB", modified([](auto& r) { r.set_parent(std::string(1025, 'p')); }),
       StatusCode::INVALID_ARGUMENT},
      {"parent is the key itself", modified([](auto& r) { r.set_parent(r.key()); }),
       StatusCode::INVALID_ARGUMENT},
      {"create on an unknown tier",
       modified([](auto& r) { r.set_tier(static_cast<v1::Tier>(77)); }),
       StatusCode::INVALID_ARGUMENT},
      {"create on the SSD tier", modified([](auto& r) { r.set_tier(v1::TIER_SSD); }),
       StatusCode::INVALID_ARGUMENT},
      {"create on the absent GPU tier", modified([](auto& r) { r.set_tier(v1::TIER_GPU); }),
       StatusCode::FAILED_PRECONDITION},
      {"create on a negative device", modified([](auto& r) {
         r.set_tier(v1::TIER_GPU);
         r.set_device(-3);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"create on device 1000", modified([](auto& r) {
         r.set_tier(v1::TIER_GPU);
         r.set_device(1000);
       }),
       StatusCode::INVALID_ARGUMENT},
      {"create with a device on the host tier", modified([](auto& r) { r.set_device(0); }),
       StatusCode::INVALID_ARGUMENT},
      {"seal of a host tensor with a CUDA event",
       [&] { return seal(s.id, "open", std::string(64, 'e')); }, StatusCode::INVALID_ARGUMENT},
      // With a CUDA event, the same codes as without one, in the same order.
      {"seal of another session's create with a CUDA event",
       [&] { return seal(other.id, "open", std::string(64, 'e')); }, StatusCode::PERMISSION_DENIED},
      {"seal of a sealed tensor with a CUDA event",
       [&] { return seal(s.id, "sealed", std::string(64, 'e')); }, StatusCode::FAILED_PRECONDITION},
      {"seal with a malformed CUDA event", [&] { return seal(s.id, "open", "xyz"); },
       StatusCode::INVALID_ARGUMENT},
      {"get on a GPU device of a daemon without GPUs",
       [&] {
         v1::GetRequest r;
         r.set_session_id(s.id);
         r.add_keys("sealed");
         r.set_want(v1::TIER_GPU);
         r.set_device(3);
         return call(&v1::Tensord::Stub::Get, r, v1::GetResponse());
       },
       StatusCode::FAILED_PRECONDITION},
      {"no session", modified([](auto& r) { r.set_session_id(""); }),
       StatusCode::FAILED_PRECONDITION},
      {"forged session", modified([](auto& r) { r.set_session_id(std::string(32, 'a')); }),
       StatusCode::FAILED_PRECONDITION},
      {"duplicate key", [&] { return create(GoodCreate(s.id, "sealed")); },
       StatusCode::ALREADY_EXISTS},
      {"double seal", [&] { return seal(s.id, "sealed"); }, StatusCode::FAILED_PRECONDITION},
      {"seal of a missing key", [&] { return seal(s.id, "missing"); }, StatusCode::NOT_FOUND},
      {"seal of another session's create", [&] { return seal(other.id, "open"); },
       StatusCode::PERMISSION_DENIED},
      {"abort of a sealed tensor",
       [&] {
         v1::AbortRequest r;
         r.set_session_id(s.id);
         r.set_key("sealed");
         return call(&v1::Tensord::Stub::Abort, r, v1::AbortResponse());
       },
       StatusCode::FAILED_PRECONDITION},
      {"get of an unsealed tensor", [&] { return get({"open"}); }, StatusCode::FAILED_PRECONDITION},
      {"get of a missing key", [&] { return get({"missing"}); }, StatusCode::NOT_FOUND},
      {"get of no keys", [&] { return get({}); }, StatusCode::INVALID_ARGUMENT},
      {"get of 5000 keys", [&] { return get(std::vector<std::string>(5000, "sealed")); },
       StatusCode::INVALID_ARGUMENT},
      {"get on the absent GPU tier", [&] { return get({"sealed"}, v1::TIER_GPU); },
       StatusCode::FAILED_PRECONDITION},
      {"get on the SSD tier", [&] { return get({"sealed"}, v1::TIER_SSD); },
       StatusCode::INVALID_ARGUMENT},
      {"get on an unknown tier", [&] { return get({"sealed"}, static_cast<v1::Tier>(77)); },
       StatusCode::INVALID_ARGUMENT},
      {"prefetch of a missing key", [&] { return prefetch({"missing"}); }, StatusCode::NOT_FOUND},
      {"prefetch of an unsealed tensor", [&] { return prefetch({"open"}); },
       StatusCode::FAILED_PRECONDITION},
      {"prefetch of a key that is not UTF-8", [&] { return prefetch({"k\xED\xA0\x80"}); },
       StatusCode::INVALID_ARGUMENT},
      {"prefetch of no keys", [&] { return prefetch({}); }, StatusCode::INVALID_ARGUMENT},
      {"prefetch of 5000 keys", [&] { return prefetch(std::vector<std::string>(5000, "sealed")); },
       StatusCode::INVALID_ARGUMENT},
      {"prefetch to the SSD tier", [&] { return prefetch({"sealed"}, v1::TIER_SSD); },
       StatusCode::INVALID_ARGUMENT},
      {"prefetch to the absent GPU tier", [&] { return prefetch({"sealed"}, v1::TIER_GPU); },
       StatusCode::FAILED_PRECONDITION},
      {"prefetch in a bad namespace",
       [&] {
         v1::PrefetchRequest r;
         r.set_ns("../etc");
         r.add_keys("sealed");
         return call(&v1::Tensord::Stub::Prefetch, r, v1::PrefetchResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"hint for the SSD tier",
       [&] {
         v1::HintRequest r;
         r.add_keys("sealed");
         r.set_tier(v1::TIER_SSD);
         return call(&v1::Tensord::Stub::Hint, r, v1::HintResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"hint for the absent GPU tier",
       [&] {
         v1::HintRequest r;
         r.add_keys("sealed");
         r.set_tier(v1::TIER_GPU);
         return call(&v1::Tensord::Stub::Hint, r, v1::HintResponse());
       },
       StatusCode::FAILED_PRECONDITION},
      {"hint lasting over an hour",
       [&] {
         v1::HintRequest r;
         r.add_keys("sealed");
         r.set_ttl_ms(3'600'001);
         return call(&v1::Tensord::Stub::Hint, r, v1::HintResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"hint of 65,537 keys",
       [&] {
         v1::HintRequest r;
         for (int i = 0; i < 65'537; ++i) r.add_keys("k");
         return call(&v1::Tensord::Stub::Hint, r, v1::HintResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"hint with a control character in a key",
       [&] {
         v1::HintRequest r;
         r.add_keys("sealed");
         r.add_keys(std::string("bad\x01key"));
         return call(&v1::Tensord::Stub::Hint, r, v1::HintResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"release of another session's lease", [&] { return release(other.id, {lease}); },
       StatusCode::NOT_FOUND},
      {"release of an unknown lease", [&] { return release(s.id, {lease + 1000}); },
       StatusCode::NOT_FOUND},
      {"release of a lease listed twice",
       [&] {
         return release(s.id, {lease, lease});
       },
       StatusCode::INVALID_ARGUMENT},
      {"release of nothing", [&] { return release(s.id, {}); }, StatusCode::INVALID_ARGUMENT},
      {"delete of an unsealed tensor", [&] { return del(s.id, "open"); },
       StatusCode::FAILED_PRECONDITION},
      {"delete of a missing key", [&] { return del(s.id, "missing"); }, StatusCode::NOT_FOUND},
      {"delete without a session", [&] { return del("", "sealed"); },
       StatusCode::FAILED_PRECONDITION},
      {"delete with a forged session", [&] { return del(std::string(32, 'a'), "sealed"); },
       StatusCode::FAILED_PRECONDITION},
      {"delete of a key that is not UTF-8", [&] { return del(s.id, "k\xED\xA0\x80"); },
       StatusCode::INVALID_ARGUMENT},
      {"get of a missing key that is not UTF-8", [&] { return get({"k\xF4\x90\x80\x80"}); },
       StatusCode::INVALID_ARGUMENT},
      {"stat of a key that is not UTF-8",
       [&] {
         v1::StatRequest r;
         r.set_key("k\xE0\x80\x80");
         return call(&v1::Tensord::Stub::Stat, r, v1::TensorMeta());
       },
       StatusCode::INVALID_ARGUMENT},
      {"attach with a 4000-byte client name", [&] { return attach(std::string(4000, 'n')); },
       StatusCode::INVALID_ARGUMENT},
      {"attach with a client name that is not UTF-8", [&] { return attach("n\xC0\xAF"); },
       StatusCode::INVALID_ARGUMENT},
      {"a request larger than any valid one (5 MiB key)",
       modified([](auto& r) { r.set_key(std::string(5 << 20, 'k')); }),
       StatusCode::RESOURCE_EXHAUSTED},
      {"list with too large a limit",
       [&] {
         v1::ListRequest r;
         r.set_limit(20000);
         return call(&v1::Tensord::Stub::List, r, v1::ListResponse());
       },
       StatusCode::INVALID_ARGUMENT},
      {"stat with a bad key",
       [&] {
         v1::StatRequest r;
         r.set_key(std::string(2000, 'x'));
         return call(&v1::Tensord::Stub::Stat, r, v1::TensorMeta());
       },
       StatusCode::INVALID_ARGUMENT},
  };
  for (const Row& row : rows) {
    grpc::Status st = row.send();
    EXPECT_EQ(st.error_code(), row.want) << row.what << ": got '" << st.error_message() << "'";
    if (!st.ok()) {
      EXPECT_FALSE(st.error_message().empty()) << row.what << ": no message";
      // A message never echoes client bytes that are not text (strict clients decode it).
      EXPECT_TRUE(google::protobuf::internal::IsStructurallyValidUTF8(
          st.error_message().data(), static_cast<int>(st.error_message().size())))
          << row.what << ": message is not UTF-8";
    }
  }

  // The lease other.id tried to release is still ours and still works.
  EXPECT_TRUE(release(s.id, {lease}).ok());
  // The Deletes without a valid session deleted nothing.
  EXPECT_TRUE(get({"sealed"}).ok()) << "a Delete without a session removed the tensor";
  EXPECT_TRUE(attach(std::string(128, 'n')).ok()) << "128 bytes is a valid client name";
  // A batch with a good and a bad key: the good one is leased, the bad one refused, and the whole
  // response parses (a key that is not UTF-8 never reaches a string field or a message).
  v1::GetResponse mixed;
  ASSERT_TRUE(get({"sealed", "k\xED\xA0\x80"}, v1::TIER_ANY, &mixed).ok());
  ASSERT_EQ(mixed.results_size(), 2);
  EXPECT_EQ(mixed.results(1).code(), static_cast<int>(StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(release(s.id, {mixed.results(0).lease_id()}).ok());
  // A Prefetch of a host-resident key succeeds without moving it or taking a lease.
  v1::PrefetchResponse there;
  ASSERT_TRUE(prefetch({"sealed", "missing"}, v1::TIER_ANY, &there).ok());
  ASSERT_EQ(there.results_size(), 2);
  EXPECT_EQ(there.results(0).code(), 0);
  EXPECT_FALSE(there.results(0).moved());
  EXPECT_EQ(there.results(1).code(), static_cast<int>(StatusCode::NOT_FOUND));
  // Nothing the bad requests sent poisons List of the namespace.
  EXPECT_TRUE(call(&v1::Tensord::Stub::List, v1::ListRequest(), v1::ListResponse()).ok());
  // The daemon still serves, and nothing happened to the victim.
  EXPECT_TRUE(create(GoodCreate(s.id, "after")).ok());
  EXPECT_TRUE((*victim_client)->Ping().ok());
  EXPECT_EQ(XXH3_64bits(victim_lease->data(), victim_lease->nbytes()), victim_hash);
  EXPECT_TRUE(IsServing(d.socket()));
}

TEST(BadRequests, TheLargestValidRequestIsAccepted) {
  Daemon d({"--host-capacity", "64MiB", "--set", "gpu.mode=off"});
  ASSERT_TRUE(d.ok());
  // Its answer (4096 NOT_FOUND messages quoting the keys) exceeds gRPC's default 4 MiB.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto stub = v1::Tensord::NewStub(
      grpc::CreateCustomChannel("unix:" + d.socket(), grpc::InsecureChannelCredentials(), args));
  RawSession s(*stub);
  v1::GetRequest r;
  r.set_session_id(s.id);
  r.set_ns(std::string(128, 'n'));
  for (int i = 0; i < 4096; ++i) {
    std::string key(1024, 'k');
    std::snprintf(key.data(), 8, "%06d", i);
    key[6] = 'k';
    r.add_keys(key);
  }
  grpc::ClientContext ctx;
  v1::GetResponse resp;
  grpc::Status st = stub->Get(&ctx, r, &resp);
  ASSERT_TRUE(st.ok()) << r.ByteSizeLong() << " bytes: " << st.error_message();
  ASSERT_EQ(resp.results_size(), 4096);
  EXPECT_EQ(resp.results(4095).code(), static_cast<int>(StatusCode::NOT_FOUND));
}

TEST(BadRequests, ClientLibraryForbidsWriteAfterSeal) {
  Daemon d({"--host-capacity", "64MiB"});
  ASSERT_TRUE(d.ok());
  ClientOptions opts;
  opts.socket_path = d.socket();
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok());
  auto t = (*c)->Create("t", DType::kFloat32, {16});
  ASSERT_TRUE(t.ok());
  ASSERT_NE(t->data(), nullptr);
  ASSERT_TRUE(t->Seal().ok());
  EXPECT_EQ(t->data(), nullptr) << "no writable view after Seal";
  EXPECT_EQ(t->Seal().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(t->Abort().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(BadRequests, ConnectingToNoDaemonFailsClearlyAndQuickly) {
  ClientOptions opts;
  opts.socket_path = MakeTempDir() + "/none.sock";
  opts.deadline = std::chrono::milliseconds(300);
  auto c = Client::Connect(opts);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tensord::testing
