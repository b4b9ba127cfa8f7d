// The transactional outbox shared by the orchestrator and participants:
// messages are staged in the same batch as the state change that produced
// them, handed to the transport only after that batch is durable, and deleted
// once the transport confirms them. Records left after a crash are re-sent.
//
// Causal order of domain events: when a batch holds events and other messages
// (commands, replies), the events go first and the others wait until every
// event of the batch is confirmed. So an event is on its stream before
// anything it caused can happen (e.g. PaymentApproved is published before
// the reply that lets the saga move on), across processes.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "saga/clock.h"
#include "saga/message.h"
#include "saga/transport.h"
#include "store/store.h"

namespace saga::internal {

/// The stored form of an outbox record (docs/storage.md): binary, first byte
/// 0x01. decode_outbox_record also reads the JSON envelopes older versions wrote.
void encode_outbox_record(const Message& m, std::string& out);
StatusOr<Message> decode_outbox_record(std::string_view bytes);

/// Not thread-safe: owned by one engine (or shard), used from the thread
/// that drives it. Transport callbacks, which run on whichever thread polls
/// the transport, reach it through `post`.
class Outbox {
 public:
  /// Runs a function on the owner's thread: at once when the transport is
  /// polled by that thread, else queued for its next iteration.
  using Post = std::function<void(std::function<void()>)>;

  /// `cf` holds the records (key = big-endian sequence number) in `space`.
  /// `post` defaults to running at once.
  Outbox(Keyspace space, rocksdb::ColumnFamilyHandle* cf, Transport& transport,
         const Clock& clock, std::shared_ptr<spdlog::logger> log, Post post = {});

  /// Loads records a previous run left unsent; they go out with the next release().
  Status recover();
  /// Stages `m` in `batch`.
  void stage(Batch& batch, Message m);
  /// Stages deletion of the records the transport confirmed since the last call.
  void stage_confirmed(Batch& batch);
  /// After the batch holding staged records is durable: sends them (events
  /// first, see above), and the held messages whose events are confirmed.
  void release();
  /// After a failed write: forgets what was staged in it.
  void discard_staged() { fresh_.clear(); }
  /// Re-sends records whose send failed (at most every 100 ms).
  void retry_failed();

  /// Records not yet confirmed.
  uint64_t depth() const { return depth_; }
  /// Records confirmed since start.
  uint64_t confirmed_total() const { return confirmed_total_; }
  /// Staged or recovered records not yet handed to the transport, held ones
  /// excepted while their events are unconfirmed.
  bool has_unsent() const { return !fresh_.empty() || ready_held_ > 0; }

 private:
  void send(uint64_t seq, Message m);
  // Hands `m` to the transport; its callback reports the outcome.
  void transmit(uint64_t seq, Message m);
  // The transport's outcome of record `seq`, on the owner's thread.
  void confirmed(uint64_t seq, const Status& s);
  void send_ready_held();

  // Messages of one batch waiting for its events.
  struct Held {
    size_t unconfirmed_events = 0;
    std::vector<std::pair<uint64_t, Message>> messages;
  };

  Keyspace space_;
  rocksdb::ColumnFamilyHandle* cf_;
  Transport& transport_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Post post_;
  uint64_t next_seq_ = 1;
  std::string record_;                               // scratch for encode_outbox_record
  std::vector<std::pair<uint64_t, Message>> fresh_;  // staged, not yet durable+sent
  // Sequence numbers sent, not yet confirmed. Their messages are not kept:
  // a failed send is retried from the stored record.
  std::unordered_set<uint64_t> in_flight_;
  std::vector<uint64_t> confirmed_;
  std::vector<uint64_t> failed_;
  uint64_t next_group_ = 1;
  std::map<uint64_t, Held> held_;             // group -> its waiting messages
  std::map<uint64_t, uint64_t> event_group_;  // seq of an unconfirmed event -> group
  size_t ready_held_ = 0;                     // groups whose events are all confirmed
  int64_t next_retry_ms_ = 0;
  uint64_t depth_ = 0;
  uint64_t confirmed_total_ = 0;
};

}  // namespace saga::internal
