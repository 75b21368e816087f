// A real redis-server for tests: started on a free 127.0.0.1 port in its own directory, with no
// persistence, stopped (and reaped) by the destructor. Tests skip when Debian's redis-server is
// not installed.
#pragma once

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace tensord::testing {

inline bool HaveRedisServer() { return std::filesystem::exists("/usr/bin/redis-server"); }

// A port nobody listens on now.
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Whether nobody listens on 127.0.0.1:port now.
inline bool PortFree(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

// A port for a cluster node: free, and so is its cluster bus port (port + 10000, below 65536).
inline int FreeClusterPort() {
  for (int i = 0; i < 1000; ++i) {
    const int port = 20000 + static_cast<int>((getpid() * 7919 + i * 104729) % 30000);
    if (PortFree(port) && PortFree(port + 10000)) return port;
  }
  return 0;
}

class RedisServer {
 public:
  // `extra`: more redis-server options ("--requirepass", "x", ...). port 0: a free one.
  explicit RedisServer(std::vector<std::string> extra = {}, int port = 0)
      : port_(port != 0 ? port : FreePort()), extra_(std::move(extra)) {
    dir_ = std::filesystem::temp_directory_path() /
           ("tensord-redis-" + std::to_string(getpid()) + "-" + std::to_string(port_));
    std::filesystem::create_directories(dir_);
    Start();
  }
  ~RedisServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool ready() const { return ready_; }

  void Start() {
    std::vector<std::string> args = {"/usr/bin/redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_.string(),
                                     "--loglevel",
                                     "warning",
                                     "--logfile",
                                     (dir_ / "redis.log").string()};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
    ready_ = false;
    for (int i = 0; i < 500 && pid_ > 0 && !ready_; ++i) {
      timeval tv{0, 200000};
      redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
      if (c != nullptr && c->err == 0) ready_ = true;  // accepting connections
      if (c != nullptr) redisFree(c);
      if (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // Freezes the server (SIGSTOP): connections stay open, nothing answers (a hung or partitioned
  // Redis); Resume lets it go on with its data.
  void Pause() {
    if (pid_ > 0) kill(pid_, SIGSTOP);
  }
  void Resume() {
    if (pid_ > 0) kill(pid_, SIGCONT);
  }
  // Kills the server (SIGKILL: as a crash) and reaps it.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  const int port_;
  const std::vector<std::string> extra_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// Runs a shell command; returns its exit status and output.
inline std::pair<int, std::string> Shell(const std::string& command) {
  std::string out;
  FILE* f = popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  const int status = pclose(f);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A Redis Cluster of `masters` real servers on free local ports, slots spread by redis-cli.
class RedisCluster {
 public:
  explicit RedisCluster(int masters = 3) {
    std::string create = "redis-cli --cluster create";
    for (int i = 0; i < masters; ++i) {
      nodes_.push_back(std::make_unique<RedisServer>(
          std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-node-timeout", "2000"},
          FreeClusterPort()));
      if (!nodes_.back()->ready()) return;
      create += " " + nodes_.back()->address();
    }
    if (Shell(create + " --cluster-replicas 0 --cluster-yes").first != 0) return;
    for (int i = 0; i < 500 && !ready_; ++i) {  // every node agrees the cluster is up
      ready_ = true;
      for (const auto& n : nodes_) {
        ready_ = ready_ && Shell("redis-cli -p " + std::to_string(n->port()) + " cluster info")
                                   .second.find("cluster_state:ok") != std::string::npos;
      }
      if (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  bool ready() const { return ready_; }
  RedisServer& node(size_t i) { return *nodes_[i]; }
  size_t size() const { return nodes_.size(); }
  std::string Id(size_t i) const {
    std::string id =
        Shell("redis-cli -p " + std::to_string(nodes_[i]->port()) + " cluster myid").second;
    while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
    return id;
  }
  // Moves `slots` slots from node `from` to node `to` (keys and all), as an operator would.
  std::pair<int, std::string> Reshard(size_t from, size_t to, int slots) {
    return Shell("redis-cli --cluster reshard " + nodes_[0]->address() + " --cluster-from " +
                 Id(from) + " --cluster-to " + Id(to) + " --cluster-slots " +
                 std::to_string(slots) + " --cluster-yes");
  }

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  bool ready_ = false;
};

}  // namespace tensord::testing
