// Shared by the client-side benchmarks: timing helpers and a tensord started for the run.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace tensord::bench {

using Clock = std::chrono::steady_clock;

inline double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

inline double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// A tensord of this build in a fresh temporary run directory, stopped and removed at the end.
struct OwnDaemon {
  pid_t pid = -1;
  std::string dir;
  // Starts `binary` with `args` after --run-dir; returns its socket path, or "" on failure.
  std::string Start(const std::string& binary, std::vector<std::string> args) {
    char tmpl[] = "/tmp/tensord-bench-XXXXXX";
    dir = mkdtemp(tmpl);
    const std::string socket = dir + "/tensord.sock";
    args.insert(args.begin(), {binary, "--run-dir", dir});
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    if (posix_spawn(&pid, cargs[0], nullptr, nullptr, cargs.data(), environ) != 0) return "";
    for (int i = 0; i < 1200 && access(socket.c_str(), F_OK) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return socket;
  }
  ~OwnDaemon() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);  // the lock file the daemon leaves
    }
  }
};

}  // namespace tensord::bench
