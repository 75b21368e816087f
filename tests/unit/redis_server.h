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
#include <string>
#include <thread>
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

}  // namespace tensord::testing
