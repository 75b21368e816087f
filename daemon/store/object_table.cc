// The object table's bookkeeping.
#include "daemon/store/object_table.h"

#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include "absl/strings/str_cat.h"

namespace tensord::store {

std::unique_ptr<Object> SealedObject(CreateParams p, uint64_t nbytes, std::string pool_class) {
  auto o = std::make_unique<Object>();
  o->ns = std::move(p.ns);
  o->key = std::move(p.key);
  o->dtype = p.dtype;
  o->shape = std::move(p.shape);
  o->nbytes = nbytes;
  o->pool_class = std::move(pool_class);
  o->durability = p.durability;
  o->scope = Scope::kGlobal;
  o->compression = p.compression;
  o->parent = std::move(p.parent);
  o->id = TensorId(o->ns, o->key);
  o->parent_id = o->parent.empty() ? 0 : TensorId(o->ns, o->parent);
  o->ttl_ms = p.ttl_ms;
  o->sealed = true;
  return o;
}

uint64_t TensorId(absl::string_view ns, absl::string_view key) {
  const std::string k = ObjectTable::TableKey(ns, key);
  const uint64_t h = XXH3_64bits(k.data(), k.size());
  return h == 0 ? 1 : h;
}

std::string ObjectTable::TableKey(absl::string_view ns, absl::string_view key) {
  // Keys never contain NUL (validated), so this concatenation is unambiguous.
  return absl::StrCat(ns, absl::string_view("\0", 1), key);
}

Session* ObjectTable::FindSession(const std::string& id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void ObjectTable::AddSession(std::unique_ptr<Session> s) {
  std::string id = s->id;
  sessions_.emplace(std::move(id), std::move(s));
}

void ObjectTable::EraseSession(const std::string& id) { sessions_.erase(id); }

Object* ObjectTable::FindAny(absl::string_view ns, absl::string_view key) {
  auto it = objects_.find(TableKey(ns, key));
  return it == objects_.end() ? nullptr : it->second.get();
}

Object* ObjectTable::Find(absl::string_view ns, absl::string_view key) {
  Object* o = FindAny(ns, key);
  return o == nullptr || Expired(*o) ? nullptr : o;
}

bool ObjectTable::Insert(std::unique_ptr<Object> o) {
  std::string k = TableKey(o->ns, o->key);
  return objects_.try_emplace(std::move(k), std::move(o)).second;
}

void ObjectTable::Unlink(Object* o) {
  Disarm(o);
  auto node = objects_.extract(TableKey(o->ns, o->key));
  o->retired = true;
  if (!node.empty()) retired_.emplace(o, std::move(node.mapped()));
}

void ObjectTable::Destroy(Object* o) { retired_.erase(o); }

bool ObjectTable::Expired(const Object& o) const {
  // Expired tensors stay in the table until retired, but are never served.
  return o.expiring && o.expiry_it->first <= NowUnixMs();
}

void ObjectTable::Arm(Object* o) {
  if (o->ttl_ms <= 0 || o->expiring) return;
  o->expiry_it = expiries_.emplace(NowUnixMs() + o->ttl_ms, o);
  o->expiring = true;
}

void ObjectTable::ArmAt(Object* o, int64_t unix_ms) {
  if (o->expiring) return;
  o->expiry_it = expiries_.emplace(unix_ms, o);
  o->expiring = true;
}

void ObjectTable::Disarm(Object* o) {
  if (!o->expiring) return;
  expiries_.erase(o->expiry_it);
  o->expiring = false;
}

Object* ObjectTable::Due() {
  if (expiries_.empty() || expiries_.begin()->first > NowUnixMs()) return nullptr;
  return expiries_.begin()->second;
}

uint64_t ObjectTable::AddLease(Session* s, Object* o, TierId tier) {
  const uint64_t id = next_lease_id_++;
  leases_.emplace(id, LeaseEntry{s, o, tier});
  s->leases.insert(id);
  return id;
}

std::optional<LeaseEntry> ObjectTable::TakeLease(uint64_t id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  LeaseEntry e = it->second;
  leases_.erase(it);
  e.session->leases.erase(id);
  return e;
}

}  // namespace tensord::store
