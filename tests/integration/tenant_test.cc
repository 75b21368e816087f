// Tenants over the raw protocol, from real processes of real users (created here): a client
// written from the proto alone gets PERMISSION_DENIED for every call on another tenant's
// namespace, a peer in no tenant cannot attach, and the owner's tensor is intact afterwards.
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

// A user for the test's lifetime (useradd; userdel at the end).
class TestUser {
 public:
  explicit TestUser(std::string name) : name_(std::move(name)) {
    RunCommand("userdel " + name_ + " 2>/dev/null; groupdel " + name_ + " 2>/dev/null");
    const CommandResult r =
        RunCommand("useradd --no-create-home --user-group --shell /bin/false " + name_);
    ok_ = r.rc == 0;
    if (passwd* pw = getpwnam(name_.c_str()); ok_ && pw != nullptr) {
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
    }
  }
  ~TestUser() {
    RunCommand("userdel " + name_ + " 2>/dev/null; groupdel " + name_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool ok_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// Runs `it_client raw SOCKET NS` as `user`; returns call -> code name (and "segments" and
// "tenants" -> counts).
std::map<std::string, std::string> RawAs(const TestUser& user, const std::string& socket,
                                         const std::string& ns) {
  Process p({"/usr/sbin/runuser", "-u", user.name(), "--", ClientBinary(), "raw", socket, ns},
            /*capture_stdout=*/true);
  std::map<std::string, std::string> out;
  for (std::string line = p.ReadLine(); !line.empty(); line = p.ReadLine()) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() == 2) out[f[0]] = f[1];
  }
  EXPECT_EQ(p.Wait(), 0);
  return out;
}

TEST(Tenants, RawProtocolGetsPermissionDeniedAcrossTenants) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: creates users and runs clients as them";
  TestUser alice("tdrawa"), bob("tdrawb"), eve("tdrawe");
  ASSERT_TRUE(alice.ok() && bob.ok() && eve.ok()) << "useradd failed";
  const std::string dir = MakeTempDir();
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);  // the users reach the socket in it
  const std::string config = dir + "/tensord.toml";
  std::ofstream(config) << absl::StrCat(
      "[daemon]\nsocket_mode = \"0666\"\n[host]\ncapacity = \"96MiB\"\nprefault = false\n",
      "[[tenant]]\nname = \"alice\"\nuids = [", alice.uid(), "]\ngids = [", alice.gid(),
      "]\nnamespaces = [\"alice\"]\nhost_bytes = \"32MiB\"\n",
      "[[tenant]]\nname = \"bob\"\nuids = [", bob.uid(), "]\ngids = [", bob.gid(),
      "]\nnamespaces = [\"bob\"]\nhost_bytes = \"32MiB\"\n");
  Daemon d({"--config", config, "--set", "daemon.persist=false"}, dir + "/run");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(chmod((dir + "/run").c_str(), 0755), 0);

  // The operator (this root process) puts alice's secret.
  ClientOptions opts;
  opts.socket_path = d.socket();
  opts.ns = "alice";
  auto root = Client::Connect(opts);
  ASSERT_TRUE(root.ok()) << root.status();
  {
    auto w = (*root)->Create("secret", DType::kUInt8, {4096});
    ASSERT_TRUE(w.ok()) << w.status();
    std::memset(w->data(), 0x5a, 4096);
    ASSERT_TRUE(w->Seal().ok());
  }

  auto b = RawAs(bob, d.socket(), "alice");
  EXPECT_EQ(b["Attach"], "OK");
  EXPECT_EQ(b["segments"], "1") << "bob is offered his own segment only";
  for (const char* call :
       {"Create", "Get", "Stat", "List", "Delete", "Evict", "Hint", "Prefetch"}) {
    EXPECT_EQ(b[call], "PERMISSION_DENIED") << call;
  }
  EXPECT_EQ(b["GetStats"], "OK");
  EXPECT_EQ(b["tenants"], "1") << "his own entry only";

  auto own = RawAs(bob, d.socket(), "bob");
  EXPECT_EQ(own["Create"], "OK");
  EXPECT_EQ(own["Stat"], "NOT_FOUND");

  auto e = RawAs(eve, d.socket(), "alice");
  for (const char* call : {"Attach", "Create", "Get", "Stat", "List", "GetStats"}) {
    EXPECT_EQ(e[call], "PERMISSION_DENIED") << call;
  }
  EXPECT_EQ(e["Ping"], "OK");

  {  // bob's and eve's calls changed nothing
    auto got = (*root)->Get("secret");
    ASSERT_TRUE(got.ok()) << got.status();
    const auto* p = static_cast<const uint8_t*>(got->data());
    EXPECT_TRUE(std::all_of(p, p + 4096, [](uint8_t v) { return v == 0x5a; }));
  }
  // The operator's tensorctl shows every tenant, with bob's refusals counted.
  const CommandResult ctl =
      RunCommand(std::string(TENSORCTL_BIN) + " --socket " + d.socket() + " stats");
  EXPECT_EQ(ctl.rc, 0) << ctl.out;
  EXPECT_NE(ctl.out.find("TENANT"), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("alice"), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("(shared)"), std::string::npos) << ctl.out;
  auto a = RawAs(alice, d.socket(), "alice");  // the owner may do it all (Delete last but one)
  for (const char* call : {"Attach", "Create", "Stat", "List", "Delete"}) {
    EXPECT_EQ(a[call], "OK") << call;
  }
}

}  // namespace
}  // namespace tensord::testing
