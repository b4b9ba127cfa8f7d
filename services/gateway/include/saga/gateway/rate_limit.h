// Token buckets for the gateway's rate limits: one bucket per key (a token's
// subject, a client's IP address), refilled continuously at `rate` tokens per
// second up to `burst`. A request takes one token; without one it is refused
// and told when the next token comes (Retry-After).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace saga::gateway {

using RateClock = std::chrono::steady_clock;

/// The shape of a limit. rate 0 turns the limit off.
struct RateLimit {
  /// Tokens added per second. Default 0 (no limit).
  double rate = 0;
  /// Most tokens held (the burst a quiet client may send at once). Default 1.
  double burst = 1;
};

/// One bucket. A value type, not thread-safe (RateLimiter guards its buckets).
class TokenBucket {
 public:
  /// A full bucket at `now`.
  TokenBucket(RateLimit limit, RateClock::time_point now)
      : limit_(limit), tokens_(limit.burst), last_(now) {}

  /// Takes a token at `now`: true when there was one; else false, with
  /// `*retry_after` (when not null) set to the wait until the next one.
  bool try_take(RateClock::time_point now, std::chrono::milliseconds* retry_after = nullptr);
  /// Tokens held at `now` (refilled first).
  double tokens(RateClock::time_point now);

 private:
  void refill(RateClock::time_point now);

  RateLimit limit_;
  double tokens_;
  RateClock::time_point last_;
};

/// A bucket per key. Thread-safe. The number of buckets kept is bounded: when
/// more than `max_keys` exist, the full ones (keys quiet long enough to have
/// refilled) are forgotten, and if that is not enough all are (forgetting only
/// ever lets a client through sooner, never refuses one wrongly).
class RateLimiter {
 public:
  using Now = std::function<RateClock::time_point()>;

  /// `now` is the clock (tests inject one); default the steady clock.
  explicit RateLimiter(RateLimit limit, Now now = {}, size_t max_keys = 100'000);

  bool enabled() const noexcept { return limit_.rate > 0; }
  /// Takes a token of `key`'s bucket: 0 ms when allowed (always, when the
  /// limit is off), else the wait until the next token (at least 1 ms).
  std::chrono::milliseconds acquire(std::string_view key);
  /// Buckets kept now.
  size_t size() const;

 private:
  const RateLimit limit_;
  const Now now_;
  const size_t max_keys_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, TokenBucket> buckets_;  // guarded by mu_
};

}  // namespace saga::gateway
