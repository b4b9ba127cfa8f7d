// Which offset of each partition the consumer may commit, given acks that can
// arrive in any order, from any thread, and after a partition was revoked.
// No librdkafka types: the store operation is injected.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "saga/status.h"

namespace saga::internal::kafka {

/// A topic and partition.
using TopicPartitionId = std::pair<std::string, int32_t>;

/// Thread-safe. The commit position of a partition is its oldest delivered
/// message not yet acked, or one past the newest acked message when every
/// delivered message is acked: everything before it is durable.
class OffsetTracker {
 public:
  /// Stores `next_offset` (the next offset to consume) as the partition's
  /// commit position. Called with the tracker's mutex held: must be quick and
  /// must not call back into the tracker.
  using StoreFn =
      std::function<Status(const std::string& topic, int32_t partition, int64_t next_offset)>;

  /// What an Ack needs to find its message again.
  struct Token {
    std::string topic;
    int32_t partition = 0;
    int64_t offset = 0;
    /// Which assignment of the partition delivered the message; an ack from an
    /// earlier assignment is void (someone else may own the partition since).
    uint64_t epoch = 0;
  };

  explicit OffsetTracker(StoreFn store) : store_(std::move(store)) {}

  /// The partitions were (re)assigned: start afresh, voiding older tokens.
  void assign(const std::vector<TopicPartitionId>& partitions);
  /// The partitions were revoked: forget them; their tokens become void.
  void revoke(const std::vector<TopicPartitionId>& partitions);
  /// A message is being handed to a handler; returns the token its ack carries.
  Token delivered(const std::string& topic, int32_t partition, int64_t offset);
  /// The message's effect is durable: moves the partition's commit position and
  /// stores it when it advanced. Void tokens and repeated acks do nothing.
  void ack(const Token& token);
  /// From now on ack() does nothing and StoreFn is never called again.
  void detach();

  /// The commit position last stored for a partition, or -1; for tests.
  int64_t stored_for_test(const std::string& topic, int32_t partition) const;

 private:
  struct Partition {
    uint64_t epoch = 0;
    std::set<int64_t> unacked;  // delivered, not acked
    int64_t acked_end = -1;     // one past the newest acked offset
    int64_t stored = -1;        // last position given to store_, or the first delivered offset
  };

  Partition& fresh_locked(const TopicPartitionId& tp);

  const StoreFn store_;
  mutable std::mutex mu_;
  std::map<TopicPartitionId, Partition> partitions_;  // GUARDED_BY(mu_)
  uint64_t next_epoch_ = 1;                           // GUARDED_BY(mu_)
  bool detached_ = false;                             // GUARDED_BY(mu_)
};

}  // namespace saga::internal::kafka
