// The Idempotency-Keys of bookings being started: a key claimed by a request
// whose booking is not in the store yet. Internal to saga_reservation_lib
// (and its unit test).
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "saga/status.h"

namespace saga::reservation {

/// Which booking each user's Idempotency-Key names. A started booking's key
/// is in the store (the booking's key record, written with its start); this
/// holds only the keys claimed by requests whose bookings are not started
/// yet, so that two requests with one key never start two bookings.
/// Thread-safe.
class KeyClaims {
 public:
  /// The booking a user's key names, with the hash of the request that made it.
  struct Keyed {
    std::string id;
    std::string request_hash;
    bool fresh = false;  ///< claimed by this call: the caller starts the booking
  };
  /// The booking `user`'s `key` names in the store; nullopt when none.
  using StoredKeyOf = std::function<StatusOr<std::optional<Keyed>>(const std::string& user,
                                                                  const std::string& key)>;

  /// The booking `user` made with `key` (a claim in flight, else the store
  /// through `stored`), or, when there is none, `new_id` claimed for it with
  /// `request_hash` (fresh): the caller then starts it and calls release()
  /// whether or not it could. Two claims of one key never both get fresh.
  /// Fails only with the status `stored` fails with.
  StatusOr<Keyed> claim(const std::string& user, const std::string& key,
                        const std::string& request_hash, const std::string& new_id,
                        const StoredKeyOf& stored);
  /// Ends a fresh claim: its booking is in the store now, or was not started.
  void release(const std::string& user, const std::string& key);

  /// How many claims are in flight (tests).
  size_t claims_for_test() const;

 private:
  std::mutex& claim_mutex(const std::string& user);

  // One user's claims take turns (a mutex per stripe of users), from the
  // lookup to the claim, so that a key is claimed once.
  std::mutex claim_mu_[16];
  mutable std::mutex mu_;
  // "<user>\n<key>" (neither holds a newline: check_id) -> booking.
  std::unordered_map<std::string, Keyed> claimed_;  // GUARDED_BY(mu_)
};

}  // namespace saga::reservation
