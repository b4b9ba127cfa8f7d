// Sweeps of expired keys, shared by the orchestrator (finished sagas, domain
// records) and participants (inbox records, state with an expiry): keys that
// sort by the time they expire, removed a bounded number per engine iteration.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "saga/status.h"
#include "store/store.h"

namespace saga::internal {

/// One shard's sweep of one kind of key.
struct Sweep {
  int64_t next_ms = 0;   ///< when the next one starts
  std::string from;      ///< a running sweep goes on from this key ("" = none running)
  uint64_t removed = 0;  ///< removed by the running sweep so far
};

/// One step of `sw` over the keys of `cf` in `ks` that start with `prefix`
/// and sort before `upto`: when no sweep runs, one starts if `now_ms` has
/// reached sw.next_ms (the next then starts `interval_ms` later); a running
/// one calls remove(key, value) for up to `budget` keys, in key order, takes
/// them from `budget`, and stops where it is to go on at the next step.
/// Returns how many keys it removed; `done` says whether the sweep ended
/// (sw.removed then holds its total, for the caller to log and reset).
template <typename Remove>
StatusOr<uint64_t> sweep_step(const Keyspace& ks, rocksdb::ColumnFamilyHandle* cf, Sweep& sw,
                              std::string_view prefix, std::string_view upto, int64_t now_ms,
                              int64_t interval_ms, size_t& budget, bool& done,
                              const Remove& remove) {
  done = false;
  if (sw.from.empty() && now_ms < sw.next_ms) return uint64_t{0};
  if (sw.from.empty()) {
    sw.next_ms = now_ms + interval_ms;
    sw.from = prefix;
  }
  size_t removed = 0;
  bool more = false;
  std::string last;
  Status s = ks.scan(cf, prefix, sw.from, [&](std::string_view key, std::string_view value) {
    if (key >= upto) return false;
    if (removed == budget) {
      more = true;
      return false;
    }
    remove(key, value);
    last = key;
    ++removed;
    return true;
  });
  sw.removed += removed;
  budget -= removed;
  if (more && s.ok()) {
    if (!last.empty()) sw.from = last + '\0';  // the next key after it
  } else {
    sw.from.clear();
    done = true;
  }
  if (!s.ok()) return s;
  return uint64_t{removed};
}

}  // namespace saga::internal
