// A small Redis 7 client over hiredis for the remote tier (DESIGN.md "Tiers: Remote"): standalone
// servers and Redis Cluster (the slot map from CLUSTER SLOTS, MOVED and ASK redirections, a
// refresh when the topology changes), AUTH with an ACL user and password, a timeout on every
// connect, send and receive, a bounded pool of connections per node, and pipelined batches.
// Knows nothing of tensors: the remote tier builds the commands. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

struct redisContext;
struct redisReply;

namespace tensord::tiers::redis {

struct Endpoint {
  std::string host;
  int port = 6379;
  std::string ToString() const { return host + ":" + std::to_string(port); }
  bool operator==(const Endpoint&) const = default;
};

// Parses "host:port" (an IPv6 host in brackets); INVALID_ARGUMENT otherwise.
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text);

// The Redis Cluster slot of a key (CRC16/XMODEM of the key, or of its {hash tag}, mod 16384).
uint16_t KeySlot(absl::string_view key);
inline constexpr int kSlots = 16384;

struct Options {
  std::vector<Endpoint> seeds;  // any node(s); with a cluster, the rest is discovered
  std::string user;             // empty: AUTH with the password alone (the default user)
  std::string password;         // empty: no AUTH
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds io_timeout{2000};  // every send and receive
  int connections_per_node = 4;                // the pool's bound; callers beyond it wait
};

// A reply, owned.
struct ReplyDeleter {
  void operator()(redisReply* r) const;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// One command: its arguments (binary-safe, borrowed: they must outlive the call). args[key]
// routes it in a cluster; commands without a key (PING, INFO) go to the first node.
struct Command {
  std::vector<absl::string_view> args;
  int key = 1;
  // A GET's destination: a bulk reply of exactly `into_len` bytes is read from the socket
  // straight into `into` (no copy through hiredis's buffers), and its reply's string is that
  // memory (not owned). With `head`, a reply of head_len + into_len bytes: the first head_len
  // go to *head (resized; the reply's string), the rest to `into`. Another reply (nil, an
  // error, another length) is built as usual.
  char* into = nullptr;
  size_t into_len = 0;
  std::string* head = nullptr;
  size_t head_len = 0;
};

// A reply's outcome: an error reply becomes a status (NOAUTH/WRONGPASS: PERMISSION_DENIED, OOM:
// RESOURCE_EXHAUSTED, others INTERNAL with Redis's text); nil, strings, integers, arrays are OK.
absl::Status ReplyStatus(const redisReply& r);
// The bytes of a string (or status) reply; empty for others.
absl::string_view ReplyString(const redisReply& r);
bool ReplyIsNil(const redisReply& r);
// Whether a string reply's bytes (after its head, if its Command had one) went to `into`.
bool ReplyWentInto(const redisReply& r);
long long ReplyInteger(const redisReply& r);

class Client {
 public:
  // Connects to a seed (trying each), authenticates, and learns whether it is a cluster (then
  // loads the slot map). UNAVAILABLE when no seed answers, PERMISSION_DENIED when AUTH fails,
  // INVALID_ARGUMENT without seeds. A client whose servers go away later keeps working once they
  // return: connections are made again on demand.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(Options options);
  ~Client();

  // Runs `commands` pipelined (grouped per node in a cluster) and returns each one's reply in
  // order, or its failure: UNAVAILABLE when its node cannot be reached, DEADLINE_EXCEEDED when it
  // did not answer within io_timeout, RESOURCE_EXHAUSTED when every pooled connection stayed busy
  // that long. MOVED and ASK are followed (at most 5 hops), MOVED reloads the slot map; TRYAGAIN
  // is retried briefly; CLUSTERDOWN is UNAVAILABLE.
  std::vector<absl::StatusOr<Reply>> Run(std::span<const Command> commands);
  // Runs one command.
  absl::StatusOr<Reply> Run1(const Command& command);
  // Runs a keyless command on every master (the one server when standalone), in turn; one
  // result per master, in slot order.
  std::vector<absl::StatusOr<Reply>> RunOnMasters(const Command& command);

  bool cluster() const { return cluster_.load(); }
  // The nodes known (the masters, in a cluster).
  std::vector<Endpoint> Nodes() const;
  // Reloads the slot map from any node that answers (no-op when standalone).
  absl::Status RefreshSlots();
  uint64_t redirections() const;

 private:
  class Connection;
  struct Node;
  explicit Client(Options options);

  absl::StatusOr<std::unique_ptr<Connection>> Open(const Endpoint& at);
  // Takes an idle connection to node `n` (or opens one, within the bound; waits otherwise).
  absl::StatusOr<std::unique_ptr<Connection>> Acquire(size_t n);
  void Give(size_t n, std::unique_ptr<Connection> c);
  size_t NodeFor(const Command& c) ABSL_LOCKS_EXCLUDED(mu_);
  size_t NodeIndex(const Endpoint& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs commands[idx[i]] on node n, pipelined; results into out.
  void RunOn(size_t n, std::span<const Command> commands, const std::vector<size_t>& idx,
             std::vector<absl::StatusOr<Reply>>& out, bool asking);
  absl::Status LoadSlots(Connection& c);

  const Options options_;
  std::atomic<bool> cluster_{false};
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(mu_);  // never shrinks
  std::array<uint16_t, kSlots> slots_ ABSL_GUARDED_BY(mu_){};      // slot -> index in nodes_
  uint64_t redirections_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tensord::tiers::redis
