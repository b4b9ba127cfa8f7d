// Offline resharding (saga/reshard.h): read a stopped engine's store shard by
// shard and write each record into the shard of a new store that the new
// count gives it. docs/storage.md has the key formats this relies on.
#include "saga/reshard.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "changelog.h"
#include "outbox.h"
#include "records.h"
#include "saga/shard.h"
#include "store/families.h"
#include "store/store.h"

namespace saga {
namespace internal {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

// Records per write into the new store.
constexpr size_t kBatchRecords = 4096;

std::shared_ptr<spdlog::logger> logger_named(const std::string& name) {
  auto log = spdlog::get(name);
  return log ? log : spdlog::default_logger()->clone(name);
}

// `dir` holds a store whose column families are exactly `families` (plus
// default): anything else is another kind of store, which opening it with
// our families would change (RocksDB would add the missing ones).
Status check_source(const std::string& dir, const std::vector<std::string>& families,
                    std::string_view kind) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return Status::not_found("source store " + dir + " does not exist");
  if (!fs::exists(fs::path(dir) / "CURRENT", ec))
    return Status::not_found("source " + dir + " holds no store (no CURRENT file)");
  std::vector<std::string> names;
  Status s = from_rocksdb(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names),
                          "list column families of " + dir);
  if (!s.ok()) return s;
  std::set<std::string> have(names.begin(), names.end());
  std::set<std::string> want(families.begin(), families.end());
  want.insert(rocksdb::kDefaultColumnFamilyName);
  if (have != want) {
    std::string list;
    for (const std::string& n : have) list += (list.empty() ? "" : ", ") + n;
    return Status::failed_precondition("source " + dir + " is not " + std::string(kind) +
                                       " store (its column families: " + list + ")");
  }
  return ok_status();
}

// The destination must not exist or be an empty folder.
Status check_destination(const std::string& dir) {
  std::error_code ec;
  const bool exists = fs::exists(dir, ec);
  if (ec) return Status::failed_precondition("cannot inspect destination " + dir + ": " + ec.message());
  if (!exists) return ok_status();
  if (!fs::is_directory(dir, ec))
    return Status::failed_precondition("destination " + dir + " exists and is not a folder");
  if (!fs::is_empty(dir, ec) || ec)
    return Status::failed_precondition("destination " + dir +
                                       " exists and is not empty: give a new folder");
  return ok_status();
}

// Writes records into the shards of the new store, kBatchRecords at a time,
// counting them per family and logging progress every 5 s.
class Copier {
 public:
  Copier(Store& dst, const std::vector<std::string>& families, spdlog::logger& log)
      : dst_(dst), families_(families), log_(log), next_seq_(dst.shards(), 1) {
    for (uint32_t k = 0; k < dst.shards(); ++k) shards_.emplace_back(dst, k);
  }

  uint32_t shards() const { return dst_.shards(); }

  Status put(size_t family, uint32_t shard, std::string_view key, std::string_view value) {
    shards_[shard].put(batch_, dst_.cf(family), key, value);
    ++stats_.records[families_[family]];
    return batch_.count() >= kBatchRecords ? flush() : ok_status();
  }
  // An outbox record: appended to the shard's sequence, so records keep the
  // order in which they are given.
  Status put_outbox(size_t family, uint32_t shard, std::string_view value) {
    return put(family, shard, be64(next_seq_[shard]++), value);
  }
  void skip(size_t family) { ++stats_.skipped[families_[family]]; }

  Status flush() {
    SAGA_RETURN_IF_ERROR(dst_.write(batch_));
    batch_.clear();
    if (SteadyClock::now() >= next_report_) {
      log_.info("resharding: {} records so far, {:.1f} s", counts(), seconds());
      next_report_ += std::chrono::seconds(5);
    }
    return ok_status();
  }

  std::string counts() const {
    std::string out;
    for (const std::string& f : families_) {
      auto it = stats_.records.find(f);
      out += (out.empty() ? "" : ", ") + f + " " +
             std::to_string(it == stats_.records.end() ? 0 : it->second);
    }
    return out;
  }
  double seconds() const { return std::chrono::duration<double>(SteadyClock::now() - t0_).count(); }
  ReshardStats& stats() { return stats_; }

 private:
  Store& dst_;
  const std::vector<std::string>& families_;
  spdlog::logger& log_;
  std::vector<Keyspace> shards_;
  std::vector<uint64_t> next_seq_;
  Batch batch_;
  ReshardStats stats_;
  const SteadyClock::time_point t0_ = SteadyClock::now();
  SteadyClock::time_point next_report_ = t0_ + std::chrono::seconds(5);
};

// Calls fn(key, value) for every record of `cf` in old shard `ks`, stopping
// at the first error, which it returns.
Status each(const Keyspace& ks, rocksdb::ColumnFamilyHandle* cf,
            const std::function<Status(std::string_view, std::string_view)>& fn) {
  Status bad;
  SAGA_RETURN_IF_ERROR(ks.scan(cf, "", "", [&](std::string_view k, std::string_view v) {
    bad = fn(k, v);
    return bad.ok();
  }));
  return bad;
}

// The part common to both kinds: checks, opening both stores, `copy`, the
// final sync and the rename into place; on failure nothing is left at the
// destination (an empty folder given as one stays as it was).
StatusOr<ReshardStats> run(const ReshardOptions& o, const std::vector<std::string>& families,
                           std::string_view kind,
                           const std::function<Status(Store& src, Copier& out)>& copy) {
  if (o.from.empty()) return Status::invalid_argument("reshard: the source folder is empty");
  if (o.to.empty()) return Status::invalid_argument("reshard: the destination folder is empty");
  if (o.shards == 0 || o.shards > kMaxShards)
    return Status::invalid_argument("reshard: the shard count must be in 1.." +
                                    std::to_string(kMaxShards) + ", not " +
                                    std::to_string(o.shards));
  SAGA_RETURN_IF_ERROR(check_source(o.from, families, kind));
  SAGA_RETURN_IF_ERROR(check_destination(o.to));

  auto src = Store::open(o.from, families, /*sync=*/false, {.wanted = 0, .for_new_store = 1});
  if (!src.ok()) {
    if (src.status().code() == StatusCode::kDataLoss) return src.status();
    return Status::failed_precondition("cannot open source store " + o.from +
                                       " (is its engine still running?): " +
                                       src.status().to_string());
  }
  Store& source = **src;
  // The metadata family (shard count, checkpoints) is never copied: the new
  // store gets its own count, and no checkpoint, whatever the source had.
  for (uint32_t k = 0; k < source.shards() && !o.drop_changelog; ++k) {
    SAGA_ASSIGN_OR_RETURN(auto checkpoint, Keyspace(source, k).get(source.meta(), kCheckpointKey));
    if (checkpoint) {
      return Status::failed_precondition(
          "source store " + o.from + " ran with the changelog (shard " + std::to_string(k) +
          " has a checkpoint): its changelog topic cannot serve another shard count. Start "
          "the service once so that it catches up with the changelog, stop it, then reshard "
          "with --drop-changelog and recreate the topic (docs/storage.md, \"Changing the shard "
          "count\")");
    }
  }

  // The copy is written beside the destination and renamed to it once
  // complete and synced, so that an interrupted run (a kill) never leaves a
  // store at `to` that an engine would open with part of the data.
  fs::path to = fs::path(o.to).lexically_normal();
  if (!to.has_filename()) to = to.parent_path();
  const std::string partial = to.string() + ".saga-reshard-partial";
  std::error_code ec;
  if (fs::exists(partial, ec))
    return Status::failed_precondition(partial + " exists, left by an interrupted reshard: "
                                       "remove it and run the reshard again");
  auto log = logger_named(o.logger);
  auto opened = Store::open(partial, families, /*sync=*/false,
                            {.wanted = o.shards, .for_new_store = o.shards});
  if (!opened.ok()) {
    fs::remove_all(partial, ec);
    return opened.status();
  }
  std::unique_ptr<Store> dst = std::move(*opened);
  log->info("resharding {} store {} ({} shards) into {} ({} shards)", kind, o.from,
            source.shards(), o.to, o.shards);
  Copier out(*dst, families, *log);
  Status s = copy(source, out);
  if (s.ok()) s = out.flush();
  if (s.ok()) s = dst->sync_wal();
  dst.reset();  // closed before the rename
  if (s.ok()) {
    // rename(2) replaces an empty folder: `to` may be one.
    fs::rename(partial, to, ec);
    if (ec) s = Status::unavailable("cannot rename " + partial + " to " + o.to + ": " + ec.message());
  }
  if (!s.ok()) {
    fs::remove_all(partial, ec);
    log->error("resharding {} failed, nothing written to {}: {}", o.from, o.to, s.to_string());
    return s;
  }
  const std::string counts = out.counts();
  ReshardStats stats = std::move(out.stats());
  stats.from_shards = source.shards();
  stats.seconds = out.seconds();
  uint64_t total = 0;
  for (const auto& [f, n] : stats.records) total += n;
  log->info("resharded {} ({} shards) into {} ({} shards): {} records copied ({}) in {:.3f} s",
            o.from, source.shards(), o.to, o.shards, total, counts, stats.seconds);
  for (const auto& [f, n] : stats.skipped)
    log->warn("{} undecodable {} record(s) of {} left out (an engine skips them on open too)", n,
              f, o.from);
  return stats;
}

// ------------------------------------------------------------ orchestrator

enum OrchCf : size_t { kInstances = 0, kOutbox, kTimers, kReplies, kIndex };

// The saga id in an index key (docs/storage.md, "index").
StatusOr<std::string_view> index_saga_id(std::string_view key) {
  size_t id_at = std::string_view::npos;
  if (!key.empty()) {
    switch (key[0]) {
      case 'a':
      case 'x':
        id_at = 1 + 8;
        break;
      case 's':
        id_at = 1 + 1 + 8;
        break;
      case 't':
        if (size_t nul = key.find('\0', 1); nul != std::string_view::npos) id_at = nul + 1 + 8;
        break;
      default:
        break;
    }
  }
  if (id_at == std::string_view::npos || id_at >= key.size())
    return Status::data_loss("undecodable index key (" + std::to_string(key.size()) + " bytes)");
  return key.substr(id_at);
}

Status copy_orchestrator(Store& src, Copier& out) {
  const uint32_t n = out.shards();
  std::set<std::string, std::less<>> shapes;  // shape records: each new shard gets every one once
  for (uint32_t k = 0; k < src.shards(); ++k) {
    const Keyspace old(src, k);
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kInstances), [&](std::string_view id, std::string_view v) {
      return out.put(kInstances, shard_of(id, n), id, v);
    }));
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kIndex), [&](std::string_view key, std::string_view v) {
      if (!key.empty() && key[0] == 'd') {
        if (!shapes.emplace(key).second) return ok_status();
        for (uint32_t to = 0; to < n; ++to) SAGA_RETURN_IF_ERROR(out.put(kIndex, to, key, v));
        return ok_status();
      }
      // Domain records follow their shard keys: the record's, kept in its
      // value and in its expiry key's.
      if (!key.empty() && key[0] == kIdxRecord) {
        std::optional<Record> r = decode_record(key.substr(1), v);
        if (!r) return Status::data_loss("undecodable record");
        return out.put(kIndex, shard_of(r->shard_key, n), key, v);
      }
      if (!key.empty() && key[0] == kIdxRecordExpiry) return out.put(kIndex, shard_of(v, n), key, v);
      SAGA_ASSIGN_OR_RETURN(std::string_view id, index_saga_id(key));
      return out.put(kIndex, shard_of(id, n), key, v);
    }));
    // Legacy families, still read (timers: dropped on open; marks: ignored).
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kTimers), [&](std::string_view key, std::string_view v) {
      if (key.size() <= 8) return Status::data_loss("undecodable timer key");
      return out.put(kTimers, shard_of(key.substr(8), n), key, v);
    }));
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kReplies), [&](std::string_view key, std::string_view v) {
      const size_t nul = key.find('\0');
      if (nul == std::string_view::npos || nul == 0) return Status::data_loss("undecodable reply mark");
      return out.put(kReplies, shard_of(key.substr(0, nul), n), key, v);
    }));
    // Commands and events of a saga, in their sequence order.
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kOutbox), [&](std::string_view, std::string_view v) {
      StatusOr<Message> m = decode_outbox_record(v);
      if (!m.ok()) {
        out.skip(kOutbox);
        return ok_status();
      }
      return out.put_outbox(kOutbox, shard_of(m->saga_id.empty() ? m->key : m->saga_id, n), v);
    }));
  }
  return ok_status();
}

// ------------------------------------------------------------- participant

enum PartCf : size_t { kState = 0, kInbox, kPartOutbox };

class SourceState final : public ReshardSource {
 public:
  explicit SourceState(Store& src) {
    for (uint32_t k = 0; k < src.shards(); ++k) shards_.emplace_back(src, k);
  }
  StatusOr<std::optional<std::string>> get(std::string_view key) const override {
    for (const Keyspace& ks : shards_) {
      SAGA_ASSIGN_OR_RETURN(auto v, ks.get(ks.store().cf(kState), key));
      if (v) return v;
    }
    return std::optional<std::string>();
  }
  const std::vector<Keyspace>& shards() const { return shards_; }

 private:
  std::vector<Keyspace> shards_;
};

Status copy_participant(Store& src, Copier& out, const ShardKeyFn& shard_key) {
  const uint32_t n = out.shards();
  const SourceState source(src);
  // State, merged across the old shards so that a key several of them hold
  // comes in a row: each copy must land in a shard of its own.
  {
    Status bad;
    std::string last;
    std::set<uint32_t> taken;  // new shards `last` went to
    SAGA_RETURN_IF_ERROR(scan_merged(
        source.shards(), src.cf(kState), "", "", [&](std::string_view key, std::string_view v) {
          StatusOr<std::string> k = shard_key(key, v, source);
          if (!k.ok()) {
            bad = Status(k.status().code(), "state key '" + std::string(key) +
                                                "' cannot be placed: " + k.status().message());
            return false;
          }
          const uint32_t shard = shard_of(*k, n);
          if (key != last) {
            last.assign(key);
            taken.clear();
          }
          if (!taken.insert(shard).second) {
            bad = Status::failed_precondition(
                "state key '" + std::string(key) +
                "' is held by several old shards and two of its copies go to new shard " +
                std::to_string(shard) + ": their values cannot be merged");
            return false;
          }
          bad = out.put(kState, shard, key, v);
          return bad.ok();
        }));
    SAGA_RETURN_IF_ERROR(bad);
  }
  // Inbox: a record does not name its command's key, so it goes everywhere
  // (once: a store resharded before holds copies of it in several shards,
  // all equal, since a shard writes a command's record only when it has none).
  {
    Status bad;
    std::string last;
    bool first = true;
    SAGA_RETURN_IF_ERROR(scan_merged(
        source.shards(), src.cf(kInbox), "", "", [&](std::string_view id, std::string_view v) {
          if (!first && id == last) return true;
          first = false;
          last.assign(id);
          for (uint32_t k = 0; k < n && bad.ok(); ++k) bad = out.put(kInbox, k, id, v);
          return bad.ok();
        }));
    SAGA_RETURN_IF_ERROR(bad);
  }
  // Replies and events, by their message key, in their order.
  for (const Keyspace& old : source.shards()) {
    SAGA_RETURN_IF_ERROR(each(old, src.cf(kPartOutbox), [&](std::string_view, std::string_view v) {
      StatusOr<Message> m = decode_outbox_record(v);
      if (!m.ok()) {
        out.skip(kPartOutbox);
        return ok_status();
      }
      return out.put_outbox(kPartOutbox, shard_of(m->key.empty() ? m->saga_id : m->key, n), v);
    }));
  }
  return ok_status();
}

}  // namespace
}  // namespace internal

StatusOr<ReshardStats> reshard_orchestrator(const ReshardOptions& options) {
  return internal::run(options, internal::kOrchestratorFamilies, "an orchestrator",
                       internal::copy_orchestrator);
}

StatusOr<ReshardStats> reshard_participant(const ReshardOptions& options,
                                           const ShardKeyFn& shard_key) {
  if (!shard_key) return Status::invalid_argument("reshard: no shard key function");
  return internal::run(options, internal::kParticipantFamilies, "a participant",
                       [&](internal::Store& src, internal::Copier& out) {
                         return internal::copy_participant(src, out, shard_key);
                       });
}

StatusOr<ReshardCommand> parse_reshard_command(const std::vector<std::string>& args) {
  ReshardCommand c;
  std::set<std::string> seen;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "--help" || flag == "-h") {
      c.help = true;
      return c;
    }
    if (flag == "--drop-changelog") {
      if (!seen.insert(flag).second) return Status::invalid_argument(flag + " given twice");
      c.options.drop_changelog = true;
      continue;
    }
    if (flag != "--from" && flag != "--to" && flag != "--shards" && flag != "--kind")
      return Status::invalid_argument("unknown argument '" + flag + "'");
    if (!seen.insert(flag).second) return Status::invalid_argument(flag + " given twice");
    if (i + 1 >= args.size()) return Status::invalid_argument(flag + " needs a value");
    const std::string& value = args[++i];
    if (flag == "--from") {
      c.options.from = value;
    } else if (flag == "--to") {
      c.options.to = value;
    } else if (flag == "--kind") {
      if (value != "orchestrator" && value != "participant")
        return Status::invalid_argument("--kind must be orchestrator or participant, not '" +
                                        value + "'");
      c.kind = value;
    } else {
      uint64_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n == 0 || n > kMaxShards)
        return Status::invalid_argument("--shards must be a number in 1.." +
                                        std::to_string(kMaxShards) + ", not '" + value + "'");
      c.options.shards = static_cast<uint32_t>(n);
    }
  }
  for (const char* required : {"--from", "--to", "--shards"}) {
    if (!seen.count(required)) return Status::invalid_argument(std::string(required) + " is required");
  }
  return c;
}

std::string reshard_usage(std::string_view program) {
  return "usage: " + std::string(program) +
         " --from DIR --to NEW_DIR --shards N [--kind orchestrator|participant]\n"
         "       [--drop-changelog]\n"
         "Copies the store of a STOPPED engine in DIR into a new store in NEW_DIR (which must\n"
         "not exist or be empty) with N shards (1.." +
         std::to_string(kMaxShards) +
         "). A store that ran with the changelog is refused\n"
         "unless --drop-changelog: its topic must then be deleted and recreated. The whole\n"
         "procedure is in docs/storage.md, \"Changing the shard count\".\n";
}

}  // namespace saga
