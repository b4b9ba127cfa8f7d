#include "store/store.h"

#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>

#include <algorithm>
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

// The family `name` of `shard`: shard 0 keeps the plain names.
std::string family_name(const std::string& name, uint32_t shard) {
  return shard == 0 ? name : name + "." + std::to_string(shard);
}

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
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  options.memtable_whole_key_filtering = true;
  options.memtable_prefix_bloom_size_ratio = 0.05;

  // The shard count: the stored one, else 1 for a store that predates shards,
  // else the caller's for a new store. Read before opening, from the list of
  // families and a read-only look at the default family. A store whose
  // families of shards > 0 exist without the count was being created when
  // the process died (the count is written right after the families, and
  // nothing else before it): it is new.
  std::vector<std::string> existing;
  bool is_new = !rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(options), dir, &existing).ok();
  uint32_t count = shards.wanted != 0 ? shards.wanted : shards.for_new_store;
  std::optional<std::string> stored;
  if (!is_new) {
    rocksdb::DB* ro = nullptr;
    SAGA_RETURN_IF_ERROR(from_rocksdb(rocksdb::DB::OpenForReadOnly(options, dir, &ro),
                                      "read shard count of store " + dir));
    std::unique_ptr<rocksdb::DB> reader(ro);
    std::string value;
    rocksdb::Status got = reader->Get(rocksdb::ReadOptions(), std::string(kShardsKey), &value);
    if (!got.ok() && !got.IsNotFound()) return from_rocksdb(got, "read shard count of " + dir);
    if (got.ok()) stored = std::move(value);
    const std::string first_sharded =
        column_families.empty() ? std::string() : family_name(column_families[0], 1);
    if (!stored && !first_sharded.empty() &&
        std::find(existing.begin(), existing.end(), first_sharded) != existing.end())
      is_new = true;
  }
  if (!is_new) {
    SAGA_ASSIGN_OR_RETURN(const uint32_t has, parse_shards(stored.value_or("1"), dir));
    if (shards.wanted != 0 && shards.wanted != has) {
      return Status::failed_precondition(
          "store " + dir + " was written with " + std::to_string(has) + " shard(s), not " +
          std::to_string(shards.wanted) +
          "; open it with that count, or move it to another count offline (docs/storage.md)");
    }
    count = has;
  }
  if (count == 0) return Status::invalid_argument("shard count must be at least 1");

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName,
                           rocksdb::ColumnFamilyOptions(options));
  for (uint32_t shard = 0; shard < count; ++shard)
    for (const std::string& name : column_families)
      descriptors.emplace_back(family_name(name, shard), rocksdb::ColumnFamilyOptions(options));
  // Families the store has beyond ours (RocksDB opens all or nothing).
  for (const std::string& name : existing) {
    const bool known = std::any_of(descriptors.begin(), descriptors.end(),
                                   [&](const auto& d) { return d.name == name; });
    if (!known) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
  }
  std::unique_ptr<Store> store(new Store());
  store->dir_ = dir;
  store->sync_ = sync;
  store->shards_ = count;
  store->families_ = column_families.size();
  rocksdb::DB* raw = nullptr;
  Status s = from_rocksdb(
      rocksdb::DB::Open(rocksdb::DBOptions(options), dir, descriptors, &store->handles_, &raw),
      "open store " + dir);
  if (!s.ok()) return s;
  store->db_.reset(raw);
  if (is_new && count != 1) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    SAGA_RETURN_IF_ERROR(
        from_rocksdb(store->db_->Put(wo, std::string(kShardsKey), std::to_string(count)),
                     "write shard count of " + dir));
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

Status Store::write(Batch& batch) {
  if (batch.empty()) return ok_status();
  disable_perf_counters();
  rocksdb::WriteOptions wo;
  wo.sync = sync_;
  return from_rocksdb(db_->Write(wo, batch.raw()), "write batch");
}

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

}  // namespace saga::internal
