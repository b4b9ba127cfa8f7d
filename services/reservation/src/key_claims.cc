#include "user_index.h"

#include <algorithm>
#include <utility>

namespace saga::reservation {
namespace {

std::string key_of(const std::string& user, const std::string& key) { return user + '\n' + key; }

}  // namespace

UserIndex::UserIndex(size_t max_keys) : max_keys_(std::max<size_t>(max_keys, 1)) {}

void UserIndex::add(const std::string& user, const std::string& id, int64_t created_ms) {
  std::lock_guard lock(mu_);
  User& u = by_user_[user];
  if (u.known.insert(id).second) u.ids.emplace(created_ms, added_++, id);
}

std::vector<std::string> UserIndex::ids(const std::string& user) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  if (auto it = by_user_.find(user); it != by_user_.end()) {
    out.reserve(it->second.ids.size());
    for (const auto& [created, order, id] : it->second.ids) out.push_back(id);
  }
  return out;
}

std::mutex& UserIndex::claim_mutex(const std::string& user) {
  return claim_mu_[std::hash<std::string>{}(user) % std::size(claim_mu_)];
}

StatusOr<UserIndex::Keyed> UserIndex::claim(const std::string& user, const std::string& key,
                                            const std::string& request_hash,
                                            const std::string& new_id, const StoredKeyOf& stored) {
  const std::string k = key_of(user, key);
  // Held from the lookup to the insert: another claim of this key waits, and
  // then finds this one's entry (a key leaves memory only once its booking is
  // in the store, where the lookup below finds it).
  std::lock_guard claiming(claim_mutex(user));
  std::vector<std::string> mine;  // to read when the key may have left memory
  {
    std::lock_guard lock(mu_);
    if (auto it = by_key_.find(k); it != by_key_.end()) {
      touch(it);
      Keyed out = it->second.keyed;
      out.fresh = false;
      return out;
    }
    if (auto it = by_user_.find(user); it != by_user_.end() && it->second.keys_forgotten)
      for (const auto& [created, order, id] : it->second.ids) mine.push_back(id);
  }
  std::optional<Keyed> found;
  for (auto id = mine.rbegin(); id != mine.rend() && !found; ++id) {
    SAGA_ASSIGN_OR_RETURN(std::optional<StoredKey> s, stored(*id));
    if (s && s->key == key) found = Keyed{*id, s->request_hash};
  }
  std::lock_guard lock(mu_);
  lru_.push_front(k);
  Entry& e = by_key_[k];
  e.keyed = found ? *found : Keyed{new_id, request_hash};
  e.started = found.has_value();
  e.lru = lru_.begin();
  Keyed out = e.keyed;
  out.fresh = !found;
  evict();
  return out;
}

void UserIndex::started(const std::string& user, const std::string& key) {
  std::lock_guard lock(mu_);
  if (auto it = by_key_.find(key_of(user, key)); it != by_key_.end()) it->second.started = true;
  evict();
}

void UserIndex::forget(const std::string& user, const std::string& key) {
  std::lock_guard lock(mu_);
  if (auto it = by_key_.find(key_of(user, key)); it != by_key_.end()) {
    lru_.erase(it->second.lru);
    by_key_.erase(it);
  }
}

void UserIndex::add_key(const std::string& user, const std::string& key, const std::string& id,
                        const std::string& request_hash) {
  const std::string k = key_of(user, key);
  std::lock_guard lock(mu_);
  auto [it, inserted] = by_key_.try_emplace(k);
  if (!inserted) {  // known already, perhaps claimed by a request in flight: it stays
    touch(it);
    return;
  }
  lru_.push_front(k);
  it->second.lru = lru_.begin();
  it->second.keyed = Keyed{id, request_hash};
  it->second.started = true;
  evict();
}

size_t UserIndex::keys_in_memory_for_test() const {
  std::lock_guard lock(mu_);
  return by_key_.size();
}

void UserIndex::touch(std::unordered_map<std::string, Entry>::iterator it) {
  lru_.splice(lru_.begin(), lru_, it->second.lru);
}

void UserIndex::evict() {
  // From the least recently used; claims not started yet stay (there are at
  // most as many as requests in flight).
  for (auto it = lru_.end(); by_key_.size() > max_keys_ && it != lru_.begin();) {
    --it;
    auto entry = by_key_.find(*it);
    if (!entry->second.started) continue;
    by_user_[it->substr(0, it->find('\n'))].keys_forgotten = true;
    by_key_.erase(entry);
    it = lru_.erase(it);
  }
}

}  // namespace saga::reservation
