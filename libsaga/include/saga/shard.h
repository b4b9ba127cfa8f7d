// Shards: which part of an orchestrator or participant a key belongs to.
// docs/sharding.md describes the design.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace saga {

/// The shard count of a new orchestrator or participant store when the
/// options leave it open (0).
inline constexpr uint32_t kDefaultShards = 12;

/// Kafka's murmur2 hash of `bytes` (the Java client's Utils.murmur2, seed
/// 0x9747b28c), as librdkafka's `murmur2` partitioners compute it.
/// Thread-safe; pure.
uint32_t murmur2(std::string_view bytes) noexcept;

/// The shard of `key` among `shards` (> 0): (murmur2(key) & 0x7fffffff) % shards,
/// which is the partition Kafka's default partitioner gives a record keyed by
/// `key` on a topic of `shards` partitions. So with S shards and S partitions,
/// shard k receives exactly the records of partition k. Thread-safe; pure.
uint32_t shard_of(std::string_view key, uint32_t shards) noexcept;

/// Which process drives a shard, as one replica knows it (docs/replicas.md,
/// "Routing"). Plain value.
struct ShardOwner {
  enum class Where {
    kHere,       ///< this process (always, without replicas)
    kElsewhere,  ///< another replica, reachable at `address`
    kUnknown,    ///< moving, or its owner published no address yet
  };
  Where where = Where::kUnknown;
  uint32_t shard = 0;
  /// kElsewhere: the owner's advertised address (its options' `advertised_address`).
  std::string address;
};

}  // namespace saga
