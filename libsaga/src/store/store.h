// A RocksDB database with named column families and atomic batches: the one
// place libsaga touches RocksDB. RocksDB errors become saga::Status here.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/status.h"
#include "saga/transport.h"

namespace saga::internal {

/// Big-endian encoding of `v`, so keys sort numerically.
std::string be64(uint64_t v);
/// Appends be64(v) to `out`.
void append_be64(std::string& out, uint64_t v);
/// Decodes 8 big-endian bytes at `p`. REQUIRES: 8 readable bytes.
uint64_t read_be64(std::string_view p);

/// Mutations applied together by Store::write. Not thread-safe.
class Batch {
 public:
  void put(rocksdb::ColumnFamilyHandle* cf, std::string_view key, std::string_view value) {
    batch_.Put(cf, key, value);
  }
  void del(rocksdb::ColumnFamilyHandle* cf, std::string_view key) { batch_.Delete(cf, key); }
  /// Deletes the keys in [begin, end): one range tombstone, not one per key.
  void del_range(rocksdb::ColumnFamilyHandle* cf, std::string_view begin, std::string_view end) {
    batch_.DeleteRange(cf, begin, end);
  }
  size_t count() const { return static_cast<size_t>(batch_.Count()); }
  size_t bytes() const { return batch_.GetDataSize(); }
  bool empty() const { return batch_.Count() == 0; }
  void clear() { batch_.Clear(); }
  rocksdb::WriteBatch* raw() { return &batch_; }

 private:
  rocksdb::WriteBatch batch_;
};

/// How many shards a store is opened with (docs/sharding.md).
struct ShardCount {
  /// The count the caller insists on; 0 = whatever the store has.
  uint32_t wanted = 1;
  /// The count a new store gets when `wanted` is 0.
  uint32_t for_new_store = 1;
};

/// One RocksDB database opened with the given column families (created when
/// missing), holding the data of `shards()` shards. In a store of more than
/// one shard, every key of shard k starts with be16(k) (Keyspace adds and
/// strips it); a store of one shard has no prefix, so a store written before
/// shards existed is a store of one shard. The shard count is kept in the
/// default column family under kShardsKey (absent = 1). Thread-safe (RocksDB is).
class Store {
 public:
  /// Key of the shard count in the default column family (decimal text).
  static constexpr std::string_view kShardsKey = "saga.shards";

  /// Opens or creates the database in `dir`. `sync`: fsync the WAL on each
  /// write. FailedPrecondition when `shards.wanted` is set and the store was
  /// written with another count: a store is never re-hashed silently. A store
  /// without a count and without data is new (a creation that died before
  /// writing its count left nothing else).
  static StatusOr<std::unique_ptr<Store>> open(const std::string& dir,
                                               const std::vector<std::string>& column_families,
                                               bool sync, ShardCount shards = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  /// Handle of the i-th column family given to open().
  rocksdb::ColumnFamilyHandle* cf(size_t i) const { return handles_.at(i + 1); }
  /// RocksDB's default family: the store's own metadata (the shard count,
  /// the shards' changelog checkpoints), never user data.
  rocksdb::ColumnFamilyHandle* meta() const { return handles_.at(0); }
  /// The shard count the store was written with.
  uint32_t shards() const { return shards_; }

  /// Applies `batch` atomically (synced per the open option).
  Status write(Batch& batch);
  /// Applies `batch` atomically without syncing the WAL, whatever the open
  /// option: for a copy that can be rebuilt (a standby's, docs/replicas.md).
  Status write_unsynced(Batch& batch);
  /// Makes every write so far durable (fsyncs the WAL), whatever the open
  /// option: for a store written with sync off in bulk (saga/reshard.h).
  Status sync_wal();
  /// The value of `key`, nullopt when absent.
  StatusOr<std::optional<std::string>> get(rocksdb::ColumnFamilyHandle* cf,
                                           std::string_view key) const;
  /// Calls fn(key, value) for keys >= `from` that start with `prefix`, in key
  /// order, until fn returns false.
  Status scan(rocksdb::ColumnFamilyHandle* cf, std::string_view prefix, std::string_view from,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  /// The last key of a column family, nullopt when empty.
  StatusOr<std::optional<std::string>> last_key(rocksdb::ColumnFamilyHandle* cf) const;
  /// What the store holds, by RocksDB's estimates over every column family:
  /// bytes in SST files and memtables, and live keys (deletes not yet
  /// compacted away may still count). Cheap: no I/O.
  struct Size {
    uint64_t bytes = 0;
    uint64_t keys = 0;
  };
  Size size() const;
  /// A raw iterator over a column family (for merges across shards).
  std::unique_ptr<rocksdb::Iterator> iterator(rocksdb::ColumnFamilyHandle* cf) const;

  const std::string& dir() const { return dir_; }

 private:
  Store() = default;
  std::string dir_;
  bool sync_ = true;
  uint32_t shards_ = 1;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // [0] = default
};

/// One shard's part of a store: every key it writes, reads or scans carries
/// the shard's prefix (be16(shard) when the store has more than one shard,
/// none otherwise), which callers neither give nor see. A small value;
/// thread-safe as the Store is. REQUIRES: the store outlives it.
class Keyspace {
 public:
  Keyspace(Store& store, uint32_t shard);

  Store& store() const { return *store_; }
  /// The bytes every key of this shard starts with.
  const std::string& prefix() const { return prefix_; }

  void put(Batch& batch, rocksdb::ColumnFamilyHandle* cf, std::string_view key,
           std::string_view value) const {
    batch.put(cf, with(key), value);
  }
  void del(Batch& batch, rocksdb::ColumnFamilyHandle* cf, std::string_view key) const {
    batch.del(cf, with(key));
  }
  void del_range(Batch& batch, rocksdb::ColumnFamilyHandle* cf, std::string_view begin,
                 std::string_view end) const {
    batch.del_range(cf, with(begin, 0), with(end, 1));
  }
  StatusOr<std::optional<std::string>> get(rocksdb::ColumnFamilyHandle* cf,
                                           std::string_view key) const {
    return store_->get(cf, with(key));
  }
  /// As Store::scan, within the shard; `fn` sees keys without the prefix.
  Status scan(rocksdb::ColumnFamilyHandle* cf, std::string_view prefix, std::string_view from,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) const;

 private:
  // `key` with the prefix, in a per-thread buffer (`slot` 0 or 1) that the
  // next call with the same slot reuses: RocksDB copies keys at once, so the
  // engine's hot path allocates nothing for prefixes. No prefix, no copy.
  std::string_view with(std::string_view key, int slot = 0) const {
    if (prefix_.empty()) return key;
    thread_local std::string buffers[2];
    std::string& out = buffers[slot];
    out.assign(prefix_).append(key);
    return out;
  }
  Store* store_;
  std::string prefix_;
};

/// As Keyspace::scan over several shards of one store at once: fn sees their
/// keys (without prefixes) merged in key order, a key present in several
/// shards once per shard, until it returns false.
Status scan_merged(const std::vector<Keyspace>& shards, rocksdb::ColumnFamilyHandle* cf,
                   std::string_view prefix, std::string_view from,
                   const std::function<bool(std::string_view key, std::string_view value)>& fn);

/// The column families a changelog carries: ShardChange::family i is
/// families[i]. Those not listed (an outbox) stay local.
using ChangelogFamilies = std::vector<rocksdb::ColumnFamilyHandle*>;

/// The changes `batch` makes to `families` in a store of `shards` shards,
/// split by shard: (*out)[k] receives shard k's, keys without the prefix.
/// InvalidArgument for a range deletion in one of `families` (a changelog
/// holds keys) or a key without a shard prefix.
Status changes_by_shard(Batch& batch, const ChangelogFamilies& families, uint32_t shards,
                        std::vector<std::vector<ShardChange>>* out);

/// Stages `change` into `batch` in the shard of `ks`. InvalidArgument for
/// an unknown family.
Status apply_change(const Keyspace& ks, Batch& batch, const ChangelogFamilies& families,
                    const ShardChange& change);

/// Converts a RocksDB status (OK stays OK).
Status from_rocksdb(const rocksdb::Status& s, std::string_view what);

}  // namespace saga::internal
