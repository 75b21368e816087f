// The object table (DESIGN.md "Store: one table, copies per tier"): objects and their copies,
// sessions, leases and expiry. An object holds copies[tier], at most one per tier, each with its
// range, its lease count and its in-flight state; nothing in an object is specific to a tier.
// Pure bookkeeping: it never touches memory, tiers or policies. Not thread-safe: the store owns
// it and calls it under its lock.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "daemon/codec/codec.h"
#include "daemon/store/types.h"
#include "daemon/tiers/tier.h"

namespace tensord::store {

using tiers::TierId;

// One tier's copy of a tensor.
struct Copy {
  bool present = false;    // `range` holds the tensor's bytes, encoded by `codec`
  bool in_flight = false;  // a move into this tier is running: `range` is reserved, not valid yet
  tiers::Range range;
  codec::CodecId codec = codec::CodecId::kNone;
  float rel_rmse = 0;    // a lossy encoding's measured error
  uint32_t leases = 0;   // clients' leases on this copy
  uint32_t readers = 0;  // moves reading this copy, and requests that need it to stay
  bool held() const { return leases > 0 || readers > 0; }
};

struct Session;

// A tensor's identity for the policies: a 64-bit hash of (ns, key), never 0.
uint64_t TensorId(absl::string_view ns, absl::string_view key);

struct Object {
  std::string ns, key;
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  std::string pool_class;  // the class the Create asked for; empty: best fit (in every tier)
  Durability durability = Durability::kDurable;
  Scope scope = Scope::kGlobal;
  codec::Policy compression;  // resolved at Create (never kDefault)
  std::string parent;         // the Create's parent hint (a key in `ns`); empty: none
  // Who it is to the eviction policies (policy::Footprint): hashes of (ns, key) and of
  // (ns, parent), 0 for no parent.
  uint64_t id = 0, parent_id = 0;
  uint8_t guarded = 0;  // bit tiers::Index(t): a hint guards the copy in t against eviction
  uint16_t tenant = 0;  // the owner of ns (store::TenantId): whose memory its copies use
  bool sealed = false;
  bool retired = false;  // unreachable by key; freed when nothing holds it any more
  // A client deleted it: its copy in the remote tier is deleted there too (not just let go).
  bool erase_remote = false;
  // Moving it from the SSD tier to the remote tier failed: next time it is dropped instead.
  bool remote_refused = false;
  Session* owner = nullptr;  // set while unsealed or session-scoped
  int64_t created_unix_ms = 0;
  int64_t ttl_ms = 0;
  bool expiring = false;
  std::multimap<int64_t, Object*>::iterator expiry_it;  // valid while `expiring`
  int pins = 0;  // requests and moves using the object: a retired one is freed when they end
  // The XXH3-64 of its bytes, taken at Seal when the store keeps an index (has_checksum), and
  // whether a restored tensor's bytes were checked against it. A restored host copy waiting for
  // its check holds a reader (awaiting_check).
  uint64_t checksum = 0;
  bool has_checksum = false;
  bool verified = true;
  bool awaiting_check = false;
  std::array<Copy, tiers::kTierCount> copies;

  Copy& copy(TierId t) { return copies[tiers::Index(t)]; }
  const Copy& copy(TierId t) const { return copies[tiers::Index(t)]; }
  // Whether a lease, a move, a waiter or a reader holds the object.
  bool Held() const {
    if (pins > 0) return true;
    for (const Copy& c : copies) {
      if (c.held() || c.in_flight) return true;
    }
    return false;
  }
  uint32_t leases() const {
    uint32_t n = 0;
    for (const Copy& c : copies) n += c.leases;
    return n;
  }
};

// A sealed, global tensor that did not come from a Create here (restored from the index, found
// in the remote tier): its fields from `p` (checked by ValidateCreate, which gave `nbytes`).
std::unique_ptr<Object> SealedObject(CreateParams p, uint64_t nbytes, std::string pool_class);

struct Session {
  std::string id;
  std::string name;
  uint16_t tenant = 0;  // store::TenantId of the peer that opened it
  absl::flat_hash_set<uint64_t> leases;
  absl::flat_hash_set<Object*> creating;
  absl::flat_hash_set<Object*> scoped;
};

struct LeaseEntry {
  Session* session = nullptr;
  Object* object = nullptr;
  TierId tier = TierId::kHost;
};

class ObjectTable {
 public:
  // `clock` is borrowed (nullptr: real time).
  explicit ObjectTable(const Clock* clock) : clock_(clock != nullptr ? clock : Clock::Real()) {}

  int64_t NowUnixMs() const { return clock_->NowUnixMs(); }

  Session* FindSession(const std::string& id);
  void AddSession(std::unique_ptr<Session> s);
  void EraseSession(const std::string& id);
  size_t sessions() const { return sessions_.size(); }

  // Returns the live object named (ns, key), or nullptr; expired ones are hidden.
  Object* Find(absl::string_view ns, absl::string_view key);
  // The same, expired objects included (they hold their key until retired).
  Object* FindAny(absl::string_view ns, absl::string_view key);
  // Adds `o` under its key; false (and `o` dropped) if the key is taken.
  bool Insert(std::unique_ptr<Object> o);
  // Removes `o`'s key and marks it retired; it stays allocated until Destroy.
  void Unlink(Object* o);
  // Deletes a retired object.
  void Destroy(Object* o);
  bool Expired(const Object& o) const;
  // Calls fn(Object&) for every live (keyed) object.
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (auto& [k, o] : objects_) fn(*o);
  }
  size_t objects() const { return objects_.size() + retired_.size(); }

  // Starts `o`'s TTL now; Disarm stops it. Due returns the first object whose TTL has passed.
  void Arm(Object* o);
  // Starts o's TTL to end at `unix_ms` (a restored tensor keeps its expiry).
  void ArmAt(Object* o, int64_t unix_ms);
  void Disarm(Object* o);
  Object* Due();

  // Leases: AddLease returns the new id; TakeLease removes and returns one (nullopt if unknown).
  uint64_t AddLease(Session* s, Object* o, TierId tier);
  std::optional<LeaseEntry> TakeLease(uint64_t id);
  bool HasLease(uint64_t id) const { return leases_.contains(id); }
  size_t leases() const { return leases_.size(); }

  // The table's key of (ns, key).
  static std::string TableKey(absl::string_view ns, absl::string_view key);

 private:
  const Clock* const clock_;
  absl::flat_hash_map<std::string, std::unique_ptr<Object>> objects_;
  absl::flat_hash_map<Object*, std::unique_ptr<Object>> retired_;
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_;
  absl::flat_hash_map<uint64_t, LeaseEntry> leases_;
  std::multimap<int64_t, Object*> expiries_;  // unix ms -> sealed object
  uint64_t next_lease_id_ = 1;
};

}  // namespace tensord::store
