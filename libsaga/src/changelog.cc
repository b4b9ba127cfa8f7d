#include "changelog.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <map>
#include <optional>

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

namespace {

// Whether the shard has any key in `families`.
StatusOr<bool> has_data(const Keyspace& ks, const ChangelogFamilies& families) {
  bool found = false;
  for (rocksdb::ColumnFamilyHandle* cf : families) {
    SAGA_RETURN_IF_ERROR(ks.scan(cf, "", "", [&](std::string_view, std::string_view) {
      found = true;
      return false;
    }));
    if (found) break;
  }
  return found;
}

// The offset up to which the shard's families agree with its log, from its
// checkpoint; nullopt without one. A checkpoint too old to trust empties the
// shard and reads as 0.
StatusOr<std::optional<uint64_t>> checkpoint_offset(const Keyspace& ks,
                                                    const ChangelogFamilies& families,
                                                    spdlog::logger& logger,
                                                    std::string_view owner) {
  SAGA_ASSIGN_OR_RETURN(auto checkpoint, ks.get(ks.store().meta(), kCheckpointKey));
  if (!checkpoint) return std::optional<uint64_t>();
  // 8 bytes: written before checkpoints carried their time (taken as fresh).
  if (checkpoint->size() != 8 && checkpoint->size() != 16)
    return Status::data_loss("undecodable changelog checkpoint");
  const uint64_t from = read_be64(*checkpoint);
  if (checkpoint->size() == 16) {
    const auto written = std::chrono::system_clock::time_point(
        std::chrono::milliseconds(read_be64(std::string_view(*checkpoint).substr(8))));
    const auto age = std::chrono::system_clock::now() - written;
    if (age > kCheckpointHorizon) {
      logger.warn("{}: the local checkpoint (offset {}) is {} h old, older than the changelog "
                  "keeps its tombstones: the shard is emptied and restored from offset 0",
                  owner, from, std::chrono::duration_cast<std::chrono::hours>(age).count());
      SAGA_RETURN_IF_ERROR(empty_shard(ks, families));
      return std::optional<uint64_t>(0);
    }
  }
  return std::optional<uint64_t>(from);
}

using RecordFn = std::function<void(const ShardChange&, uint64_t)>;

// Applies what `read(from, fn)` delivers to the shard, in batches, then
// writes the checkpoint after the last record (synced per the store's
// option, or not for a standby's copy). Progress is logged every 5 s.
StatusOr<RestoreStats> apply_log(const Keyspace& ks, const ChangelogFamilies& families,
                                 uint64_t from,
                                 const std::function<Status(uint64_t, const RecordFn&)>& read,
                                 bool sync, spdlog::logger& logger, std::string_view owner) {
  using Clock = std::chrono::steady_clock;
  Store& store = ks.store();
  auto write = [&](Batch& b) { return sync ? store.write(b) : store.write_unsynced(b); };
  const auto t0 = Clock::now();
  auto next_report = t0 + std::chrono::seconds(5);
  Batch b;
  RestoreStats stats;
  uint64_t end = from;
  Status bad;
  SAGA_RETURN_IF_ERROR(read(from, [&](const ShardChange& c, uint64_t offset) {
    if (!bad.ok()) return;
    bad = apply_change(ks, b, families, c);
    end = offset + 1;
    ++stats.records;
    if (bad.ok() && b.count() >= 4096) {
      bad = write(b);
      b.clear();
      if (Clock::now() >= next_report) {
        logger.info("{}: restoring, {} changelog records applied (offset {})", owner,
                    stats.records, end);
        next_report += std::chrono::seconds(5);
      }
    }
  }));
  SAGA_RETURN_IF_ERROR(bad);
  if (stats.records > 0 || sync) {
    ks.put(b, store.meta(), kCheckpointKey, checkpoint_value(end));
    SAGA_RETURN_IF_ERROR(write(b));
  }
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stats.end = end;
  return stats;
}

}  // namespace

StatusOr<RestoreStats> restore_shard(const Keyspace& ks, const ChangelogFamilies& families,
                                     ShardLog& log, spdlog::logger& logger,
                                     std::string_view owner) {
  SAGA_ASSIGN_OR_RETURN(std::optional<uint64_t> checkpoint,
                        checkpoint_offset(ks, families, logger, owner));
  if (!checkpoint) {
    bool bootstrapped = false;
    SAGA_RETURN_IF_ERROR(bootstrap(ks, families, log, logger, owner, &bootstrapped));
    if (bootstrapped) return RestoreStats{};  // the local state is the changelog
  }
  const uint64_t from = checkpoint.value_or(0);
  SAGA_ASSIGN_OR_RETURN(
      RestoreStats stats,
      apply_log(ks, families, from,
                [&](uint64_t at, const RecordFn& fn) { return log.read(at, fn); },
                /*sync=*/true, logger, owner));
  if (stats.records > 0) {
    logger.info("{}: restored {} changelog records (offsets {}..{}) in {:.3f} s", owner,
                stats.records, from, stats.end, stats.seconds);
  }
  return stats;
}

// ------------------------------------------------------------------ Standby

Standby::Standby(Transport& transport, std::string log, std::vector<Keyspace> keyspaces,
                 ChangelogFamilies families, std::shared_ptr<spdlog::logger> logger,
                 std::string owner)
    : transport_(transport),
      log_(std::move(log)),
      keyspaces_(std::move(keyspaces)),
      families_(std::move(families)),
      logger_(std::move(logger)),
      owner_(std::move(owner)),
      slots_(keyspaces_.size()) {}

Standby::~Standby() { stop(); }

void Standby::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void Standby::stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  tail_.reset();  // before the transport goes
}

void Standby::hold(uint32_t shard) {
  Slot& slot = slots_.at(shard);
  std::lock_guard lock(slot.mu);  // waits for a copy in progress
  slot.held = true;
  ++slot.generation;
}

void Standby::release(uint32_t shard) {
  Slot& slot = slots_.at(shard);
  std::lock_guard lock(slot.mu);
  slot.held = false;
  slot.refused = false;
}

void Standby::run() {
  for (;;) {
    Status s = copy_round();
    if (!s.ok()) {
      tail_.reset();  // followed again from the checkpoints next time
      for (Slot& slot : slots_) slot.followed = false;
      if (s.to_string() != last_error_) {
        logger_->warn("{}: standby copy: {}", owner_, s.to_string());
        last_error_ = s.to_string();
      }
    } else {
      last_error_.clear();
    }
    std::unique_lock lock(stop_mu_);
    if (stop_cv_.wait_for(lock, kInterval, [&] { return stopping_; })) return;
  }
}

std::string Standby::shard_name(uint32_t shard) const {
  return owner_ + " shard " + std::to_string(shard) + " (standby)";
}

Status Standby::copy_round() {
  const auto shards = static_cast<uint32_t>(slots_.size());
  if (!tail_) {
    SAGA_ASSIGN_OR_RETURN(tail_, transport_.tail_shards(log_, shards));
  }
  // Follow the shards the engine does not hold, from their checkpoints; let
  // go of those it took (or took and gave back: they start again from the
  // engine's checkpoint).
  for (uint32_t k = 0; k < shards; ++k) {
    Slot& slot = slots_[k];
    std::lock_guard lock(slot.mu);
    const bool wanted = !slot.held && !slot.refused;
    if (slot.followed && (!wanted || slot.generation != slot.followed_generation)) {
      SAGA_RETURN_IF_ERROR(tail_->unfollow(k));
      slot.followed = false;
    }
    if (!wanted || slot.followed) continue;
    const Keyspace& ks = keyspaces_[k];
    SAGA_ASSIGN_OR_RETURN(std::optional<uint64_t> checkpoint,
                          checkpoint_offset(ks, families_, *logger_, shard_name(k)));
    if (!checkpoint) {
      SAGA_ASSIGN_OR_RETURN(bool data, has_data(ks, families_));
      if (data) {  // ran without the changelog: only its owner's claim may settle it
        logger_->warn("{}: local data without a changelog checkpoint; not copied", shard_name(k));
        slot.refused = true;
        continue;
      }
    }
    slot.next = checkpoint.value_or(0);
    SAGA_RETURN_IF_ERROR(tail_->follow(k, slot.next));
    slot.followed = true;
    slot.followed_generation = slot.generation;
  }
  // What arrived, applied shard by shard unless the engine took the shard
  // meanwhile (then it restores from its checkpoint, and the copy lets go).
  std::map<uint32_t, std::vector<std::pair<ShardChange, uint64_t>>> arrived;
  SAGA_RETURN_IF_ERROR(tail_->read([&](uint32_t k, const ShardChange& c, uint64_t offset) {
    arrived[k].emplace_back(c, offset);
  }));
  for (const auto& entry : arrived) {
    const uint32_t k = entry.first;
    const auto& records = entry.second;  // a plain reference: lambdas below capture it
    Slot& slot = slots_[k];
    std::lock_guard lock(slot.mu);
    if (slot.held || !slot.followed || slot.generation != slot.followed_generation) continue;
    SAGA_ASSIGN_OR_RETURN(
        RestoreStats stats,
        apply_log(keyspaces_[k], families_, slot.next,
                  [&](uint64_t, const RecordFn& fn) {
                    for (const auto& [change, offset] : records) fn(change, offset);
                    return ok_status();
                  },
                  /*sync=*/false, *logger_, shard_name(k)));
    logger_->debug("{}: copied {} records (offsets {}..{})", shard_name(k), stats.records,
                   slot.next, stats.end);
    slot.next = stats.end;
    records_ += stats.records;
  }
  return ok_status();
}

}  // namespace saga::internal
