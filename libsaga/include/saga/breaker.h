// Circuit breaker per participant: closed -> open on a high failure/timeout
// rate, open -> half-open after a pause, half-open -> closed after successful
// probes (or back to open on a failed one).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>

#include "saga/clock.h"

namespace saga {

enum class BreakerState : uint8_t { kClosed = 0, kOpen = 1, kHalfOpen = 2 };
std::string_view to_string(BreakerState s) noexcept;

/// Settings of every participant's breaker.
struct BreakerOptions {
  /// Off: the breaker never opens. Default true.
  bool enabled = true;
  /// Outcomes remembered (a sliding window by count). Default 20.
  uint32_t window = 20;
  /// Outcomes needed in the window before it may open. Default 10.
  uint32_t min_calls = 10;
  /// Failure share (failures + timeouts over window) that opens it. Default 0.5.
  double failure_rate = 0.5;
  /// Time it stays open before letting probes through. Default 5 s.
  Duration open_for{5'000};
  /// Successful probes in half-open needed to close (0 is taken as 1). Default 3.
  uint32_t probes = 3;
};

/// What the orchestrator does with a new saga whose participant's breaker is open.
enum class BreakerPolicy : uint8_t {
  kReject = 0,  ///< start() fails fast with Unavailable and a retry-after hint (default)
  kPark = 1,    ///< the saga is accepted and waits until the breaker lets probes through
};

/// One participant's breaker. Not thread-safe: the orchestrator's engine owns it.
class CircuitBreaker {
 public:
  CircuitBreaker(BreakerOptions options, const Clock* clock);

  /// State now (open turns half-open once `open_for` has passed).
  BreakerState state();
  /// Whether a command may be sent now. In half-open, lets through at most
  /// `probes` outstanding probes.
  bool allow();
  /// Records the outcome of a command: success, or failure/timeout.
  void record(bool success);
  /// Gives back a half-open probe slot whose command will report no outcome
  /// (its saga was aborted or cancelled while waiting).
  void release_probe();
  /// When an open breaker will next let a probe through (now if not open).
  TimePoint retry_at();
  /// Times it opened since creation.
  uint64_t opened_count() const noexcept { return opened_; }

 private:
  void open();
  BreakerOptions options_;
  const Clock* clock_;
  BreakerState state_ = BreakerState::kClosed;
  std::deque<bool> window_;  // true = failure
  uint32_t failures_ = 0;
  TimePoint opened_at_{};
  uint32_t probes_in_flight_ = 0;
  uint32_t probe_successes_ = 0;
  uint64_t opened_ = 0;
};

}  // namespace saga
