// An in-process message fabric for unit tests and examples. It can drop,
// duplicate, delay and reorder messages on command, driven by a seed and an
// injected clock, so a failing run replays exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "saga/clock.h"
#include "saga/transport.h"

namespace saga {

/// Faults applied to each message when it is sent. Probabilities are in [0, 1].
struct FaultOptions {
  /// Chance a message vanishes after its send was confirmed. Default 0.
  double drop = 0;
  /// Chance a message is delivered twice. Default 0.
  double duplicate = 0;
  /// Chance a message is held back for a uniform time in (0, max_delay]. Default 0.
  double delay = 0;
  /// Longest hold-back of a delayed message. Default 200 ms.
  Duration max_delay{200};
  /// Chance a message is queued ahead of those already waiting. Default 0.
  double reorder = 0;
  /// Chance a shard commit is appended (and its messages published) but
  /// reported Unavailable, as when Kafka's answer to a commit is lost: the
  /// committer cannot tell it from a commit that failed. Default 0.
  double commit_in_doubt = 0;
};

/// Counters of what the bus did; for assertions in tests.
struct BusStats {
  uint64_t sent = 0;       ///< sends accepted
  uint64_t delivered = 0;  ///< handler invocations
  uint64_t dropped = 0;
  uint64_t duplicated = 0;
  uint64_t delayed = 0;
  uint64_t reordered = 0;
  uint64_t redelivered = 0;  ///< unacked messages requeued when an endpoint closed
  uint64_t commits_in_doubt = 0;  ///< shard commits appended but reported Unavailable
  uint64_t rebalances = 0;        ///< partitions that changed owner in a consumer group
};

/// The shared fabric. Endpoints made by connect() exchange messages through
/// it. Messages to a destination nobody subscribes to yet wait until someone
/// does (like a topic). It also keeps shard changelogs in memory
/// (Transport::claim_shard): each shard's records, and an epoch per claim so
/// that a later claim fences an earlier one; a commit's messages go through
/// the same faults as sends. Consumer groups (Transport::subscribe_partitioned):
/// the endpoints that subscribe to one destination that way share its
/// partitions, as Kafka's cooperative-sticky assignor would: a member that
/// joins takes a fair share, revoked from the others first (their `revoked`
/// returns before the new owner's `assigned` is called); the partitions of a
/// member that closes or expires go to the others at once. Tables
/// (Transport::subscribe_table): every message sent to a destination that
/// somebody reads as a table is kept, free of faults, and each reader gets
/// all of them in send order. Thread-safe.
class MemoryBus : public std::enable_shared_from_this<MemoryBus> {
 public:
  /// `clock` decides when delayed messages become due; `seed` drives faults.
  static std::shared_ptr<MemoryBus> create(std::shared_ptr<Clock> clock, uint64_t seed);
  virtual ~MemoryBus() = default;

  /// A new endpoint. Destroying it returns the messages it received but never
  /// acked to the front of their queues (as a Kafka consumer that died before
  /// committing would see them again).
  virtual std::unique_ptr<Transport> connect(std::string name) = 0;

  /// Replaces the fault settings (applies to messages sent from now on).
  virtual void set_faults(const FaultOptions& faults) = 0;

  /// Simulates the fabric going away (false) and coming back (true). While
  /// unavailable, sends fail with Unavailable and health() says so.
  virtual void set_available(bool available) = 0;

  /// Messages accepted but not yet delivered (including delayed ones).
  virtual size_t pending() const = 0;

  virtual BusStats stats() const = 0;

  /// Records in shard `shard` of changelog `log` (0 when it has none).
  virtual uint64_t log_end(const std::string& log, uint32_t shard) const = 0;

  /// Simulates the consumer-group session of every endpoint named `endpoint`
  /// expiring (a paused or cut-off process): its partitions go to the other
  /// members at once, it is told they are `lost` at its next poll(), and it
  /// then joins again like a new member.
  virtual void expire(std::string_view endpoint) = 0;

  /// Owner of each partition of the partitioned `destination`, by endpoint
  /// name ("" while a partition has none or is being handed over).
  virtual std::vector<std::string> owners(std::string_view destination) const = 0;
};

}  // namespace saga
