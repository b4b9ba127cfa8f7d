// The engine. One thread at a time runs an iteration (run_once): it gathers
// requests, replies and due timers, applies each as a state-machine event to
// its instance, stages every resulting mutation (instance with its timer,
// index, outbox, reply mark) in ONE RocksDB batch, writes it, and only then releases
// the effects: acks to the transport, answers to callers, sends of new
// commands. A crash before the write loses nothing that was promised; a crash
// after it is repaired by recovery (outbox re-sent, timers re-armed).
#include "saga/orchestrator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "background_loop.h"
#include "changelog.h"
#include "owners.h"
#include "fsm/saga_fsm.h"
#include "instance.h"
#include "metrics.h"
#include "outbox.h"
#include "records.h"
#include "sweep.h"
#include "trace.h"
#include "saga/json.h"
#include "saga/shard.h"
#include "store/families.h"
#include "store/store.h"

namespace saga {

std::string_view to_string(SagaState s) noexcept {
  switch (s) {
    case SagaState::kRunning:
      return "RUNNING";
    case SagaState::kCompensating:
      return "COMPENSATING";
    case SagaState::kCompleted:
      return "COMPLETED";
    case SagaState::kCompensated:
      return "COMPENSATED";
    case SagaState::kFailed:
      return "FAILED";
    case SagaState::kAborted:
      return "ABORTED";
  }
  return "UNKNOWN";
}

StatusOr<SagaState> parse_saga_state(std::string_view s) {
  for (SagaState st : {SagaState::kRunning, SagaState::kCompensating, SagaState::kCompleted,
                       SagaState::kCompensated, SagaState::kFailed, SagaState::kAborted}) {
    if (s == to_string(st)) return st;
  }
  return Status::invalid_argument(
      "unknown saga state '" + std::string(s) +
      "' (RUNNING, COMPENSATING, COMPLETED, COMPENSATED, FAILED, ABORTED)");
}

bool is_terminal(SagaState s) noexcept {
  return s == SagaState::kCompleted || s == SagaState::kCompensated || s == SagaState::kAborted;
}

std::string_view to_string(StepStatus s) noexcept {
  switch (s) {
    case StepStatus::kPending:
      return "PENDING";
    case StepStatus::kRunning:
      return "RUNNING";
    case StepStatus::kSucceeded:
      return "SUCCEEDED";
    case StepStatus::kFailed:
      return "FAILED";
    case StepStatus::kUnknown:
      return "UNKNOWN";
    case StepStatus::kCompensating:
      return "COMPENSATING";
    case StepStatus::kCompensated:
      return "COMPENSATED";
    case StepStatus::kCompensationFailed:
      return "COMPENSATION_FAILED";
    case StepStatus::kCompensationSkipped:
      return "COMPENSATION_SKIPPED";
  }
  return "UNKNOWN";
}

std::string_view to_string(TimelineEvent e) noexcept {
  switch (e) {
    case TimelineEvent::kStarted:
      return "STARTED";
    case TimelineEvent::kStepSucceeded:
      return "STEP_SUCCEEDED";
    case TimelineEvent::kStepRefused:
      return "STEP_REFUSED";
    case TimelineEvent::kStepRetryable:
      return "STEP_RETRYABLE";
    case TimelineEvent::kStepTimedOut:
      return "STEP_TIMED_OUT";
    case TimelineEvent::kCancelRequested:
      return "CANCEL_REQUESTED";
    case TimelineEvent::kCompensationSucceeded:
      return "COMPENSATION_SUCCEEDED";
    case TimelineEvent::kCompensationFailed:
      return "COMPENSATION_FAILED";
    case TimelineEvent::kResent:
      return "RESENT";
    case TimelineEvent::kExpired:
      return "EXPIRED";
    case TimelineEvent::kInternalError:
      return "INTERNAL_ERROR";
    case TimelineEvent::kOperatorRetry:
      return "OPERATOR_RETRY";
    case TimelineEvent::kOperatorCompensate:
      return "OPERATOR_COMPENSATE";
    case TimelineEvent::kOperatorAbort:
      return "OPERATOR_ABORT";
    case TimelineEvent::kOperatorSkip:
      return "OPERATOR_SKIP";
  }
  return "UNKNOWN";
}

namespace internal {
namespace {

// Column families; docs/storage.md documents the key layout. kTimers is no
// longer written (timers are rebuilt from the instance records) but stays
// in the list: RocksDB refuses to open a store without all of its families.
enum Cf : size_t { kInstances = 0, kOutbox, kTimers, kReplies, kIndex };
const std::vector<std::string>& kColumnFamilies = kOrchestratorFamilies;

constexpr char kIdxAll = 'a';        // a <created be64> <id>
constexpr char kIdxType = 't';       // t <type> \0 <created be64> <id>
constexpr char kIdxState = 's';      // s <state byte> <created be64> <id>
constexpr char kIdxRetention = 'x';  // x <finished be64> <id>
constexpr char kIdxShape = 'd';      // d <fingerprint be64> -> the shape's lines

std::string shape_key(uint64_t fingerprint) {
  std::string k(1, kIdxShape);
  append_be64(k, fingerprint);
  return k;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    lines.emplace_back(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  return lines;
}

// Inside a catch (...): what the user's function threw, for the log and the
// saga's last error. No exception of a definition's functions reaches an
// engine thread.
std::string what_was_thrown() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Index keys of an instance. They hang off the creation time, so only the
// state key moves, and only when the state changes. `state` is the state the
// key is for (the instance's own unless given).
std::string index_key(char kind, const SagaView& v, std::optional<SagaState> state = {}) {
  std::string k(1, kind);
  switch (kind) {
    case kIdxType:
      k += v.type;
      k.push_back('\0');
      break;
    case kIdxState:
      k.push_back(static_cast<char>(state.value_or(v.state)));
      break;
    default:
      break;
  }
  append_be64(k, static_cast<uint64_t>(kind == kIdxRetention ? v.finished_ms : v.created_ms));
  k += v.id;
  return k;
}

// The index prefix list() scans for `q`: by type, else by state, else all.
std::string list_prefix(const ListQuery& q) {
  if (q.type) return std::string(1, kIdxType) + *q.type + std::string(1, '\0');
  if (q.state) return std::string(1, kIdxState) + std::string(1, static_cast<char>(*q.state));
  return std::string(1, kIdxAll);
}

// A page token: the index key of the last saga a page returned, in hex.
std::string encode_token(std::string_view key) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : key) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// The value of a retention key: what removing the instance needs to name its
// other index keys, so that retention reads nothing else: state ‖
// be64(created_ms) ‖ type. Keys written before it have an empty value.
std::string retention_value(const SagaView& v) {
  std::string out(1, static_cast<char>(v.state));
  append_be64(out, static_cast<uint64_t>(v.created_ms));
  out += v.type;
  return out;
}

std::optional<SagaView> from_retention_key(std::string_view key, std::string_view value) {
  if (value.size() < 9 || key.size() <= 9) return std::nullopt;
  SagaView v;
  v.id = key.substr(9);
  v.finished_ms = static_cast<int64_t>(read_be64(key.substr(1, 8)));
  v.state = static_cast<SagaState>(value[0]);
  v.created_ms = static_cast<int64_t>(read_be64(value.substr(1, 8)));
  v.type = value.substr(9);
  return v;
}

std::vector<std::string> index_keys(const SagaView& v) {
  std::vector<std::string> keys = {index_key(kIdxAll, v), index_key(kIdxType, v),
                                   index_key(kIdxState, v)};
  if (is_terminal(v.state)) keys.push_back(index_key(kIdxRetention, v));
  return keys;
}

// What persist() needs of an instance as it was before a transition.
struct Prior {
  SagaState state;
  int64_t updated_ms;  // -1: new, nothing on disk to replace
  uint32_t step = 0;   // the current step
};

// What a transition's timeline entry says beyond the instance itself.
struct Cause {
  TimelineEvent event;
  std::string_view command_id;          // sent by the transition ("" = none)
  const OperatorNote* note = nullptr;  // operator actions
};

TimelineEvent timeline_event(FsmEvent e) {
  switch (e) {
    case FsmEvent::kStart:
      return TimelineEvent::kStarted;
    case FsmEvent::kStepSucceeded:
      return TimelineEvent::kStepSucceeded;
    case FsmEvent::kStepFailed:
      return TimelineEvent::kStepRefused;
    case FsmEvent::kStepRetryable:
      return TimelineEvent::kStepRetryable;
    case FsmEvent::kStepTimedOut:
      return TimelineEvent::kStepTimedOut;
    case FsmEvent::kCancelRequested:
      return TimelineEvent::kCancelRequested;
    case FsmEvent::kCompensationSucceeded:
      return TimelineEvent::kCompensationSucceeded;
    case FsmEvent::kCompensationFailed:
      return TimelineEvent::kCompensationFailed;
    case FsmEvent::kRetryCompensation:
      return TimelineEvent::kOperatorRetry;
    case FsmEvent::kForceCompensate:
      return TimelineEvent::kOperatorCompensate;
    case FsmEvent::kAbort:
      return TimelineEvent::kOperatorAbort;
    case FsmEvent::kExpired:
      return TimelineEvent::kExpired;
    case FsmEvent::kSkipCompensation:
      return TimelineEvent::kOperatorSkip;
  }
  return TimelineEvent::kInternalError;
}

// Whether the event reports an error that the step's last_error now holds.
bool reports_error(TimelineEvent e) {
  return e == TimelineEvent::kStepRefused || e == TimelineEvent::kStepRetryable ||
         e == TimelineEvent::kStepTimedOut || e == TimelineEvent::kCompensationFailed ||
         e == TimelineEvent::kExpired || e == TimelineEvent::kInternalError;
}

struct Request {
  enum class Kind { kStart, kCancel, kRetry, kForce, kAbort, kSkip, kRecords } kind;
  std::string id;  // the saga; for kRecords, the shard key
  std::string type;
  Json data;
  StartOptions options;
  StartCallback done;
  std::vector<Record> records;  // kRecords
  bool if_absent = false;       // kRecords
  OperatorNote note;            // kRetry, kForce, kAbort, kSkip
};

// A pivot step out of retries parks its saga as Failed while its command may
// still commit (Transition::park_at_pivot): the saga still awaits that
// command's answer.
bool parked_at_pivot(const Instance& inst, const SagaDefinition& def) {
  const auto pivot = def.pivot();
  return inst.view.state == SagaState::kFailed && pivot && inst.view.current_step == *pivot &&
         inst.view.steps.at(inst.view.current_step).status != StepStatus::kCompensationFailed;
}

class OrchestratorImpl;
struct Shard;

// Binds the state machine's guards and actions to one instance of one shard
// during one event.
class Transition final : public FsmHooks {
 public:
  Transition(OrchestratorImpl& engine, Shard& shard, Instance& inst, const SagaDefinition& def)
      : e_(engine), sh_(shard), inst_(inst), def_(def) {}

  std::optional<FsmEvent> followup;  // set by local steps, whose outcome is known at once
  std::string sent;                  // the id of the command this transition sent

  bool has_next_step() override { return inst_.view.current_step + 1 < def_.steps().size(); }
  bool past_pivot() override {
    auto p = def_.pivot();
    return p && inst_.view.current_step > *p;
  }
  bool pivot_sent() override {
    auto p = def_.pivot();
    if (!p || inst_.view.current_step < *p) return false;
    return inst_.view.current_step > *p || step().attempts > 0;
  }
  bool at_pivot() override {
    auto p = def_.pivot();
    return p && inst_.view.current_step == *p;
  }
  bool parked_at_pivot() override { return internal::parked_at_pivot(inst_, def_); }
  bool attempts_left() override {
    const RetryPolicy& r = spec().retry;
    return r.max_attempts == 0 || inst_.attempt - inst_.attempt_base < r.max_attempts;
  }
  bool compensation_attempts_left() override {
    const RetryPolicy& r = spec().compensation_retry;
    return r.max_attempts == 0 || inst_.attempt - inst_.attempt_base < r.max_attempts;
  }
  bool has_compensable() override { return next_compensable().has_value(); }
  bool compensation_parked() override {
    return inst_.view.state == SagaState::kFailed &&
           step().status == StepStatus::kCompensationFailed;
  }

  void begin_first_step() override { begin_step(); }
  void succeed_and_begin_next() override {
    record_step_success();
    ++inst_.view.current_step;
    inst_.attempt = inst_.attempt_base = 0;
    inst_.uncertain = false;
    begin_step();
  }
  void succeed_last() override {
    record_step_success();
    finish();
  }
  void retry_step() override { schedule_resend(spec().retry); }
  void mark_step_failed() override {
    // Answered "retry" at the end, but an earlier attempt timed out: that one
    // may still have been applied, so the step must be undone like an unknown.
    settle_step(inst_.uncertain ? StepStatus::kUnknown : StepStatus::kFailed);
  }
  void mark_step_unknown() override {
    // Only a command that may have reached its participant has an unknown
    // outcome; a step never sent, or a local one, applied nothing.
    const bool maybe_applied = !spec().action.is_local() && step().attempts > 0;
    settle_step(maybe_applied ? StepStatus::kUnknown : StepStatus::kFailed);
  }
  void compensate_next() override {
    inst_.view.current_step = static_cast<uint32_t>(*next_compensable());
    inst_.attempt = inst_.attempt_base = 0;
    step().status = StepStatus::kCompensating;
    send_compensation();
  }
  void mark_compensated() override {
    step().status = StepStatus::kCompensated;
    step().compensated_ms = now_ms();
    inst_.awaiting.clear();
    clear_timer();
  }
  void retry_compensation() override { schedule_resend(spec().compensation_retry); }
  void park() override {
    step().status = StepStatus::kCompensationFailed;
    inst_.awaiting.clear();
    clear_timer();
  }
  void park_at_pivot() override {
    // Its outcome is open (a timeout) or nothing was applied yet (only
    // "retry" answers): undoing the steps before it could undo them while it
    // commits. Its last command stays awaited, so a late answer still counts.
    settle_step(inst_.uncertain ? StepStatus::kUnknown : StepStatus::kFailed);
    if (!spec().action.is_local() && step().attempts > 0) inst_.awaiting = command_id('a');
    inst_.view.last_error = "pivot step '" + spec().name + "' out of retries (" +
                            step().last_error + "): parked for an operator (retry sends it again, "
                            "force_compensate undoes the steps before it)";
  }
  void retry_parked_step() override {
    inst_.attempt_base = inst_.attempt;
    inst_.view.last_error.clear();
    begin_step();  // the same command id: a participant that applied it answers from its inbox
  }
  void restart_compensation() override {
    inst_.attempt_base = inst_.attempt;
    inst_.view.last_error.clear();
    step().status = StepStatus::kCompensating;
    send_compensation();
  }
  void skip_compensation() override {
    step().status = StepStatus::kCompensationSkipped;
    step().compensated_ms = now_ms();
    inst_.view.last_error.clear();
    inst_.awaiting.clear();
    clear_timer();
  }
  void finish_compensated() override { finish(); }
  void abort_saga() override { finish(); }
  void park_expired() override {
    inst_.awaiting.clear();
    clear_timer();
  }

  // Sends (again) whatever the current step is waiting to send.
  void resend() {
    if (inst_.view.state == SagaState::kCompensating) {
      send_compensation();
    } else {
      begin_step();
    }
  }

 private:
  const StepSpec& spec() const { return def_.steps().at(inst_.view.current_step); }
  StepView& step() { return inst_.view.steps.at(inst_.view.current_step); }
  int64_t now_ms() const;

  std::optional<size_t> next_compensable() const {
    for (size_t i = std::min<size_t>(inst_.view.current_step, def_.steps().size() - 1) + 1;
         i-- > 0;) {
      const StepStatus s = inst_.view.steps[i].status;
      const bool touched = s == StepStatus::kSucceeded || s == StepStatus::kUnknown ||
                           s == StepStatus::kCompensating;
      if (touched && def_.steps()[i].compensation) return i;
    }
    return std::nullopt;
  }

  void record_step_success();
  void settle_step(StepStatus status) {
    step().status = status;
    step().finished_ms = now_ms();
    inst_.awaiting.clear();
    clear_timer();
  }
  void finish() {
    inst_.awaiting.clear();
    clear_timer();
  }
  void clear_timer() {
    inst_.timer = TimerKind::kNone;
    inst_.timer_due_ms = 0;
  }
  void begin_step();
  void send_compensation();
  std::string command_id(char side) const;
  void send_command(const Action& a, std::string id, std::string compensates);
  Status run_local(const LocalFn& fn);
  void schedule_resend(const RetryPolicy& policy);

  OrchestratorImpl& e_;
  Shard& sh_;
  Instance& inst_;
  const SagaDefinition& def_;
};

// One shard's engine state. Everything but the mailbox is touched only by
// the thread driving the shard during an iteration.
struct Shard {
  Shard(Store& store, uint32_t i) : index(i), ks(store, i) {}

  const uint32_t index;
  const Keyspace ks;  // the shard's keys in the store
  std::unordered_map<std::string, Instance> live;
  std::set<std::pair<int64_t, std::string>> timers;
  std::vector<std::pair<Message, Transport::Ack>> inbound;
  std::unique_ptr<Outbox> outbox;
  std::vector<std::string> finished;  // terminal: leave `live` after the write
  std::vector<std::string> settled;   // terminal or Failed: reported through on_settled
  std::string record;                 // scratch for encode_instance
  // Fingerprints whose shape record this shard has staged since it loaded.
  std::unordered_set<uint64_t> shapes;
  Sweep retention_sweep;     // of finished sagas
  Sweep record_sweep;        // of expired domain records
  std::unordered_set<std::string> records_staged;  // record keys in the current iteration's batch
  bool legacy_marks = true;  // the shard may hold reply marks of older versions
  uint64_t staged = 0;     // transitions staged in the current iteration
  Batch* batch = nullptr;  // the driving thread's batch, during an iteration
  // The outbox's counters, published for stats() by the driving thread.
  std::atomic<uint64_t> sent{0}, depth{0};
  // With Options::changelog: the shard's claim of its changelog, the
  // messages of the current iteration (they go out with the commit), and
  // whether a later claim fenced this one (the shard then does nothing more).
  std::unique_ptr<ShardLog> log;
  std::vector<Message> commit_messages;
  std::atomic<bool> lost{false};
  // With Options::replicas: whether the group assigned the shard to this
  // process, and whether it is claimed, restored and recovered (it then
  // runs). Without replicas every shard is both, always.
  bool assigned = true;
  std::atomic<bool> owned{true};
  bool outbox_recovered = false;
  // With replicas: this process's ownership record still has to go out
  // (docs/replicas.md, "Routing"), with the shard's next commit.
  bool publish_owner = false;
  // After a commit that failed otherwise (rolled back): rest until
  // resume_ms, answering rest_status; the rest doubles while it fails.
  // The failed commit may have reached the log all the same (its answer was
  // lost), so the shard catches up with its log before it works again.
  bool rolled_back = false;  // in the current iteration
  bool resync = false;       // memory unloaded; catch up with the log first
  int64_t resume_ms = 0;
  Duration commit_backoff{0};
  Status rest_status;

  // The mailbox: filled by any thread (API callers, the transport's handlers
  // and send callbacks), emptied by the driving thread.
  std::mutex mu;
  std::deque<Request> requests;                              // GUARDED_BY(mu)
  std::vector<std::pair<Message, Transport::Ack>> arrived;   // GUARDED_BY(mu)
  std::vector<std::function<void()>> deferred;               // GUARDED_BY(mu)
  struct Driver* driver = nullptr;  // the driver of its thread, fixed after init()
};

// A thread driving some shards: one batch, one write per iteration for all
// of them, and the wake-up that work for any of them rings.
struct Driver {
  std::vector<Shard*> shards;
  Batch batch;
  Bell bell;
};

class OrchestratorImpl final : public Orchestrator {
 public:
  OrchestratorImpl(Options options, std::shared_ptr<Transport> transport)
      : opts_(std::move(options)), transport_(std::move(transport)) {
    log_ = spdlog::get(opts_.logger);
    if (!log_) log_ = spdlog::default_logger()->clone(opts_.logger);
    reply_endpoint_ = opts_.name + ".replies";
  }

  ~OrchestratorImpl() override { stop(); }

  Status init(std::vector<DefinitionPtr> definitions) {
    for (DefinitionPtr& d : definitions) {
      if (!d) return Status::invalid_argument("null saga definition");
      auto& versions = definitions_[d->name()];
      if (!versions.emplace(d->version(), d).second) {
        return Status::invalid_argument("saga definition '" + d->name() + "' v" +
                                        std::to_string(d->version()) + " registered twice");
      }
    }
    SAGA_ASSIGN_OR_RETURN(store_, Store::open(opts_.data_dir, kColumnFamilies, opts_.sync,
                                              {.wanted = opts_.shards,
                                               .for_new_store = kDefaultShards}));
    for (uint32_t k = 0; k < store_->shards(); ++k) {
      auto sh = std::make_unique<Shard>(*store_, k);
      Shard* raw = sh.get();
      sh->outbox = std::make_unique<Outbox>(
          sh->ks, store_->cf(kOutbox), *transport_, *opts_.clock, log_,
          [this, raw](std::function<void()> fn) { post(*raw, std::move(fn)); });
      keyspaces_.push_back(sh->ks);
      shards_.push_back(std::move(sh));
    }
    const size_t threads = std::min<size_t>(thread_count(), shards_.size());
    for (size_t t = 0; t < threads; ++t) drivers_.push_back(std::make_unique<Driver>());
    for (auto& sh : shards_) {
      Driver& d = *drivers_[sh->index % threads];
      d.shards.push_back(sh.get());
      sh->driver = &d;
    }
    if (opts_.changelog)
      changelog_families_ = {store_->cf(kInstances), store_->cf(kReplies), store_->cf(kIndex)};
    if (opts_.replicas) {
      if (!opts_.changelog) {
        return Status::invalid_argument("orchestrator '" + opts_.name +
                                        "': replicas need the changelog (Options::changelog)");
      }
      for (auto& sh : shards_) {  // claimed when the group assigns them
        sh->assigned = false;
        sh->owned = false;
      }
      owners_ = std::make_unique<OwnerTable>(opts_.name, store_->shards(), opts_.advertised_address);
      SAGA_RETURN_IF_ERROR(owners_->subscribe(*transport_));
      if (opts_.standby) {
        standby_ = std::make_unique<Standby>(*transport_, opts_.name + ".changelog", keyspaces_,
                                             changelog_families_, log_,
                                             "orchestrator '" + opts_.name + "'");
        standby_->start();
      }
    } else if (opts_.standby) {
      return Status::invalid_argument("orchestrator '" + opts_.name +
                                      "': a standby copy needs replicas (Options::replicas)");
    } else {
      for (auto& sh : shards_) SAGA_RETURN_IF_ERROR(activate(*sh));
    }
    auto handler = [this](Message m, Transport::Ack ack) {
      Shard& sh = shard_for(m.saga_id);
      {
        std::lock_guard lock(sh.mu);
        sh.arrived.emplace_back(std::move(m), std::move(ack));
      }
      ring(sh);
    };
    if (!opts_.replicas) return transport_->subscribe(reply_endpoint_, handler);
    PartitionedSubscription how;
    how.partitions = store_->shards();
    how.listener.assigned = [this](const std::vector<uint32_t>& ps) {
      on_driving_threads(ps, [](Shard& sh) {
        sh.assigned = true;  // claimed and restored by its thread's next iteration
        sh.resume_ms = 0;
      });
    };
    how.listener.revoked = [this](const std::vector<uint32_t>& ps) {
      on_driving_threads(ps, [this](Shard& sh) { release(sh, "revoked"); });
    };
    how.listener.lost = [this](const std::vector<uint32_t>& ps) {
      on_driving_threads(ps, [this](Shard& sh) { release(sh, "lost"); });
    };
    return transport_->subscribe_partitioned(reply_endpoint_, handler, std::move(how));
  }

  // ---------------------------------------------------------------- API
  StatusOr<std::string> start(std::string_view type, Json data, StartOptions options) override {
    return call(Request{Request::Kind::kStart, options.id, std::string(type), std::move(data),
                        std::move(options), nullptr, {}, false, {}});
  }

  void start_async(std::string type, Json data, StartOptions options, StartCallback done) override {
    enqueue(Request{Request::Kind::kStart, options.id, std::move(type), std::move(data),
                    std::move(options), std::move(done), {}, false, {}});
  }

  Status cancel(std::string_view id) override { return admin(Request::Kind::kCancel, id, {}); }
  Status retry(std::string_view id, OperatorNote note) override {
    return admin(Request::Kind::kRetry, id, std::move(note));
  }
  Status force_compensate(std::string_view id, OperatorNote note) override {
    return admin(Request::Kind::kForce, id, std::move(note));
  }
  Status abort(std::string_view id, OperatorNote note) override {
    return admin(Request::Kind::kAbort, id, std::move(note));
  }
  Status skip_compensation(std::string_view id, OperatorNote note) override {
    return admin(Request::Kind::kSkip, id, std::move(note));
  }

  StatusOr<SagaView> get(std::string_view id) const override {
    const Shard& sh = shard_for(id);
    SAGA_ASSIGN_OR_RETURN(auto bytes, sh.ks.get(store_->cf(kInstances), id));
    if (!bytes) return Status::not_found("no saga '" + std::string(id) + "'");
    SAGA_ASSIGN_OR_RETURN(Instance inst, decode_instance(*bytes));
    inst.view.awaiting = awaited_participant(inst.view);
    return std::move(inst.view);
  }

  StatusOr<SagaCounts> counts() const override {
    SagaCounts c;
    std::map<std::tuple<std::string, uint32_t, SagaState>, SagaCounts::AtStep> steps;
    std::map<std::string, uint64_t> participants;
    for (SagaState state : {SagaState::kRunning, SagaState::kCompensating, SagaState::kFailed}) {
      ListQuery q;
      q.state = state;
      const std::string prefix = list_prefix(q);
      Status inner;
      SAGA_RETURN_IF_ERROR(scan_merged(
          keyspaces_, store_->cf(kIndex), prefix, prefix,
          [&](std::string_view key, std::string_view) {
            StatusOr<SagaView> v = get(key.substr(prefix.size() + 8));
            if (!v.ok() && v.status().code() == StatusCode::kNotFound) return true;  // removed
            if (!v.ok()) {
              inner = v.status();
              return false;
            }
            if (v->state != state || owner_of(v->id).where != ShardOwner::Where::kHere) return true;
            (state == SagaState::kRunning        ? c.running
             : state == SagaState::kCompensating ? c.compensating
                                                 : c.failed)++;
            SagaCounts::AtStep& at = steps[{v->type, v->current_step, state}];
            at.type = v->type;
            if (v->current_step < v->steps.size()) at.step = v->steps[v->current_step].name;
            at.state = state;
            ++at.count;
            if (!v->awaiting.empty()) ++participants[v->awaiting];
            return true;
          }));
      SAGA_RETURN_IF_ERROR(inner);
    }
    for (auto& [key, at] : steps) c.by_step.push_back(std::move(at));
    c.by_participant.assign(participants.begin(), participants.end());
    return c;
  }

  Status write_records(std::string_view shard_key, std::vector<Record> records,
                       bool if_absent) override {
    const Shard& sh = shard_for(shard_key);
    for (Record& r : records) {
      if (r.shard_key.empty()) r.shard_key = shard_key;
      if (std::string why = record_problem(r, sh); !why.empty())
        return Status::invalid_argument("record '" + r.key.substr(0, 64) + "': " + why);
    }
    Request r{Request::Kind::kRecords, std::string(shard_key), {}, {}, {}, nullptr,
              std::move(records), if_absent, {}};
    StatusOr<std::string> result = call(std::move(r));
    return result.ok() ? ok_status() : result.status();
  }

  StatusOr<std::optional<Record>> record(std::string_view shard_key,
                                         std::string_view key) const override {
    const Shard& sh = shard_for(shard_key);
    const std::string k = record_key(key);
    SAGA_ASSIGN_OR_RETURN(auto bytes, sh.ks.get(store_->cf(kIndex), k));
    if (!bytes) return std::optional<Record>();
    std::optional<Record> r = decode_record(key, *bytes);
    if (!r) return Status::data_loss("undecodable record '" + std::string(key) + "'");
    if (r->expires_ms > 0 && r->expires_ms <= to_millis(opts_.clock->now()))
      return std::optional<Record>();
    return r;
  }

  StatusOr<std::vector<Record>> records(std::string_view shard_key, std::string_view prefix,
                                        std::string_view after, size_t limit) const override {
    if (limit == 0 || limit > 1000) return Status::invalid_argument("limit must be in 1..1000");
    const Shard& sh = shard_for(shard_key);
    const std::string p = record_key(prefix);
    std::string from = p;
    if (!after.empty()) from = std::max(from, record_key(after) + '\0');
    const int64_t now = to_millis(opts_.clock->now());
    std::vector<Record> out;
    Status bad;
    SAGA_RETURN_IF_ERROR(sh.ks.scan(store_->cf(kIndex), p, from,
                                    [&](std::string_view k, std::string_view v) {
                                      std::optional<Record> r = decode_record(k.substr(1), v);
                                      if (!r) {
                                        bad = Status::data_loss("undecodable record '" +
                                                                std::string(k.substr(1)) + "'");
                                        return false;
                                      }
                                      if (r->expires_ms > 0 && r->expires_ms <= now) return true;
                                      out.push_back(std::move(*r));
                                      return out.size() < limit;
                                    }));
    SAGA_RETURN_IF_ERROR(bad);
    return out;
  }

  // Every shard's index is scanned from the same key; the keys are merged in
  // order, which is the order of a single shard's pages, so a page token
  // (the last key returned) means the same whatever the shard count.
  StatusOr<SagaPage> list(const ListQuery& q) const override {
    if (q.limit == 0 || q.limit > 1000) return Status::invalid_argument("limit must be in 1..1000");
    const std::string prefix = list_prefix(q);
    std::string from = prefix;
    if (q.created_from_ms) append_be64(from, static_cast<uint64_t>(*q.created_from_ms));
    if (!q.page_token.empty()) {
      SAGA_ASSIGN_OR_RETURN(std::string after, decode_token(q.page_token));
      if (after.compare(0, prefix.size(), prefix) != 0) {
        return Status::invalid_argument("page token does not belong to this query");
      }
      after.push_back('\0');  // strictly after the last key returned
      from = std::max(from, after);
    }
    // The shards' index scans merged in key order; entries skipped below
    // (removed, or of another state) never cut a page short.
    SagaPage page;
    std::string last_key;
    Status inner;
    SAGA_RETURN_IF_ERROR(scan_merged(
        keyspaces_, store_->cf(kIndex), prefix, from, [&](std::string_view key, std::string_view) {
          const uint64_t created = read_be64(key.substr(prefix.size(), 8));
          if (q.created_to_ms && static_cast<int64_t>(created) >= *q.created_to_ms) return false;
          if (page.items.size() == q.limit) {
            page.next_page_token = encode_token(last_key);
            return false;
          }
          last_key = key;
          StatusOr<SagaView> v = get(key.substr(prefix.size() + 8));
          if (!v.ok() && v.status().code() == StatusCode::kNotFound) return true;  // removed
          if (!v.ok()) {
            inner = v.status();
            return false;
          }
          if (q.state && v->state != *q.state) return true;
          if (q.awaiting && v->awaiting != *q.awaiting) return true;
          if (q.owned_only && owner_of(v->id).where != ShardOwner::Where::kHere) return true;
          page.items.push_back(std::move(*v));
          return true;
        }));
    SAGA_RETURN_IF_ERROR(inner);
    return page;
  }

  // One driver: its iteration, polling the transport itself. Several: the
  // transport is polled once, then every driver iterates in turn, as their
  // threads would (each its own batch and write).
  size_t run_once(Duration max_wait) override {
    std::lock_guard engine(engine_mu_);
    if (drivers_.size() == 1) return iterate(*drivers_[0], max_wait, /*poll=*/true);
    Duration wait = max_wait;
    for (auto& d : drivers_) {
      int64_t next_due = std::numeric_limits<int64_t>::max();
      if (has_work(*d, next_due)) wait = Duration{0};
      if (next_due != std::numeric_limits<int64_t>::max())
        wait = std::min(wait, Duration{std::max<int64_t>(0, next_due - now_ms())});
    }
    transport_->poll(wait);
    size_t done = 0;
    for (auto& d : drivers_) done += iterate(*d, Duration{0}, /*poll=*/false);
    return done;
  }

  // One thread over every shard polls the transport itself, as run_once
  // does. Several threads share the shards (shard k on thread k % T), and a
  // pump thread polls the transport and routes what arrives to the shards.
  void start_background() override {
    threads_.start(drivers_.size(),
                   {[this] { run_once(kIdleWait); },
                    [this](size_t i) { iterate(*drivers_[i], kIdleWait, /*poll=*/false); },
                    [this] { transport_->poll(kIdleWait); },
                    [this] {
                      for (auto& d : drivers_) d->bell.ring();
                      transport_->wake();
                    }});
  }

  void stop() override { threads_.stop(); }

  BreakerState breaker_state(std::string_view participant) const override {
    std::lock_guard lock(breakers_mu_);
    auto it = breakers_.find(std::string(participant));
    return it == breakers_.end() ? BreakerState::kClosed : it->second.state();
  }

  EngineStats stats() const override {
    EngineStats s;
    s.transitions = transitions_;
    s.writes = writes_;
    s.bytes_written = bytes_written_;
    for (const auto& sh : shards_) {
      s.messages_sent += sh->sent;
      s.outbox_depth += sh->depth;
    }
    s.stale_replies = stale_replies_;
    s.timers_fired = timers_fired_;
    s.in_flight = in_flight_;
    for (const auto& sh : shards_) s.shards_owned += sh->owned ? 1 : 0;
    s.shard_claims = shard_claims_;
    s.restored_records = restored_records_;
    s.standby_records = standby_ ? standby_->records() : 0;
    const Store::Size size = store_->size();
    s.store_bytes = size.bytes;
    s.store_keys = size.keys;
    return s;
  }

  std::string metrics_text() const override {
    const Store::Size size = store_->size();  // read when scraped: RocksDB keeps the estimates
    metrics_.store_bytes.Set(static_cast<double>(size.bytes));
    metrics_.store_keys.Set(static_cast<double>(size.keys));
    return metrics_.text();
  }

  ShardOwner owner_of(std::string_view id) const override {
    const Shard& sh = shard_for(id);
    if (!owners_) return ShardOwner{ShardOwner::Where::kHere, sh.index, {}};
    return owners_->lookup(sh.index, sh.owned);
  }

  std::vector<ShardOwner> owners() const override {
    std::vector<ShardOwner> out;
    for (const auto& sh : shards_) {
      out.push_back(owners_ ? owners_->lookup(sh->index, sh->owned)
                            : ShardOwner{ShardOwner::Where::kHere, sh->index, {}});
    }
    return out;
  }

  Status health() const override {
    {
      std::lock_guard lock(status_mu_);
      if (!store_status_.ok()) return store_status_;
    }
    for (const auto& sh : shards_) {
      if (sh->lost) return lost_status(*sh);
    }
    if (owners_) SAGA_RETURN_IF_ERROR(owners_->readiness("orchestrator '" + opts_.name + "'"));
    return transport_->health();
  }

  // ------------------------------------------------ used by Transition
  Clock& clock() { return *opts_.clock; }
  RandomSource& random() { return *opts_.random; }
  const std::string& reply_endpoint() const { return reply_endpoint_; }
  int64_t dedup_horizon_ms() const { return opts_.dedup_horizon.count(); }

  void stage_send(Shard& sh, Message m) {
    if (sh.log) {
      sh.commit_messages.push_back(std::move(m));
    } else {
      sh.outbox->stage(*sh.batch, std::move(m));
    }
  }

  // Whether `participant`'s breaker lets a command through now; when not,
  // `retry_at` says when to try again.
  bool breaker_allows(const std::string& participant, TimePoint& retry_at, std::string& probe) {
    std::lock_guard lock(breakers_mu_);
    CircuitBreaker& b = breaker(participant);
    const bool was_half_open = b.state() == BreakerState::kHalfOpen;
    if (b.allow()) {
      if (was_half_open) probe = participant;
      return true;
    }
    retry_at = b.retry_at();
    // A half-open breaker with every probe slot taken: look again shortly.
    if (retry_at <= clock().now()) retry_at = clock().now() + Duration{50};
    return false;
  }

  void step_finished(const Instance& inst, const StepView& s) {
    if (s.started_ms > 0) {
      metrics_.step_latency(inst.view.type, s.name)
          .Observe(static_cast<double>(now_ms() - s.started_ms) / 1000.0);
    }
  }

  int64_t now_ms() { return to_millis(clock().now()); }

 private:
  // What an iteration releases for one shard once its batch is durable.
  struct Release {
    Shard* shard;
    std::vector<std::pair<Message, Transport::Ack>> consumed;  // replies handled
    std::vector<std::pair<StartCallback, StatusOr<std::string>>> answers;
  };

  // A background thread with nothing to do sleeps this long at most (work
  // for its shards wakes it at once; timers bound the wait too).
  static constexpr Duration kIdleWait{50};

  size_t thread_count() const {
    if (opts_.threads != 0) return opts_.threads;
    return 1;  // see Options::threads: several threads are opt-in for now
  }

  Shard& shard_for(std::string_view id) const {
    return *shards_[shards_.size() == 1 ? 0 : shard_of(id, static_cast<uint32_t>(shards_.size()))];
  }

  // Wakes the thread driving `sh`: its bell when it has a thread of its
  // own, else the transport's poll() that the one engine thread waits in.
  void ring(Shard& sh) {
    if (threads_.threaded()) {
      sh.driver->bell.ring();
    } else {
      transport_->wake();
    }
  }

  // Runs `fn` on the shard's driving thread in its next iteration (transport
  // callbacks: they arrive on whichever thread polls).
  void post(Shard& sh, std::function<void()> fn) {
    {
      std::lock_guard lock(sh.mu);
      sh.deferred.push_back(std::move(fn));
    }
    ring(sh);
  }

  // ------------------------------------------------------- requests
  StatusOr<std::string> call(Request r) {
    auto promise = std::make_shared<std::promise<StatusOr<std::string>>>();
    auto future = promise->get_future();
    r.done = [promise](StatusOr<std::string> result) { promise->set_value(std::move(result)); };
    enqueue(std::move(r));
    if (!threads_.running()) {
      // Nobody else drives the engine: do it here until our request is answered.
      while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
        run_once(Duration{0});
    }
    return future.get();
  }

  Status admin(Request::Kind kind, std::string_view id, OperatorNote note) {
    Request r{kind, std::string(id), {}, {}, {}, nullptr, {}, false, std::move(note)};
    StatusOr<std::string> result = call(std::move(r));
    return result.ok() ? ok_status() : result.status();
  }

  // A start without an id gets one here, so that it can go to its shard.
  void enqueue(Request r) {
    if (r.kind == Request::Kind::kStart && r.options.id.empty())
      r.options.id = hex(random().next()) + hex(random().next());
    if (r.kind == Request::Kind::kStart) trace::point("o.request", r.options.id, "start");
    Shard& sh = shard_for(r.kind == Request::Kind::kStart ? r.options.id : r.id);
    {
      std::lock_guard lock(sh.mu);
      sh.requests.push_back(std::move(r));
    }
    ring(sh);
  }

  // ------------------------------------------------------ iteration
  // Whether the driver's shards have work now (after running their deferred
  // callbacks and due resends); lowers `next_due` to the earliest timer or
  // end of a rest. Called by the driving thread.
  bool has_work(Driver& d, int64_t& next_due) {
    bool busy = false;
    for (Shard* sh : d.shards) {
      if (sh->lost) continue;
      if (sh->resume_ms > now_ms()) {
        next_due = std::min(next_due, sh->resume_ms);
        continue;
      }
      run_deferred(*sh);
      if (!sh->owned) {
        std::lock_guard lock(sh->mu);
        busy = busy || sh->assigned || !sh->requests.empty();
        continue;
      }
      sh->outbox->retry_failed();
      std::lock_guard lock(sh->mu);
      busy = busy || sh->resync || !sh->requests.empty() || !sh->arrived.empty() ||
             !sh->inbound.empty() || sh->outbox->has_unsent();
      if (!sh->timers.empty()) next_due = std::min(next_due, sh->timers.begin()->first);
    }
    return busy;
  }

  // One iteration over the driver's shards: one batch, one write. `poll`:
  // this thread polls the transport (else a pump does, and rings).
  size_t iterate(Driver& d, Duration max_wait, bool poll) {
    if (!store_status_ok()) {
      const Status broken = store_status();
      for (Shard* sh : d.shards) fail_requests(take(sh->requests, *sh), broken);
      if (!poll) d.bell.wait(max_wait);
      return 0;
    }
    int64_t next_due = std::numeric_limits<int64_t>::max();
    const bool busy = has_work(d, next_due);
    Duration wait{0};
    if (!busy) {
      wait = max_wait;
      if (next_due != std::numeric_limits<int64_t>::max())
        wait = std::min(wait, Duration{std::max<int64_t>(0, next_due - now_ms())});
    }
    if (poll) {
      transport_->poll(wait);  // replies -> mailboxes, send confirmations -> deferred
    } else if (wait.count() > 0) {
      d.bell.wait(wait);
    }

    // Group commit: everything gathered goes into one write, up to max_batch
    // transitions; the rest waits for the next iteration (replies unacked).
    uint64_t staged_before = 0;  // by the shards done so far
    size_t retention_budget = std::max<size_t>(1, opts_.max_batch);  // removals, all shards
    std::vector<Release> releases;
    releases.reserve(d.shards.size());
    for (Shard* shp : d.shards) {
      Shard& sh = *shp;
      if (sh.lost) {
        fail_requests(take(sh.requests, sh), lost_status(sh));
        continue;
      }
      if (!sh.owned && sh.assigned && sh.resume_ms <= now_ms()) {
        if (Status s = activate(sh); !s.ok()) {
          rest(sh, s);
          log_->warn("{}: cannot take the shard ({}); next try in {} ms", shard_name(sh),
                     s.to_string(), sh.commit_backoff.count());
        }
      }
      if (!sh.owned) {
        if (!sh.assigned) sh.inbound.clear();  // unacked, for the owner; else they wait
        fail_requests(take(sh.requests, sh),
                      sh.assigned ? Status::unavailable(shard_name(sh) + " is being restored")
                                        .with_retry_after(Duration{200})
                                  : not_owned_status(sh));
        continue;
      }
      sh.rolled_back = false;
      if (sh.resume_ms > now_ms()) {  // resting after a failed commit
        fail_requests(take(sh.requests, sh), sh.rest_status);
        continue;
      }
      if (sh.resync) {
        const Status s = resync(sh);
        if (s.code() == StatusCode::kUnavailable) {
          rest(sh, s);
          fail_requests(take(sh.requests, sh), sh.rest_status);
          continue;
        }
        if (s.code() == StatusCode::kAborted && opts_.replicas) {  // another replica has it
          drop(sh);
          sh.assigned = false;
          log_->warn("{}: fenced ({}); dropped until assigned again", shard_name(sh),
                     s.to_string());
          continue;
        }
        if (s.code() == StatusCode::kAborted) {  // fenced meanwhile: not ours any more
          sh.lost = true;
          sh.inbound.clear();
          log_->error("orchestrator '{}' shard {} stops: {}", opts_.name, sh.index, s.to_string());
          fail_requests(take(sh.requests, sh), lost_status(sh));
          continue;
        }
        if (!s.ok()) {  // reading the store failed: refuse everything from now on
          fail_stop(s.with_context("shard " + std::to_string(sh.index) +
                                   " cannot catch up with its changelog; reopen the orchestrator"));
          fail_requests(take(sh.requests, sh), store_status());
          continue;
        }
      }
      run_deferred(sh);
      if (!sh.owned) continue;  // released by a deferred call of the group's
      sh.batch = &d.batch;
      sh.staged = 0;
      sh.records_staged.clear();
      const auto full = [&] { return staged_before + sh.staged >= opts_.max_batch; };
      Release& rel = releases.emplace_back(Release{&sh, {}, {}});
      sh.outbox->stage_confirmed(d.batch);
      std::deque<Request> requests = take(sh.requests, sh);
      size_t taken = 0;
      for (; taken < requests.size() && !full(); ++taken) {
        Request& r = requests[taken];
        if (r.kind == Request::Kind::kStart) trace::point("o.stage", r.options.id, "start");
        StatusOr<std::string> result = handle_request(sh, r);
        if (r.done) rel.answers.emplace_back(std::move(r.done), std::move(result));
      }
      if (taken < requests.size()) {
        std::lock_guard lock(sh.mu);
        sh.requests.insert(sh.requests.begin(),
                           std::make_move_iterator(requests.begin() + static_cast<long>(taken)),
                           std::make_move_iterator(requests.end()));
      }
      {
        std::lock_guard lock(sh.mu);
        for (auto& in : sh.arrived) sh.inbound.push_back(std::move(in));
        sh.arrived.clear();
      }
      size_t replies = 0;
      for (; replies < sh.inbound.size() && !full(); ++replies) {
        trace::point("o.stage", sh.inbound[replies].first.saga_id, sh.inbound[replies].first.id);
        handle_reply(sh, sh.inbound[replies].first);
        rel.consumed.push_back(std::move(sh.inbound[replies]));
      }
      sh.inbound.erase(sh.inbound.begin(), sh.inbound.begin() + static_cast<long>(replies));
      fire_due_timers(sh, full);
      sweep_retention(sh, retention_budget);
      staged_before += sh.staged;
    }

    Status committed = opts_.changelog ? commit_changelogs(d, releases) : ok_status();
    if (!committed.ok() || !d.batch.empty()) {
      Status s = committed;
      if (s.ok()) {
        bytes_written_ += d.batch.bytes();
        s = store_->write(d.batch);
      }
      d.batch.clear();
      if (!s.ok()) {
        // Fail-stop: memory is now ahead of disk. Recovery from the store is
        // the only safe way on, so refuse everything until reopened.
        const Status broken = s.with_context(committed.ok()
                                                 ? "store write failed; reopen the orchestrator"
                                                 : "changelog commit failed; reopen the orchestrator");
        fail_stop(broken);
        for (Release& rel : releases) {
          for (auto& [done, result] : rel.answers) done(broken);
          rel.shard->outbox->discard_staged();
        }
        return 0;
      }
      ++writes_;
      metrics_.writes.Increment();
    }
    for (Release& rel : releases) {
      Shard& sh = *rel.shard;
      if (sh.lost || sh.rolled_back) continue;  // its part was not committed: nothing leaves
      for (auto& [reply, ack] : rel.consumed) {
        trace::point("o.durable", reply.saga_id, reply.id);
        ack();
      }
      for (auto& [done, result] : rel.answers) {
        if (result.ok()) trace::point("o.durable", *result, "start");
        done(std::move(result));
      }
      sh.outbox->release();
      for (const std::string& id : sh.settled) {
        if (!opts_.on_settled) break;
        if (const Instance* inst = find_live(sh, id)) opts_.on_settled(inst->view);
      }
      sh.settled.clear();
      for (const std::string& id : sh.finished) sh.live.erase(id);
      sh.finished.clear();
      sh.batch = nullptr;
      sh.sent = sh.outbox->confirmed_total();
      sh.depth = sh.outbox->depth();
    }
    update_gauges();
    return static_cast<size_t>(staged_before);
  }

  // ------------------------------------------------------ changelog
  Status lost_status(const Shard& sh) const {
    return Status::aborted("shard " + std::to_string(sh.index) + " of orchestrator '" +
                           opts_.name + "' was claimed by another owner");
  }

  // Commits each shard's part of the iteration (its changes in `d.batch` and
  // its messages) to the shard's changelog before the local write. A fenced
  // shard is dropped (lose()); any other commit error is returned.
  Status commit_changelogs(Driver& d, std::vector<Release>& releases) {
    std::vector<ShardPart> parts;
    parts.reserve(releases.size());
    for (Release& rel : releases) {
      Shard& sh = *rel.shard;
      if (sh.publish_owner) sh.commit_messages.push_back(owners_->claim_record(sh.index, now_ms()));
      parts.push_back(ShardPart{&sh.ks, sh.index, sh.log.get(), std::move(sh.commit_messages), {}});
      sh.commit_messages.clear();
    }
    SAGA_RETURN_IF_ERROR(commit_shards(d.batch, changelog_families_,
                                       static_cast<uint32_t>(shards_.size()), parts));
    for (size_t i = 0; i < parts.size(); ++i) {
      if (!parts[i].result) continue;
      if (parts[i].result->ok()) {
        releases[i].shard->commit_backoff = Duration{0};
        releases[i].shard->publish_owner = false;
      } else if (parts[i].result->status().code() == StatusCode::kAborted) {
        lose(releases[i], parts[i].result->status());
      } else {
        roll_back(releases[i], parts[i].result->status());
      }
    }
    return ok_status();
  }

  // A commit failed but the shard is still ours (the fabric is away, or the
  // commit's answer was lost): none of its part was written locally, and
  // perhaps none was appended or sent. Its memory is dropped, the replies it
  // consumed go back to the front of its queue, its callers get Unavailable,
  // and it rests (rest()) and then catches up with its log (resync()) before
  // it works again.
  void roll_back(Release& rel, const Status& why) {
    Shard& sh = *rel.shard;
    sh.rolled_back = true;
    rest(sh, why);
    log_->warn("orchestrator '{}' shard {}: changelog commit failed ({}); rolled back, next try "
               "in {} ms",
               opts_.name, sh.index, why.to_string(), sh.commit_backoff.count());
    for (auto& [done, result] : rel.answers) done(sh.rest_status);
    rel.answers.clear();
    sh.inbound.insert(sh.inbound.begin(), std::make_move_iterator(rel.consumed.begin()),
                      std::make_move_iterator(rel.consumed.end()));
    rel.consumed.clear();
    unload(sh);
    sh.resync = true;
    sh.batch = nullptr;
  }

  // The shard rests after `why`: 100 ms, doubling up to 5 s while it keeps
  // failing; its callers get Unavailable with that retry-after meanwhile.
  void rest(Shard& sh, const Status& why) {
    sh.commit_backoff = std::min(Duration{5'000}, std::max(Duration{100}, sh.commit_backoff * 2));
    sh.resume_ms = now_ms() + sh.commit_backoff.count();
    sh.rest_status = Status::unavailable("shard " + std::to_string(sh.index) + " of orchestrator '" +
                                         opts_.name + "' cannot commit: " + why.message())
                         .with_retry_after(sh.commit_backoff);
  }

  // After a rollback: applies what the log holds past the local checkpoint
  // (the failed commit, when it was appended after all), then reloads the
  // shard's memory from the store. Unavailable while the log cannot be read.
  Status resync(Shard& sh) {
    SAGA_RETURN_IF_ERROR(catch_up(sh));
    SAGA_RETURN_IF_ERROR(load_instances(sh));
    sh.resync = false;
    return ok_status();
  }

  // Forgets the shard's instances and timers (they are reloaded, or owned elsewhere).
  void unload(Shard& sh) {
    uint64_t parked = 0;
    for (const auto& [id, inst] : sh.live) parked += inst.view.state == SagaState::kFailed;
    parked_ -= std::min<uint64_t>(parked_, parked);
    in_flight_ -= std::min<uint64_t>(in_flight_, sh.live.size());
    sh.live.clear();
    sh.timers.clear();
    sh.settled.clear();
    sh.finished.clear();
    sh.shapes.clear();
    sh.retention_sweep.from.clear();
    sh.record_sweep.from.clear();
  }

  // A later claim fenced the shard: it answers nothing and sends nothing
  // more; its replies stay unacked for the new owner.
  void lose(Release& rel, const Status& why) {
    Shard& sh = *rel.shard;
    if (opts_.replicas) {  // another replica has it: dropped until assigned here again
      log_->warn("{}: fenced ({}); dropped until assigned again", shard_name(sh), why.to_string());
      for (auto& [done, result] : rel.answers) done(not_owned_status(sh));
      rel.answers.clear();
      rel.consumed.clear();
      drop(sh);
      sh.assigned = false;
      sh.batch = nullptr;
      return;
    }
    sh.lost = true;
    log_->error("orchestrator '{}' shard {} stops: {}", opts_.name, sh.index, why.to_string());
    for (auto& [done, result] : rel.answers) done(lost_status(sh));
    rel.answers.clear();
    rel.consumed.clear();
    unload(sh);
    sh.inbound.clear();
    sh.batch = nullptr;
  }

  // Runs fn on each shard of `ps` on the thread driving it, and returns once
  // it ran: at once when this thread drives every shard (one driver, or
  // run_once: the transport is polled inside the iteration, before anything
  // is staged), else posted to each shard's own thread.
  void on_driving_threads(const std::vector<uint32_t>& ps, const std::function<void(Shard&)>& fn) {
    if (!threads_.threaded()) {
      for (uint32_t k : ps) fn(*shards_.at(k));
      return;
    }
    std::vector<std::future<void>> done;
    for (uint32_t k : ps) {
      Shard& sh = *shards_.at(k);
      auto promise = std::make_shared<std::promise<void>>();
      done.push_back(promise->get_future());
      post(sh, [fn, &sh, promise] {
        fn(sh);
        promise->set_value();
      });
    }
    for (auto& f : done) {
      // A stopping engine's threads may not run it any more.
      while (f.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
        if (threads_.stopping()) return;
      }
    }
  }

  std::string shard_name(const Shard& sh) const {
    return "orchestrator '" + opts_.name + "' shard " + std::to_string(sh.index);
  }

  // Makes the shard this process's: with the changelog, claims it (fencing
  // earlier owners) and restores what others wrote since the local
  // checkpoint; then loads its unfinished sagas, timers and unsent commands.
  // On the shard's driving thread (or in init()).
  Status activate(Shard& sh) {
    if (standby_) standby_->hold(sh.index);  // its copy stops before the claim
    if (opts_.changelog) {
      Status s = restore(sh);
      if (!s.ok()) {
        sh.log.reset();
        return s;
      }
    }
    unload(sh);
    SAGA_RETURN_IF_ERROR(recover(sh));
    sh.resync = false;
    sh.commit_backoff = Duration{0};
    ++shard_claims_;  // before the shard serves anything (EngineStats::shard_claims)
    sh.owned = true;
    if (opts_.replicas) {
      sh.publish_owner = true;
      log_->info("{}: owned", shard_name(sh));
    }
    return ok_status();
  }

  // The group took the shard away (revoked: another member gets it once this
  // returns; lost: another may have it already). Nothing more is done or
  // emitted for it here: its callers get Unavailable, its replies stay
  // unacked for the next owner, its local data stays (the next restore
  // starts from it). On the shard's driving thread, between two commits.
  void release(Shard& sh, const char* why) {
    drop(sh);
    sh.assigned = false;
    log_->info("{}: {}", shard_name(sh), why);
  }

  void drop(Shard& sh) {
    sh.owned = false;
    sh.publish_owner = false;
    sh.log.reset();
    unload(sh);
    sh.inbound.clear();
    sh.commit_messages.clear();
    sh.resync = false;
    {
      std::lock_guard lock(sh.mu);
      sh.arrived.clear();
    }
    fail_requests(take(sh.requests, sh), not_owned_status(sh));
    if (standby_) standby_->release(sh.index);  // nothing here writes to it any more
  }

  Status not_owned_status(const Shard& sh) const {
    return Status::unavailable(shard_name(sh) + " is not owned by this replica")
        .with_retry_after(Duration{1000});
  }

  // Claims the shard's changelog (fencing earlier owners) and brings the
  // shard's families up to its end.
  Status restore(Shard& sh) {
    SAGA_ASSIGN_OR_RETURN(sh.log, transport_->claim_shard(opts_.name + ".changelog", sh.index,
                                                          static_cast<uint32_t>(shards_.size())));
    return catch_up(sh);
  }

  // Brings the shard's families up to the end of its claimed log.
  Status catch_up(Shard& sh) {
    SAGA_ASSIGN_OR_RETURN(RestoreStats r, restore_shard(sh.ks, changelog_families_, *sh.log, *log_,
                                                        "orchestrator '" + opts_.name +
                                                            "' shard " + std::to_string(sh.index)));
    metrics_.restore_records(sh.index).Increment(static_cast<double>(r.records));
    restored_records_ += r.records;
    metrics_.restore_seconds(sh.index).Set(r.seconds);
    return ok_status();
  }

  std::deque<Request> take(std::deque<Request>& queue, Shard& sh) {
    std::lock_guard lock(sh.mu);
    std::deque<Request> out;
    out.swap(queue);
    return out;
  }

  void run_deferred(Shard& sh) {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard lock(sh.mu);
      fns.swap(sh.deferred);
    }
    for (auto& fn : fns) fn();
  }

  void fail_requests(std::deque<Request> requests, const Status& s) {
    for (Request& r : requests) {
      if (r.done) r.done(s);
    }
  }

  // Refuses everything from now on: only reopening recovers.
  void fail_stop(const Status& broken) {
    {
      std::lock_guard lock(status_mu_);
      store_status_ = broken;
    }
    log_->critical("{}", broken.to_string());
  }

  bool store_status_ok() const {
    std::lock_guard lock(status_mu_);
    return store_status_.ok();
  }
  Status store_status() const {
    std::lock_guard lock(status_mu_);
    return store_status_;
  }

  // ------------------------------------------------------- handlers
  StatusOr<std::string> handle_request(Shard& sh, Request& r) {
    if (r.kind == Request::Kind::kStart) return handle_start(sh, r);
    if (r.kind == Request::Kind::kRecords) return handle_records(sh, r);
    Instance* inst = find_live(sh, r.id);
    if (!inst) {
      // Not live: finished (or unknown). Live covers everything not yet
      // written, since finished instances leave it only after the write.
      StatusOr<SagaView> v = get(r.id);
      if (!v.ok()) return v.status();
      return Status::failed_precondition("saga '" + r.id + "' is " +
                                         std::string(to_string(v->state)));
    }
    FsmEvent ev = FsmEvent::kAbort;
    switch (r.kind) {
      case Request::Kind::kCancel:
        ev = FsmEvent::kCancelRequested;
        break;
      case Request::Kind::kRetry:
        ev = FsmEvent::kRetryCompensation;
        break;
      case Request::Kind::kForce:
        ev = FsmEvent::kForceCompensate;
        break;
      case Request::Kind::kAbort:
        ev = FsmEvent::kAbort;
        break;
      case Request::Kind::kSkip:
        ev = FsmEvent::kSkipCompensation;
        break;
      case Request::Kind::kStart:
      case Request::Kind::kRecords:
        break;
    }
    const bool was_requested = inst->view.cancel_requested;
    if (r.kind == Request::Kind::kCancel) inst->view.cancel_requested = true;
    const OperatorNote* note = r.kind == Request::Kind::kCancel ? nullptr : &r.note;
    if (Status s = dispatch(sh, *inst, ev, /*is_new=*/false, note); !s.ok()) {
      inst->view.cancel_requested = was_requested;
      const DefinitionPtr& def = definition_of(*inst);
      if (ev == FsmEvent::kCancelRequested && inst->view.state == SagaState::kRunning &&
          def->pivot()) {  // the one reason a running saga refuses a cancel
        return Status::failed_precondition(
            "saga '" + r.id + "' has sent its pivot step '" + def->steps()[*def->pivot()].name +
            "': it can no longer be cancelled, only completed (or compensated by an operator)");
      }
      return s;
    }
    return r.id;
  }

  StatusOr<std::string> handle_start(Shard& sh, Request& r) {
    auto versions = definitions_.find(r.type);
    if (versions == definitions_.end()) return Status::not_found("no saga type '" + r.type + "'");
    DefinitionPtr def;
    if (r.options.version == 0) {
      def = versions->second.rbegin()->second;
    } else {
      auto it = versions->second.find(r.options.version);
      if (it == versions->second.end()) {
        return Status::not_found("saga type '" + r.type + "' has no version " +
                                 std::to_string(r.options.version));
      }
      def = it->second;
    }
    if (opts_.breaker_policy == BreakerPolicy::kReject) {
      std::lock_guard lock(breakers_mu_);
      for (const std::string& p : def->participants()) {
        CircuitBreaker& b = breaker(p);
        if (b.state() == BreakerState::kOpen) {
          const auto wait = std::max(
              Duration{1000}, std::chrono::duration_cast<Duration>(b.retry_at() - clock().now()));
          return Status::unavailable("participant '" + p +
                                     "' is unavailable (circuit breaker open); try again later")
              .with_retry_after(wait);
        }
      }
    }
    const std::string id = r.options.id;  // enqueue() gave one to a start without
    if (id.empty() || id.size() > 200 || id.find('\0') != std::string::npos) {
      return Status::invalid_argument("saga id must be 1..200 bytes without NUL");
    }
    if (json_depth(r.data) > kMaxJsonDepth) {
      return Status::invalid_argument("saga data is nested deeper than " +
                                      std::to_string(kMaxJsonDepth) +
                                      " levels of arrays and objects");
    }
    if (sh.live.count(id)) return Status::already_exists("saga '" + id + "' exists");
    SAGA_ASSIGN_OR_RETURN(auto existing, sh.ks.get(store_->cf(kInstances), id));
    if (existing) return Status::already_exists("saga '" + id + "' exists");

    Instance inst;
    SagaView& v = inst.view;
    v.id = id;
    v.type = def->name();
    v.version = def->version();
    inst.fingerprint = def->fingerprint();
    v.state = SagaState::kRunning;
    v.data = std::move(r.data);
    v.traceparent = r.options.traceparent.empty() ? new_traceparent() : r.options.traceparent;
    v.created_ms = v.updated_ms = now_ms();
    for (const StepSpec& s : def->steps()) {
      StepView sv;
      sv.name = s.name;
      v.steps.push_back(std::move(sv));
    }
    auto [it, inserted] = sh.live.emplace(id, std::move(inst));
    ++in_flight_;
    metrics_.started(def->name()).Increment();
    log_->debug("saga {} ({} v{}) started", id, def->name(), def->version());
    Status s = dispatch(sh, it->second, FsmEvent::kStart, /*is_new=*/true);
    if (!s.ok()) return s;
    return id;
  }

  void handle_reply(Shard& sh, const Message& m) {
    Instance* inst = m.kind == MessageKind::kReply ? find_live(sh, m.saga_id) : nullptr;
    const bool current = inst && !inst->awaiting.empty() && m.in_reply_to == inst->awaiting &&
                         (m.outcome != ReplyOutcome::kRetry || m.attempt == inst->attempt);
    // No reply mark is needed: applying a current reply always moves the
    // instance past it (awaiting changes, or is cleared until a resend that
    // bumps the attempt, or a refusal bumps the round), and that change is in
    // the same write, so a duplicate finds itself stale here, also after a
    // restart. docs/storage.md ("replies") has the case analysis.
    if (!current) return stale(m);

    const DefinitionPtr& def = definition_of(*inst);
    const StepSpec& spec = def->steps().at(inst->view.current_step);
    StepView& sv = inst->view.steps.at(inst->view.current_step);
    // A pivot parked out of retries still awaits its command's answer
    // (Transition::park_at_pivot): a success or a refusal decides; "retry"
    // changes nothing.
    const bool parked_pivot = parked_at_pivot(*inst, *def);
    if (parked_pivot && m.outcome == ReplyOutcome::kRetry) return stale(m);
    const bool forward = inst->view.state == SagaState::kRunning || parked_pivot;
    const Action& action = forward ? spec.action : *spec.compensation;
    record_breaker(action.participant, m.outcome != ReplyOutcome::kRetry,
                   inst->probe == action.participant);
    inst->probe.clear();
    if (m.outcome == ReplyOutcome::kFailure) {
      // A refusal is final for this command id (the participant remembers it)
      // and means nothing was applied: a later send must be a new command.
      inst->uncertain = false;
      if (forward) {
        ++sv.round;
      } else {
        ++sv.compensation_round;
      }
    }

    FsmEvent ev;
    if (m.outcome == ReplyOutcome::kSuccess) {
      if (forward && spec.action.on_reply) {
        Json reply = m.payload.empty()
                         ? Json()
                         : parse_json(m.payload).value_or(Json(Json::value_t::discarded));
        if (reply.is_discarded()) {
          log_->warn("saga {}: reply to {} has invalid JSON; merged as null", m.saga_id,
                     m.in_reply_to);
          reply = Json();
        }
        try {
          spec.action.on_reply(inst->view.data, reply);
        } catch (...) {
          // A merge that throws is a bug in the definition; the step did
          // succeed at the participant, so the saga must go on (and undo it).
          log_->error("saga {}: on_reply of step {} threw: {}", m.saga_id, spec.name,
                      what_was_thrown());
        }
        if (json_depth(inst->view.data) > kMaxJsonDepth) {
          // Stored, it could never be read back: keep the data as last written.
          log_->error("saga {}: on_reply of step {} nested the data deeper than {}; merge dropped",
                      m.saga_id, spec.name, kMaxJsonDepth);
          if (!inst->data_bytes.empty()) {
            inst->view.data = parse_msgpack(inst->data_bytes).value_or(Json::object());
          }
        }
        inst->data_changed();
      }
      ev = forward ? FsmEvent::kStepSucceeded : FsmEvent::kCompensationSucceeded;
    } else {
      sv.last_error = reply_error(m);
      inst->view.last_error = sv.last_error;
      if (!forward) {
        ev = FsmEvent::kCompensationFailed;
      } else {
        ev = m.outcome == ReplyOutcome::kFailure ? FsmEvent::kStepFailed : FsmEvent::kStepRetryable;
      }
    }
    inst->awaiting.clear();
    (void)dispatch(sh, *inst, ev);
  }

  void stale(const Message& m) {
    ++stale_replies_;
    metrics_.stale_replies.Increment();
    log_->debug("ignoring stale or duplicate message {} for saga {}", m.id, m.saga_id);
  }

  static std::string reply_error(const Message& m) {
    Json j = parse_json(m.payload).value_or(Json(Json::value_t::discarded));
    if (j.is_object() && j.contains("error") && j["error"].is_string())
      return j["error"].get<std::string>();
    return std::string(to_string(m.outcome)) + " from participant";
  }

  template <typename Full>
  void fire_due_timers(Shard& sh, const Full& full) {
    const int64_t now = now_ms();
    while (!sh.timers.empty() && sh.timers.begin()->first <= now && !full()) {
      auto [due, id] = *sh.timers.begin();
      sh.timers.erase(sh.timers.begin());
      Instance* inst = find_live(sh, id);
      if (!inst || inst->timer_due_ms != due || inst->timer == TimerKind::kNone) continue;
      ++timers_fired_;
      metrics_.timers_fired.Increment();
      const TimerKind kind = inst->timer;
      const DefinitionPtr& def = definition_of(*inst);
      if (kind == TimerKind::kResend) {
        const Prior before{inst->view.state, inst->view.updated_ms, inst->view.current_step};
        Transition t(*this, sh, *inst, *def);
        t.resend();
        persist(sh, *inst, before, {TimelineEvent::kResent, t.sent});
        run_followups(sh, *inst, t);
        continue;
      }
      // Deadline: the awaited reply did not come.
      const bool forward = inst->view.state == SagaState::kRunning;
      const StepSpec& spec = def->steps().at(inst->view.current_step);
      const Action& action = forward ? spec.action : *spec.compensation;
      record_breaker(action.participant, false, inst->probe == action.participant);
      inst->probe.clear();
      if (forward) inst->uncertain = true;
      StepView& sv = inst->view.steps.at(inst->view.current_step);
      sv.last_error = "no reply within " + std::to_string(spec.timeout.count()) + " ms";
      inst->view.last_error = sv.last_error;
      inst->awaiting.clear();
      (void)dispatch(sh, *inst, forward ? FsmEvent::kStepTimedOut : FsmEvent::kCompensationFailed);
    }
  }

  // Applies one event to `inst` through the state machine, then stages the
  // result. Local steps decide at once, so their outcome is fed back in.
  // An event the state does not accept runs no action (only the guards,
  // which read), so `inst` is then unchanged and needs no restoring.
  Status dispatch(Shard& sh, Instance& inst, FsmEvent ev, bool is_new = false,
                  const OperatorNote* note = nullptr) {
    const DefinitionPtr& def = definition_of(inst);
    const Prior before{inst.view.state, is_new ? -1 : inst.view.updated_ms,
                       inst.view.current_step};
    Transition t(*this, sh, inst, *def);
    StatusOr<SagaState> next = Status::internal("");
    try {
      next = fsm_process(inst.view.state, ev, t);
    } catch (...) {
      return park_broken(sh, inst, before, what_was_thrown());
    }
    if (!next.ok()) {
      if (is_new) {
        sh.live.erase(inst.view.id);
        --in_flight_;
      }
      return next.status();
    }
    inst.view.state = *next;
    if (!inst.probe.empty() && inst.awaiting.empty()) {
      // The probe's command will never report (aborted, cancelled, or it
      // failed to build): give its slot back or the breaker stays half-open.
      std::lock_guard lock(breakers_mu_);
      breaker(inst.probe).release_probe();
      inst.probe.clear();
    }
    persist(sh, inst, before, {timeline_event(ev), t.sent, note});
    run_followups(sh, inst, t);
    return ok_status();
  }

  // A transition threw: a bug of the engine or a damaged record (the
  // definition's own functions are caught where they are called). The saga
  // parks as Failed with the error, for an operator, and the engine goes on.
  // What the transition staged before it threw stays staged.
  Status park_broken(Shard& sh, Instance& inst, const Prior& before, const std::string& what) {
    log_->error("saga {}: a transition threw ({}); parked as FAILED", inst.view.id, what);
    inst.view.state = SagaState::kFailed;
    inst.view.last_error = "internal error in a transition: " + what;
    inst.awaiting.clear();
    inst.timer = TimerKind::kNone;
    persist(sh, inst, before, {TimelineEvent::kInternalError, {}});
    return Status::internal(inst.view.last_error);
  }

  void run_followups(Shard& sh, Instance& inst, Transition& t) {
    if (!t.followup) return;
    const FsmEvent ev = *t.followup;
    t.followup.reset();
    (void)dispatch(sh, inst, ev);
  }

  // Stages the new instance record and everything that hangs off it.
  void persist(Shard& sh, Instance& inst, const Prior& before, const Cause& cause) {
    ++transitions_;
    ++sh.staged;
    metrics_.transitions.Increment();
    SagaView& v = inst.view;
    v.updated_ms = std::max(now_ms(), before.updated_ms);
    if (is_terminal(v.state) && v.finished_ms == 0) v.finished_ms = v.updated_ms;
    add_to_timeline(inst, before, cause);
    auto* idx = store_->cf(kIndex);
    Batch& b = *sh.batch;
    if (before.updated_ms < 0) {  // new
      for (const std::string& k : index_keys(v))
        sh.ks.put(b, idx, k, k[0] == kIdxRetention ? retention_value(v) : "");
      if (sh.shapes.insert(inst.fingerprint).second) {  // what recovery compares it with
        sh.ks.put(b, idx, shape_key(inst.fingerprint), join_lines(definition_of(inst)->shape()));
      }
    } else if (before.state != v.state) {
      sh.ks.del(b, idx, index_key(kIdxState, v, before.state));
      sh.ks.put(b, idx, index_key(kIdxState, v), "");
      if (is_terminal(v.state))
        sh.ks.put(b, idx, index_key(kIdxRetention, v), retention_value(v));
    }
    // The timer lives in the instance record (tk, td) only; recovery
    // rebuilds timers_ from the records.
    if (inst.timer != TimerKind::kNone) sh.timers.emplace(inst.timer_due_ms, v.id);
    encode_instance(inst, sh.record);
    sh.ks.put(*sh.batch, store_->cf(kInstances), v.id, sh.record);

    const bool is_new = before.updated_ms < 0;
    if (is_new || v.state != before.state) {
      publish_events(sh, inst, is_new ? std::nullopt : std::optional(before.state));
      write_records(sh, inst, is_new ? std::nullopt : std::optional(before.state));
    }
    if (v.state != before.state) on_state_change(sh, inst, before.state);
  }

  // Appends the transition to the saga's timeline, which keeps its first
  // entry and the newest ones (Options::timeline_limit).
  void add_to_timeline(Instance& inst, const Prior& before, const Cause& cause) {
    const uint32_t limit = opts_.timeline_limit;
    if (limit == 0) return;
    SagaView& v = inst.view;
    if (limit == 1 && !v.timeline.empty()) {  // the first only
      ++v.timeline_dropped;
      return;
    }
    if (v.timeline.size() >= limit) {
      const size_t drop = v.timeline.size() - limit + 1;
      v.timeline.erase(v.timeline.begin() + 1,
                       v.timeline.begin() + 1 + static_cast<std::ptrdiff_t>(drop));
      v.timeline_dropped += static_cast<uint32_t>(drop);
    }
    TimelineEntry& e = v.timeline.emplace_back();
    e.at_ms = v.updated_ms;
    e.event = cause.event;
    e.state = v.state;
    e.step = before.step;
    const StepView* step = before.step < v.steps.size() ? &v.steps[before.step] : nullptr;
    if (step) e.step_status = step->status;
    e.attempt = inst.attempt;
    e.command_id = cause.command_id;
    if (reports_error(cause.event)) {
      const bool own = step && cause.event != TimelineEvent::kInternalError;
      e.error = own ? step->last_error : v.last_error;
    }
    if (cause.note) {
      e.actor = cause.note->actor;
      e.reason = cause.note->reason;
    }
  }

  // The definition's domain events for this change go into the same batch.
  void publish_events(Shard& sh, const Instance& inst, std::optional<SagaState> previous) {
    const EventsFn& fn = definition_of(inst)->events();
    if (!fn) return;
    const SagaView& v = inst.view;
    std::vector<Message> events;
    try {
      events = fn(v, previous);
    } catch (...) {
      log_->error("saga {}: on_state_change threw, no events published: {}", v.id,
                  what_was_thrown());
      return;
    }
    for (Message& m : events) {
      m.kind = MessageKind::kEvent;
      if (m.id.empty()) m.id = v.id + "/" + std::string(to_string(v.state));
      if (m.key.empty()) m.key = v.id;
      if (m.saga_id.empty()) m.saga_id = v.id;
      if (m.traceparent.empty()) m.traceparent = v.traceparent;
      if (m.destination.empty()) {
        log_->error("saga {}: event '{}' has no destination; dropped", v.id, m.type);
        continue;
      }
      stage_send(sh, std::move(m));
    }
  }

  // write_records(): each record (if_absent: unless its key holds one, in
  // the store or staged in this iteration) goes into this iteration's batch.
  StatusOr<std::string> handle_records(Shard& sh, Request& r) {
    auto* idx = store_->cf(kIndex);
    for (Record& rec : r.records) {
      if (r.if_absent) {
        if (sh.records_staged.contains(rec.key)) continue;
        SAGA_ASSIGN_OR_RETURN(auto held, sh.ks.get(idx, record_key(rec.key)));
        if (held) continue;
      }
      stage_record(sh, rec);
    }
    ++sh.staged;
    return std::string();
  }

  // Why `r` cannot be written in the shard of `shard_key` ("" = it can).
  std::string record_problem(const Record& r, const Shard& sh) const {
    if (r.key.empty() || r.key.size() > kMaxRecordKey)
      return "its key must have 1.." + std::to_string(kMaxRecordKey) + " bytes";
    if (r.expires_ms < 0) return "its expiry must not be negative";
    if (shard_for(r.shard_key).index != sh.index)
      return "its shard key '" + r.shard_key + "' maps to another shard";
    return "";
  }

  void stage_record(Shard& sh, const Record& r) {
    auto* idx = store_->cf(kIndex);
    sh.ks.put(*sh.batch, idx, record_key(r.key), encode_record(r));
    if (r.expires_ms > 0)
      sh.ks.put(*sh.batch, idx, record_expiry_key(r.expires_ms, r.key), r.shard_key);
    sh.records_staged.insert(r.key);
  }

  // The definition's domain records for this change go into the same batch.
  void write_records(Shard& sh, const Instance& inst, std::optional<SagaState> previous) {
    const RecordsFn& fn = definition_of(inst)->records();
    if (!fn) return;
    const SagaView& v = inst.view;
    std::vector<Record> records;
    try {
      records = fn(v, previous);
    } catch (...) {
      log_->error("saga {}: its records function threw, no records written: {}", v.id,
                  what_was_thrown());
      return;
    }
    for (Record& r : records) {
      if (r.shard_key.empty()) r.shard_key = v.id;
      if (std::string why = record_problem(r, sh); !why.empty()) {
        log_->error("saga {}: record '{}' not written: {}", v.id, r.key.substr(0, 64), why);
        continue;
      }
      stage_record(sh, r);
    }
  }

  void on_state_change(Shard& sh, const Instance& inst, SagaState from) {
    const SagaView& v = inst.view;
    log_->debug("saga {} {} -> {} (trace {})", v.id, to_string(from), to_string(v.state),
                v.traceparent);
    if (from == SagaState::kFailed && parked_ > 0) --parked_;  // one shard's instance: no race
    switch (v.state) {
      case SagaState::kCompleted:
        metrics_.completed(v.type).Increment();
        break;
      case SagaState::kCompensated:
        metrics_.compensated(v.type).Increment();
        break;
      case SagaState::kAborted:
        metrics_.aborted(v.type).Increment();
        break;
      case SagaState::kFailed:
        ++parked_;
        metrics_.failed(v.type).Increment();
        if (v.current_step < v.steps.size() &&
            v.steps[v.current_step].status == StepStatus::kCompensationFailed) {
          log_->error("saga {} parked as FAILED: compensation of step {} kept failing: {}", v.id,
                      v.steps[v.current_step].name, v.last_error);
        } else {  // at its pivot, or after a transition threw
          log_->error("saga {} parked as FAILED: {}", v.id, v.last_error);
        }
        break;
      default:
        break;
    }
    if (is_terminal(v.state)) {
      if (in_flight_ > 0) --in_flight_;
      sh.finished.push_back(v.id);
    }
    if (is_terminal(v.state) || v.state == SagaState::kFailed) sh.settled.push_back(v.id);
  }

  void record_breaker(const std::string& participant, bool success, bool probe) {
    if (participant.empty()) return;
    std::lock_guard lock(breakers_mu_);
    CircuitBreaker& b = breaker(participant);
    const BreakerState was = b.state();
    if (was == BreakerState::kHalfOpen && !probe) return;  // only probes decide a half-open breaker
    b.record(success);
    const BreakerState now = b.state();
    if (now != was) {
      log_->warn("circuit breaker of '{}' {} -> {}", participant, to_string(was), to_string(now));
    }
  }

  // REQUIRES: breakers_mu_ held.
  CircuitBreaker& breaker(const std::string& participant) {
    auto it = breakers_.find(participant);
    if (it == breakers_.end()) {
      it = breakers_.emplace(participant, CircuitBreaker(opts_.breaker, opts_.clock.get())).first;
    }
    return it->second;
  }

  void update_gauges() {
    metrics_.in_flight.Set(static_cast<double>(in_flight_));
    metrics_.parked.Set(static_cast<double>(parked_));
    uint64_t depth = 0;
    for (const auto& sh : shards_) depth += sh->depth;
    metrics_.outbox_depth.Set(static_cast<double>(depth));
    uint64_t owned = 0;
    for (const auto& sh : shards_) owned += sh->owned ? 1 : 0;
    metrics_.shards_owned.Set(static_cast<double>(owned));
    if (standby_) metrics_.standby_records.Set(static_cast<double>(standby_->records()));
    std::lock_guard lock(breakers_mu_);
    for (auto& [name, b] : breakers_) metrics_.breaker(name).Set(static_cast<double>(b.state()));
  }

  // Terminal instances older than the retention are removed with their
  // index entries (and the reply marks older versions wrote), oldest
  // finished first; domain records at their expiry likewise, soonest
  // expired first. Each sweep starts every retention_interval and removes
  // up to max_batch keys per iteration (its driver's shards and both sweeps
  // together, `budget`) until none has expired: as many as an iteration can
  // finish, so removal keeps up with any rate the engine reaches. It reads
  // only its time-ordered keys, from where the last iteration stopped (not
  // over the tombstones it left).
  void sweep_retention(Shard& sh, size_t& budget) {
    const int64_t now = now_ms();
    auto* idx = store_->cf(kIndex);
    bool done = false;
    std::string upto(1, kIdxRetention);
    append_be64(upto, static_cast<uint64_t>(std::max<int64_t>(0, now - opts_.retention.count())));
    auto removed = sweep_step(
        sh.ks, idx, sh.retention_sweep, std::string(1, kIdxRetention), upto, now,
        opts_.retention_interval.count(), budget, done,
        [&](std::string_view key, std::string_view value) { remove_expired(sh, key, value); });
    if (!removed.ok()) log_->warn("{}: retention scan failed: {}", shard_name(sh), removed.status().to_string());
    metrics_.retention_removed.Increment(static_cast<double>(removed.ok() ? *removed : 0));
    if (done && sh.retention_sweep.removed > 0) {
      log_->info("{}: retention removed {} finished sagas", shard_name(sh),
                 sh.retention_sweep.removed);
    }
    if (done) sh.retention_sweep.removed = 0;
    upto.assign(1, kIdxRecordExpiry);
    append_be64(upto, static_cast<uint64_t>(std::max<int64_t>(0, now)));
    auto expired = sweep_step(sh.ks, idx, sh.record_sweep, std::string(1, kIdxRecordExpiry), upto,
                              now, opts_.retention_interval.count(), budget, done,
                              [&](std::string_view key, std::string_view) { remove_record(sh, key); });
    if (!expired.ok()) log_->warn("{}: record expiry scan failed: {}", shard_name(sh), expired.status().to_string());
    metrics_.records_expired.Increment(static_cast<double>(expired.ok() ? *expired : 0));
    if (done && sh.record_sweep.removed > 0)
      log_->info("{}: {} domain records expired", shard_name(sh), sh.record_sweep.removed);
    if (done) sh.record_sweep.removed = 0;
  }

  // Stages the removal of the record an expiry key names, unless the record
  // was written again since with another expiry (its own key then stays).
  void remove_record(Shard& sh, std::string_view expiry_key) {
    auto* idx = store_->cf(kIndex);
    sh.ks.del(*sh.batch, idx, expiry_key);
    const int64_t expires = static_cast<int64_t>(read_be64(expiry_key.substr(1, 8)));
    const std::string key = record_key(expiry_key.substr(9));
    StatusOr<std::optional<std::string>> value = sh.ks.get(idx, key);
    if (!value.ok() || !*value) return;
    std::optional<Record> r = decode_record(key, **value);
    if (!r || r->expires_ms == expires) sh.ks.del(*sh.batch, idx, key);
  }

  // Stages the removal of the instance a retention key names.
  void remove_expired(Shard& sh, std::string_view key, std::string_view value) {
    std::optional<SagaView> v = from_retention_key(key, value);
    if (!v) {  // written before retention keys had values: read the instance
      StatusOr<SagaView> read = get(std::string(key.substr(9)));
      if (!read.ok()) {
        sh.ks.del(*sh.batch, store_->cf(kIndex), key);
        return;
      }
      v = std::move(*read);
    }
    for (const std::string& k : index_keys(*v)) sh.ks.del(*sh.batch, store_->cf(kIndex), k);
    sh.ks.del(*sh.batch, store_->cf(kInstances), v->id);
    if (!sh.legacy_marks) return;
    std::string mark_prefix = v->id;
    mark_prefix.push_back('\0');
    (void)sh.ks.scan(store_->cf(kReplies), mark_prefix, mark_prefix,
                     [&](std::string_view k, std::string_view) {
                       sh.ks.del(*sh.batch, store_->cf(kReplies), k);
                       return true;
                     });
  }

  // ------------------------------------------------------- recovery
  Status recover(Shard& sh) {
    SAGA_RETURN_IF_ERROR(load_instances(sh));
    // Stores written before timers were rebuilt from the records still hold
    // timer keys: they duplicate the records, so they are dropped.
    Batch legacy;
    SAGA_RETURN_IF_ERROR(
        sh.ks.scan(store_->cf(kTimers), "", "", [&](std::string_view key, std::string_view) {
          sh.ks.del(legacy, store_->cf(kTimers), key);
          return true;
        }));
    SAGA_RETURN_IF_ERROR(store_->write(legacy));
    // Reply marks of older versions go with their sagas (retention); a
    // shard without any skips looking for them.
    sh.legacy_marks = false;
    SAGA_RETURN_IF_ERROR(
        sh.ks.scan(store_->cf(kReplies), "", "", [&](std::string_view, std::string_view) {
          sh.legacy_marks = true;
          return false;
        }));
    if (!sh.outbox_recovered) {
      SAGA_RETURN_IF_ERROR(sh.outbox->recover());
      sh.outbox_recovered = true;
    }
    sh.depth = sh.outbox->depth();
    if (!sh.live.empty() || sh.outbox->depth() > 0)
      log_->info("orchestrator '{}' shard {} recovered {} unfinished sagas, {} timers, {} unsent "
                 "commands",
                 opts_.name, sh.index, sh.live.size(), sh.timers.size(), sh.outbox->depth());
    return ok_status();
  }

  // Loads the shard's unfinished instances (through the state index) and
  // arms their timers.
  Status load_instances(Shard& sh) {
    for (SagaState st : {SagaState::kRunning, SagaState::kCompensating, SagaState::kFailed}) {
      const std::string prefix = std::string(1, kIdxState) + std::string(1, static_cast<char>(st));
      std::vector<std::string> ids;
      SAGA_RETURN_IF_ERROR(sh.ks.scan(store_->cf(kIndex), prefix, prefix,
                                        [&](std::string_view key, std::string_view) {
                                          ids.emplace_back(key.substr(prefix.size() + 8));
                                          return true;
                                        }));
      for (const std::string& id : ids) {
        SAGA_ASSIGN_OR_RETURN(auto bytes, sh.ks.get(store_->cf(kInstances), id));
        if (!bytes) return Status::data_loss("index names saga '" + id + "' but it is missing");
        SAGA_ASSIGN_OR_RETURN(Instance inst, decode_instance(*bytes));
        SAGA_RETURN_IF_ERROR(check_definition(sh, inst));
        if (st == SagaState::kFailed) ++parked_;
        inst.probe.clear();  // breakers start closed after a restart
        if (inst.timer != TimerKind::kNone) sh.timers.emplace(inst.timer_due_ms, id);
        sh.live.emplace(id, std::move(inst));
        ++in_flight_;
      }
    }
    return ok_status();
  }

  // An unfinished saga resumes only under the definition it started with:
  // its version registered, with the same shape (SagaDefinition::shape()).
  // Records older than fingerprints are checked by their step names and
  // take the registered fingerprint.
  Status check_definition(Shard& sh, Instance& inst) {
    const SagaView& v = inst.view;
    const std::string which = "'" + v.type + "' v" + std::to_string(v.version);
    auto versions = definitions_.find(v.type);
    if (versions == definitions_.end() || !versions->second.count(v.version)) {
      return Status::failed_precondition("saga '" + v.id + "' needs definition " + which +
                                         ", which is not registered; keep old versions until "
                                         "their sagas finish");
    }
    const SagaDefinition& def = *versions->second.at(v.version);
    auto refuse = [&](const std::string& difference) {
      return Status::failed_precondition(
          "saga '" + v.id + "' started under another shape of definition " + which + " than the " +
          "one registered (" + difference + "); register the changed definition as a new " +
          "version and keep " + which + " as it was until its sagas finish");
    };
    if (inst.fingerprint == def.fingerprint()) return ok_status();
    if (inst.fingerprint != 0) {
      SAGA_ASSIGN_OR_RETURN(auto was, sh.ks.get(store_->cf(kIndex), shape_key(inst.fingerprint)));
      std::string difference = was ? first_difference(split_lines(*was), def.shape()) : "";
      if (difference.empty()) {
        difference = "fingerprint " + hex(inst.fingerprint) + ", now " + hex(def.fingerprint()) +
                     (was ? "" : "; the earlier shape is not on record");
      }
      return refuse(difference);
    }
    std::vector<std::string> names;
    for (const StepView& s : v.steps) names.push_back(s.name);
    std::vector<std::string> now;
    for (const StepSpec& s : def.steps()) now.push_back(s.name);
    if (names != now) return refuse(first_difference(names, now) + " (step names)");
    inst.fingerprint = def.fingerprint();
    return ok_status();
  }

  // ---------------------------------------------------------- misc
  Instance* find_live(Shard& sh, const std::string& id) {
    auto it = sh.live.find(id);
    return it == sh.live.end() ? nullptr : &it->second;
  }

  const DefinitionPtr& definition_of(const Instance& inst) const {
    return definitions_.at(inst.view.type).at(inst.view.version);
  }

  // SagaView::awaiting, by the definition the saga runs ("" when unknown).
  std::string awaited_participant(const SagaView& v) const {
    if (v.state != SagaState::kRunning && v.state != SagaState::kCompensating) return "";
    const auto versions = definitions_.find(v.type);
    if (versions == definitions_.end()) return "";
    const auto def = versions->second.find(v.version);
    if (def == versions->second.end() || v.current_step >= def->second->steps().size()) return "";
    const StepSpec& s = def->second->steps()[v.current_step];
    const Action* a = v.state == SagaState::kRunning ? &s.action
                      : s.compensation                ? &*s.compensation
                                                      : nullptr;
    return a && !a->is_local() ? a->participant : "";
  }

  std::string new_traceparent() {
    return "00-" + hex(random().next()) + hex(random().next()) + "-" + hex(random().next()) + "-01";
  }

  static StatusOr<std::string> decode_token(const std::string& token) {
    if (token.size() % 2 != 0) return Status::invalid_argument("malformed page token");
    std::string out;
    for (size_t i = 0; i < token.size(); i += 2) {
      auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
      };
      const int hi = nib(token[i]), lo = nib(token[i + 1]);
      if (hi < 0 || lo < 0) return Status::invalid_argument("malformed page token");
      out.push_back(static_cast<char>(hi * 16 + lo));
    }
    return out;
  }


  Options opts_;
  std::shared_ptr<Transport> transport_;
  std::shared_ptr<spdlog::logger> log_;
  std::string reply_endpoint_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<OwnerTable> owners_;  // with replicas: who owns which shard
  std::atomic<uint64_t> shard_claims_{0};
  std::map<std::string, std::map<uint32_t, DefinitionPtr>> definitions_;
  mutable EngineMetrics metrics_;

  // The shards and drivers, fixed after init(). A shard's engine state is
  // touched only by the thread driving it: run_once's caller (under
  // engine_mu_; one background thread calls run_once too) or, with several
  // drivers in the background, its driver's own thread.
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Keyspace> keyspaces_;  // shards_[k]->ks, for scans across shards
  ChangelogFamilies changelog_families_;  // with Options::changelog
  std::unique_ptr<Standby> standby_;      // with Options::standby
  std::atomic<uint64_t> restored_records_{0};
  std::mutex engine_mu_;
  std::vector<std::unique_ptr<Driver>> drivers_;
  std::atomic<uint64_t> parked_{0};

  mutable std::mutex status_mu_;
  Status store_status_;  // GUARDED_BY(status_mu_); written by the engine threads only

  mutable std::mutex breakers_mu_;
  mutable std::map<std::string, CircuitBreaker> breakers_;  // GUARDED_BY(breakers_mu_)

  EngineThreads threads_;  // start_background() .. stop()

  std::atomic<uint64_t> transitions_{0}, writes_{0}, bytes_written_{0}, stale_replies_{0},
      timers_fired_{0}, in_flight_{0};
};

// ------------------------------------------------- Transition bodies
int64_t Transition::now_ms() const { return e_.now_ms(); }

void Transition::record_step_success() {
  step().status = StepStatus::kSucceeded;
  step().finished_ms = now_ms();
  e_.step_finished(inst_, step());
  inst_.awaiting.clear();
  clear_timer();
}

void Transition::begin_step() {
  const StepSpec& s = spec();
  StepView& sv = step();
  if (sv.started_ms == 0) sv.started_ms = now_ms();
  sv.status = StepStatus::kRunning;
  clear_timer();
  if (s.action.is_local()) {
    ++inst_.attempt;
    sv.attempts = inst_.attempt;
    const Status result = run_local(s.action.local);
    if (result.ok()) {
      followup = FsmEvent::kStepSucceeded;
    } else {
      followup = result.is_retryable() ? FsmEvent::kStepRetryable : FsmEvent::kStepFailed;
    }
    return;
  }
  TimePoint retry_at;
  if (!e_.breaker_allows(s.action.participant, retry_at, inst_.probe)) {
    // The participant is resting: wait for its breaker without spending an attempt.
    inst_.awaiting.clear();
    inst_.timer = TimerKind::kResend;
    inst_.timer_due_ms = to_millis(retry_at);
    sv.last_error = "waiting: circuit breaker of '" + s.action.participant + "' is open";
    return;
  }
  ++inst_.attempt;
  sv.attempts = inst_.attempt;
  send_command(s.action, command_id('a'), "");
}

void Transition::send_compensation() {
  const StepSpec& s = spec();
  StepView& sv = step();
  const Action& c = *s.compensation;
  clear_timer();
  ++inst_.attempt;
  sv.compensation_attempts = inst_.attempt;
  if (c.is_local()) {
    followup =
        run_local(c.local).ok() ? FsmEvent::kCompensationSucceeded : FsmEvent::kCompensationFailed;
    return;
  }
  send_command(c, command_id('c'), command_id('a'));
}

std::string Transition::command_id(char side) const {
  const StepView& sv = inst_.view.steps.at(inst_.view.current_step);
  const uint32_t round = side == 'a' ? sv.round : sv.compensation_round;
  std::string id = inst_.view.id + "/" + std::to_string(inst_.view.current_step) + "/" + side;
  if (round > 0) id += "." + std::to_string(round);
  return id;
}

void Transition::send_command(const Action& a, std::string id, std::string compensates) {
  if (const int64_t horizon = e_.dedup_horizon_ms();
      horizon > 0 && now_ms() - inst_.view.created_ms > horizon) {
    // Its participants may have forgotten its earlier commands: a resend
    // could apply twice, a compensation undo nothing.
    step().last_error = inst_.view.last_error =
        "saga older than the de-duplication horizon (" + std::to_string(horizon / 1000) +
        " s): it sends nothing more, since its participants may have forgotten its commands; "
        "an operator settles it (abort, and undo by hand what needs it)";
    followup = FsmEvent::kExpired;
    return;
  }
  Message m;
  m.id = std::move(id);
  m.kind = MessageKind::kCommand;
  m.type = a.command;
  m.destination = a.participant;
  m.saga_id = inst_.view.id;
  m.reply_to = e_.reply_endpoint();
  m.compensates = std::move(compensates);
  m.attempt = inst_.attempt;
  m.traceparent = inst_.view.traceparent;
  try {
    m.key = a.key ? a.key(inst_.view.data) : inst_.view.id;
    m.payload = (a.payload ? a.payload(inst_.view.data) : inst_.view.data).dump();
  } catch (...) {
    // A builder that throws is a bug in the definition: nothing is sent and
    // the step (or compensation) fails visibly instead of hanging.
    step().last_error = inst_.view.last_error =
        "building the command failed: " + what_was_thrown();
    followup = m.compensates.empty() ? FsmEvent::kStepFailed : FsmEvent::kCompensationFailed;
    return;
  }
  inst_.awaiting = sent = m.id;
  inst_.timer = TimerKind::kDeadline;
  inst_.timer_due_ms = now_ms() + spec().timeout.count();
  e_.stage_send(sh_, std::move(m));
}

// Runs a local step or compensation on a copy of the data, which replaces
// the data only on success.
Status Transition::run_local(const LocalFn& fn) {
  Json data = inst_.view.data;
  Status result;
  try {
    result = fn(data);
  } catch (...) {
    result = Status::internal("local function threw: " + what_was_thrown());
  }
  if (result.ok()) {
    inst_.view.data = std::move(data);
    inst_.data_changed();
  } else {
    step().last_error = inst_.view.last_error = result.to_string();
  }
  return result;
}

void Transition::schedule_resend(const RetryPolicy& policy) {
  inst_.awaiting.clear();
  inst_.timer = TimerKind::kResend;
  inst_.timer_due_ms =
      now_ms() +
      policy.backoff(std::max<uint32_t>(1, inst_.attempt - inst_.attempt_base), e_.random())
          .count();
}

}  // namespace
}  // namespace internal

std::string list_token(const ListQuery& query, int64_t created_ms, std::string_view id) {
  std::string key = internal::list_prefix(query);
  internal::append_be64(key, static_cast<uint64_t>(created_ms));
  key += id;
  return internal::encode_token(key);
}

StatusOr<std::unique_ptr<Orchestrator>> Orchestrator::open(Options options,
                                                           std::shared_ptr<Transport> transport,
                                                           std::vector<DefinitionPtr> definitions) {
  if (options.data_dir.empty()) return Status::invalid_argument("Options::data_dir is required");
  if (options.name.empty()) return Status::invalid_argument("Options::name is required");
  if (!transport) return Status::invalid_argument("a transport is required");
  if (options.max_batch == 0)
    return Status::invalid_argument("Options::max_batch must be positive");
  const BreakerOptions& b = options.breaker;
  if (b.enabled && (b.min_calls == 0 || b.window < b.min_calls || b.failure_rate <= 0 ||
                    b.failure_rate > 1 || b.probes == 0 || b.open_for.count() <= 0)) {
    return Status::invalid_argument(
        "BreakerOptions: need 1 <= min_calls <= window, 0 < failure_rate <= 1, probes >= 1 and "
        "open_for > 0");
  }
  if (!options.clock) options.clock = std::make_shared<SystemClock>();
  if (!options.random) options.random = std::make_shared<SeededRandom>(std::random_device{}());
  auto impl =
      std::make_unique<internal::OrchestratorImpl>(std::move(options), std::move(transport));
  SAGA_RETURN_IF_ERROR(impl->init(std::move(definitions)));
  return std::unique_ptr<Orchestrator>(std::move(impl));
}

}  // namespace saga
