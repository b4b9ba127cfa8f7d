#include "key_claims.h"

#include <iterator>

namespace saga::reservation {
namespace {

std::string key_of(const std::string& user, const std::string& key) { return user + '\n' + key; }

}  // namespace

StatusOr<KeyClaims::Keyed> KeyClaims::claim(const std::string& user, const std::string& key,
                                            const std::string& request_hash,
                                            const std::string& new_id, const StoredKeyOf& stored) {
  const std::string k = key_of(user, key);
  // A claim leaves only once its booking is in the store, where the lookup
  // finds it.
  std::lock_guard claiming(claim_mutex(user));
  {
    std::lock_guard lock(mu_);
    if (auto it = claimed_.find(k); it != claimed_.end()) {
      Keyed out = it->second;
      out.fresh = false;
      return out;
    }
  }
  SAGA_ASSIGN_OR_RETURN(std::optional<Keyed> found, stored(user, key));
  if (found) {
    found->fresh = false;
    return *found;
  }
  Keyed fresh{new_id, request_hash, true};
  std::lock_guard lock(mu_);
  claimed_.emplace(k, fresh);
  return fresh;
}

std::mutex& KeyClaims::claim_mutex(const std::string& user) {
  return claim_mu_[std::hash<std::string>{}(user) % std::size(claim_mu_)];
}

void KeyClaims::release(const std::string& user, const std::string& key) {
  std::lock_guard lock(mu_);
  claimed_.erase(key_of(user, key));
}

size_t KeyClaims::claims_for_test() const {
  std::lock_guard lock(mu_);
  return claimed_.size();
}

}  // namespace saga::reservation
