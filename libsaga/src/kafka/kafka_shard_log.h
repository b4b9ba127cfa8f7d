// A shard's changelog on Kafka (docs/sharding.md, "The transport side"): one
// transactional producer per shard, whose transactions hold the shard
// commit's changelog records and the messages it causes; reads through a
// read_committed consumer without a group. Only src/kafka/ includes this.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "saga/status.h"
#include "saga/transport.h"

namespace saga::internal::kafka {

/// What a shard log needs from its transport.
struct ShardLogSpec {
  std::string topic;             // the changelog topic; partition = shard
  int32_t partition = 0;         // the shard
  std::string transactional_id;  // one per shard: a later claim fences this one
  // librdkafka properties of the producer and of the reading consumer,
  // complete (bootstrap servers, security, ...); the shard log adds the
  // transactional ones.
  std::map<std::string, std::string> producer_properties;
  std::map<std::string, std::string> consumer_properties;
  // The topic of a message's destination, as Transport::send names it.
  std::function<std::string(std::string_view destination)> topic_for;
  // Called before the first message to `topic`: the transport creates it
  // when it creates topics.
  std::function<void(const std::string& topic)> prepare_topic;
  // Bound on init_transactions and on a read that makes no progress.
  std::chrono::milliseconds timeout{30'000};
  std::shared_ptr<spdlog::logger> log;
};

/// Claims the shard: creates its transactional producer and runs
/// init_transactions, which fences every earlier producer of the same
/// transactional id and settles its open transaction. Unavailable when no
/// broker answers within spec.timeout; InvalidArgument for bad properties.
StatusOr<std::unique_ptr<ShardLog>> claim_kafka_shard(ShardLogSpec spec);

/// Reads the `shards` shards of spec's changelog topic without claiming
/// them (a standby's copy): spec's consumer properties are used (its
/// partition is ignored); nothing is produced.
StatusOr<std::unique_ptr<ShardTail>> tail_kafka_shards(ShardLogSpec spec, uint32_t shards);

}  // namespace saga::internal::kafka
