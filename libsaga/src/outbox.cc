#include "outbox.h"

namespace saga::internal {

Outbox::Outbox(Store& store, rocksdb::ColumnFamilyHandle* cf, Transport& transport,
               const Clock& clock, std::shared_ptr<spdlog::logger> log)
    : store_(store), cf_(cf), transport_(transport), clock_(clock), log_(std::move(log)) {}

Status Outbox::recover() {
  return store_.scan(cf_, "", "", [&](std::string_view key, std::string_view value) {
    const uint64_t seq = read_be64(key);
    next_seq_ = std::max(next_seq_, seq + 1);
    StatusOr<Message> m = decode_message(value);
    if (!m.ok()) {
      log_->error("skipping undecodable outbox record {}: {}", seq, m.status().to_string());
      return true;
    }
    fresh_.emplace_back(seq, std::move(*m));
    ++depth_;
    return true;
  });
}

void Outbox::stage(Batch& batch, Message m) {
  if (m.created_ms == 0) m.created_ms = to_millis(clock_.now());
  const uint64_t seq = next_seq_++;
  batch.put(cf_, be64(seq), encode_message(m));
  fresh_.emplace_back(seq, std::move(m));
  ++depth_;
}

void Outbox::stage_confirmed(Batch& batch) {
  for (uint64_t seq : confirmed_) {
    if (in_flight_.erase(seq) == 0) continue;
    batch.del(cf_, be64(seq));
    ++confirmed_total_;
    if (depth_ > 0) --depth_;
  }
  confirmed_.clear();
}

void Outbox::release() {
  std::vector<std::pair<uint64_t, Message>> fresh;
  fresh.swap(fresh_);
  for (auto& [seq, m] : fresh) send(seq, std::move(m));
}

void Outbox::retry_failed() {
  if (failed_.empty()) return;
  const int64_t now = to_millis(clock_.now());
  if (now < next_retry_ms_) return;
  next_retry_ms_ = now + 100;  // the fabric is down: do not spin on it
  std::vector<uint64_t> failed;
  failed.swap(failed_);
  for (uint64_t seq : failed) {
    auto it = in_flight_.find(seq);
    if (it == in_flight_.end()) continue;
    Message m = it->second;
    in_flight_.erase(it);
    send(seq, std::move(m));
  }
}

void Outbox::send(uint64_t seq, Message m) {
  in_flight_.emplace(seq, m);
  transport_.send(std::move(m), [this, seq](Status s) {
    if (s.ok()) {
      confirmed_.push_back(seq);
    } else {
      log_->warn("send of outbox record {} failed, will retry: {}", seq, s.to_string());
      failed_.push_back(seq);
    }
  });
}

}  // namespace saga::internal
