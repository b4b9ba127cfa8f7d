// The orchestrator: drives saga instances through their steps, persists every
// transition atomically in RocksDB, and talks to participants through a
// Transport. Opening it on an existing store resumes every unfinished saga.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/breaker.h"
#include "saga/clock.h"
#include "saga/definition.h"
#include "saga/shard.h"
#include "saga/status.h"
#include "saga/transport.h"

namespace saga {

/// Where an instance is in its life. Values are stored on disk: never renumber.
enum class SagaState : uint8_t {
  kRunning = 1,       ///< executing steps forward
  kCompensating = 2,  ///< undoing completed steps in reverse order
  kCompleted = 3,     ///< every step succeeded (terminal)
  kCompensated = 4,   ///< failed or cancelled, every effect undone (terminal)
  kFailed = 5,        ///< a compensation kept failing: parked for an operator
  kAborted = 6,       ///< stopped by an operator; nothing more is sent (terminal)
};
std::string_view to_string(SagaState s) noexcept;
StatusOr<SagaState> parse_saga_state(std::string_view s);
/// Completed, Compensated and Aborted are terminal. Failed is not: an operator
/// may retry it.
bool is_terminal(SagaState s) noexcept;

/// Where one step is. Values are stored on disk: never renumber.
enum class StepStatus : uint8_t {
  kPending = 0,  ///< not started
  kRunning = 1,  ///< command sent, awaiting the reply
  kSucceeded = 2,
  kFailed = 3,   ///< refused or out of retries; nothing applied
  kUnknown = 4,  ///< outcome unknown (timed out or cancelled in flight)
  kCompensating = 5,
  kCompensated = 6,
  kCompensationFailed = 7,
  kCompensationSkipped = 8,  ///< an operator skipped its failed compensation
};
std::string_view to_string(StepStatus s) noexcept;

/// What a timeline entry records. Values are stored on disk: never renumber.
enum class TimelineEvent : uint8_t {
  kStarted = 1,
  kStepSucceeded = 2,          ///< a step's action succeeded
  kStepRefused = 3,            ///< a step's action was refused (nothing applied)
  kStepRetryable = 4,          ///< answered "retry" (nothing applied)
  kStepTimedOut = 5,           ///< no reply in time (outcome unknown)
  kCancelRequested = 6,        ///< the user asked to cancel
  kCompensationSucceeded = 7,
  kCompensationFailed = 8,     ///< failed or timed out
  kResent = 9,                 ///< a backoff or an open breaker ended: sent again
  kExpired = 10,               ///< older than the de-duplication horizon: parked
  kInternalError = 11,         ///< a transition threw: parked
  kOperatorRetry = 12,         ///< operator: Orchestrator::retry
  kOperatorCompensate = 13,    ///< operator: force_compensate
  kOperatorAbort = 14,         ///< operator: abort
  kOperatorSkip = 15,          ///< operator: skip_compensation
};
std::string_view to_string(TimelineEvent e) noexcept;

/// One transition of a saga as its timeline shows it (SagaView::timeline):
/// written in the same atomic write as the transition itself.
struct TimelineEntry {
  int64_t at_ms = 0;
  TimelineEvent event = TimelineEvent::kStarted;
  SagaState state = SagaState::kRunning;  ///< the saga's state after it
  /// The step the event concerns (the current step before it) and that
  /// step's status after it.
  uint32_t step = 0;
  StepStatus step_status = StepStatus::kPending;
  /// Attempt number of the command this transition sent, else of the one
  /// it answered (0 = none).
  uint32_t attempt = 0;
  /// Id of the command this transition sent ("" = none).
  std::string command_id;
  /// The participant's error or the timeout that caused it ("" = none).
  std::string error;
  /// Operator actions: who acted and why (OperatorNote).
  std::string actor;
  std::string reason;
};

/// Who asked for an admin action and why; kept in the saga's timeline.
struct OperatorNote {
  std::string actor;   ///< who acted (a user name); may be empty
  std::string reason;  ///< why; may be empty
};

/// A step of an instance, as queries show it.
struct StepView {
  std::string name;
  StepStatus status = StepStatus::kPending;
  uint32_t attempts = 0;               ///< sends of the action
  uint32_t compensation_attempts = 0;  ///< sends of the compensation
  int64_t started_ms = 0;              ///< first send (0 = never)
  int64_t finished_ms = 0;             ///< action outcome known (0 = not yet)
  int64_t compensated_ms = 0;          ///< compensation done (0 = not)
  std::string last_error;
  /// Times the action was sent anew after a refusal (past the pivot); each
  /// round is a new command, "<saga>/<step>/a.<round>".
  uint32_t round = 0;
  /// The same for the compensation, "<saga>/<step>/c.<round>".
  uint32_t compensation_round = 0;
};

/// An instance, as queries show it. Plain value.
struct SagaView {
  std::string id;
  std::string type;
  uint32_t version = 0;
  SagaState state = SagaState::kRunning;
  Json data;
  std::vector<StepView> steps;
  /// Index of the step being executed or compensated.
  uint32_t current_step = 0;
  std::string traceparent;
  std::string last_error;
  bool cancel_requested = false;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t finished_ms = 0;  ///< when it became terminal (0 = not)
  /// Every transition, oldest first: the first entry and the newest
  /// Options::timeline_limit - 1 (timeline_dropped says how many between
  /// them were dropped).
  std::vector<TimelineEntry> timeline;
  uint32_t timeline_dropped = 0;
  /// The participant whose reply (or resend) the saga waits for: its
  /// current step's action while Running, its compensation while
  /// Compensating; "" when none (a local step, Failed, terminal). Derived
  /// from the definition when read, not stored.
  std::string awaiting;
};

/// Filters and paging for list(). Empty optionals match everything.
struct ListQuery {
  std::optional<std::string> type;
  std::optional<SagaState> state;
  /// Only instances created at or after / before these times (ms since epoch).
  std::optional<int64_t> created_from_ms;
  std::optional<int64_t> created_to_ms;
  /// Page size; at most 1000. Default 100.
  uint32_t limit = 100;
  /// Continue after this token (from the previous page's next_page_token, or
  /// list_token()).
  std::string page_token;
  /// Only sagas whose shard this process drives (owner_of() is kHere): with
  /// replicas, each replica's part of a list gathered from all of them, which
  /// skips the standby copies and moved-away shards its store may hold.
  bool owned_only = false;
  /// Only sagas whose `awaiting` is this participant.
  std::optional<std::string> awaiting;
};

/// How many sagas are not terminal, by state and by where they wait: for
/// dashboards (Orchestrator::counts).
struct SagaCounts {
  uint64_t running = 0;
  uint64_t compensating = 0;
  uint64_t failed = 0;
  /// Per saga type, step (its name) and state: the sagas whose current step it is.
  struct AtStep {
    std::string type;
    std::string step;
    SagaState state = SagaState::kRunning;
    uint64_t count = 0;
  };
  std::vector<AtStep> by_step;  ///< sorted by type, step index, state
  /// Per participant: the sagas awaiting it (SagaView::awaiting).
  std::vector<std::pair<std::string, uint64_t>> by_participant;  ///< sorted by name
};

/// The page token that continues `query` after the saga created at
/// `created_ms` with id `id` (as next_page_token would after that saga): for
/// merging the pages of several replicas, which all read one index order
/// (created_ms, then id).
std::string list_token(const ListQuery& query, int64_t created_ms, std::string_view id);

/// One page of list() results, oldest first (by creation time).
struct SagaPage {
  std::vector<SagaView> items;
  /// Empty when there is nothing more.
  std::string next_page_token;
};

/// How a new saga is started.
struct StartOptions {
  /// Instance id; empty = generated. Starting an id that exists fails with
  /// AlreadyExists, which makes start() idempotent for callers that retry.
  std::string id;
  /// W3C traceparent to carry; empty = a new trace.
  std::string traceparent;
  /// Definition version; 0 = the newest registered. Default 0.
  uint32_t version = 0;
};

/// Counters of the engine, for tests and the benchmark.
struct EngineStats {
  uint64_t transitions = 0;    ///< state changes persisted
  uint64_t writes = 0;         ///< RocksDB write batches (group commits)
  uint64_t bytes_written = 0;  ///< bytes in those batches
  uint64_t messages_sent = 0;  ///< outbox records confirmed by the transport
  uint64_t stale_replies = 0;  ///< replies ignored as duplicate or stale
  uint64_t timers_fired = 0;
  uint64_t in_flight = 0;     ///< instances not terminal
  uint64_t outbox_depth = 0;  ///< outbox records not yet confirmed
  uint64_t shards_owned = 0;  ///< shards this process drives now (all, without replicas)
  /// Times a shard became this process's (claimed, restored, recovered)
  /// since open; counted before the shard serves anything, so a caller that
  /// keeps a view of the store (a service's index) can tell it may be stale.
  uint64_t shard_claims = 0;
  /// Changelog records applied by the restores of claimed shards.
  uint64_t restored_records = 0;
  /// Changelog records copied into standby copies (Options::standby).
  uint64_t standby_records = 0;
  /// The store's size on disk and in memory (SST files and memtables) and its
  /// estimated live keys, RocksDB's estimates over every shard it holds.
  uint64_t store_bytes = 0;
  uint64_t store_keys = 0;
};

/// Settings of an orchestrator.
struct Options {
  /// Folder of the RocksDB store (created if missing). Required.
  std::string data_dir;
  /// Name of this orchestrator; replies come to "<name>.replies". Default "orchestrator".
  std::string name = "orchestrator";
  /// fsync the WAL on every write. Default true.
  bool sync = true;
  /// Most transitions combined into one write (group commit) by one engine
  /// thread. Default 4096.
  uint32_t max_batch = 4096;
  /// Shards (docs/sharding.md): saga `id` lives in shard shard_of(id, shards),
  /// with its own key range of the store, and shards run in parallel. 0 = the
  /// store's count, or 12 for a new store. A count other than the store's
  /// fails open() with FailedPrecondition (a store written before shards
  /// existed has 1). Default 0.
  uint32_t shards = 0;
  /// Engine threads of start_background(); shard k runs on thread k % threads,
  /// and with more than one, a further thread polls the transport. Never more
  /// than the shards. 0 = one for now: on a small machine shared with the
  /// participants and a broker, several threads cost about 20% more CPU per
  /// saga (bench/README.md, "Shards"); set the number of cores on a machine
  /// of its own. run_once() always drives every shard on the calling thread,
  /// one iteration (and write) per engine thread's share in turn. Default 0.
  uint32_t threads = 0;
  /// Shard changelogs (docs/sharding.md, "The changelog"): each shard's
  /// changes and the messages they cause are committed together to the
  /// transport's changelog "<name>.changelog" (one per shard, fenced by later
  /// claims) before the local write, and a shard whose local store is missing
  /// or behind is restored from it by open(). The transport must keep
  /// changelogs (MemoryBus today; Kafka comes next). A fenced shard stops for
  /// good; a commit that fails otherwise rolls the shard back to its local
  /// store and retries after a rest (callers meanwhile get Unavailable with
  /// a retry-after). Default false.
  bool changelog = false;
  /// One of several replicas of this orchestrator (docs/replicas.md): the
  /// transport's consumer group of "<name>.replies" (one partition per shard)
  /// decides which shards this process owns; an assigned shard is claimed and
  /// restored from its changelog, then its sagas, timers and unsent commands
  /// are recovered; a revoked or lost one is dropped (its local data kept, as
  /// the start of the next restore). start() and the admin calls for a saga
  /// of a shard owned elsewhere are Unavailable; get() and list() read the
  /// local copy, which may be behind for such shards. Requires `changelog`
  /// and a transport with consumer groups. Default false.
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
  /// How long terminal instances are kept before removal. Default 7 days.
  Duration retention{7LL * 24 * 3600 * 1000};
  /// How often retention runs. Default 60 s.
  Duration retention_interval{60'000};
  /// A saga older than this sends nothing more (no command, no resend, no
  /// compensation): it parks as Failed for an operator. Set it to the
  /// participants' ParticipantOptions::dedup_horizon or less: their inboxes
  /// forget a command that long after handling it, and a command or a
  /// compensation sent later could be applied twice or undo nothing
  /// (docs/storage.md, "Participant retention"). 0 = no limit (for
  /// participants that never forget). Default 30 days.
  Duration dedup_horizon{30LL * 24 * 3600 * 1000};
  /// Most entries a saga's timeline keeps (SagaView::timeline): the first
  /// and the newest. 0 = keep no timeline. Default 64.
  uint32_t timeline_limit = 64;
  BreakerOptions breaker;
  BreakerPolicy breaker_policy = BreakerPolicy::kReject;
  /// Time source; default the system clock.
  std::shared_ptr<Clock> clock;
  /// Random source (jitter, ids); default seeded from the OS.
  std::shared_ptr<RandomSource> random;
  /// spdlog logger name. Default "saga".
  std::string logger = "saga";
  /// Called on the engine thread once an instance's terminal state
  /// (Completed, Compensated, Aborted) or Failed is durable. Must be quick
  /// and must not call back into the orchestrator's blocking methods. With
  /// several engine threads it runs on several threads at once (the calls
  /// for one saga come from one thread). Default: none.
  std::function<void(const SagaView&)> on_settled;
};

/// Result callback of start_async(); runs on the engine thread once the
/// start is durable (or has failed).
using StartCallback = std::function<void(StatusOr<std::string> id)>;

/// A durable saga orchestrator. Thread-safe: any thread may start, cancel,
/// query and administer sagas. The engine runs either on a background thread
/// (start_background) or on whichever thread calls run_once (tests).
class Orchestrator {
 public:
  /// Opens (or creates) the store in options.data_dir, registers `definitions`
  /// (several versions of one name may be given), subscribes to replies on
  /// `transport`, and resumes every unfinished instance. Fails with
  /// InvalidArgument on bad options or duplicate definitions, and with the
  /// store's error when RocksDB cannot open.
  static StatusOr<std::unique_ptr<Orchestrator>> open(Options options,
                                                      std::shared_ptr<Transport> transport,
                                                      std::vector<DefinitionPtr> definitions);
  virtual ~Orchestrator() = default;

  /// Starts a saga of `type` with `data` and returns its id once the start is
  /// durable. NotFound for an unknown type or version; AlreadyExists for a
  /// used id; Unavailable with retry_after() when a participant's breaker is
  /// open and the policy is kReject. Blocks; drives the engine itself when no
  /// background thread runs.
  virtual StatusOr<std::string> start(std::string_view type, Json data,
                                      StartOptions options = {}) = 0;
  /// Like start() but returns at once; `done` runs on the engine thread.
  virtual void start_async(std::string type, Json data, StartOptions options,
                           StartCallback done) = 0;

  /// Asks a running saga to stop: it compensates what it did. FailedPrecondition
  /// when it already finished; NotFound when unknown.
  virtual Status cancel(std::string_view id) = 0;

  /// The instance with its data and step history. NotFound when unknown.
  virtual StatusOr<SagaView> get(std::string_view id) const = 0;
  /// Instances matching `query`, a page at a time.
  virtual StatusOr<SagaPage> list(const ListQuery& query) const = 0;

  /// The domain record `key` (DefinitionBuilder::records) of the shard that
  /// `shard_key` maps to (the record's own shard_key, or the id of the saga
  /// that wrote it), nullopt when there is none or it has expired. Reads this
  /// process's store: with replicas, read where owner_of(shard_key) says.
  virtual StatusOr<std::optional<Record>> record(std::string_view shard_key,
                                                 std::string_view key) const = 0;
  /// Writes `records` outside any transition (a backfill: records for sagas
  /// that ran before their definition wrote any), atomically, and returns
  /// once they are durable. Every record's shard_key (empty = `shard_key`)
  /// must map to the shard of `shard_key` (else InvalidArgument, as for a
  /// bad key or expiry). `if_absent`: a key that holds a record keeps it.
  /// Unavailable when another replica owns the shard. Blocks.
  virtual Status write_records(std::string_view shard_key, std::vector<Record> records,
                               bool if_absent = false) = 0;
  /// Up to `limit` (1..1000) unexpired records of that shard whose keys start
  /// with `prefix`, in key order, after the key `after` (one returned before;
  /// empty = from the first). InvalidArgument for a bad limit.
  virtual StatusOr<std::vector<Record>> records(std::string_view shard_key,
                                                std::string_view prefix, std::string_view after,
                                                size_t limit) const = 0;

  /// Admin: re-runs the compensation of a Failed saga, or for one parked at
  /// its pivot (out of retries) sends the pivot again; attempts start again.
  /// Every admin action is recorded in the saga's timeline with `note`.
  virtual Status retry(std::string_view id, OperatorNote note = {}) = 0;
  /// Admin: compensates a Running or Failed saga now (parked at its pivot:
  /// the steps before the pivot, the operator deciding it did not happen).
  virtual Status force_compensate(std::string_view id, OperatorNote note = {}) = 0;
  /// Admin: stops a non-terminal saga where it is; nothing more is sent.
  virtual Status abort(std::string_view id, OperatorNote note = {}) = 0;
  /// Admin: a saga Failed on a compensation gives that step up as undone by
  /// hand (kCompensationSkipped) and compensates the steps before it, ending
  /// Compensated. FailedPrecondition for any other saga.
  virtual Status skip_compensation(std::string_view id, OperatorNote note = {}) = 0;
  /// Sagas not terminal, counted by state, step and awaited participant
  /// (with replicas: of the shards this process drives). Reads the store's
  /// state index and every such saga: the cost grows with sagas in flight.
  virtual StatusOr<SagaCounts> counts() const = 0;

  /// One engine iteration on the calling thread: takes replies, due timers and
  /// requests, persists their transitions in one write, then sends. Waits up to
  /// `max_wait` for input. Returns the number of transitions. Must not be mixed
  /// with start_background().
  virtual size_t run_once(Duration max_wait = Duration{0}) = 0;
  /// Runs the engine on a background thread until stop() or destruction.
  virtual void start_background() = 0;
  /// Stops the background thread after its current iteration.
  virtual void stop() = 0;

  /// Breaker state of a participant (kClosed for unknown names).
  virtual BreakerState breaker_state(std::string_view participant) const = 0;
  virtual EngineStats stats() const = 0;
  /// Metrics in Prometheus text exposition format.
  virtual std::string metrics_text() const = 0;
  /// OK while the store is open and the transport healthy (with replicas:
  /// and the owner of every shard is known, Unavailable before); Aborted once
  /// another owner claimed one of its shards (with Options::changelog), for
  /// good: this instance no longer serves that shard.
  virtual Status health() const = 0;

  /// Which replica drives the shard of saga `id` (docs/replicas.md,
  /// "Routing"): here, another replica and its advertised address, or
  /// unknown while the shard moves. Always here without Options::replicas.
  /// Thread-safe.
  virtual ShardOwner owner_of(std::string_view id) const = 0;
  /// owner_of() of every shard, by shard index. Thread-safe.
  virtual std::vector<ShardOwner> owners() const = 0;
};

}  // namespace saga
