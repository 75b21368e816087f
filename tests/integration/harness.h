// Integration-test harness: starts the real tensord on a private socket and run directory,
// waits for grpc.health.v1 to report SERVING, spawns real client processes, and stops
// everything it started by pid.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tensord/client.h"
#include "tensord/v1/tensord.grpc.pb.h"

namespace tensord::testing {

// A child process started with posix_spawn; its stdout is readable through a pipe.
class Process {
 public:
  // Starts `argv`. Dies on failure to spawn (a broken test environment).
  explicit Process(const std::vector<std::string>& argv, bool capture_stdout = false);
  ~Process();  // kills (SIGKILL) and reaps a child that is still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for exit; returns the exit code, or 128 + signal.
  int Wait();
  // Waits up to `timeout` for exit; returns the exit code or -1 if still running.
  int WaitFor(std::chrono::milliseconds timeout);
  bool reaped() const { return reaped_; }
  // Reads one line of the child's stdout (without '\n'); empty at EOF.
  std::string ReadLine();
  void Kill(int sig);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool reaped_ = false;
  std::string buffer_;
};

class Daemon {
 public:
  // Starts tensord with `extra_args` in a fresh temporary run directory and waits up to 20 s
  // for SERVING. Fails the current test (ADD_FAILURE) if it does not come up.
  explicit Daemon(const std::vector<std::string>& extra_args = {}, const std::string& run_dir = "");
  ~Daemon();  // SIGTERM by pid; a failure if it has not exited after 30 s

  bool ok() const { return ok_; }
  const std::string& socket() const { return socket_; }
  const std::string& run_dir() const { return run_dir_; }
  pid_t pid() const { return process_->pid(); }
  // Stops the daemon with SIGTERM; returns its exit code.
  int Stop();
  void KillHard();
  // Leaves what the daemon kept for a warm restart when this object goes (a test that starts
  // another instance on the same run directory); by default the end of a test forgets it.
  void KeepState() { keep_state_ = true; }
  v1::Tensord::Stub& stub() { return *stub_; }

 private:
  std::string run_dir_;
  std::string socket_;
  std::unique_ptr<Process> process_;
  std::unique_ptr<v1::Tensord::Stub> stub_;
  bool ok_ = false;
  bool keep_state_ = false;
};

// Paths of the binaries under test (from the build).
std::string DaemonBinary();
std::string ClientBinary();
// Returns a new empty directory under the test temp dir.
std::string MakeTempDir();
// Runs `command` through the shell; returns its exit code (128 if it did not exit) and its
// stdout and stderr together.
struct CommandResult {
  int rc = 0;
  std::string out;
};
CommandResult RunCommand(const std::string& command);
// Returns whether grpc.health.v1 on `socket` reports SERVING.
bool IsServing(const std::string& socket);
// A C++ client session on `d` (nullptr, with a test failure, if it cannot attach).
std::unique_ptr<Client> ConnectClient(const Daemon& d, const std::string& name);

}  // namespace tensord::testing
