// The transport interface: how the orchestrator and participants exchange
// messages. Kafka (librdkafka) in production, MemoryBus in tests/examples.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/message.h"
#include "saga/status.h"

namespace saga {

/// One key a shard commit changed, as the shard's changelog keeps it
/// (docs/sharding.md, "The changelog").
struct ShardChange {
  /// The engine's number for the column family the key lives in.
  uint8_t family = 0;
  /// The key within the shard (without the store's shard prefix).
  std::string key;
  /// The new value; nullopt when the key was deleted.
  std::optional<std::string> value;
};

/// What one shard commit makes durable and visible at once: its changes and
/// the messages it causes.
struct ShardCommit {
  std::vector<ShardChange> changes;
  std::vector<Message> messages;
};

/// A shard's changelog and transactional output, claimed by one owner at a
/// time: a later claim of the same shard fences this one. Used by the one
/// thread that drives the shard.
class ShardLog {
 public:
  /// Receives the log's end offset after a commit, or its error.
  using CommitCallback = std::function<void(StatusOr<uint64_t> end)>;

  virtual ~ShardLog() = default;

  /// Appends `commit.changes` to the log and publishes `commit.messages`,
  /// atomically: both or neither. `done` gets the end offset after the
  /// commit (the offset after its last change; unchanged when it had none);
  /// Aborted when a later claim fenced this one (never emit for the shard
  /// again); another error when the commit failed or its outcome is unknown
  /// (an answer lost): it may have been appended all the same, which the
  /// next read() shows. `done` may run on any thread, even before commit()
  /// returns. At most one commit is outstanding at a time.
  virtual void commit(ShardCommit commit, CommitCallback done) = 0;

  /// Calls fn(change, offset) for every record from offset `from` up to the
  /// end as of the call, in order (offsets may have gaps). Settles a commit
  /// whose outcome was unknown first: Unavailable while it cannot, Aborted
  /// when fenced meanwhile; OutOfRange when `from` is past the end. Not
  /// while a commit is outstanding.
  virtual Status read(uint64_t from,
                      const std::function<void(const ShardChange& change, uint64_t offset)>& fn) = 0;
};

/// Shards of a changelog read without claiming them: a standby replica's
/// copy (docs/replicas.md, "Standby replicas"). One reader follows any number
/// of the log's shards and never fences their owners. Used by one thread at
/// a time.
class ShardTail {
 public:
  /// Receives a record of shard `shard` at `offset`.
  using RecordFn =
      std::function<void(uint32_t shard, const ShardChange& change, uint64_t offset)>;

  virtual ~ShardTail() = default;

  /// Reads shard `shard` from offset `from` on (from there again when it
  /// was followed already).
  virtual Status follow(uint32_t shard, uint64_t from) = 0;
  /// Stops reading shard `shard`; nothing more of it is delivered.
  virtual Status unfollow(uint32_t shard) = 0;
  /// Calls fn for the committed records of the followed shards that have
  /// reached this process, in order within a shard (offsets may have
  /// gaps), and returns without waiting for more.
  virtual Status read(const RecordFn& fn) = 0;
};

/// What a consumer group decides about the partitions of one subscription
/// (docs/replicas.md): which of them this member owns. Partition k of an
/// engine's inbound destination is its shard k. Every callback runs inside
/// poll(), on the polling thread, with the partitions concerned.
struct PartitionListener {
  /// Now this member's: their messages are delivered after the call returns.
  std::function<void(const std::vector<uint32_t>& partitions)> assigned;
  /// Going to another member: return only once nothing more will be done or
  /// emitted for them. Their unacked messages go to the next owner.
  std::function<void(const std::vector<uint32_t>& partitions)> revoked;
  /// Taken without a revocation (this member was presumed dead): another
  /// member may own them already; stop at once. Their unacked messages go to
  /// the next owner and acks of them are ignored.
  std::function<void(const std::vector<uint32_t>& partitions)> lost;
};

/// How to subscribe to a destination that is split into partitions owned by
/// members of a consumer group.
struct PartitionedSubscription {
  /// Partitions of the destination: a message with key K (its saga id when
  /// the key is empty) goes to partition shard_of(K, partitions). Required.
  uint32_t partitions = 0;
  /// Told which partitions this member owns. Required.
  PartitionListener listener;
};

/// One endpoint's connection to the message fabric. Guarantees required of
/// every implementation: at-least-once delivery of a message whose send was
/// confirmed; messages with the same key to the same destination arrive in
/// send order (unless a test asks for reordering).
///
/// Threading: send() is thread-safe. subscribe() is called before the first
/// poll(). Handlers and send callbacks run only inside poll(), on the thread
/// that calls it.
class Transport {
 public:
  /// Tells the transport that the effect of a received message is durable,
  /// so it need not be redelivered (Kafka: the offset may be committed).
  using Ack = std::function<void()>;
  /// Receives one message. Call `ack` once its effect is durable; a message
  /// never acked may be delivered again after a restart.
  using Handler = std::function<void(Message message, Ack ack)>;
  /// Called once with OK when the message is stored by the fabric (Kafka:
  /// delivery report of an acks=all produce), or with an error when it will
  /// not be delivered (the sender keeps it and tries again).
  using SendCallback = std::function<void(Status)>;

  virtual ~Transport() = default;

  /// Routes every message whose destination is `destination` to `handler`.
  virtual Status subscribe(std::string_view destination, Handler handler) = 0;

  /// As subscribe(destination, handler), but `handler` receives only the
  /// messages of the partitions the group assigned to this member, as
  /// `how.listener` is told. Every member of a destination must give the same
  /// partition count (FailedPrecondition otherwise). Unimplemented unless the
  /// transport has consumer groups.
  virtual Status subscribe_partitioned(std::string_view destination, Handler handler,
                                       PartitionedSubscription how) {
    (void)destination, (void)handler, (void)how;
    return Status::unimplemented("this transport has no consumer groups");
  }

  /// Routes every message of the table `destination` to `handler`: this
  /// endpoint reads all of it, outside any consumer group, from its first
  /// message, then each new one as it comes (docs/replicas.md, "Routing").
  /// A table keeps the last message of each key at least (Kafka: a compacted
  /// topic of one partition, created so when missing), in send order; it
  /// suffers none of a fabric's test faults. Messages reach it by send() or
  /// in a shard commit; acks do nothing. Unimplemented unless the transport
  /// has tables.
  virtual Status subscribe_table(std::string_view destination, Handler handler) {
    (void)destination, (void)handler;
    return Status::unimplemented("this transport has no tables");
  }

  /// Sends `message` to `message.destination`. Never blocks for long; the
  /// outcome arrives through `on_sent` during a later poll().
  virtual void send(Message message, SendCallback on_sent) = 0;

  /// Delivers received messages and send confirmations, waiting up to
  /// `max_wait` for the first one. Returns how many it delivered.
  virtual size_t poll(std::chrono::milliseconds max_wait) = 0;

  /// Makes the poll() that is waiting now, or else the next one, return
  /// without waiting out its max_wait: work arrived elsewhere (a start from
  /// another thread) for the thread that polls. Thread-safe, cheap when
  /// repeated. Default: nothing (poll() then waits its max_wait out).
  virtual void wake() {}

  /// OK while the fabric is reachable (readiness).
  virtual Status health() const = 0;

  /// Claims shard `shard` of the changelog named `log`, which has `shards`
  /// shards (fixed when first claimed: another count is FailedPrecondition),
  /// fencing every earlier claim of it. Unimplemented unless the transport
  /// keeps changelogs. The claim must be destroyed before the transport.
  virtual StatusOr<std::unique_ptr<ShardLog>> claim_shard(std::string_view log, uint32_t shard,
                                                          uint32_t shards) {
    (void)log, (void)shard, (void)shards;
    return Status::unimplemented("this transport keeps no shard changelogs");
  }

  /// A reader of the changelog named `log` (of `shards` shards) that
  /// claims nothing. Unimplemented unless the transport keeps changelogs.
  /// The reader must be destroyed before the transport.
  virtual StatusOr<std::unique_ptr<ShardTail>> tail_shards(std::string_view log, uint32_t shards) {
    (void)log, (void)shards;
    return Status::unimplemented("this transport keeps no shard changelogs");
  }
};

}  // namespace saga
