// Saga definitions: a saga type declared once in code, by name and version,
// as ordered steps with actions, compensations, timeouts and retry policies.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "saga/clock.h"
#include "saga/message.h"
#include "saga/status.h"

namespace saga {

using Json = nlohmann::json;

/// How often and how patiently a step (or its compensation) is retried.
/// Delay before retry n (n >= 1) is min(initial_backoff * multiplier^(n-1),
/// max_backoff), then scaled by a uniform factor in [1 - jitter, 1 + jitter].
struct RetryPolicy {
  /// Total tries, the first included; 0 means unlimited. Default 3.
  uint32_t max_attempts = 3;
  /// Delay before the first retry. Default 100 ms.
  Duration initial_backoff{100};
  /// Growth factor per retry. Default 2.
  double multiplier = 2.0;
  /// Upper bound on one delay. Default 10 s.
  Duration max_backoff{10'000};
  /// Relative jitter in [0, 1]. Default 0.2.
  double jitter = 0.2;

  /// The delay before retry number `retry` (1-based), using `random` for jitter.
  Duration backoff(uint32_t retry, RandomSource& random) const;
};

/// Builds a command payload from the saga data.
using PayloadFn = std::function<Json(const Json& data)>;
/// Merges a successful reply's payload into the saga data.
using MergeFn = std::function<void(Json& data, const Json& reply)>;
/// A local step or compensation, run inside the orchestrator's transition;
/// may change the data. OK = succeeded; an error = the step failed
/// (retryable codes are retried per the step's policy).
using LocalFn = std::function<Status(Json& data)>;

struct SagaView;
enum class SagaState : uint8_t;

/// Domain events for a change of an instance's state, published through the
/// orchestrator's outbox in the same write as the change. `previous` is empty
/// when the instance has just started. Each returned message is sent as an
/// event (kind forced to kEvent); empty fields are filled in: id
/// "<saga>/<STATE>", key = saga id, saga_id, traceparent. `destination`
/// (the event stream) is the caller's and must be set.
using EventsFn =
    std::function<std::vector<Message>(const SagaView& saga, std::optional<SagaState> previous)>;

/// A domain record written by a saga's transition (DefinitionBuilder::records):
/// stored in the saga's shard in the same atomic write as the change (and its
/// changelog), kept until `expires_ms` whatever the saga's own retention, and
/// read with Orchestrator::record() and records() (docs/lifecycle.md, "Records").
struct Record {
  /// 1..512 bytes. Writing a key again replaces its value and its expiry.
  std::string key;
  std::string value;
  /// When it may be removed (ms since the epoch); 0 = never.
  int64_t expires_ms = 0;
  /// The key whose shard holds the record (saga/shard.h); empty = the saga's
  /// id. It must map to the saga's shard (a record of another shard is not
  /// written: an error in the log); a reshard (saga/reshard.h) moves the
  /// record to the shard this key then maps to.
  std::string shard_key;
};

/// The records to write for a change of an instance's state (`previous`
/// empty: it has just started), in the same write as the change.
using RecordsFn =
    std::function<std::vector<Record>(const SagaView& saga, std::optional<SagaState> previous)>;

/// One side of a step: a command to a participant or a local function.
struct Action {
  /// Participant name for a command; empty for a local function.
  std::string participant;
  /// Command type, e.g. "reserve".
  std::string command;
  /// Payload builder (commands). Default: the whole saga data.
  PayloadFn payload;
  /// Reply merger (commands, success only). Default: ignore the reply.
  MergeFn on_reply;
  /// Local function (when participant is empty).
  LocalFn local;
  /// Partition key builder; default (empty) = saga id.
  std::function<std::string(const Json& data)> key;

  bool is_local() const noexcept { return participant.empty(); }
};

/// One step of a saga.
struct StepSpec {
  std::string name;
  Action action;
  /// Undo of the action; absent when the step needs none.
  std::optional<Action> compensation;
  /// How long to wait for a reply before retrying. Default 5 s.
  Duration timeout{5'000};
  RetryPolicy retry;
  /// Policy for the compensation. Default: 10 attempts, then the saga parks as Failed.
  RetryPolicy compensation_retry{10, Duration{100}, 2.0, Duration{10'000}, 0.2};
  /// The point of no return: once its command is sent the saga can no longer
  /// be cancelled, and after it succeeds later steps are retried until they
  /// succeed instead of compensating. A pivot has no compensation; every step
  /// before it has one.
  bool pivot = false;
};

/// An immutable, validated saga type. Shared by every instance started with it.
class SagaDefinition {
 public:
  const std::string& name() const noexcept { return name_; }
  uint32_t version() const noexcept { return version_; }
  const std::vector<StepSpec>& steps() const noexcept { return steps_; }
  /// Names of the participants any step or compensation sends commands to.
  std::vector<std::string> participants() const;
  /// Index of the pivot step, if any.
  std::optional<size_t> pivot() const noexcept { return pivot_; }
  /// Domain events on state changes (may be empty).
  const EventsFn& events() const noexcept { return events_; }
  /// Domain records written on state changes (may be empty).
  const RecordsFn& records() const noexcept { return records_; }
  /// What an unfinished saga depends on, one line per step: its name, the
  /// participant and command of its action and of its compensation (or
  /// "local"), and whether it is the pivot. Timeouts, retry policies and the
  /// bodies of functions are not part of it, so they may change under a
  /// running saga; anything in the shape needs a new version.
  const std::vector<std::string>& shape() const noexcept { return shape_; }
  /// A 64-bit hash of shape() (never 0), stored with every instance and
  /// compared when an orchestrator opens (docs/storage.md).
  uint64_t fingerprint() const noexcept { return fingerprint_; }

 private:
  friend class DefinitionBuilder;
  std::string name_;
  uint32_t version_ = 1;
  std::vector<StepSpec> steps_;
  std::optional<size_t> pivot_;
  EventsFn events_;
  RecordsFn records_;
  std::vector<std::string> shape_;
  uint64_t fingerprint_ = 0;
};

/// The first line where two shapes (SagaDefinition::shape()) differ, as
/// "step 2: was 'pay: payment.charge', now 'pay: payment.debit'"; empty when
/// they are equal.
std::string first_difference(const std::vector<std::string>& was,
                             const std::vector<std::string>& now);

using DefinitionPtr = std::shared_ptr<const SagaDefinition>;

/// Declares a saga type over JSON data. Not thread-safe; build once at start-up.
///
///   auto def = DefinitionBuilder("booking", 1)
///       .command("reserve", "inventory", "reserve").compensate("inventory", "release")
///       .command("pay", "payment", "charge").compensate("payment", "refund")
///       .command("confirm", "inventory", "confirm")
///       .build();
///
/// Each call of command()/local() starts a new step; the calls after it
/// (compensate, timeout, retry, payload, on_reply, key, pivot) apply to that step.
class DefinitionBuilder {
 public:
  DefinitionBuilder(std::string name, uint32_t version);

  /// Adds a step that sends `command` to `participant`.
  DefinitionBuilder& command(std::string step, std::string participant, std::string command);
  /// Adds a step run locally inside the orchestrator's transaction.
  DefinitionBuilder& local(std::string step, LocalFn fn);
  /// Gives the current step a compensating command.
  DefinitionBuilder& compensate(std::string participant, std::string command,
                                PayloadFn payload = nullptr);
  /// Gives the current step a local compensation.
  DefinitionBuilder& compensate_local(LocalFn fn);
  DefinitionBuilder& payload(PayloadFn fn);
  DefinitionBuilder& on_reply(MergeFn fn);
  /// Partition key for the current step's commands (default: saga id).
  DefinitionBuilder& key(std::function<std::string(const Json&)> fn);
  DefinitionBuilder& timeout(Duration d);
  DefinitionBuilder& retry(RetryPolicy policy);
  DefinitionBuilder& compensation_retry(RetryPolicy policy);
  /// Marks the current step as the pivot (see StepSpec::pivot).
  DefinitionBuilder& pivot();
  /// Publishes domain events when an instance changes state (see EventsFn).
  DefinitionBuilder& on_state_change(EventsFn fn);
  /// Writes domain records when an instance changes state (see RecordsFn).
  DefinitionBuilder& records(RecordsFn fn);

  /// Validates and returns the definition. InvalidArgument (listing every
  /// problem) when the name is empty, the version is 0, there are no steps, a
  /// step name is empty or repeats, a command lacks a participant or command
  /// name, a local step or compensation lacks its function, a compensation
  /// goes to another participant than its action, a timeout is not positive,
  /// a retry multiplier is below 1, an option comes before any step, more
  /// than one step is the pivot, the pivot has a compensation, or a step
  /// before the pivot has none.
  StatusOr<DefinitionPtr> build();

 private:
  StepSpec& current();
  std::shared_ptr<SagaDefinition> def_;
  std::vector<std::string> errors_;
};

/// Adapts a payload builder over a user data struct (with nlohmann
/// to_json/from_json) to a PayloadFn.
template <typename Data, typename F>
PayloadFn typed_payload(F fn) {
  return [fn = std::move(fn)](const Json& data) { return Json(fn(data.get<Data>())); };
}

/// Adapts a reply merger over a user data struct to a MergeFn.
template <typename Data, typename F>
MergeFn typed_merge(F fn) {
  return [fn = std::move(fn)](Json& data, const Json& reply) {
    Data typed = data.get<Data>();
    fn(typed, reply);
    data = typed;
  };
}

/// Adapts a local function over a user data struct to a LocalFn.
template <typename Data, typename F>
LocalFn typed_local(F fn) {
  return [fn = std::move(fn)](Json& data) {
    Data typed = data.get<Data>();
    Status s = fn(typed);
    if (s.ok()) data = typed;
    return s;
  };
}

}  // namespace saga
