// The daemon as a systemd service: the notify protocol's order (STATUS lines, READY=1 only once
// the socket serves, WATCHDOG=1 pings, STOPPING=1 on SIGTERM), draining (new work refused while
// a lease is held, exit 0 once it ends), per-tier health, and `systemd-analyze verify` of the
// unit file.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
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
  // (Not about restarts: nothing is kept for a next instance, no shared memory left behind.)
  Process daemon({DaemonBinary(), "--run-dir", dir, "--log-level", "warn", "--no-prefault",
                  "--drain-timeout-ms", "8000", "--set", "daemon.persist=false"});
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

TEST(Service, SighupReloadsTheConfigurationAndKeepsServing) {
  const std::string dir = MakeTempDir();
  std::ofstream(dir + "/tensord.toml") << "[daemon]\nlog_level = \"info\"\n";
  Daemon d({"--config", dir + "/tensord.toml"});
  ASSERT_TRUE(d.ok());
  kill(d.pid(), SIGHUP);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_TRUE(IsServing(d.socket())) << "SIGHUP must not stop the daemon";
  std::ofstream(dir + "/tensord.toml") << "[daemon]\nlog_level = \"loud\"\n";  // invalid
  kill(d.pid(), SIGHUP);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_TRUE(IsServing(d.socket())) << "a bad file is refused, the daemon keeps going";
  EXPECT_EQ(d.Stop(), 0);
}

TEST(Service, SighupAppliesAReloadableSetting) {
  // drain_timeout_ms is reloadable: 60 s at start, 0 after SIGHUP, so that SIGTERM with a lease
  // held stops at once instead of waiting a minute.
  const std::string dir = MakeTempDir();
  const std::string file = dir + "/tensord.toml";
  std::ofstream(file) << "[daemon]\ndrain_timeout_ms = 60000\n";
  Process daemon({DaemonBinary(), "--run-dir", dir, "--no-prefault", "--config", file,
                  "--log-level", "warn", "--set", "daemon.persist=false"});
  const std::string socket = dir + "/tensord.sock";
  for (int i = 0; i < 200 && !IsServing(socket); ++i) std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(IsServing(socket));
  ClientOptions opts;
  opts.socket_path = socket;
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok());
  {
    auto t = (*c)->Create("held", DType::kUInt8, {64});
    ASSERT_TRUE(t.ok() && t->Seal().ok());
  }
  auto lease = (*c)->Get("held");
  ASSERT_TRUE(lease.ok());
  std::ofstream(file) << "[daemon]\ndrain_timeout_ms = 0\n";
  daemon.Kill(SIGHUP);
  std::this_thread::sleep_for(milliseconds(1000));  // the reload, even on a loaded machine
  daemon.Kill(SIGTERM);
  EXPECT_EQ(daemon.WaitFor(milliseconds(5000)), 0) << "the reloaded drain timeout applies";
}

TEST(Service, InvalidSettingsStopTheStartNamingTheKey) {
  const std::string dir = MakeTempDir();
  std::ofstream(dir + "/bad.toml") << "[ssd]\nqueue_depth = 0\n";
  for (const auto& [args, key] : std::vector<std::pair<std::string, std::string>>{
           {"--host-capacity lots", "host.capacity"},
           {"--set ssd.high_watermark=2", "ssd.high_watermark"},
           {"--set no.such=1", "no.such"},
           {"--config " + dir + "/bad.toml", "ssd.queue_depth"}}) {
    const CommandResult r =
        RunCommand(DaemonBinary() + " --run-dir " + dir + "/run --no-prefault " + args);
    EXPECT_EQ(r.rc, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find(key), std::string::npos) << args << ": " << r.out;
  }
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

// A free TCP port on 127.0.0.1 (bound and released; racy only against other programs).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// GET http://127.0.0.1:port/metrics; returns the samples as "name{labels}" -> value.
std::map<std::string, double> Scrape(int port) {
  std::map<std::string, double> samples;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return samples;
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) return samples;
  std::string response;
  char buf[8192];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
    response.append(buf, static_cast<size_t>(n));
  close(fd);
  std::istringstream lines(response.substr(response.find("\r\n\r\n") + 4));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

TEST(Service, PrometheusEndpointServesTheStats) {
  const int port = FreePort();
  Daemon d({"--metrics-port", std::to_string(port), "--host-capacity", "64MiB"});
  ASSERT_TRUE(d.ok());
  ClientOptions opts;
  opts.socket_path = d.socket();
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok()) << c.status();
  {
    auto t = (*c)->Create("m", DType::kFloat32, {1024});
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->Seal().ok());
  }
  auto lease = (*c)->Get("m");
  ASSERT_TRUE(lease.ok());
  auto m = Scrape(port);
  ASSERT_FALSE(m.empty()) << "nothing on 127.0.0.1:" << port << "/metrics";
  EXPECT_EQ(m["tensord_objects"], 1);
  EXPECT_EQ(m["tensord_leases"], 1);
  EXPECT_EQ(m["tensord_sessions"], 1);
  EXPECT_EQ(m["tensord_creates_total"], 1);
  EXPECT_EQ(m["tensord_tier_capacity_bytes{tier=\"host\"}"], 64 << 20);
  EXPECT_GE(m["tensord_tier_used_bytes{tier=\"host\"}"], 4096);
  EXPECT_LE(m["tensord_tier_used_bytes{tier=\"host\"}"],
            m["tensord_tier_capacity_bytes{tier=\"host\"}"]);
  EXPECT_EQ(m["tensord_tier_present{tier=\"ssd\"}"], 0);
  EXPECT_GT(m["tensord_uptime_seconds"], 0);
  // No SSD tier here: system pressure is read all the same, over Prometheus, GetStats and
  // tensorctl (it once read 0 B, a machine apparently out of memory).
  EXPECT_GT(m["tensord_system_memory_available_bytes"], 0);
  auto stats = (*c)->GetStats();
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(stats->pressure.mem_available_bytes.has_value());
  EXPECT_GT(*stats->pressure.mem_available_bytes, 0u);
  const bool psi = std::ifstream("/proc/pressure/memory").good();
  EXPECT_EQ(stats->pressure.psi_some_avg10.has_value(), psi) << "PSI readable here: " << psi;
  EXPECT_EQ(m.contains("tensord_system_memory_pressure_some_ratio"), psi);
  const CommandResult ctl =
      RunCommand(std::string(TENSORCTL_BIN) + " --socket " + d.socket() + " stats");
  EXPECT_EQ(ctl.rc, 0) << ctl.out;
  EXPECT_EQ(ctl.out.find("MemAvailable 0 B"), std::string::npos) << ctl.out;
  EXPECT_EQ(ctl.out.find("MemAvailable not available"), std::string::npos) << ctl.out;
  { auto gone = std::move(*lease); }
  EXPECT_EQ(Scrape(port)["tensord_leases"], 0) << "the metrics follow the store";
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
  const CommandResult r = RunCommand("systemd-analyze verify --man=no " + dir + "/tensord.service");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("Unknown key"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Unknown section"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tensord::testing
