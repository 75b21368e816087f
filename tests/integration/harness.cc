// Process and daemon management for integration tests.
#include "tests/integration/harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

extern char** environ;

namespace tensord::testing {

Process::Process(const std::vector<std::string>& argv, bool capture_stdout) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  int pipe_fds[2] = {-1, -1};
  if (capture_stdout) {
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) std::abort();
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  }
  if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) {
    perror("posix_spawn");
    std::abort();
  }
  posix_spawn_file_actions_destroy(&actions);
  if (capture_stdout) {
    close(pipe_fds[1]);
    out_fd_ = pipe_fds[0];
  }
}

Process::~Process() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    Wait();
  }
  if (out_fd_ >= 0) close(out_fd_);
}

int Process::Wait() {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int Process::WaitFor(std::chrono::milliseconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() >= give_up) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Process::Kill(int sig) { kill(pid_, sig); }

std::string Process::ReadLine() {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    char chunk[256];
    ssize_t n = read(out_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::exchange(buffer_, "");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

// $TENSORD_BIN / $IT_CLIENT_BIN override the build tree's paths (a bundle run elsewhere).
std::string DaemonBinary() {
  const char* env = std::getenv("TENSORD_BIN");
  return env != nullptr && *env != '\0' ? env : TENSORD_BIN;
}
std::string ClientBinary() {
  const char* env = std::getenv("IT_CLIENT_BIN");
  return env != nullptr && *env != '\0' ? env : IT_CLIENT_BIN;
}

namespace {

// Removes every directory MakeTempDir made (swap files included) when the test program exits.
class TempDirs {
 public:
  ~TempDirs() {
    for (const std::string& d : dirs_) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
  void Add(const std::string& d) {
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.push_back(d);
  }

 private:
  std::mutex mu_;
  std::vector<std::string> dirs_;
};

TempDirs& AllTempDirs() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "/tensord-it-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  AllTempDirs().Add(tmpl);
  return tmpl;
}

CommandResult RunCommand(const std::string& command) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {128, "popen failed"};
  CommandResult r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

bool IsServing(const std::string& socket) {
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  return health->Check(&ctx, request, &response).ok() &&
         response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

Daemon::Daemon(const std::vector<std::string>& extra_args, const std::string& run_dir)
    : run_dir_(run_dir.empty() ? MakeTempDir() : run_dir), socket_(run_dir_ + "/tensord.sock") {
  std::vector<std::string> argv = {DaemonBinary(), "--run-dir", run_dir_,
                                   "--log-level",  "warn",      "--no-prefault"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  process_ = std::make_unique<Process>(argv);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < give_up) {
    if (access(socket_.c_str(), F_OK) == 0 && IsServing(socket_)) {
      ok_ = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!ok_) {
    ADD_FAILURE() << "tensord did not report SERVING on " << socket_;
    return;
  }
  stub_ = v1::Tensord::NewStub(
      grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
}

int Daemon::Stop() {
  process_->Kill(SIGTERM);
  int code = process_->WaitFor(std::chrono::seconds(10));
  if (code < 0) {
    process_->Kill(SIGKILL);
    process_->Wait();
  }
  return code;
}

void Daemon::KillHard() {
  process_->Kill(SIGKILL);
  process_->Wait();
}

Daemon::~Daemon() {
  // A clean stop keeps the segments of the tensors left (a warm restart would take them over):
  // the end of a test forgets them, unless the test keeps them for a next instance (KeepState).
  const bool forget = process_ != nullptr && !keep_state_;
  if (process_ != nullptr && !process_->reaped()) {
    process_->Kill(SIGTERM);
    // 30 s: on a loaded machine (tests run two at a time) a daemon was seen taking ~10 s to
    // exit after BadRequests.TheLargestValidRequestIsAccepted; not yet explained (see the note
    // of the session that added it). Non-zero also catches sanitizer reports at exit.
    const int code = process_->WaitFor(std::chrono::seconds(30));
    if (code != 0) ADD_FAILURE() << "tensord exited with " << code << " on SIGTERM";
  }
  process_.reset();
  if (forget) {
    RunCommand(DaemonBinary() + " --forget --log-level error --run-dir '" + run_dir_ +
               "' >/dev/null");
  }
}

std::unique_ptr<Client> ConnectClient(const Daemon& d, const std::string& name) {
  ClientOptions opts;
  opts.socket_path = d.socket();
  opts.client_name = name;
  auto c = Client::Connect(opts);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

}  // namespace tensord::testing
