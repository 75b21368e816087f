// The remote tier's Redis client: connections over hiredis, a bounded pool per node, cluster
// routing by slot with MOVED/ASK redirections (redis.io "Redis cluster specification").
#include "daemon/tiers/redis.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "daemon/codec/pages.h"

namespace tensord::tiers::redis {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000),
                 static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

constexpr int kMaxHops = 5;

// Reply objects. hiredis's own functions malloc every bulk string: a 4 MiB chunk is a fresh
// mmap whose pages the kernel zeroes on first touch, a quarter of a large Get's time. These
// build the same redisReply trees, but strings of kPagedString bytes or more live in cached,
// page-aligned buffers (codec/pages.h) that the next reply reuses warm, without hiredis's
// terminating NUL (a 4 MiB chunk would take the 8 MiB size class; every reader here takes
// `len` bytes). FreeReply frees what they built (and only that: every reader of this client
// uses them).
constexpr size_t kPagedString = 256 << 10;
// Marks (in `integer`, unused by strings) a string reply whose bytes are a Command's `into`.
constexpr long long kBorrowed = 0x626f72726f776564;  // "borrowed"
// A bulk string longer than this is a protocol error: a chunk as large as the remote tier
// allows (512 MiB), with a header as large as it reads (64 MiB).
constexpr int64_t kMaxBulk = int64_t{576} << 20;

// A string's buffer: paged from kPagedString bytes on (without a NUL), else malloc'd with one.
char* TakeString(size_t len) {
  return static_cast<char*>(len >= kPagedString ? codec::TakePages(len) : std::malloc(len + 1));
}
void GiveString(char* buf, size_t len) {
  if (len >= kPagedString) {
    codec::GivePages(buf, len);
  } else {
    std::free(buf);
  }
}

void FreeReply(void* p) {
  auto* r = static_cast<redisReply*>(p);
  if (r == nullptr) return;
  if (r->type == REDIS_REPLY_ARRAY) {
    if (r->element != nullptr) {
      for (size_t i = 0; i < r->elements; ++i) FreeReply(r->element[i]);
      std::free(r->element);
    }
  } else if (r->type == REDIS_REPLY_STRING && r->integer == kBorrowed) {
    // the caller's memory
  } else if (r->str != nullptr) {
    if (r->len >= kPagedString) {
      codec::GivePages(r->str, r->len);
    } else {
      std::free(r->str);
    }
  }
  std::free(r);
}

// A new reply of `type`, linked into its parent array as hiredis's functions do.
redisReply* NewReply(const redisReadTask* task, int type) {
  auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
  if (r == nullptr) return nullptr;
  r->type = type;
  if (task->parent != nullptr) {
    auto* parent = static_cast<redisReply*>(task->parent->obj);
    parent->element[task->idx] = r;
  }
  return r;
}

void* CreateString(const redisReadTask* task, char* str, size_t len) {
  char* buf = TakeString(len);
  if (buf == nullptr) return nullptr;
  std::memcpy(buf, str, len);
  if (len < kPagedString) buf[len] = '\0';
  redisReply* r = NewReply(task, task->type);
  if (r == nullptr) {
    GiveString(buf, len);
    return nullptr;
  }
  r->str = buf;
  r->len = len;
  return r;
}

void* CreateArray(const redisReadTask* task, int elements) {
  redisReply** element = nullptr;
  if (elements > 0) {
    element = static_cast<redisReply**>(std::calloc(size_t(elements), sizeof(redisReply*)));
    if (element == nullptr) return nullptr;
  }
  redisReply* r = NewReply(task, REDIS_REPLY_ARRAY);
  if (r == nullptr) {
    std::free(element);
    return nullptr;
  }
  r->elements = size_t(std::max(elements, 0));
  r->element = element;
  return r;
}

void* CreateInteger(const redisReadTask* task, long long value) {
  redisReply* r = NewReply(task, REDIS_REPLY_INTEGER);
  if (r != nullptr) r->integer = value;
  return r;
}

void* CreateNil(const redisReadTask* task) { return NewReply(task, REDIS_REPLY_NIL); }

redisReplyObjectFunctions kReplyFunctions = {CreateString, CreateArray, CreateInteger, CreateNil,
                                             FreeReply};

}  // namespace

void ReplyDeleter::operator()(redisReply* r) const { FreeReply(r); }

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not host:port"));
  }
  Endpoint e;
  absl::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  e.host = std::string(host);
  if (!absl::SimpleAtoi(text.substr(colon + 1), &e.port) || e.port <= 0 || e.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' has no valid port"));
  }
  return e;
}

uint16_t KeySlot(absl::string_view key) {
  // The hash tag: the bytes between the first '{' and the next '}', when there are some.
  size_t open = key.find('{');
  if (open != absl::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != absl::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  uint16_t crc = 0;  // CRC16/XMODEM: polynomial 0x1021, initial 0, no reflection
  for (unsigned char byte : key) {
    crc ^= static_cast<uint16_t>(byte) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

absl::Status ReplyStatus(const redisReply& r) {
  if (r.type != REDIS_REPLY_ERROR) return absl::OkStatus();
  absl::string_view text(r.str, r.len);
  if (absl::StartsWith(text, "NOAUTH") || absl::StartsWith(text, "WRONGPASS") ||
      absl::StartsWith(text, "NOPERM")) {
    return absl::PermissionDeniedError(absl::StrCat("redis: ", text));
  }
  if (absl::StartsWith(text, "OOM")) {
    return absl::ResourceExhaustedError(absl::StrCat("redis: ", text));
  }
  if (absl::StartsWith(text, "CLUSTERDOWN") || absl::StartsWith(text, "LOADING") ||
      absl::StartsWith(text, "MASTERDOWN")) {
    return absl::UnavailableError(absl::StrCat("redis: ", text));
  }
  return absl::InternalError(absl::StrCat("redis: ", text));
}

absl::string_view ReplyString(const redisReply& r) {
  if (r.type == REDIS_REPLY_STRING || r.type == REDIS_REPLY_STATUS || r.type == REDIS_REPLY_ERROR) {
    return absl::string_view(r.str, r.len);
  }
  return {};
}
bool ReplyIsNil(const redisReply& r) { return r.type == REDIS_REPLY_NIL; }
bool ReplyWentInto(const redisReply& r) {
  return r.type == REDIS_REPLY_STRING && r.integer == kBorrowed;
}
long long ReplyInteger(const redisReply& r) {
  return r.type == REDIS_REPLY_INTEGER ? r.integer : 0;
}

// One hiredis connection, authenticated, with the io timeout on its socket.
class Client::Connection {
 public:
  explicit Connection(redisContext* c) : c_(c) {}
  ~Connection() { redisFree(c_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends the commands in one write and reads the replies in order. A transport failure fails
  // the rest (the connection is then broken: the caller drops it).
  std::vector<absl::StatusOr<Reply>> Pipeline(std::span<const Command* const> commands,
                                              bool asking) {
    std::vector<absl::StatusOr<Reply>> out;
    out.reserve(commands.size());
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const Command* cmd : commands) {
      if (asking) redisAppendCommand(c_, "ASKING");
      argv.clear();
      lens.clear();
      for (absl::string_view a : cmd->args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      if (redisAppendCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
          REDIS_OK) {
        broken_ = TransportError();
        break;
      }
    }
    if (broken_.ok() && !asking && Direct(commands)) return PipelineDirect(commands);
    for (size_t i = 0; i < commands.size(); ++i) {
      if (!broken_.ok()) {
        out.push_back(broken_);
        continue;
      }
      if (asking) {
        Reply ignored = Get();
        if (!broken_.ok()) {
          out.push_back(broken_);
          continue;
        }
      }
      Reply r = Get();
      if (!broken_.ok()) {
        out.push_back(broken_);
      } else {
        out.push_back(std::move(r));
      }
    }
    return out;
  }
  absl::StatusOr<Reply> One(std::initializer_list<absl::string_view> args) {
    Command cmd{std::vector<absl::string_view>(args)};
    const Command* p = &cmd;
    return std::move(Pipeline(std::span<const Command* const>(&p, 1), false)[0]);
  }
  bool broken() const { return !broken_.ok(); }
  const char* host() const { return c_->tcp.host; }

 private:
  static constexpr size_t kReadBuffer = 64 << 10;
  // A status or error line fits the buffer: its string is malloc'd, as FreeReply expects.
  static_assert(kReadBuffer < kPagedString);

  // GETs with a destination are read by this connection's own reader (bulk, nil, error,
  // status, integer replies: what a GET can answer), when hiredis's reader holds no bytes.
  bool Direct(std::span<const Command* const> commands) const {
    bool into = false;
    for (const Command* cmd : commands) {
      if (cmd->args.empty() || !absl::EqualsIgnoreCase(cmd->args[0], "GET")) return false;
      into |= cmd->into != nullptr;
    }
    return into && c_->reader->pos == c_->reader->len;
  }

  std::vector<absl::StatusOr<Reply>> PipelineDirect(std::span<const Command* const> commands) {
    std::vector<absl::StatusOr<Reply>> out;
    out.reserve(commands.size());
    for (int done = 0; !done;) {
      if (redisBufferWrite(c_, &done) != REDIS_OK) {
        broken_ = TransportError();
        break;
      }
    }
    if (rbuf_ == nullptr && broken_.ok()) rbuf_ = std::make_unique<char[]>(kReadBuffer);
    for (const Command* cmd : commands) {
      Reply r = broken_.ok() ? ReadReply(*cmd) : nullptr;
      if (broken_.ok()) {
        out.push_back(std::move(r));
      } else {
        out.push_back(broken_);
      }
    }
    // Every byte read belongs to these replies: more is a protocol error (and hiredis's reader
    // would never see it).
    if (broken_.ok() && rpos_ != rlen_) broken_ = absl::UnavailableError("redis: stray bytes");
    return out;
  }

  // One reply, read from the socket; nullptr (and broken_) on failure.
  Reply ReadReply(const Command& cmd) {
    absl::StatusOr<std::string> line = Line();
    if (!line.ok()) {
      broken_ = line.status();
      return nullptr;
    }
    auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
    if (r == nullptr) {
      broken_ = absl::ResourceExhaustedError("redis: out of memory");
      return nullptr;
    }
    Reply reply(r);
    const char type = line->empty() ? '\0' : (*line)[0];
    const absl::string_view rest = absl::string_view(*line).substr(line->empty() ? 0 : 1);
    int64_t n = 0;
    switch (type) {
      case '$':
        if (!absl::SimpleAtoi(rest, &n) || n < -1 || n > kMaxBulk) break;
        if (n == -1) {
          r->type = REDIS_REPLY_NIL;
          return reply;
        }
        r->type = REDIS_REPLY_STRING;
        r->len = size_t(n);
        if (cmd.into != nullptr &&
            size_t(n) == cmd.into_len + (cmd.head != nullptr ? cmd.head_len : 0)) {
          r->integer = kBorrowed;
          if (cmd.head != nullptr) {
            cmd.head->resize(cmd.head_len);
            r->str = cmd.head->data();
            r->len = cmd.head_len;
            if (absl::Status s = ReadExact(r->str, cmd.head_len); !s.ok()) {
              broken_ = s;
              return nullptr;
            }
          }
          if (absl::Status s = ReadExact(cmd.into, cmd.into_len); !s.ok()) {
            broken_ = s;
            return nullptr;
          }
          if (cmd.head == nullptr) r->str = cmd.into;
          if (absl::Status s = ReadCrlf(); !s.ok()) {
            broken_ = s;
            return nullptr;
          }
          return reply;
        } else if (cmd.into != nullptr && size_t(n) > 2 * cmd.into_len + (1 << 20)) {
          // Far from what is expected (a hostile or confused server): not allocated, read past.
          if (absl::Status s = Skip(size_t(n) + 2); !s.ok()) {
            broken_ = s;
            return nullptr;
          }
          return SetLine(r, REDIS_REPLY_ERROR,
                         "ERR tensord: a reply far longer than the value read")
                     ? std::move(reply)
                     : nullptr;
        } else if (r->str = TakeString(size_t(n)); r->str == nullptr) {
          broken_ = absl::ResourceExhaustedError("redis: out of memory");
          return nullptr;
        } else if (size_t(n) < kPagedString) {
          r->str[n] = '\0';
        }
        {
          absl::Status s = ReadExact(r->str, size_t(n));
          if (s.ok()) s = ReadCrlf();
          if (!s.ok()) {
            broken_ = s;
            return nullptr;
          }
        }
        return reply;
      case '-':
      case '+':
        return SetLine(r, type == '-' ? REDIS_REPLY_ERROR : REDIS_REPLY_STATUS, rest)
                   ? std::move(reply)
                   : nullptr;
      case ':':
        if (!absl::SimpleAtoi(rest, &n)) break;
        r->type = REDIS_REPLY_INTEGER;
        r->integer = n;
        return reply;
      default:
        break;
    }
    broken_ = absl::UnavailableError("redis: protocol error in a reply");
    return nullptr;
  }

  // Makes r a status or error reply of `text` (malloc'd, NUL-terminated); false (and broken_)
  // when out of memory.
  bool SetLine(redisReply* r, int type, absl::string_view text) {
    r->type = type;
    r->str = static_cast<char*>(std::malloc(text.size() + 1));
    if (r->str == nullptr) {
      broken_ = absl::ResourceExhaustedError("redis: out of memory");
      return false;
    }
    std::memcpy(r->str, text.data(), text.size());
    r->str[text.size()] = '\0';
    r->len = text.size();
    return true;
  }

  // Reads more bytes into the buffer (after what it holds).
  absl::Status Fill() {
    if (rpos_ > 0) {
      std::memmove(rbuf_.get(), rbuf_.get() + rpos_, rlen_ - rpos_);
      rlen_ -= rpos_;
      rpos_ = 0;
    }
    if (rlen_ == kReadBuffer) return absl::UnavailableError("redis: reply line too long");
    absl::StatusOr<size_t> got = ReadSome(rbuf_.get() + rlen_, kReadBuffer - rlen_);
    if (!got.ok()) return got.status();
    rlen_ += *got;
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> ReadSome(char* dst, size_t n) {
    for (;;) {
      const ssize_t got = read(c_->fd, dst, n);
      if (got > 0) return size_t(got);
      if (got == 0) return absl::UnavailableError("redis: connection closed by the server");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return absl::DeadlineExceededError("redis: no answer within the timeout");
      }
      return absl::UnavailableError(absl::StrCat("redis: ", std::strerror(errno)));
    }
  }

  // A line up to its CRLF (not included).
  absl::StatusOr<std::string> Line() {
    for (;;) {
      const absl::string_view held(rbuf_.get() + rpos_, rlen_ - rpos_);
      if (size_t end = held.find("\r\n"); end != absl::string_view::npos) {
        rpos_ += end + 2;
        return std::string(held.substr(0, end));
      }
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
  }

  // The CRLF that ends a bulk string.
  absl::Status ReadCrlf() {
    char crlf[2];
    if (absl::Status s = ReadExact(crlf, 2); !s.ok()) return s;
    if (crlf[0] != '\r' || crlf[1] != '\n') {
      return absl::UnavailableError("redis: protocol error in a reply");
    }
    return absl::OkStatus();
  }

  // Reads past n bytes.
  absl::Status Skip(size_t n) {
    while (n > 0) {
      if (rpos_ == rlen_) {
        if (absl::Status s = Fill(); !s.ok()) return s;
      }
      const size_t take = std::min(n, rlen_ - rpos_);
      rpos_ += take;
      n -= take;
    }
    return absl::OkStatus();
  }

  // n bytes into dst: what the buffer holds, then large runs straight from the socket.
  absl::Status ReadExact(char* dst, size_t n) {
    size_t got = std::min(n, rlen_ - rpos_);
    std::memcpy(dst, rbuf_.get() + rpos_, got);
    rpos_ += got;
    while (got < n) {
      if (n - got >= kReadBuffer / 4) {
        absl::StatusOr<size_t> more = ReadSome(dst + got, n - got);
        if (!more.ok()) return more.status();
        got += *more;
        continue;
      }
      if (absl::Status s = Fill(); !s.ok()) return s;
      const size_t take = std::min(n - got, rlen_ - rpos_);
      std::memcpy(dst + got, rbuf_.get() + rpos_, take);
      rpos_ += take;
      got += take;
    }
    return absl::OkStatus();
  }

  Reply Get() {
    void* r = nullptr;
    if (redisGetReply(c_, &r) != REDIS_OK || r == nullptr) {
      broken_ = TransportError();
      return nullptr;
    }
    return Reply(static_cast<redisReply*>(r));
  }
  absl::Status TransportError() const {
    if (c_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError("redis: no answer within the timeout");
    }
    return absl::UnavailableError(absl::StrCat("redis: ", c_->errstr));
  }

  redisContext* const c_;
  absl::Status broken_;
  // The direct reader's buffer (empty between pipelines).
  std::unique_ptr<char[]> rbuf_;
  size_t rpos_ = 0, rlen_ = 0;
};

struct Client::Node {
  Endpoint at;
  std::vector<std::unique_ptr<Connection>> idle;
  int open = 0;  // connections handed out or idle
};

Client::Client(Options options) : options_(std::move(options)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client::Connection>> Client::Open(const Endpoint& at) {
  redisContext* raw =
      redisConnectWithTimeout(at.host.c_str(), at.port, ToTimeval(options_.connect_timeout));
  if (raw == nullptr) return absl::ResourceExhaustedError("redis: out of memory");
  auto c = std::make_unique<Connection>(raw);
  if (raw->err != 0) {
    return absl::UnavailableError(absl::StrCat("redis ", at.ToString(), ": ", raw->errstr));
  }
  redisSetTimeout(raw, ToTimeval(options_.io_timeout));
  redisEnableKeepAlive(raw);
  // Keep a read buffer of a few chunks (hiredis frees one over 16 KiB after each reply, and
  // tensors come in 4 MiB chunks), not more.
  raw->reader->maxbuf = 16 << 20;
  raw->reader->fn = &kReplyFunctions;
  if (!options_.password.empty()) {
    absl::StatusOr<Reply> r = options_.user.empty()
                                  ? c->One({"AUTH", options_.password})
                                  : c->One({"AUTH", options_.user, options_.password});
    if (!r.ok()) return r.status();
    if (absl::Status s = ReplyStatus(**r); !s.ok()) {
      return absl::PermissionDeniedError(
          absl::StrCat("redis ", at.ToString(), ": authentication failed (", s.message(), ")"));
    }
  }
  return c;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(Options options) {
  if (options.seeds.empty()) return absl::InvalidArgumentError("redis: no server address");
  std::unique_ptr<Client> client(new Client(std::move(options)));
  absl::Status last;
  for (const Endpoint& seed : client->options_.seeds) {
    absl::StatusOr<std::unique_ptr<Connection>> c = client->Open(seed);
    if (!c.ok()) {
      if (c.status().code() == absl::StatusCode::kPermissionDenied) return c.status();
      last = c.status();
      continue;
    }
    absl::StatusOr<Reply> r = (*c)->One({"CLUSTER", "SLOTS"});
    if (!r.ok()) {
      last = r.status();
      continue;
    }
    {
      absl::MutexLock lock(&client->mu_);
      client->nodes_.push_back(std::make_unique<Node>());
      client->nodes_[0]->at = seed;
      client->nodes_[0]->open = 1;
      client->nodes_[0]->idle.push_back(std::move(*c));
    }
    // A standalone server says "cluster support disabled"; a user without CLUSTER rights is
    // routed by the MOVED replies instead.
    client->cluster_ = (*r)->type == REDIS_REPLY_ARRAY;
    if (absl::Status s = client->RefreshSlots(); !s.ok()) return s;
    return client;
  }
  return last;
}

std::vector<Endpoint> Client::Nodes() const {
  absl::MutexLock lock(&mu_);
  std::vector<Endpoint> out;
  for (const auto& n : nodes_) out.push_back(n->at);
  return out;
}

uint64_t Client::redirections() const {
  absl::MutexLock lock(&mu_);
  return redirections_;
}

size_t Client::NodeIndex(const Endpoint& e) {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->at == e) return i;
  }
  nodes_.push_back(std::make_unique<Node>());
  nodes_.back()->at = e;
  return nodes_.size() - 1;
}

absl::Status Client::LoadSlots(Connection& c) {
  absl::StatusOr<Reply> r = c.One({"CLUSTER", "SLOTS"});
  if (!r.ok()) return r.status();
  const redisReply& top = **r;
  if (absl::Status s = ReplyStatus(top); !s.ok()) return s;
  if (top.type != REDIS_REPLY_ARRAY) return absl::InternalError("redis: bad CLUSTER SLOTS reply");
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < top.elements; ++i) {
    const redisReply* range = top.element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
    const redisReply* master = range->element[2];
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2) continue;
    Endpoint e;
    e.host = std::string(ReplyString(*master->element[0]));
    if (e.host.empty() || e.host == "?") e.host = c.host();  // "the node you asked"
    e.port = static_cast<int>(ReplyInteger(*master->element[1]));
    const size_t n = NodeIndex(e);
    const long long from = ReplyInteger(*range->element[0]);
    const long long to = ReplyInteger(*range->element[1]);
    for (long long s = std::max(0LL, from); s <= to && s < kSlots; ++s) {
      slots_[static_cast<size_t>(s)] = static_cast<uint16_t>(n);
    }
  }
  return absl::OkStatus();
}

absl::Status Client::RefreshSlots() {
  if (!cluster_) return absl::OkStatus();
  size_t count;
  {
    absl::MutexLock lock(&mu_);
    count = nodes_.size();
  }
  absl::Status last = absl::UnavailableError("redis: no cluster node answers");
  for (size_t n = 0; n < count; ++n) {
    absl::StatusOr<std::unique_ptr<Connection>> c = Acquire(n);
    if (!c.ok()) {
      last = c.status();
      continue;
    }
    last = LoadSlots(**c);
    Give(n, std::move(*c));
    if (last.ok()) return last;
  }
  return last;
}

absl::StatusOr<std::unique_ptr<Client::Connection>> Client::Acquire(size_t n) {
  Endpoint at;
  {
    absl::MutexLock lock(&mu_);
    Node* node = nodes_[n].get();
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !node->idle.empty() || node->open < options_.connections_per_node;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), absl::FromChrono(options_.io_timeout))) {
      // Our own queue, not Redis failing: RESOURCE_EXHAUSTED does not degrade the tier.
      return absl::ResourceExhaustedError(
          absl::StrCat("redis ", node->at.ToString(), ": every connection busy"));
    }
    if (!node->idle.empty()) {
      std::unique_ptr<Connection> c = std::move(node->idle.back());
      node->idle.pop_back();
      return c;
    }
    ++node->open;
    at = node->at;
  }
  absl::StatusOr<std::unique_ptr<Connection>> c = Open(at);
  if (!c.ok()) {
    absl::MutexLock lock(&mu_);
    --nodes_[n]->open;
  }
  return c;
}

void Client::Give(size_t n, std::unique_ptr<Connection> c) {
  absl::MutexLock lock(&mu_);
  if (c->broken()) {
    --nodes_[n]->open;
    return;
  }
  nodes_[n]->idle.push_back(std::move(c));
}

size_t Client::NodeFor(const Command& c) {
  if (!cluster_ || c.key < 0 || static_cast<size_t>(c.key) >= c.args.size()) return 0;
  const uint16_t slot = KeySlot(c.args[static_cast<size_t>(c.key)]);
  absl::MutexLock lock(&mu_);
  return slots_[slot];
}

std::vector<absl::StatusOr<Reply>> Client::RunOnMasters(const Command& command) {
  std::vector<size_t> masters;
  if (cluster_) {
    absl::MutexLock lock(&mu_);
    for (uint16_t n : slots_) {
      if (std::find(masters.begin(), masters.end(), n) == masters.end()) masters.push_back(n);
    }
  } else {
    masters.push_back(0);
  }
  std::vector<absl::StatusOr<Reply>> out;
  for (size_t n : masters) {
    std::vector<absl::StatusOr<Reply>> one;
    one.emplace_back(absl::UnknownError("redis: not run"));
    RunOn(n, std::span<const Command>(&command, 1), {0}, one, /*asking=*/false);
    out.push_back(std::move(one[0]));
  }
  return out;
}

void Client::RunOn(size_t n, std::span<const Command> commands, const std::vector<size_t>& idx,
                   std::vector<absl::StatusOr<Reply>>& out, bool asking) {
  absl::StatusOr<std::unique_ptr<Connection>> c = Acquire(n);
  if (!c.ok()) {
    for (size_t i : idx) out[i] = c.status();
    return;
  }
  std::vector<const Command*> batch;
  batch.reserve(idx.size());
  for (size_t i : idx) batch.push_back(&commands[i]);
  std::vector<absl::StatusOr<Reply>> replies = (*c)->Pipeline(batch, asking);
  for (size_t k = 0; k < idx.size(); ++k) out[idx[k]] = std::move(replies[k]);
  Give(n, std::move(*c));
}

std::vector<absl::StatusOr<Reply>> Client::Run(std::span<const Command> commands) {
  std::vector<absl::StatusOr<Reply>> out;
  out.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i)
    out.emplace_back(absl::UnknownError("redis: not run"));
  // Where each pending command goes: its slot's node, or where a redirection sent it.
  struct Target {
    size_t node;
    bool asking;
  };
  std::vector<std::pair<size_t, Target>> pending;
  for (size_t i = 0; i < commands.size(); ++i)
    pending.push_back({i, {NodeFor(commands[i]), false}});
  for (int hop = 0; hop <= kMaxHops && !pending.empty(); ++hop) {
    // Group by (node, asking), keeping each group's order.
    std::vector<std::pair<Target, std::vector<size_t>>> groups;
    for (const std::pair<size_t, Target>& p : pending) {
      const Target& t = p.second;  // (clang 14 lambdas cannot capture structured bindings)
      auto it = std::find_if(groups.begin(), groups.end(), [&t](const auto& g) {
        return g.first.node == t.node && g.first.asking == t.asking;
      });
      if (it == groups.end()) {
        groups.push_back({t, {}});
        it = groups.end() - 1;
      }
      it->second.push_back(p.first);
    }
    // Each group goes on its own connection, and a long one is split over several (Redis
    // answers one connection while it reads the next; the replies' copies and checksums overlap):
    // as many pipelines in flight as the pool allows per node.
    std::vector<std::pair<Target, std::vector<size_t>>> stripes;
    for (const auto& [t, idx] : groups) {
      const size_t parts = std::min<size_t>(
          idx.size(), static_cast<size_t>(std::max(1, options_.connections_per_node)));
      for (size_t p = 0; p < parts; ++p) {
        std::vector<size_t> part;
        for (size_t k = p; k < idx.size(); k += parts) part.push_back(idx[k]);
        stripes.push_back({t, std::move(part)});
      }
    }
    if (stripes.size() == 1) {
      RunOn(stripes[0].first.node, commands, stripes[0].second, out, stripes[0].first.asking);
    } else {
      std::vector<std::thread> threads;
      for (const auto& [t, idx] : stripes) {
        threads.emplace_back([&, node = t.node, asking = t.asking, &part = idx] {
          RunOn(node, commands, part, out, asking);
        });
      }
      for (std::thread& th : threads) th.join();
    }
    if (hop == kMaxHops) break;
    pending.clear();
    bool moved = false, again = false;
    for (const auto& [t, idx] : groups) {
      for (size_t i : idx) {
        if (!out[i].ok() || (*out[i])->type != REDIS_REPLY_ERROR) continue;
        absl::string_view text = ReplyString(**out[i]);
        std::vector<absl::string_view> parts = absl::StrSplit(text, ' ');
        const bool is_moved = absl::StartsWith(text, "MOVED ");
        if ((is_moved || absl::StartsWith(text, "ASK ")) && parts.size() == 3) {
          std::string where(parts[2]);
          if (!where.empty() && where[0] == ':') {  // "unknown endpoint": the node that answered
            absl::MutexLock lock(&mu_);
            where = nodes_[t.node]->at.host + where;
          }
          absl::StatusOr<Endpoint> e = ParseEndpoint(where);
          if (!e.ok()) continue;
          cluster_ = true;  // redirected: a cluster after all (a user without CLUSTER rights)
          absl::MutexLock lock(&mu_);
          ++redirections_;
          const size_t node = NodeIndex(*e);
          uint32_t slot = 0;
          if (is_moved && absl::SimpleAtoi(parts[1], &slot) && slot < kSlots) {
            slots_[slot] = static_cast<uint16_t>(node);
            moved = true;
          }
          pending.push_back({i, {node, !is_moved}});
        } else if (absl::StartsWith(text, "TRYAGAIN")) {
          pending.push_back({i, {NodeFor(commands[i]), false}});
          again = true;
        }
      }
    }
    if (moved) RefreshSlots().IgnoreError();  // a resharding moves many slots at once
    if (again) std::this_thread::sleep_for(std::chrono::milliseconds(20 << hop));
  }
  return out;
}

absl::StatusOr<Reply> Client::Run1(const Command& command) {
  return std::move(Run(std::span<const Command>(&command, 1))[0]);
}

}  // namespace tensord::tiers::redis
