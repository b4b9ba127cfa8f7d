// The participant SDK: what a service links to take part in sagas. It
// consumes commands, de-duplicates them with an inbox, applies the handler's
// state change, the inbox record and the reply in ONE RocksDB batch, and
// publishes replies (and domain events) through its own outbox.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/clock.h"
#include "saga/message.h"
#include "saga/shard.h"
#include "saga/status.h"
#include "saga/transport.h"

namespace saga {

using Json = nlohmann::json;

/// The participant's own key-value state inside one transaction: reads see
/// the transaction's writes; writes commit together with the inbox record and
/// the reply, or not at all. Valid only during the call that received it.
class StateTxn {
 public:
  virtual ~StateTxn() = default;
  /// The value of `key`, nullopt when absent.
  virtual StatusOr<std::optional<std::string>> get(std::string_view key) = 0;
  virtual void put(std::string_view key, std::string_view value) = 0;
  /// As put(), and the key is deleted once `expires_ms` (ms since the epoch;
  /// 0 = never) has passed, at the next expiry sweep (every
  /// ParticipantOptions::dedup_sweep_interval), unless a later put gave it
  /// another expiry; a put without one does not cancel it.
  virtual void put(std::string_view key, std::string_view value, int64_t expires_ms) = 0;
  virtual void del(std::string_view key) = 0;
  /// Publishes a domain event through the outbox when the transaction
  /// commits. `event.kind` is forced to kEvent; destination, type and
  /// payload are the caller's; id defaults to a unique one.
  virtual void emit(Message event) = 0;
};

/// What a command handler sees.
struct CommandContext {
  /// The command as received.
  const Message& command;
  /// Its payload, parsed (null when empty).
  Json payload;
  /// Compensations only: the payload of the successful reply the action got
  /// (e.g. a hold id). Null when the action never succeeded here.
  Json action_reply;
  /// The participant's state, in this command's transaction.
  StateTxn& state;
};

/// A handler's decision.
struct HandlerResult {
  ReplyOutcome outcome = ReplyOutcome::kSuccess;
  /// Success: the reply payload. Failure/retry: ignored (the error is sent).
  Json reply;
  std::string error;

  /// Applied; state changes commit and `reply` goes back.
  static HandlerResult success(Json reply = Json::object()) {
    return {ReplyOutcome::kSuccess, std::move(reply), {}};
  }
  /// Refused for good; state changes are discarded, the refusal is remembered
  /// for duplicates of this command.
  static HandlerResult failure(std::string error) {
    return {ReplyOutcome::kFailure, {}, std::move(error)};
  }
  /// Transient trouble; state changes are discarded, nothing is remembered,
  /// so the orchestrator's retry of this command runs the handler again.
  static HandlerResult retry(std::string error) {
    return {ReplyOutcome::kRetry, {}, std::move(error)};
  }
};

using CommandHandler = std::function<HandlerResult(CommandContext& ctx)>;

/// Settings of a participant.
struct ParticipantOptions {
  /// Name other parties send commands to (the definition's participant name). Required.
  std::string name;
  /// Folder of the participant's RocksDB store. Required.
  std::string data_dir;
  /// fsync the WAL on every write. Default true.
  bool sync = true;
  /// Shards (docs/sharding.md): a command lives in shard shard_of(key, shards)
  /// of its Message::key (the saga id when the key is empty), with its inbox
  /// records, the state its handler writes and its outbox, so commands about
  /// one thing (the same key) are handled in order in one shard. 0 = the
  /// store's count, or 12 for a new store. A count other than the store's
  /// fails open() with FailedPrecondition (a store written before shards
  /// existed has 1). Default 0.
  uint32_t shards = 0;
  /// Engine threads, as Options::threads of the orchestrator: shard k is
  /// driven by thread k % threads (each thread one write per iteration for
  /// its shards), and with more than one, start_background() adds a thread
  /// that polls the transport and routes commands to their shard's thread.
  /// Never more than the shards. 0 = one. run_once() runs every thread's
  /// iteration in turn on the calling thread. Default 0.
  uint32_t threads = 0;
  /// Shard changelogs, as Options::changelog of the orchestrator: each
  /// shard's state and inbox changes and the replies and events they cause
  /// are committed to the transport's changelog "<name>.changelog" before the
  /// local write, and open() restores a missing or lagging store from it, so
  /// de-duplication survives a lost disk. Default false.
  bool changelog = false;
  /// One of several replicas of this participant (docs/replicas.md): the
  /// transport's consumer group decides which shards this process owns (its
  /// command destination has one partition per shard); an assigned shard is
  /// claimed and restored from its changelog before its commands are handled,
  /// a revoked or lost one is dropped (its local data kept, as the start of
  /// the next restore). Requires `changelog` and a transport with consumer
  /// groups. write() to a shard owned elsewhere is Unavailable; get() and
  /// scan() read the local copy, which may be behind for such shards.
  /// Default false.
  bool replicas = false;
  /// With `replicas`: the address this replica publishes for the shards it
  /// owns, in the table "<name>.owners" (docs/replicas.md, "Routing"), so that
  /// the other replicas' owner_of() can send callers here. Free-form; the
  /// reference services publish their HTTP base URL. Default empty.
  std::string advertised_address;
  /// With `replicas`: keep a standby copy of every shard this replica does
  /// not own (docs/replicas.md, "Standby replicas"): a thread tails their
  /// changelogs into the local store, so that taking one over restores only
  /// the records of the last moments. Costs a read of every changelog record
  /// and the disk of a copy per replica.
  bool standby = false;
  /// How long the inbox remembers a handled command, so that a redelivery
  /// is answered with the stored reply instead of being applied again. It
  /// must exceed the longest time an orchestrator may send one command
  /// again (docs/storage.md, "Participant retention"): a command redelivered
  /// later than this is handled as new. 0 = forever. Default 30 days.
  Duration dedup_horizon{30LL * 24 * 3600 * 1000};
  /// How often a sweep for inbox records past the horizon starts (it then
  /// removes up to 4096 per iteration until none is left). Default 60 s.
  Duration dedup_sweep_interval{60'000};
  /// Time source; default the system clock.
  std::shared_ptr<Clock> clock;
  /// spdlog logger name. Default: the participant's name.
  std::string logger;
};

/// Counters, for tests and metrics.
struct ParticipantStats {
  uint64_t applied = 0;     ///< commands whose handler succeeded (state committed)
  uint64_t refused = 0;     ///< handler failures
  uint64_t retried = 0;     ///< handler retries (transient)
  uint64_t duplicates = 0;  ///< commands answered from the inbox
  uint64_t voided = 0;      ///< actions cancelled by a compensation that arrived first
  uint64_t expired = 0;     ///< inbox records removed past ParticipantOptions::dedup_horizon
  uint64_t state_expired = 0;  ///< state keys removed at their expiry (StateTxn::put)
  uint64_t writes = 0;      ///< RocksDB batches
  uint64_t outbox_depth = 0;
  uint64_t shards_owned = 0;  ///< shards this process drives now (all, without replicas)
  /// Changelog records applied by the restores of claimed shards.
  uint64_t restored_records = 0;
  /// Changelog records copied into standby copies (ParticipantOptions::standby).
  uint64_t standby_records = 0;
  /// The store's size (SST files and memtables) and estimated live keys,
  /// RocksDB's estimates over every shard it holds (inboxes included).
  uint64_t store_bytes = 0;
  uint64_t store_keys = 0;
};

/// One participant. Delivery rules it implements:
/// - a command id already in the inbox is answered with the stored reply,
///   the handler is not called again;
/// - a compensation whose action never arrived records a tombstone for the
///   action (which is then refused if it comes late) and succeeds at once;
/// - a compensation whose action was refused succeeds at once (nothing to undo).
/// Thread-safe; a handler runs on the thread driving its command's shard
/// (run_once's caller, or a background thread), never on two at once per shard.
class Participant {
 public:
  /// Opens (or creates) the store and subscribes to commands for options.name.
  static StatusOr<std::unique_ptr<Participant>> open(ParticipantOptions options,
                                                     std::shared_ptr<Transport> transport);
  virtual ~Participant() = default;

  /// Registers the handler of one command type. InvalidArgument when the type
  /// repeats or the handler is empty. Call before the engine runs.
  virtual Status on(std::string command_type, CommandHandler handler) = 0;

  /// Runs `fn` as a local transaction on the state of the shard of `shard_key`
  /// (the key the commands about the same thing carry, e.g. a place id: its
  /// handlers then see what `fn` wrote), serialised with command handling;
  /// commits when `fn` returns OK.
  virtual Status write(std::string_view shard_key,
                       const std::function<Status(StateTxn&)>& fn) = 0;
  /// As write(shard_key, fn), for a participant of one shard; InvalidArgument
  /// when it has more (which shard would it be?).
  virtual Status write(const std::function<Status(StateTxn&)>& fn) = 0;
  /// Committed value of `key` in whichever shard holds it (a handler writes
  /// a key in its command's shard; keys are expected to belong to one shard).
  virtual StatusOr<std::optional<std::string>> get(std::string_view key) const = 0;
  /// Calls fn(key, value) for committed keys starting with `prefix`, in key
  /// order across the shards, until it returns false.
  virtual Status scan(
      std::string_view prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const = 0;

  /// One iteration on the calling thread (polls the transport, waiting up to
  /// `max_wait` when idle); returns commands handled.
  virtual size_t run_once(Duration max_wait = Duration{0}) = 0;
  /// Runs the engine on ParticipantOptions::threads threads of its own (plus
  /// a polling thread when more than one) until stop().
  virtual void start_background() = 0;
  /// Stops the background threads after their current iteration.
  virtual void stop() = 0;

  virtual ParticipantStats stats() const = 0;
  /// OK while the store is open and the transport healthy (with replicas:
  /// and the owner of every shard is known, Unavailable before); Aborted once
  /// another owner claimed one of its shards (with the changelog), for good.
  virtual Status health() const = 0;
  /// The shard count the store was opened with.
  virtual uint32_t shards() const = 0;
  /// Which replica drives the shard of `shard_key` (docs/replicas.md,
  /// "Routing"): here, another replica and its advertised address, or
  /// unknown while the shard moves. Always here without `replicas`.
  /// Thread-safe.
  virtual ShardOwner owner_of(std::string_view shard_key) const = 0;
  /// owner_of() of every shard, by shard index. Thread-safe.
  virtual std::vector<ShardOwner> owners() const = 0;
};

}  // namespace saga
