// The owners table of an engine with replicas (docs/replicas.md, "Routing"):
// every replica publishes "shard k -> my address" in the first commit after
// it claims shard k, and reads every replica's records, so that it can tell
// a caller where a shard it does not own is driven.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "saga/message.h"
#include "saga/shard.h"
#include "saga/status.h"
#include "saga/transport.h"

namespace saga::internal {

class OwnerTable {
 public:
  /// The table of engine `engine` (destination "<engine>.owners") with
  /// `shards` shards; this process publishes `address`.
  OwnerTable(std::string engine, uint32_t shards, std::string address);

  /// Reads the table through `transport` from now on.
  Status subscribe(Transport& transport);

  /// The record saying that this process owns `shard` since `now_ms`. It
  /// goes out in the shard's transactional commit, so an owner that a later
  /// claim fenced cannot publish it any more.
  Message claim_record(uint32_t shard, int64_t now_ms) const;

  /// Where `shard` is driven: here when `owned_here`, else the newest record
  /// of another process, else unknown. Thread-safe.
  ShardOwner lookup(uint32_t shard, bool owned_here) const;

  /// Shards whose owner no record has named yet (all of them until the
  /// table is read; none once every shard was claimed once). Thread-safe.
  uint32_t unknown() const;

  /// Unavailable naming `engine` while unknown() > 0 (a replica is ready to
  /// answer for any shard once it knows where each is); OK after.
  Status readiness(std::string_view engine) const;

  /// Applies one record of the table (malformed ones are ignored and logged
  /// by the caller through the status). Thread-safe.
  Status apply(const Message& record);

 private:
  struct Entry {
    std::string instance;  // empty: no record yet
    std::string address;
  };

  const std::string destination_;
  const std::string address_;
  const std::string instance_;  // this process, random per open
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // GUARDED_BY(mu_), one per shard
};

}  // namespace saga::internal
