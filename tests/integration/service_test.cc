// The daemon as a systemd service: the notify protocol's order (STATUS lines, READY=1 only once
// the socket serves, WATCHDOG=1 pings, STOPPING=1 on SIGTERM), draining (new work refused while
// a lease is held, exit 0 once it ends), per-tier health, and `systemd-analyze verify` of the
// unit file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_replace.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

using std::chrono::milliseconds;

// The datagram socket systemd listens on for sd_notify messages.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ADD_FAILURE() << "cannot bind " << path;
    }
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  // Returns the next message, or "" after `timeout`.
  std::string Recv(milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  // Waits up to `timeout` for a message containing `what`; returns it, or "".
  std::string Await(const std::string& what, milliseconds timeout) {
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < give_up) {
      std::string m = Recv(milliseconds(100));
      if (m.find(what) != std::string::npos) return m;
    }
    return "";
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// grpc.health.v1 status of `service` on `socket`.
grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& socket,
                                                            const std::string& service) {
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status st = stub->Check(&ctx, request, &response);
  return st.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN;
}

TEST(Service, NotifyOrderWatchdogAndDrain) {
  const std::string dir = MakeTempDir();
  NotifySocket notify(dir + "/notify.sock");
  setenv("NOTIFY_SOCKET", (dir + "/notify.sock").c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);
  Process daemon({DaemonBinary(), "--run-dir", dir, "--log-level", "warn", "--no-prefault",
                  "--drain-timeout-ms", "8000"});
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  const std::string socket = dir + "/tensord.sock";

  std::vector<std::string> before_ready;
  std::string ready;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ready.empty() && std::chrono::steady_clock::now() < give_up) {
    std::string m = notify.Recv(milliseconds(200));
    if (m.find("READY=1") != std::string::npos) {
      ready = m;
      EXPECT_TRUE(IsServing(socket)) << "READY=1 before the socket serves";
    } else if (!m.empty()) {
      before_ready.push_back(m);
    }
  }
  ASSERT_FALSE(ready.empty()) << "no READY=1";
  EXPECT_NE(ready.find("STATUS=serving"), std::string::npos) << ready;
  ASSERT_FALSE(before_ready.empty());
  EXPECT_NE(before_ready[0].find("STATUS=mapping"), std::string::npos) << before_ready[0];

  int pings = 0;
  for (auto end = std::chrono::steady_clock::now() + milliseconds(1000);
       std::chrono::steady_clock::now() < end;) {
    if (notify.Recv(milliseconds(100)) == "WATCHDOG=1") ++pings;
  }
  EXPECT_GE(pings, 4) << "WATCHDOG=1 at half of WATCHDOG_USEC=200ms";

  ClientOptions opts;
  opts.socket_path = socket;
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok()) << c.status();
  {
    auto t = (*c)->Create("held", DType::kUInt8, {4096});
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->Seal().ok());
  }
  auto lease = (*c)->Get("held");
  ASSERT_TRUE(lease.ok());

  daemon.Kill(SIGTERM);
  EXPECT_NE(notify.Await("STOPPING=1", milliseconds(3000)), "");
  EXPECT_NE(notify.Await("STATUS=draining: 1 leases held", milliseconds(3000)), "");
  EXPECT_EQ((*c)->Get("held").status().code(), absl::StatusCode::kUnavailable)
      << "new work is refused while draining";
  EXPECT_EQ(Health(socket, ""), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(daemon.WaitFor(milliseconds(300)), -1) << "it waits for the lease";
  EXPECT_EQ(lease->data_as<uint8_t>()[0], 0) << "a held lease stays valid while draining";
  { auto gone = std::move(*lease); }  // releases it
  EXPECT_EQ(daemon.WaitFor(milliseconds(5000)), 0) << "exits cleanly once the lease ends";
}

TEST(Service, HealthHasAnEntryPerTier) {
  const std::string dir = MakeTempDir();
  Daemon with_swap({"--swap-file", dir + "/swap", "--swap-size", "64MiB"});
  ASSERT_TRUE(with_swap.ok());
  using H = grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(Health(with_swap.socket(), ""), H::SERVING);
  EXPECT_EQ(Health(with_swap.socket(), "tensord.v1.Tensord"), H::SERVING);
  EXPECT_EQ(Health(with_swap.socket(), "tensord.host"), H::SERVING);
  EXPECT_EQ(Health(with_swap.socket(), "tensord.ssd"), H::SERVING);
  EXPECT_EQ(Health(with_swap.socket(), "tensord.gpu"), H::NOT_SERVING) << "no GPU tier";
  Daemon without;
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(Health(without.socket(), "tensord.ssd"), H::NOT_SERVING) << "no swap file";
}

TEST(Service, UnitFilePassesSystemdAnalyzeVerify) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "systemd-analyze is not installed";
  }
  std::ifstream in(TENSORD_UNIT);
  ASSERT_TRUE(in) << TENSORD_UNIT;
  std::stringstream text;
  text << in.rdbuf();
  // The unit names the installed binary; point it at the one under test so that verify can
  // check the executable.
  std::string unit = text.str();
  const size_t exec = unit.find("ExecStart=");
  ASSERT_NE(exec, std::string::npos);
  const size_t space = unit.find(' ', exec);
  unit.replace(exec, space - exec, "ExecStart=" + DaemonBinary());
  const std::string dir = MakeTempDir();
  std::ofstream(dir + "/tensord.service") << unit;
  const std::string cmd = "systemd-analyze verify --man=no " + dir + "/tensord.service 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[1024];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("Unknown key"), std::string::npos) << out;
  EXPECT_EQ(out.find("Unknown section"), std::string::npos) << out;
}

}  // namespace
}  // namespace tensord::testing
