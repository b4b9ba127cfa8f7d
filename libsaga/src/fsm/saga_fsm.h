// The saga lifecycle as one Boost.MSM state machine. Only saga_fsm.cc sees
// MSM; the engine talks to it through FsmHooks and fsm_process().
#pragma once

#include <cstdint>
#include <string_view>

#include "saga/orchestrator.h"
#include "saga/status.h"

namespace saga::internal {

/// Events of the lifecycle.
enum class FsmEvent : uint8_t {
  kStart,                  ///< a new instance begins its first step
  kStepSucceeded,          ///< the current step's action succeeded
  kStepFailed,             ///< the action was refused for good (nothing applied)
  kStepRetryable,          ///< the action failed transiently (nothing applied)
  kStepTimedOut,           ///< no reply before the step's deadline (outcome unknown)
  kCancelRequested,        ///< the user asked to cancel
  kCompensationSucceeded,  ///< the current compensation is done
  kCompensationFailed,     ///< the current compensation failed or timed out
  kRetryCompensation,      ///< operator: try a parked compensation again
  kForceCompensate,        ///< operator: compensate now
  kAbort,                  ///< operator: stop where it is
  kSkipCompensation,       ///< operator: a parked compensation counts as done by hand
  kExpired,                ///< older than the de-duplication horizon: may send nothing more
};
std::string_view to_string(FsmEvent e) noexcept;

/// Guards and actions the machine calls for one instance; the engine
/// implements them. Guards must not change state.
class FsmHooks {
 public:
  virtual ~FsmHooks() = default;
  // Guards.
  virtual bool has_next_step() = 0;
  virtual bool past_pivot() = 0;
  /// The pivot step's command has been sent (or a later step runs): from
  /// then on the saga only moves forward, so a cancel is refused.
  virtual bool pivot_sent() = 0;
  /// The current step is the pivot.
  virtual bool at_pivot() = 0;
  /// Failed because the pivot's retries ran out (not a failed compensation):
  /// the pivot's outcome is open and only an operator or its late reply decides.
  virtual bool parked_at_pivot() = 0;
  virtual bool attempts_left() = 0;
  virtual bool compensation_attempts_left() = 0;
  virtual bool has_compensable() = 0;
  /// Failed because the current step's compensation kept failing.
  virtual bool compensation_parked() = 0;
  // Actions.
  virtual void begin_first_step() = 0;
  virtual void succeed_and_begin_next() = 0;
  virtual void succeed_last() = 0;
  virtual void retry_step() = 0;
  virtual void mark_step_failed() = 0;
  virtual void mark_step_unknown() = 0;
  virtual void compensate_next() = 0;
  virtual void mark_compensated() = 0;
  virtual void retry_compensation() = 0;
  virtual void park() = 0;
  virtual void park_at_pivot() = 0;
  virtual void retry_parked_step() = 0;
  virtual void restart_compensation() = 0;
  virtual void skip_compensation() = 0;
  virtual void finish_compensated() = 0;
  virtual void abort_saga() = 0;
  virtual void park_expired() = 0;
};

/// Applies `event` to an instance currently in `current` (for kStart, pass
/// kRunning: a new instance starts from the machine's initial state). Returns
/// the state after the event, or FailedPrecondition when `current` does not
/// accept `event` (hooks are then not called). An exception thrown by a hook
/// propagates to the caller.
StatusOr<SagaState> fsm_process(SagaState current, FsmEvent event, FsmHooks& hooks);

}  // namespace saga::internal
