#include "saga/breaker.h"

namespace saga {

std::string_view to_string(BreakerState s) noexcept {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

CircuitBreaker::CircuitBreaker(BreakerOptions options, const Clock* clock)
    : options_(options), clock_(clock) {
  // With no probe a half-open breaker could never close again.
  if (options_.probes == 0) options_.probes = 1;
}

BreakerState CircuitBreaker::state() {
  if (state_ == BreakerState::kOpen && clock_->now() >= opened_at_ + options_.open_for) {
    state_ = BreakerState::kHalfOpen;
    probes_in_flight_ = 0;
    probe_successes_ = 0;
  }
  return state_;
}

bool CircuitBreaker::allow() {
  if (!options_.enabled) return true;
  switch (state()) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return false;
    case BreakerState::kHalfOpen:
      if (probes_in_flight_ + probe_successes_ >= options_.probes) return false;
      ++probes_in_flight_;
      return true;
  }
  return true;
}

void CircuitBreaker::record(bool success) {
  if (!options_.enabled) return;
  switch (state()) {
    case BreakerState::kOpen:
      return;  // late outcomes of commands sent before it opened say nothing new
    case BreakerState::kHalfOpen:
      if (probes_in_flight_ > 0) --probes_in_flight_;
      if (!success) {
        open();
      } else if (++probe_successes_ >= options_.probes) {
        state_ = BreakerState::kClosed;
        window_.clear();
        failures_ = 0;
      }
      return;
    case BreakerState::kClosed:
      window_.push_back(!success);
      if (!success) ++failures_;
      if (window_.size() > options_.window) {
        if (window_.front()) --failures_;
        window_.pop_front();
      }
      if (window_.size() >= options_.min_calls &&
          static_cast<double>(failures_) >=
              options_.failure_rate * static_cast<double>(window_.size())) {
        open();
      }
      return;
  }
}

void CircuitBreaker::release_probe() {
  if (state() == BreakerState::kHalfOpen && probes_in_flight_ > 0) --probes_in_flight_;
}

TimePoint CircuitBreaker::retry_at() {
  if (state() == BreakerState::kOpen) return opened_at_ + options_.open_for;
  return clock_->now();
}

void CircuitBreaker::open() {
  state_ = BreakerState::kOpen;
  opened_at_ = clock_->now();
  window_.clear();
  failures_ = 0;
  probes_in_flight_ = 0;
  probe_successes_ = 0;
  ++opened_;
}

}  // namespace saga
