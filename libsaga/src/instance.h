// The persisted form of a saga instance and its codec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "saga/orchestrator.h"

namespace saga::internal {

/// What the single live timer of an instance does when it fires.
enum class TimerKind : uint8_t {
  kNone = 0,
  kDeadline = 1,  ///< the awaited reply did not come in time
  kResend = 2,    ///< backoff (or an open breaker) is over: send again
};

/// Everything the engine knows about one instance. The view part is what
/// queries return; the rest is bookkeeping for the engine.
struct Instance {
  SagaView view;
  /// Id of the command whose reply is awaited ("" when none).
  std::string awaiting;
  /// Attempt number of the awaited (or next) send of the current action or
  /// compensation.
  uint32_t attempt = 0;
  /// The live timer (kNone = none) and when it is due.
  TimerKind timer = TimerKind::kNone;
  int64_t timer_due_ms = 0;
  /// Attempts already spent before an operator's retry; the retry budget
  /// counts from here (attempt numbers never repeat within a command).
  uint32_t attempt_base = 0;
  /// The current action timed out at least once, so it may have been applied
  /// even if later attempts were only answered "retry".
  bool uncertain = false;
  /// SagaDefinition::fingerprint() of the definition it started with; 0 for
  /// a record written before fingerprints (format 1 or 2).
  uint64_t fingerprint = 0;
  /// Participant whose half-open breaker granted the awaited command a probe
  /// slot ("" = none). Not persisted: breakers start closed after a restart.
  std::string probe;
  /// Cache of the encoded view.data (MessagePack), "" when stale. Whoever
  /// assigns or mutates view.data must call data_changed(). Not persisted
  /// as such (it is the data field of the record).
  std::string data_bytes;

  void data_changed() { data_bytes.clear(); }
};

/// Compact binary encoding (format 4, docs/storage.md). Fills
/// inst.data_bytes when stale, hence non-const.
std::string encode_instance(Instance& inst);
void encode_instance(Instance& inst, std::string& out);
/// Decodes format 4, 3 (no timeline), 2 (no fingerprint) and the older MessagePack
/// document (format 1).
StatusOr<Instance> decode_instance(std::string_view bytes);

}  // namespace saga::internal
