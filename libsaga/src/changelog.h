// The engine side of shard changelogs (docs/sharding.md, "The changelog"),
// shared by the orchestrator and participants: committing a shard's part of
// an iteration to its ShardLog before the local write, and restoring a
// shard's families from its log.
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "saga/status.h"
#include "saga/transport.h"
#include "store/store.h"

namespace saga::internal {

/// Key of a shard's changelog checkpoint in the store's metadata family: the
/// changelog offset (be64) up to which the shard's families agree with it,
/// then the wall-clock time it was written (be64 ms since the epoch).
inline constexpr char kCheckpointKey[] = "saga.changelog";

/// A checkpoint older than this is not trusted: compaction may since have
/// removed a tombstone written after it (Kafka keeps tombstones for the
/// topic's delete.retention.ms, which the Kafka transport sets to 7 days), so
/// replaying from it could leave a deleted key behind. Such a shard is
/// emptied and restored from offset 0.
inline constexpr std::chrono::hours kCheckpointHorizon{24 * 6};

/// The checkpoint value for `offset`, stamped with the current wall-clock time.
std::string checkpoint_value(uint64_t offset);

/// One shard's part of an iteration's commit.
struct ShardPart {
  const Keyspace* ks = nullptr;
  uint32_t shard = 0;
  ShardLog* log = nullptr;
  std::vector<Message> messages;  // what the part's transitions send
  /// Set by commit_shards: the log's end after the commit, or its error
  /// (Aborted: fenced). Unset when the part had nothing to commit.
  std::optional<StatusOr<uint64_t>> result;
};

/// Commits every part (its shard's changes to `families` in `batch`, and its
/// messages) to its log, all at once, and waits for them. Then, when a part
/// failed, rebuilds `batch` with the committed parts' changes only (the
/// families' changes; nothing else is in a batch of an engine that keeps a
/// changelog), and adds each committed part's checkpoint to `batch`. A
/// failed part (Aborted: fenced; else transient) is for the caller to drop
/// or roll back; the returned error is only one of reading the batch.
Status commit_shards(Batch& batch, const ChangelogFamilies& families, uint32_t shards,
                     std::vector<ShardPart>& parts);

/// What a restore did.
struct RestoreStats {
  uint64_t records = 0;  // changelog records applied
  double seconds = 0;    // time it took
  uint64_t end = 0;      // the log offset the shard now agrees with
};

/// Brings the shard of `ks` up to the end of `log`: applies its records
/// from the local checkpoint on (from 0 without one), then writes the new
/// checkpoint. A shard with data but no checkpoint ran without the
/// changelog: its state becomes the log's first commit when the log is
/// empty; FailedPrecondition when it is not. `owner` names the engine in
/// messages and the log; progress is logged every 5 s.
StatusOr<RestoreStats> restore_shard(const Keyspace& ks, const ChangelogFamilies& families,
                                     ShardLog& log, spdlog::logger& logger,
                                     std::string_view owner);

/// A standby copy of the shards an engine does not own (docs/replicas.md,
/// "Standby replicas"): a thread tails their changelogs into the local
/// store, without claiming them, so that a claim restores only what arrived
/// since the last copy. A shard the engine claims or owns is held: the copy
/// leaves it alone until released.
class Standby {
 public:
  /// `log` names the changelog (shard k of it is keyspaces[k]); `owner`
  /// names the engine in the log.
  Standby(Transport& transport, std::string log, std::vector<Keyspace> keyspaces,
          ChangelogFamilies families, std::shared_ptr<spdlog::logger> logger, std::string owner);
  ~Standby();
  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;

  /// Starts the copying thread; stop() (or the destructor) ends it.
  void start();
  void stop();
  /// The engine claims shard `shard`: returns once no copy writes to it.
  void hold(uint32_t shard);
  /// The engine gave shard `shard` up: it is copied again.
  void release(uint32_t shard);
  /// Changelog records copied so far, over every shard.
  uint64_t records() const { return records_; }

 private:
  /// Time between two rounds over the shards.
  static constexpr std::chrono::milliseconds kInterval{50};

  struct Slot {
    std::mutex mu;  // held while the shard is copied
    bool held = false;     // GUARDED_BY(mu)
    bool refused = false;  // GUARDED_BY(mu): local data without a checkpoint
    uint64_t generation = 0;  // GUARDED_BY(mu): holds so far
    // The copying thread's: whether the tail follows the shard, since which
    // hold, and the offset its next record must have.
    bool followed = false;
    uint64_t followed_generation = 0;
    uint64_t next = 0;
  };

  void run();
  Status copy_round();
  std::string shard_name(uint32_t shard) const;

  Transport& transport_;
  const std::string log_;
  const std::vector<Keyspace> keyspaces_;
  const ChangelogFamilies families_;
  const std::shared_ptr<spdlog::logger> logger_;
  const std::string owner_;
  std::vector<Slot> slots_;
  std::unique_ptr<ShardTail> tail_;  // the copying thread's
  std::string last_error_;           // the copying thread's: logged once until it changes
  std::atomic<uint64_t> records_{0};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // GUARDED_BY(stop_mu_)
  std::thread thread_;
};

}  // namespace saga::internal
