// Injected time and randomness, so tests drive timeouts, retries and jitter
// without sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>

namespace saga {

/// Wall-clock time as libsaga stores it: milliseconds since the Unix epoch.
using TimePoint = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;
using Duration = std::chrono::milliseconds;

/// Milliseconds since the epoch of `t` (what goes on disk).
inline int64_t to_millis(TimePoint t) noexcept { return t.time_since_epoch().count(); }
/// The TimePoint `ms` milliseconds after the epoch.
inline TimePoint from_millis(int64_t ms) noexcept { return TimePoint(Duration(ms)); }

/// A source of the current time. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time.
  virtual TimePoint now() const = 0;
};

/// The system clock, at millisecond resolution.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  }
};

/// A clock that moves only when told to; for tests. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = from_millis(1'700'000'000'000))
      : now_ms_(to_millis(start)) {}
  TimePoint now() const override { return from_millis(now_ms_.load()); }
  /// Moves time forward by `d`.
  void advance(Duration d) { now_ms_ += d.count(); }
  /// Sets the time to `t`.
  void set(TimePoint t) { now_ms_ = to_millis(t); }

 private:
  std::atomic<int64_t> now_ms_;
};

/// A source of random numbers (backoff jitter, fault injection). Thread-safe.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  /// A uniformly distributed 64-bit value.
  virtual uint64_t next() = 0;
  /// A value uniformly distributed in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

/// A seeded pseudo-random source (mt19937_64); the same seed gives the same
/// sequence. Thread-safe.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : engine_(seed) {}
  uint64_t next() override {
    std::lock_guard lock(mu_);
    return engine_();
  }

 private:
  std::mutex mu_;
  std::mt19937_64 engine_;  // GUARDED_BY(mu_)
};

}  // namespace saga
