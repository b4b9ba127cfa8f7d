#include "outbox.h"

#include <algorithm>

#include "store/codec.h"

namespace saga::internal {

namespace {
// First byte of a binary outbox record. Older records are JSON envelopes,
// which start with '{'.
constexpr uint8_t kBinaryRecord = 0x01;
}  // namespace

void encode_outbox_record(const Message& m, std::string& out) {
  out.clear();
  out.reserve(32 + m.id.size() + m.type.size() + m.destination.size() + m.key.size() +
              m.saga_id.size() + m.reply_to.size() + m.in_reply_to.size() + m.compensates.size() +
              m.traceparent.size() + m.payload.size());
  out.push_back(static_cast<char>(kBinaryRecord));
  put_bytes(out, m.id);
  out.push_back(static_cast<char>(m.kind));
  put_bytes(out, m.type);
  put_bytes(out, m.destination);
  put_bytes(out, m.key);
  put_bytes(out, m.saga_id);
  put_bytes(out, m.reply_to);
  put_bytes(out, m.in_reply_to);
  put_bytes(out, m.compensates);
  put_varint(out, m.attempt);
  out.push_back(static_cast<char>(m.outcome));
  put_bytes(out, m.traceparent);
  put_bytes(out, m.payload);
  put_svarint(out, m.created_ms);
}

StatusOr<Message> decode_outbox_record(std::string_view bytes) {
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kBinaryRecord) {
    return decode_message(bytes);  // a JSON envelope written by an older version
  }
  RecordReader r(bytes.substr(1));
  Message m;
  m.id = r.bytes();
  const uint8_t kind = r.byte();
  m.type = r.bytes();
  m.destination = r.bytes();
  m.key = r.bytes();
  m.saga_id = r.bytes();
  m.reply_to = r.bytes();
  m.in_reply_to = r.bytes();
  m.compensates = r.bytes();
  m.attempt = r.u32();
  const uint8_t outcome = r.byte();
  m.traceparent = r.bytes();
  m.payload = r.bytes();
  m.created_ms = r.svarint();
  if (!r.ok() || !r.done()) return Status::data_loss("undecodable outbox record");
  if (kind < static_cast<uint8_t>(MessageKind::kCommand) ||
      kind > static_cast<uint8_t>(MessageKind::kEvent) ||
      outcome < static_cast<uint8_t>(ReplyOutcome::kSuccess) ||
      outcome > static_cast<uint8_t>(ReplyOutcome::kRetry)) {
    return Status::data_loss("outbox record with an unknown message kind or outcome");
  }
  m.kind = static_cast<MessageKind>(kind);
  m.outcome = static_cast<ReplyOutcome>(outcome);
  return m;
}

Outbox::Outbox(Keyspace space, rocksdb::ColumnFamilyHandle* cf, Transport& transport,
               const Clock& clock, std::shared_ptr<spdlog::logger> log, Post post)
    : space_(std::move(space)),
      cf_(cf),
      transport_(transport),
      clock_(clock),
      log_(std::move(log)),
      post_(post ? std::move(post) : [](std::function<void()> fn) { fn(); }) {}

Status Outbox::recover() {
  return space_.scan(cf_, "", "", [&](std::string_view key, std::string_view value) {
    const uint64_t seq = read_be64(key);
    next_seq_ = std::max(next_seq_, seq + 1);
    StatusOr<Message> m = decode_outbox_record(value);
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
  encode_outbox_record(m, record_);
  space_.put(batch, cf_, be64(seq), record_);
  fresh_.emplace_back(seq, std::move(m));
  ++depth_;
}

void Outbox::stage_confirmed(Batch& batch) {
  std::vector<uint64_t> gone;
  gone.reserve(confirmed_.size());
  for (uint64_t seq : confirmed_) {
    if (in_flight_.erase(seq) == 0) continue;
    gone.push_back(seq);
    ++confirmed_total_;
    if (depth_ > 0) --depth_;
  }
  confirmed_.clear();
  // Confirmations mostly come in send order, so the records form a few runs
  // of consecutive sequence numbers: each run is one range delete, which
  // costs the memtable one entry instead of one per record. A run holds
  // only records confirmed here, so nothing unconfirmed is ever covered.
  std::sort(gone.begin(), gone.end());
  for (size_t i = 0; i < gone.size();) {
    size_t j = i + 1;
    while (j < gone.size() && gone[j] == gone[j - 1] + 1) ++j;
    if (j - i == 1) {
      space_.del(batch, cf_, be64(gone[i]));
    } else {
      space_.del_range(batch, cf_, be64(gone[i]), be64(gone[j - 1] + 1));
    }
    i = j;
  }
}

void Outbox::release() {
  send_ready_held();
  std::vector<std::pair<uint64_t, Message>> fresh;
  fresh.swap(fresh_);
  const size_t events =
      static_cast<size_t>(std::count_if(fresh.begin(), fresh.end(), [](const auto& r) {
        return r.second.kind == MessageKind::kEvent;
      }));
  if (events == 0 || events == fresh.size()) {
    for (auto& [seq, m] : fresh) send(seq, std::move(m));
    return;
  }
  const uint64_t group = next_group_++;
  Held& held = held_[group];
  held.unconfirmed_events = events;
  for (auto& [seq, m] : fresh) {
    if (m.kind == MessageKind::kEvent) {
      event_group_.emplace(seq, group);
      send(seq, std::move(m));
    } else {
      held.messages.emplace_back(seq, std::move(m));
    }
  }
}

void Outbox::send_ready_held() {
  if (ready_held_ == 0) return;
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->second.unconfirmed_events > 0) {
      ++it;
      continue;
    }
    for (auto& [seq, m] : it->second.messages) send(seq, std::move(m));
    it = held_.erase(it);
    --ready_held_;
  }
}

void Outbox::retry_failed() {
  if (failed_.empty()) return;
  const int64_t now = to_millis(clock_.now());
  if (now < next_retry_ms_) return;
  next_retry_ms_ = now + 100;  // the fabric is down: do not spin on it
  std::vector<uint64_t> failed;
  failed.swap(failed_);
  for (uint64_t seq : failed) {
    if (in_flight_.count(seq) == 0) continue;
    // The record stays in the store until confirmed: send it again from there.
    StatusOr<std::optional<std::string>> bytes = space_.get(cf_, be64(seq));
    if (!bytes.ok()) {
      log_->warn("re-reading outbox record {} failed, will retry: {}", seq,
                 bytes.status().to_string());
      failed_.push_back(seq);
      continue;
    }
    StatusOr<Message> m = *bytes ? decode_outbox_record(**bytes)
                                 : StatusOr<Message>(Status::data_loss("record is missing"));
    if (!m.ok()) {
      log_->error("cannot re-send outbox record {}: {}", seq, m.status().to_string());
      continue;
    }
    transmit(seq, std::move(*m));
  }
}

void Outbox::send(uint64_t seq, Message m) {
  in_flight_.insert(seq);
  transmit(seq, std::move(m));
}

void Outbox::transmit(uint64_t seq, Message m) {
  transport_.send(std::move(m), [this, seq](Status s) {
    post_([this, seq, s] { confirmed(seq, s); });
  });
}

void Outbox::confirmed(uint64_t seq, const Status& s) {
  if (s.ok()) {
    confirmed_.push_back(seq);
    if (auto g = event_group_.find(seq); g != event_group_.end()) {
      if (--held_[g->second].unconfirmed_events == 0) ++ready_held_;
      event_group_.erase(g);
    }
  } else {
    log_->warn("send of outbox record {} failed, will retry: {}", seq, s.to_string());
    failed_.push_back(seq);
  }
}

}  // namespace saga::internal
