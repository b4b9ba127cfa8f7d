// The reservation service's per-user index: each user's reservation ids, and
// the Idempotency-Keys of their bookings, bounded in memory. Internal to
// saga_reservation_lib (and its unit test).
#pragma once

#include <cstddef>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "saga/status.h"

namespace saga::reservation {

/// Reservation ids per user (oldest first), and the booking each user's
/// Idempotency-Key names, with the hash of the request that made it.
///
/// The ids live in memory (rebuilt from the orchestrator's store at start, and
/// again, adding what is new, when a replica takes over shards).
/// The keys are bounded: at most `max_keys` of them stay in memory, the least
/// recently used of the started bookings are forgotten first. A forgotten key
/// is not lost: its booking keeps it in the store (the saga data's
/// idempotencyKey and requestHash), and claim() finds it there again through
/// `StoredKeyOf`, reading the user's bookings newest first (only for a user
/// some of whose keys were forgotten: for the others memory is the whole
/// truth, and a new key costs no read). A claimed key whose
/// booking is not started yet is never forgotten, so two requests with one key
/// never start two bookings. Thread-safe.
class UserIndex {
 public:
  /// The booking a user's key names, with the hash of the request that made it.
  struct Keyed {
    std::string id;
    std::string request_hash;
    bool fresh = false;  ///< claimed by this call: the caller starts the booking
  };
  /// The Idempotency-Key and request hash that booking `id` was made with, as
  /// stored; nullopt when it has none or no longer exists.
  struct StoredKey {
    std::string key;
    std::string request_hash;
  };
  using StoredKeyOf = std::function<StatusOr<std::optional<StoredKey>>(const std::string& id)>;

  /// Keys held in memory at the most: 100,000 by default (kDefaultMaxKeys); at
  /// least 1.
  static constexpr size_t kDefaultMaxKeys = 100'000;
  explicit UserIndex(size_t max_keys = kDefaultMaxKeys);

  /// Records `id`, created at `created_ms`, as one of `user`'s reservations
  /// (again: no change).
  void add(const std::string& user, const std::string& id, int64_t created_ms);
  /// `user`'s reservation ids, oldest first (by creation time, then as added).
  std::vector<std::string> ids(const std::string& user) const;

  /// The booking `user` made with `key` (from memory, else from the store
  /// through `stored`), or, when there is none, `new_id` claimed for it with
  /// `request_hash` (fresh): the caller then starts it and calls started(), or
  /// forget() if it could not. Two claims of one key never both get fresh.
  /// Fails only with the status `stored` fails with.
  StatusOr<Keyed> claim(const std::string& user, const std::string& key,
                        const std::string& request_hash, const std::string& new_id,
                        const StoredKeyOf& stored);
  /// The claimed key's booking is started (in the store): it may be forgotten.
  void started(const std::string& user, const std::string& key);
  /// Forgets a claim whose booking was not started.
  void forget(const std::string& user, const std::string& key);
  /// Records a started booking's key (rebuild from the store, oldest first);
  /// a key known already stays as it is.
  void add_key(const std::string& user, const std::string& key, const std::string& id,
               const std::string& request_hash);

  /// How many keys are in memory now (tests).
  size_t keys_in_memory_for_test() const;

 private:
  struct Entry {
    Keyed keyed;
    bool started = false;                // false: claimed, its booking not started yet
    std::list<std::string>::iterator lru;  // its place in lru_
  };
  // REQUIRES: mu_ held. Moves `it` to the front of lru_.
  void touch(std::unordered_map<std::string, Entry>::iterator it);
  // REQUIRES: mu_ held. Forgets least recently used started keys beyond max_keys_,
  // and marks their users.
  void evict();
  std::mutex& claim_mutex(const std::string& user);

  const size_t max_keys_;
  mutable std::mutex mu_;
  struct User {
    // (created, order added, id): oldest first; added in the same
    // millisecond, in the order added.
    std::set<std::tuple<int64_t, uint64_t, std::string>> ids;
    std::unordered_set<std::string> known;          // the ids in `ids`
    bool keys_forgotten = false;   // some of this user's keys left memory
  };
  std::unordered_map<std::string, User> by_user_;  // GUARDED_BY(mu_)
  uint64_t added_ = 0;                              // GUARDED_BY(mu_): ids added so far
  // "<user>\n<key>" (neither holds a newline: check_id) -> booking.
  std::unordered_map<std::string, Entry> by_key_;  // GUARDED_BY(mu_)
  std::list<std::string> lru_;                     // GUARDED_BY(mu_); most recent first
  // A claim that misses memory reads the store; one user's claims take turns
  // (a mutex per stripe of users) so that a key cannot be claimed twice while
  // one claim reads the store.
  std::mutex claim_mu_[16];
};

}  // namespace saga::reservation
