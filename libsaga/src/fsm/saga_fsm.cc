// The one translation unit that instantiates Boost.MSM (it compiles slowly).
//
// The machine is rebuilt for every event: restored to the instance's stored
// state, then given the event. The store, not the machine object, is the
// memory of an instance, so recovery needs no replay.
#include "fsm/saga_fsm.h"

// The transition table has more rows than Boost.MPL's default limit of 20.
#define BOOST_MPL_CFG_NO_PREPROCESSED_HEADERS
#define BOOST_MPL_LIMIT_VECTOR_SIZE 40
#define BOOST_MPL_LIMIT_MAP_SIZE 40
#include <boost/msm/back/state_machine.hpp>
#include <boost/msm/front/functor_row.hpp>
#include <boost/msm/front/state_machine_def.hpp>
#include <string>

namespace saga::internal {

std::string_view to_string(FsmEvent e) noexcept {
  switch (e) {
    case FsmEvent::kStart:
      return "start";
    case FsmEvent::kStepSucceeded:
      return "step_succeeded";
    case FsmEvent::kStepFailed:
      return "step_failed";
    case FsmEvent::kStepRetryable:
      return "step_retryable";
    case FsmEvent::kStepTimedOut:
      return "step_timed_out";
    case FsmEvent::kCancelRequested:
      return "cancel_requested";
    case FsmEvent::kCompensationSucceeded:
      return "compensation_succeeded";
    case FsmEvent::kCompensationFailed:
      return "compensation_failed";
    case FsmEvent::kRetryCompensation:
      return "retry_compensation";
    case FsmEvent::kForceCompensate:
      return "force_compensate";
    case FsmEvent::kAbort:
      return "abort";
    case FsmEvent::kSkipCompensation:
      return "skip_compensation";
    case FsmEvent::kExpired:
      return "expired";
  }
  return "unknown";
}

namespace {

namespace msm = boost::msm;
namespace msmf = boost::msm::front;

// ---- events ----
struct Restore {
  SagaState target;
};
struct Start {};
struct StepSucceeded {};
struct StepFailed {};
struct StepRetryable {};
struct StepTimedOut {};
struct CancelRequested {};
struct CompensationSucceeded {};
struct CompensationFailed {};
struct RetryCompensation {};
struct ForceCompensate {};
struct Abort {};
struct SkipCompensation {};
struct Expired {};

// ---- states: each records what it stands for on entry ----
template <SagaState S>
struct Resting : msmf::state<> {
  template <class Event, class Fsm>
  void on_entry(const Event&, Fsm& fsm) {
    fsm.result = S;
  }
};
struct Idle : msmf::state<> {};
using Running = Resting<SagaState::kRunning>;
using Compensating = Resting<SagaState::kCompensating>;
using Completed = Resting<SagaState::kCompleted>;
using Compensated = Resting<SagaState::kCompensated>;
using Failed = Resting<SagaState::kFailed>;
using Aborted = Resting<SagaState::kAborted>;
// Transient: decides, by anonymous transitions, whether anything is left to undo.
struct Unwinding : msmf::state<> {};

// ---- guards and actions: thin calls into the engine ----
#define SAGA_FSM_GUARD(Name, expr)                            \
  struct Name {                                               \
    template <class Evt, class Fsm, class Src, class Tgt>     \
    bool operator()(const Evt&, Fsm& fsm, Src&, Tgt&) const { \
      FsmHooks& h = *fsm.hooks;                               \
      return (expr);                                          \
    }                                                         \
  };
#define SAGA_FSM_ACTION(Name, call)                           \
  struct Name {                                               \
    template <class Evt, class Fsm, class Src, class Tgt>     \
    void operator()(const Evt&, Fsm& fsm, Src&, Tgt&) const { \
      fsm.hooks->call();                                      \
    }                                                         \
  };

SAGA_FSM_GUARD(HasNext, h.has_next_step())
SAGA_FSM_GUARD(IsLast, !h.has_next_step())
SAGA_FSM_GUARD(PastPivot, h.past_pivot())
SAGA_FSM_GUARD(BeforePivot, !h.past_pivot())
SAGA_FSM_GUARD(PivotNotSent, !h.pivot_sent())
SAGA_FSM_GUARD(MayRetry, h.attempts_left() || h.past_pivot())
SAGA_FSM_GUARD(MustGiveUp, !h.attempts_left() && !h.past_pivot() && !h.at_pivot())
SAGA_FSM_GUARD(GiveUpAtPivot, !h.attempts_left() && h.at_pivot())
SAGA_FSM_GUARD(ParkedAtPivot, h.parked_at_pivot())
SAGA_FSM_GUARD(NotParkedAtPivot, !h.parked_at_pivot())
SAGA_FSM_GUARD(ParkedAtPivotHasNext, h.parked_at_pivot() && h.has_next_step())
SAGA_FSM_GUARD(ParkedAtPivotIsLast, h.parked_at_pivot() && !h.has_next_step())
SAGA_FSM_GUARD(MayRetryCompensation, h.compensation_attempts_left())
SAGA_FSM_GUARD(CompensationExhausted, !h.compensation_attempts_left())
SAGA_FSM_GUARD(SomethingToUndo, h.has_compensable())
SAGA_FSM_GUARD(NothingToUndo, !h.has_compensable())
SAGA_FSM_GUARD(CompensationParked, h.compensation_parked())

SAGA_FSM_ACTION(BeginFirstStep, begin_first_step)
SAGA_FSM_ACTION(SucceedAndBeginNext, succeed_and_begin_next)
SAGA_FSM_ACTION(SucceedLast, succeed_last)
SAGA_FSM_ACTION(RetryStep, retry_step)
SAGA_FSM_ACTION(MarkStepFailed, mark_step_failed)
SAGA_FSM_ACTION(MarkStepUnknown, mark_step_unknown)
SAGA_FSM_ACTION(CompensateNext, compensate_next)
SAGA_FSM_ACTION(MarkCompensated, mark_compensated)
SAGA_FSM_ACTION(RetryCompensationAction, retry_compensation)
SAGA_FSM_ACTION(Park, park)
SAGA_FSM_ACTION(ParkAtPivot, park_at_pivot)
SAGA_FSM_ACTION(RetryParkedStep, retry_parked_step)
SAGA_FSM_ACTION(RestartCompensation, restart_compensation)
SAGA_FSM_ACTION(SkipCompensationAction, skip_compensation)
SAGA_FSM_ACTION(FinishCompensated, finish_compensated)
SAGA_FSM_ACTION(AbortSaga, abort_saga)
SAGA_FSM_ACTION(ParkExpired, park_expired)
#undef SAGA_FSM_GUARD
#undef SAGA_FSM_ACTION

template <SagaState S>
struct RestoreTo {
  template <class Evt, class Fsm, class Src, class Tgt>
  bool operator()(const Evt& e, Fsm&, Src&, Tgt&) const {
    return e.target == S;
  }
};

struct SagaMachine_ : msmf::state_machine_def<SagaMachine_> {
  using initial_state = Idle;
  FsmHooks* hooks = nullptr;
  SagaState result = SagaState::kRunning;

  using none = msmf::none;
  template <class Src, class Evt, class Tgt, class Action, class Guard>
  using Row = msmf::Row<Src, Evt, Tgt, Action, Guard>;

  // clang-format off
  struct transition_table : boost::mpl::vector<
      //   Source        Event                  Target        Action                   Guard
      // Restoring a stored instance (no actions run).
      Row< Idle,         Restore,               Running,      none,                    RestoreTo<SagaState::kRunning>      >,
      Row< Idle,         Restore,               Compensating, none,                    RestoreTo<SagaState::kCompensating> >,
      Row< Idle,         Restore,               Failed,       none,                    RestoreTo<SagaState::kFailed>       >,
      Row< Idle,         Restore,               Completed,    none,                    RestoreTo<SagaState::kCompleted>    >,
      Row< Idle,         Restore,               Compensated,  none,                    RestoreTo<SagaState::kCompensated>  >,
      Row< Idle,         Restore,               Aborted,      none,                    RestoreTo<SagaState::kAborted>      >,
      // A new instance.
      Row< Idle,         Start,                 Running,      BeginFirstStep,          none                   >,
      // Forward.
      Row< Running,      StepSucceeded,         Running,      SucceedAndBeginNext,     HasNext                >,
      Row< Running,      StepSucceeded,         Completed,    SucceedLast,             IsLast                 >,
      Row< Running,      StepFailed,            Running,      RetryStep,               PastPivot              >,
      Row< Running,      StepFailed,            Unwinding,    MarkStepFailed,          BeforePivot            >,
      Row< Running,      StepRetryable,         Running,      RetryStep,               MayRetry               >,
      Row< Running,      StepRetryable,         Unwinding,    MarkStepFailed,          MustGiveUp             >,
      Row< Running,      StepRetryable,         Failed,       ParkAtPivot,             GiveUpAtPivot          >,
      Row< Running,      StepTimedOut,          Running,      RetryStep,               MayRetry               >,
      Row< Running,      StepTimedOut,          Unwinding,    MarkStepUnknown,         MustGiveUp             >,
      Row< Running,      StepTimedOut,          Failed,       ParkAtPivot,             GiveUpAtPivot          >,
      Row< Running,      CancelRequested,       Unwinding,    MarkStepUnknown,         PivotNotSent           >,
      Row< Running,      ForceCompensate,       Unwinding,    MarkStepUnknown,         none                   >,
      Row< Running,      Abort,                 Aborted,      AbortSaga,               none                   >,
      Row< Running,      Expired,               Failed,       ParkExpired,             none                   >,
      // Deciding what is left to undo, newest first.
      Row< Unwinding,    none,                  Compensating, CompensateNext,          SomethingToUndo        >,
      Row< Unwinding,    none,                  Compensated,  FinishCompensated,       NothingToUndo          >,
      // Backward.
      Row< Compensating, CompensationSucceeded, Unwinding,    MarkCompensated,         none                   >,
      Row< Compensating, CompensationFailed,    Compensating, RetryCompensationAction, MayRetryCompensation   >,
      Row< Compensating, CompensationFailed,    Failed,       Park,                    CompensationExhausted  >,
      Row< Compensating, CancelRequested,       Compensating, none,                    none                   >,
      Row< Compensating, Abort,                 Aborted,      AbortSaga,               none                   >,
      Row< Compensating, Expired,               Failed,       ParkExpired,             none                   >,
      // Parked for an operator: a compensation that kept failing ...
      Row< Failed,       RetryCompensation,     Compensating, RestartCompensation,     NotParkedAtPivot       >,
      Row< Failed,       ForceCompensate,       Compensating, RestartCompensation,     NotParkedAtPivot       >,
      Row< Failed,       SkipCompensation,      Unwinding,    SkipCompensationAction,  CompensationParked     >,
      Row< Failed,       Abort,                 Aborted,      AbortSaga,               none                   >,
      // ... or a pivot out of retries, whose outcome is open: an operator
      // sends it again or undoes the steps before it; its late reply decides.
      Row< Failed,       RetryCompensation,     Running,      RetryParkedStep,         ParkedAtPivot          >,
      Row< Failed,       ForceCompensate,       Unwinding,    MarkStepUnknown,         ParkedAtPivot          >,
      Row< Failed,       StepSucceeded,         Running,      SucceedAndBeginNext,     ParkedAtPivotHasNext   >,
      Row< Failed,       StepSucceeded,         Completed,    SucceedLast,             ParkedAtPivotIsLast    >,
      Row< Failed,       StepFailed,            Unwinding,    MarkStepFailed,          ParkedAtPivot          >
  > {};
  // clang-format on

  // An exception thrown by a guard or an action leaves the machine to the
  // caller (the orchestrator parks the saga), instead of being swallowed by
  // Boost.MSM's default handler with the instance half changed.
  using no_exception_thrown = int;

  // An event a state does not accept is reported to the caller, not asserted.
  template <class Fsm, class Event>
  void no_transition(const Event&, Fsm&, int) {}
};

using SagaMachine = msm::back::state_machine<SagaMachine_>;

template <class Event>
StatusOr<SagaState> run(SagaMachine& m, const Event& e, FsmEvent which, SagaState from) {
  if (m.process_event(e) != msm::back::HANDLED_TRUE) {
    return Status::failed_precondition(std::string("event ") + std::string(to_string(which)) +
                                       " is not accepted in state " + std::string(to_string(from)));
  }
  return m.result;
}

}  // namespace

StatusOr<SagaState> fsm_process(SagaState current, FsmEvent event, FsmHooks& hooks) {
  SagaMachine m;
  m.hooks = &hooks;
  m.start();
  if (event == FsmEvent::kStart) return run(m, Start{}, event, current);
  if (m.process_event(Restore{current}) != msm::back::HANDLED_TRUE) {
    return Status::internal("cannot restore saga state " + std::string(to_string(current)));
  }
  switch (event) {
    case FsmEvent::kStart:
      break;
    case FsmEvent::kStepSucceeded:
      return run(m, StepSucceeded{}, event, current);
    case FsmEvent::kStepFailed:
      return run(m, StepFailed{}, event, current);
    case FsmEvent::kStepRetryable:
      return run(m, StepRetryable{}, event, current);
    case FsmEvent::kStepTimedOut:
      return run(m, StepTimedOut{}, event, current);
    case FsmEvent::kCancelRequested:
      return run(m, CancelRequested{}, event, current);
    case FsmEvent::kCompensationSucceeded:
      return run(m, CompensationSucceeded{}, event, current);
    case FsmEvent::kCompensationFailed:
      return run(m, CompensationFailed{}, event, current);
    case FsmEvent::kRetryCompensation:
      return run(m, RetryCompensation{}, event, current);
    case FsmEvent::kForceCompensate:
      return run(m, ForceCompensate{}, event, current);
    case FsmEvent::kAbort:
      return run(m, Abort{}, event, current);
    case FsmEvent::kSkipCompensation:
      return run(m, SkipCompensation{}, event, current);
    case FsmEvent::kExpired:
      return run(m, Expired{}, event, current);
  }
  return Status::internal("unknown saga event");
}

}  // namespace saga::internal
