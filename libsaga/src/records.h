// Domain records (saga/definition.h, Record) as the orchestrator keeps them in
// its index family (docs/storage.md, "Records"): the orchestrator writes,
// sweeps and reads them, and saga/reshard.h's copier moves them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "saga/definition.h"
#include "store/codec.h"
#include "store/store.h"

namespace saga::internal {

/// 'r' ‖ key -> be64(expires_ms) ‖ bytes(shard_key) ‖ value.
inline constexpr char kIdxRecord = 'r';
/// 'e' ‖ be64(expires_ms) ‖ key -> shard_key: a record's expiry (none for 0).
inline constexpr char kIdxRecordExpiry = 'e';
/// The longest record key.
inline constexpr size_t kMaxRecordKey = 512;

inline std::string record_key(std::string_view key) {
  std::string k(1, kIdxRecord);
  k.append(key);
  return k;
}

inline std::string record_expiry_key(int64_t expires_ms, std::string_view key) {
  std::string k(1, kIdxRecordExpiry);
  append_be64(k, static_cast<uint64_t>(expires_ms));
  k.append(key);
  return k;
}

inline std::string encode_record(const Record& r) {
  std::string v;
  append_be64(v, static_cast<uint64_t>(r.expires_ms));
  put_bytes(v, r.shard_key);
  v.append(r.value);
  return v;
}

/// The record stored under `key` (without the 'r'), nullopt when `value` is
/// not one (DataLoss for the caller).
inline std::optional<Record> decode_record(std::string_view key, std::string_view value) {
  if (value.size() < 8) return std::nullopt;
  Record r;
  r.key = key;
  r.expires_ms = static_cast<int64_t>(read_be64(value));
  RecordReader in(value.substr(8));
  r.shard_key = in.bytes();
  if (!in.ok()) return std::nullopt;
  r.value = in.rest();
  return r;
}

}  // namespace saga::internal
