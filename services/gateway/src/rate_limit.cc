#include "saga/gateway/rate_limit.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace saga::gateway {

void TokenBucket::refill(RateClock::time_point now) {
  if (now <= last_) return;  // a clock that did not move (or a stale reading)
  const double elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(limit_.burst, tokens_ + elapsed * limit_.rate);
  last_ = now;
}

double TokenBucket::tokens(RateClock::time_point now) {
  refill(now);
  return tokens_;
}

bool TokenBucket::try_take(RateClock::time_point now, std::chrono::milliseconds* retry_after) {
  refill(now);
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  if (retry_after != nullptr) {
    const double seconds = limit_.rate > 0 ? (1.0 - tokens_) / limit_.rate : 3600.0;
    *retry_after = std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(seconds * 1000.0))));
  }
  return false;
}

RateLimiter::RateLimiter(RateLimit limit, Now now, size_t max_keys)
    : limit_(limit),
      now_(now ? std::move(now) : Now([] { return RateClock::now(); })),
      max_keys_(std::max<size_t>(1, max_keys)) {}

std::chrono::milliseconds RateLimiter::acquire(std::string_view key) {
  if (!enabled()) return std::chrono::milliseconds(0);
  const auto now = now_();
  std::lock_guard lock(mu_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      for (auto i = buckets_.begin(); i != buckets_.end();) {
        i = i->second.tokens(now) >= limit_.burst ? buckets_.erase(i) : std::next(i);
      }
      if (buckets_.size() >= max_keys_) buckets_.clear();
    }
    it = buckets_.emplace(std::string(key), TokenBucket(limit_, now)).first;
  }
  std::chrono::milliseconds wait{0};
  if (it->second.try_take(now, &wait)) return std::chrono::milliseconds(0);
  return wait;
}

size_t RateLimiter::size() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace saga::gateway
