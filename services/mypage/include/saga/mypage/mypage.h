// The mypage service: the CQRS read side. It consumes the domain events of the
// `reserveplace` stream (reservation, payment and inventory events) and keeps
// one durable view row per reservation, plus a per-user index, in RocksDB.
//
// Events of one reservation come from different processes, so they may arrive
// out of causal order and more than once; the view converges anyway:
//   - a message id already applied is dropped (duplicates), for as long as its
//     mark is kept (ReadModelOptions::dedup_horizon);
//   - statuses only move up: PENDING < CONFIRMED < REJECTED = CANCELLED;
//     payment APPROVED < REFUNDED; rooms CONFIRMED < RELEASED;
//   - a field present in an event fills or overwrites the row's; a missing or
//     null field never erases one.
//
// Row: {id, userId, placeId, placeNm, checkIn, checkOut, qty, amount, status,
//       payment: {status, payId} (when known), rooms: {status, stock} (when known),
//       events: [eventType, ...] (arrival order, no duplicates), updatedMs}
// (fields not known yet are absent; status starts at PENDING).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "saga/message.h"
#include "saga/service/router.h"
#include "saga/status.h"
#include "saga/transport.h"

namespace rocksdb {
class DB;
}  // namespace rocksdb

namespace saga::mypage {

inline constexpr char kServiceName[] = "mypage";
/// The event stream mypage subscribes to (topic name unless EVENTS_TOPIC is set).
inline constexpr char kEventDestination[] = "reserveplace";
inline constexpr int kDefaultPort = 8086;

/// What a ReadModel did since it was opened (for /metrics and tests).
struct ReadModelStats {
  uint64_t applied = 0;        ///< events written to the view
  uint64_t duplicates = 0;     ///< events dropped because their message id was seen
  uint64_t unknown_types = 0;  ///< applied events of a type the view does not interpret
  uint64_t invalid = 0;        ///< events refused: not JSON, or no usable reservation id
  uint64_t errors = 0;         ///< storage failures (the event was not applied)
  uint64_t marks_expired = 0;  ///< message-id marks removed past the horizon
  uint64_t store_bytes = 0;    ///< the store's SST files and memtables (RocksDB's estimate)
  uint64_t store_keys = 0;     ///< the store's live keys (RocksDB's estimate)
};

/// How a ReadModel remembers the message ids it applied.
struct ReadModelOptions {
  /// A mark (message id applied) is kept this long after it was written, then
  /// removed: an event delivered again later is applied again (harmless for
  /// a repeat of the newest state; the ranks keep a stale one from going
  /// back). Must outlast the event topic's retention and any consumer lag.
  /// Default 30 days (as SAGA_DEDUP_HORIZON); 0 = marks are kept for ever.
  std::chrono::milliseconds dedup_horizon{std::chrono::hours(24 * 30)};
  /// How often apply() looks for expired marks (up to 4096 per look, going on
  /// at the next apply until none is left). Default 60 s.
  std::chrono::milliseconds sweep_interval{std::chrono::seconds(60)};
  /// The clock of mark expiry (ms since the epoch). Default: the system clock.
  std::function<int64_t()> now_ms;
};

/// The durable view. Thread-safe: apply() from the consumer thread while get()
/// and list_by_user() serve HTTP requests.
class ReadModel {
 public:
  /// Opens (creating if needed) the view stored in directory `dir`. Every
  /// apply() is one synced WriteBatch. Unavailable when the store cannot open.
  /// Marks written by a version without expiry are given one at the first
  /// open, as if written then.
  static StatusOr<std::unique_ptr<ReadModel>> open(const std::string& dir,
                                                   ReadModelOptions options = {});
  /// Closes the store.
  ~ReadModel();
  ReadModel(const ReadModel&) = delete;
  ReadModel& operator=(const ReadModel&) = delete;

  /// Applies one domain event: the view row, the user index entry and the
  /// message-id mark in one synced batch. OK when the effect is durable or
  /// there is nothing to do (duplicate); InvalidArgument for an event that can
  /// never apply (not JSON, no reservation id); another error when the store
  /// failed (nothing applied: deliver it again).
  Status apply(const Message& message);

  /// The row of reservation `id`; NotFound when no event named it yet.
  StatusOr<nlohmann::json> get(std::string_view id) const;
  /// The rows of user `user_id`, ordered by reservation id (empty when none):
  /// only those whose id sorts after `after` ("" = from the first), and at
  /// most `limit` of them. Reads only the rows it returns, from one snapshot.
  StatusOr<std::vector<nlohmann::json>> list_by_user(
      std::string_view user_id, std::string_view after = {},
      size_t limit = std::numeric_limits<size_t>::max()) const;

  /// True while the store holds nothing (a new store, or one whose disk was
  /// lost): its consumer should read the events from the start
  /// (KafkaOptions::from_beginning), whatever its group committed.
  bool empty() const;

  ReadModelStats stats() const;
  /// OK while the store is open and its last write succeeded.
  Status health() const;
  /// The counters of stats() in Prometheus text format (mypage_events_*_total).
  std::string metrics_text() const;

 private:
  ReadModel(std::unique_ptr<rocksdb::DB> db, ReadModelOptions options);
  Status write_failed(Status s);
  int64_t now() const;
  // Gives every mark without an expiry key one (marks of older versions).
  Status index_old_marks();
  // REQUIRES: apply_mu_ held. Removes up to 4096 expired marks when due.
  void expire_marks();

  std::unique_ptr<rocksdb::DB> db_;
  std::mutex apply_mu_;  // one read-modify-write at a time
  const ReadModelOptions options_;
  int64_t next_sweep_ms_ = 0;  // GUARDED_BY(apply_mu_)
  std::atomic<uint64_t> applied_{0}, duplicates_{0}, unknown_{0}, invalid_{0}, errors_{0},
      marks_expired_{0};
  mutable std::mutex health_mu_;
  Status last_write_;
};

/// Settings of an EventRunner.
struct RunnerOptions {
  /// Destination (event stream) to subscribe to. Default "reserveplace".
  std::string destination = kEventDestination;
  /// Longest wait of one Transport::poll(); bounds how long stop() takes. Default 100 ms.
  std::chrono::milliseconds poll_wait{100};
};

/// Wires a Transport to a ReadModel: subscribes to the event stream and polls
/// on a thread of its own; each event is applied, then acked (an event the
/// store failed to apply stays unacked, so it is delivered again after a restart).
class EventRunner {
 public:
  /// Takes the transport; `model` must outlive the runner.
  EventRunner(ReadModel& model, std::unique_ptr<Transport> transport, RunnerOptions options = {});
  /// Stops (as stop()).
  ~EventRunner();
  EventRunner(const EventRunner&) = delete;
  EventRunner& operator=(const EventRunner&) = delete;

  /// Subscribes and starts the polling thread. FailedPrecondition when called twice.
  Status start();
  /// Stops polling, joins the thread and destroys the transport (Kafka: the
  /// consumer closes and commits the acked offsets). Idempotent.
  void stop();
  /// The transport's health; Unavailable once stopped or before start().
  Status health() const;

 private:
  void run();

  ReadModel& model_;
  RunnerOptions options_;
  mutable std::mutex mu_;  // guards transport_ against health() during stop()
  std::unique_ptr<Transport> transport_;
  std::atomic<bool> stop_{false};
  std::mutex wait_mu_;  // with wait_cv_: a retry backoff wakes at once on stop()
  std::condition_variable wait_cv_;
  bool started_ = false;
  std::thread thread_;
};

/// Registers the HTTP API on `router`:
///   GET /mypages/{id}        the row, or a 404 problem
///   GET /mypages[?userId=]   the user's rows (without userId: the caller's own)
/// Both need the caller's identity (401 without); rows of other users are
/// 404 (admins see all).
/// plus /healthz, /readyz (checks "store" = model.health() and "consumer" =
/// consumer_health()) and /metrics (model.metrics_text()). `model` and whatever
/// consumer_health uses must outlive the router's server.
void add_routes(service::Router& router, ReadModel& model, std::function<Status()> consumer_health);

}  // namespace saga::mypage
