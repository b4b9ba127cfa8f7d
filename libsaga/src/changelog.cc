#include "changelog.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

namespace saga::internal {

std::string checkpoint_value(uint64_t offset) {
  std::string v = be64(offset);
  append_be64(v, static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count()));
  return v;
}

Status commit_shards(Batch& batch, const ChangelogFamilies& families, uint32_t shards,
                     std::vector<ShardPart>& parts) {
  std::vector<std::vector<ShardChange>> changes;
  SAGA_RETURN_IF_ERROR(changes_by_shard(batch, families, shards, &changes));
  std::mutex mu;
  std::condition_variable all_done;
  size_t outstanding = 0;  // GUARDED_BY(mu)
  for (ShardPart& part : parts) {
    part.result.reset();
    if (changes[part.shard].empty() && part.messages.empty()) continue;
    {
      std::lock_guard lock(mu);
      ++outstanding;
    }
    ShardCommit c{std::move(changes[part.shard]), std::move(part.messages)};
    part.messages.clear();
    part.log->commit(std::move(c), [&, p = &part](StatusOr<uint64_t> end) {
      std::lock_guard lock(mu);
      p->result = std::move(end);
      if (--outstanding == 0) all_done.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    all_done.wait(lock, [&] { return outstanding == 0; });
  }
  bool failed = false;
  for (const ShardPart& part : parts) failed = failed || (part.result && !part.result->ok());
  if (failed) {
    SAGA_RETURN_IF_ERROR(changes_by_shard(batch, families, shards, &changes));
    batch.clear();
    for (const ShardPart& part : parts) {
      if (part.result && !part.result->ok()) continue;
      for (const ShardChange& c : changes[part.shard])
        SAGA_RETURN_IF_ERROR(apply_change(*part.ks, batch, families, c));
    }
  }
  for (const ShardPart& part : parts) {
    if (part.result && part.result->ok())
      part.ks->put(batch, part.ks->store().meta(), kCheckpointKey,
                   checkpoint_value(**part.result));
  }
  return ok_status();
}

namespace {

// A shard with local data and no checkpoint: its state becomes the log's
// first commit when the log is empty. Sets `*bootstrapped` when it did.
Status bootstrap(const Keyspace& ks, const ChangelogFamilies& families, ShardLog& log,
                 spdlog::logger& logger, std::string_view owner, bool* bootstrapped) {
  *bootstrapped = false;
  ShardCommit snapshot;
  for (size_t f = 0; f < families.size(); ++f) {
    SAGA_RETURN_IF_ERROR(ks.scan(families[f], "", "", [&](std::string_view k, std::string_view v) {
      snapshot.changes.push_back(ShardChange{static_cast<uint8_t>(f), std::string(k), std::string(v)});
      return true;
    }));
  }
  if (snapshot.changes.empty()) return ok_status();  // a new shard
  bool log_empty = true;
  SAGA_RETURN_IF_ERROR(log.read(0, [&](const ShardChange&, uint64_t) { log_empty = false; }));
  if (!log_empty) {
    return Status::failed_precondition(
        std::string(owner) + ": a shard of store '" + ks.store().dir() +
        "' has data but no changelog checkpoint, and its changelog is not empty: remove the "
        "store to restore it from the changelog");
  }
  const size_t records = snapshot.changes.size();
  std::promise<StatusOr<uint64_t>> done;
  log.commit(std::move(snapshot), [&](StatusOr<uint64_t> end) { done.set_value(std::move(end)); });
  SAGA_ASSIGN_OR_RETURN(uint64_t end, done.get_future().get());
  Batch b;
  ks.put(b, ks.store().meta(), kCheckpointKey, checkpoint_value(end));
  SAGA_RETURN_IF_ERROR(ks.store().write(b));
  logger.info("{}: a shard's local state went to its empty changelog ({} records)", owner, records);
  *bootstrapped = true;
  return ok_status();
}

// Deletes every key of the shard in `families` (its checkpoint stays until
// the restore writes the new one).
Status empty_shard(const Keyspace& ks, const ChangelogFamilies& families) {
  Batch b;
  for (rocksdb::ColumnFamilyHandle* cf : families) {
    Status bad;
    SAGA_RETURN_IF_ERROR(ks.scan(cf, "", "", [&](std::string_view k, std::string_view) {
      ks.del(b, cf, k);
      if (b.count() >= 4096) {
        bad = ks.store().write(b);
        b.clear();
      }
      return bad.ok();
    }));
    SAGA_RETURN_IF_ERROR(bad);
  }
  return ks.store().write(b);
}

}  // namespace

StatusOr<RestoreStats> restore_shard(const Keyspace& ks, const ChangelogFamilies& families,
                                     ShardLog& log, spdlog::logger& logger,
                                     std::string_view owner) {
  using Clock = std::chrono::steady_clock;
  Store& store = ks.store();
  SAGA_ASSIGN_OR_RETURN(auto checkpoint, ks.get(store.meta(), kCheckpointKey));
  uint64_t from = 0;
  if (checkpoint) {
    // 8 bytes: written before checkpoints carried their time (taken as fresh).
    if (checkpoint->size() != 8 && checkpoint->size() != 16)
      return Status::data_loss("undecodable changelog checkpoint");
    from = read_be64(*checkpoint);
    if (checkpoint->size() == 16) {
      const auto written = std::chrono::system_clock::time_point(
          std::chrono::milliseconds(read_be64(std::string_view(*checkpoint).substr(8))));
      const auto age = std::chrono::system_clock::now() - written;
      if (age > kCheckpointHorizon) {
        logger.warn("{}: the local checkpoint (offset {}) is {} h old, older than the changelog "
                    "keeps its tombstones: the shard is emptied and restored from offset 0",
                    owner, from, std::chrono::duration_cast<std::chrono::hours>(age).count());
        SAGA_RETURN_IF_ERROR(empty_shard(ks, families));
        from = 0;
      }
    }
  } else {
    bool bootstrapped = false;
    SAGA_RETURN_IF_ERROR(bootstrap(ks, families, log, logger, owner, &bootstrapped));
    if (bootstrapped) return RestoreStats{};  // the local state is the changelog
  }
  const auto t0 = Clock::now();
  auto next_report = t0 + std::chrono::seconds(5);
  Batch b;
  RestoreStats stats;
  uint64_t end = from;
  Status bad;
  SAGA_RETURN_IF_ERROR(log.read(from, [&](const ShardChange& c, uint64_t offset) {
    if (!bad.ok()) return;
    bad = apply_change(ks, b, families, c);
    end = offset + 1;
    ++stats.records;
    if (bad.ok() && b.count() >= 4096) {
      bad = store.write(b);
      b.clear();
      if (Clock::now() >= next_report) {
        logger.info("{}: restoring, {} changelog records applied (offset {})", owner,
                    stats.records, end);
        next_report += std::chrono::seconds(5);
      }
    }
  }));
  SAGA_RETURN_IF_ERROR(bad);
  ks.put(b, store.meta(), kCheckpointKey, be64(end));
  SAGA_RETURN_IF_ERROR(store.write(b));
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stats.records > 0) {
    logger.info("{}: restored {} changelog records (offsets {}..{}) in {:.3f} s", owner,
                stats.records, from, end, stats.seconds);
  }
  return stats;
}

}  // namespace saga::internal
