#include "store/store.h"

#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>

#include <filesystem>
#include <system_error>

namespace saga::internal {

std::string be64(uint64_t v) {
  std::string out;
  append_be64(out, v);
  return out;
}

void append_be64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

uint64_t read_be64(std::string_view p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

Status from_rocksdb(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return ok_status();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::not_found(std::move(msg));
  if (s.IsCorruption()) return Status::data_loss(std::move(msg));
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Status::unavailable(std::move(msg));
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNoSpace)
    return Status::resource_exhausted(std::move(msg));
  if (s.IsInvalidArgument()) return Status::invalid_argument(std::move(msg));
  return Status::internal(std::move(msg));
}

namespace {

StatusOr<uint32_t> parse_shards(const std::string& text, const std::string& dir) {
  uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9' || n > 100'000) {
      n = 0;
      break;
    }
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n == 0) return Status::data_loss("store " + dir + ": unreadable shard count '" + text + "'");
  return n;
}

}  // namespace

StatusOr<std::unique_ptr<Store>> Store::open(const std::string& dir,
                                             const std::vector<std::string>& column_families,
                                             bool sync, ShardCount shards) {
  if (dir.empty()) return Status::invalid_argument("store directory is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::unavailable("cannot create store directory " + dir + ": " + ec.message());
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  options.IncreaseParallelism(2);
  // Many small transitions: keep the memtable roomy and let the WAL do the durability work.
  options.write_buffer_size = 32 << 20;
  options.max_total_wal_size = 256 << 20;
  // Most reads are point lookups of keys that are absent (inbox and reply
  // marks of new messages): bloom filters answer those without a search.
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Table files that RocksDB 6.6 and later read (Debian's 7.8.3 among them),
  // so a store moves both ways between it and one built from source
  // (scripts/rocksdb: 9.9.3, whose default 6 an older version cannot read).
  table.format_version = 5;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  options.memtable_whole_key_filtering = true;
  options.memtable_prefix_bloom_size_ratio = 0.05;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName,
                           rocksdb::ColumnFamilyOptions(options));
  for (const std::string& name : column_families) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
  }
  std::unique_ptr<Store> store(new Store());
  store->dir_ = dir;
  store->sync_ = sync;
  rocksdb::DB* raw = nullptr;
  Status s = from_rocksdb(
      rocksdb::DB::Open(rocksdb::DBOptions(options), dir, descriptors, &store->handles_, &raw),
      "open store " + dir);
  if (!s.ok()) return s;
  store->db_.reset(raw);

  // The shard count: the stored one; else 1 for a store with data (written
  // before shards existed); else, for a new store, the caller's.
  SAGA_ASSIGN_OR_RETURN(auto stored, store->get(store->handles_[0], kShardsKey));
  bool empty = !stored.has_value();
  for (size_t i = 0; empty && i <= column_families.size(); ++i) {  // default (metadata) too
    SAGA_ASSIGN_OR_RETURN(auto last, store->last_key(store->handles_[i]));
    empty = !last.has_value();
  }
  if (empty) {
    const uint32_t count = shards.wanted != 0 ? shards.wanted : shards.for_new_store;
    if (count == 0) return Status::invalid_argument("shard count must be at least 1");
    if (count != 1) {
      rocksdb::WriteOptions wo;
      wo.sync = true;
      SAGA_RETURN_IF_ERROR(
          from_rocksdb(store->db_->Put(wo, std::string(kShardsKey), std::to_string(count)),
                       "write shard count of " + dir));
    }
    store->shards_ = count;
    return store;
  }
  SAGA_ASSIGN_OR_RETURN(store->shards_, parse_shards(stored.value_or("1"), dir));
  if (shards.wanted != 0 && shards.wanted != store->shards_) {
    return Status::failed_precondition(
        "store " + dir + " was written with " + std::to_string(store->shards_) +
        " shard(s), not " + std::to_string(shards.wanted) +
        "; open it with that count, or move it to another count offline (docs/storage.md)");
  }
  return store;
}

Store::~Store() {
  if (!db_) return;
  for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  handles_.clear();
  (void)db_->Close();
}

namespace {
// RocksDB counts every key comparison in a thread-local perf context unless
// told not to (the default level is kEnableCount); libsaga never reads those
// counters, and on the memtable insert path they cost ~8% of the engine's CPU.
void disable_perf_counters() {
  thread_local bool done = false;
  if (!done) {
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
    done = true;
  }
}
}  // namespace

namespace {

Status write_batch(rocksdb::DB& db, Batch& batch, bool sync) {
  if (batch.empty()) return ok_status();
  disable_perf_counters();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return from_rocksdb(db.Write(wo, batch.raw()), "write batch");
}

}  // namespace

Status Store::write(Batch& batch) { return write_batch(*db_, batch, sync_); }

Status Store::write_unsynced(Batch& batch) { return write_batch(*db_, batch, false); }

Store::Size Store::size() const {
  uint64_t sst = 0, memtables = 0, keys = 0;
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &memtables);
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateNumKeys, &keys);
  return Size{sst + memtables, keys};
}

Status Store::sync_wal() { return from_rocksdb(db_->FlushWAL(/*sync=*/true), "sync WAL of " + dir_); }

StatusOr<std::optional<std::string>> Store::get(rocksdb::ColumnFamilyHandle* cf,
                                                std::string_view key) const {
  disable_perf_counters();
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), cf, rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return from_rocksdb(s, "get");
  return std::optional<std::string>(std::move(value));
}

Status Store::scan(rocksdb::ColumnFamilyHandle* cf, std::string_view prefix, std::string_view from,
                   const std::function<bool(std::string_view, std::string_view)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf));
  const std::string_view start = from.empty() || from < prefix ? prefix : from;
  for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, std::string_view(it->value().data(), it->value().size()))) break;
  }
  return from_rocksdb(it->status(), "scan");
}

StatusOr<std::optional<std::string>> Store::last_key(rocksdb::ColumnFamilyHandle* cf) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf));
  it->SeekToLast();
  if (!it->Valid()) {
    SAGA_RETURN_IF_ERROR(from_rocksdb(it->status(), "seek last"));
    return std::optional<std::string>();
  }
  return std::optional<std::string>(it->key().ToString());
}

Keyspace::Keyspace(Store& store, uint32_t shard) : store_(&store) {
  if (store.shards() > 1) {
    prefix_.push_back(static_cast<char>((shard >> 8) & 0xff));
    prefix_.push_back(static_cast<char>(shard & 0xff));
  }
}

std::unique_ptr<rocksdb::Iterator> Store::iterator(rocksdb::ColumnFamilyHandle* cf) const {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(rocksdb::ReadOptions(), cf));
}

Status scan_merged(const std::vector<Keyspace>& shards, rocksdb::ColumnFamilyHandle* cf,
                   std::string_view prefix, std::string_view from,
                   const std::function<bool(std::string_view key, std::string_view value)>& fn) {
  if (shards.size() == 1) return shards[0].scan(cf, prefix, from, fn);
  // One iterator per shard; each step hands out the smallest key among the
  // shards' current ones (S is small: a linear pick beats a heap).
  struct Head {
    std::unique_ptr<rocksdb::Iterator> it;
    std::string prefix;  // shard prefix + query prefix
    size_t skip;         // shard prefix size
    bool live() const {
      return it->Valid() && it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()));
    }
    std::string_view key() const {
      return std::string_view(it->key().data(), it->key().size()).substr(skip);
    }
  };
  std::vector<Head> heads;
  heads.reserve(shards.size());
  const std::string_view start = from.empty() || from < prefix ? prefix : from;
  for (const Keyspace& ks : shards) {
    Head h{ks.store().iterator(cf), ks.prefix() + std::string(prefix), ks.prefix().size()};
    const std::string seek = ks.prefix() + std::string(start);
    h.it->Seek(rocksdb::Slice(seek.data(), seek.size()));
    heads.push_back(std::move(h));
  }
  for (;;) {
    Head* next = nullptr;
    for (Head& h : heads) {
      if (h.live() && (!next || h.key() < next->key())) next = &h;
    }
    if (!next) break;
    const rocksdb::Slice value = next->it->value();
    if (!fn(next->key(), std::string_view(value.data(), value.size()))) break;
    next->it->Next();
  }
  for (Head& h : heads) SAGA_RETURN_IF_ERROR(from_rocksdb(h.it->status(), "scan"));
  return ok_status();
}

namespace {

// Sorts the puts and deletes of a WriteBatch into shards' changes.
class ChangeSplitter final : public rocksdb::WriteBatch::Handler {
 public:
  ChangeSplitter(const ChangelogFamilies& families, uint32_t shards,
                 std::vector<std::vector<ShardChange>>* out)
      : families_(families), shards_(shards), out_(out) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    return add(cf, key, std::string(value.data(), value.size()));
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return add(cf, key, std::nullopt);
  }
  rocksdb::Status SingleDeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return add(cf, key, std::nullopt);
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice&,
                                const rocksdb::Slice&) override {
    if (family(cf) < 0) return rocksdb::Status::OK();
    return rocksdb::Status::InvalidArgument("a range deletion cannot go to a changelog");
  }
  rocksdb::Status MergeCF(uint32_t cf, const rocksdb::Slice&, const rocksdb::Slice&) override {
    if (family(cf) < 0) return rocksdb::Status::OK();
    return rocksdb::Status::InvalidArgument("a merge cannot go to a changelog");
  }

 private:
  int family(uint32_t cf) const {
    for (size_t i = 0; i < families_.size(); ++i)
      if (families_[i]->GetID() == cf) return static_cast<int>(i);
    return -1;
  }
  rocksdb::Status add(uint32_t cf, const rocksdb::Slice& key, std::optional<std::string> value) {
    const int f = family(cf);
    if (f < 0) return rocksdb::Status::OK();
    std::string_view k(key.data(), key.size());
    uint32_t shard = 0;
    if (shards_ > 1) {
      if (k.size() < 2) return rocksdb::Status::InvalidArgument("key without a shard prefix");
      shard = (static_cast<uint32_t>(static_cast<uint8_t>(k[0])) << 8) |
              static_cast<uint8_t>(k[1]);
      if (shard >= shards_) return rocksdb::Status::InvalidArgument("key of an unknown shard");
      k.remove_prefix(2);
    }
    (*out_)[shard].push_back(ShardChange{static_cast<uint8_t>(f), std::string(k), std::move(value)});
    return rocksdb::Status::OK();
  }

  const ChangelogFamilies& families_;
  const uint32_t shards_;
  std::vector<std::vector<ShardChange>>* out_;
};

}  // namespace

Status changes_by_shard(Batch& batch, const ChangelogFamilies& families, uint32_t shards,
                        std::vector<std::vector<ShardChange>>* out) {
  out->resize(shards);
  ChangeSplitter splitter(families, shards, out);
  return from_rocksdb(batch.raw()->Iterate(&splitter), "changes of a batch");
}

Status apply_change(const Keyspace& ks, Batch& batch, const ChangelogFamilies& families,
                    const ShardChange& change) {
  if (change.family >= families.size())
    return Status::invalid_argument("changelog record of unknown family " +
                                    std::to_string(change.family));
  if (change.value) {
    ks.put(batch, families[change.family], change.key, *change.value);
  } else {
    ks.del(batch, families[change.family], change.key);
  }
  return ok_status();
}

Status Keyspace::scan(
    rocksdb::ColumnFamilyHandle* cf, std::string_view prefix, std::string_view from,
    const std::function<bool(std::string_view key, std::string_view value)>& fn) const {
  if (prefix_.empty()) return store_->scan(cf, prefix, from, fn);
  const std::string full_prefix(with(prefix));
  const std::string full_from = from.empty() ? std::string() : std::string(with(from));
  const size_t skip = prefix_.size();
  return store_->scan(cf, full_prefix, full_from,
                      [&](std::string_view key, std::string_view value) {
                        return fn(key.substr(skip), value);
                      });
}

}  // namespace saga::internal
