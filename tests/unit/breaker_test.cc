// The circuit breaker driven by a ManualClock: outcomes are recorded by hand
// and time moves only when a test advances it, so nothing sleeps.
#include "saga/breaker.h"

#include <doctest/doctest.h>

#include <string>

#include "saga/clock.h"

namespace saga {
namespace {

constexpr Duration kOpenFor{5'000};

// Small numbers keep the arithmetic of each test visible: a window of 4
// outcomes, at least 4 of them before it may open, half of them failures.
BreakerOptions small_options() {
  BreakerOptions o;
  o.enabled = true;
  o.window = 4;
  o.min_calls = 4;
  o.failure_rate = 0.5;
  o.open_for = kOpenFor;
  o.probes = 2;
  return o;
}

void record_n(CircuitBreaker& b, int n, bool success) {
  for (int i = 0; i < n; ++i) b.record(success);
}

// Opens `b` (built with small_options) with four failures.
void trip(CircuitBreaker& b) {
  record_n(b, 4, false);
  REQUIRE(b.state() == BreakerState::kOpen);
}

TEST_CASE("a new breaker is closed, allows commands and has never opened") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);
  CHECK(b.state() == BreakerState::kClosed);
  CHECK(b.allow());
  CHECK(b.opened_count() == 0);
  CHECK(b.retry_at() == clock.now());
}

TEST_CASE("the breaker stays closed while fewer than min_calls outcomes are known") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.window = 20;
  o.min_calls = 10;
  CircuitBreaker b(o, &clock);
  record_n(b, 9, false);  // 100% failures, but only 9 outcomes
  CHECK(b.state() == BreakerState::kClosed);
  CHECK(b.allow());
  CHECK(b.opened_count() == 0);

  b.record(false);  // the 10th outcome reaches min_calls
  CHECK(b.state() == BreakerState::kOpen);
  CHECK(b.opened_count() == 1);
}

TEST_CASE("the breaker opens when the failure share reaches failure_rate, not before") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);

  SUBCASE("one failure in four stays closed") {
    record_n(b, 3, true);
    b.record(false);
    CHECK(b.state() == BreakerState::kClosed);
    CHECK(b.opened_count() == 0);
  }
  SUBCASE("two failures in four (exactly the rate) open it") {
    record_n(b, 2, true);
    record_n(b, 2, false);
    CHECK(b.state() == BreakerState::kOpen);
    CHECK(b.opened_count() == 1);
  }
  SUBCASE("timeouts count as failures whatever their order") {
    b.record(false);
    b.record(true);
    b.record(false);
    b.record(true);
    CHECK(b.state() == BreakerState::kOpen);
  }
}

TEST_CASE("the window slides: failures older than the window no longer count") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.failure_rate = 0.75;  // 3 of the last 4
  CircuitBreaker b(o, &clock);

  record_n(b, 2, false);  // [F F]
  record_n(b, 4, true);   // [S S S S]: both failures slid out
  record_n(b, 2, false);  // [S S F F]: 2 of 4, below 3 of 4
  // Counting every failure ever seen (4) against the window (4) would open it here.
  CHECK(b.state() == BreakerState::kClosed);
  CHECK(b.opened_count() == 0);

  b.record(false);  // [S F F F]: 3 of 4
  CHECK(b.state() == BreakerState::kOpen);
}

TEST_CASE("an open breaker rejects commands until open_for has passed") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);
  const TimePoint opened = clock.now();
  trip(b);

  CHECK_FALSE(b.allow());
  CHECK(b.retry_at() == opened + kOpenFor);

  clock.advance(kOpenFor - Duration{1});
  CHECK(b.state() == BreakerState::kOpen);
  CHECK_FALSE(b.allow());
  CHECK(b.retry_at() == opened + kOpenFor);  // the hint does not move while it waits

  clock.advance(Duration{1});
  CHECK(b.state() == BreakerState::kHalfOpen);
  CHECK(b.retry_at() == clock.now());  // not open any more: now
}

TEST_CASE("a half-open breaker lets at most `probes` probes through at once") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);  // probes = 2
  trip(b);
  clock.advance(kOpenFor);

  CHECK(b.allow());
  CHECK(b.allow());
  CHECK_FALSE(b.allow());
  CHECK_FALSE(b.allow());
  CHECK(b.state() == BreakerState::kHalfOpen);
}

TEST_CASE("successful probes close the breaker once `probes` of them succeeded") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.probes = 3;
  CircuitBreaker b(o, &clock);
  trip(b);
  clock.advance(kOpenFor);

  REQUIRE(b.allow());
  b.record(true);
  CHECK(b.state() == BreakerState::kHalfOpen);
  REQUIRE(b.allow());
  b.record(true);
  CHECK(b.state() == BreakerState::kHalfOpen);
  // Two successes and one probe out: the third success is still owed.
  REQUIRE(b.allow());
  CHECK_FALSE(b.allow());
  b.record(true);
  CHECK(b.state() == BreakerState::kClosed);
  CHECK(b.allow());
  CHECK(b.opened_count() == 1);
}

TEST_CASE("a closed-again breaker starts from an empty window") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.probes = 1;
  CircuitBreaker b(o, &clock);
  trip(b);
  clock.advance(kOpenFor);
  REQUIRE(b.allow());
  b.record(true);
  REQUIRE(b.state() == BreakerState::kClosed);

  // The failures that opened it are forgotten: 3 failures are below min_calls.
  record_n(b, 3, false);
  CHECK(b.state() == BreakerState::kClosed);
  b.record(false);
  CHECK(b.state() == BreakerState::kOpen);
  CHECK(b.opened_count() == 2);
}

TEST_CASE("a failed probe reopens the breaker for another open_for") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);
  trip(b);
  clock.advance(kOpenFor);

  REQUIRE(b.allow());
  REQUIRE(b.allow());
  b.record(true);
  b.record(false);  // one success does not save it

  CHECK(b.state() == BreakerState::kOpen);
  CHECK(b.opened_count() == 2);
  CHECK_FALSE(b.allow());
  const TimePoint reopened = clock.now();
  CHECK(b.retry_at() == reopened + kOpenFor);

  clock.advance(kOpenFor);
  CHECK(b.state() == BreakerState::kHalfOpen);
  // A fresh half-open phase: both probe slots are free again.
  CHECK(b.allow());
  CHECK(b.allow());
  CHECK_FALSE(b.allow());
}

TEST_CASE("release_probe gives a half-open probe slot back") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.probes = 1;
  CircuitBreaker b(o, &clock);
  trip(b);
  clock.advance(kOpenFor);

  REQUIRE(b.allow());
  REQUIRE_FALSE(b.allow());
  b.release_probe();  // its saga was cancelled: no outcome will come
  CHECK(b.state() == BreakerState::kHalfOpen);
  CHECK(b.allow());
  CHECK_FALSE(b.allow());

  SUBCASE("releasing more slots than are taken frees nothing extra") {
    b.release_probe();
    b.release_probe();
    CHECK(b.allow());
    CHECK_FALSE(b.allow());
  }
  SUBCASE("release_probe does nothing to a closed breaker") {
    b.record(true);
    REQUIRE(b.state() == BreakerState::kClosed);
    b.release_probe();
    CHECK(b.state() == BreakerState::kClosed);
    CHECK(b.allow());
  }
}

TEST_CASE("late outcomes recorded while the breaker is open are ignored") {
  ManualClock clock;
  CircuitBreaker b(small_options(), &clock);
  const TimePoint opened = clock.now();
  trip(b);

  clock.advance(Duration{1000});
  record_n(b, 10, true);  // replies of commands sent before it opened
  CHECK(b.state() == BreakerState::kOpen);
  CHECK_FALSE(b.allow());
  record_n(b, 10, false);
  CHECK(b.opened_count() == 1);              // not reopened
  CHECK(b.retry_at() == opened + kOpenFor);  // and not pushed back

  clock.advance(kOpenFor - Duration{1000});
  CHECK(b.state() == BreakerState::kHalfOpen);
  // The successes above were not counted as probe successes.
  CHECK(b.allow());
  CHECK(b.allow());
  CHECK_FALSE(b.allow());
}

TEST_CASE("a disabled breaker never opens") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.enabled = false;
  CircuitBreaker b(o, &clock);
  record_n(b, 100, false);
  CHECK(b.state() == BreakerState::kClosed);
  CHECK(b.allow());
  CHECK(b.opened_count() == 0);
  CHECK(b.retry_at() == clock.now());
}

// BreakerOptions are not validated anywhere (neither here nor by the
// orchestrator), and probes = 0 leaves a half-open breaker with no slot to
// probe through and nothing that could ever close it.
TEST_CASE("a breaker configured with zero probes does not stay shut forever") {
  ManualClock clock;
  BreakerOptions o = small_options();
  o.probes = 0;
  CircuitBreaker b(o, &clock);
  trip(b);
  clock.advance(kOpenFor * 10);
  CHECK(b.state() != BreakerState::kOpen);
  CHECK_MESSAGE(b.allow(),
                "state " << std::string(to_string(b.state())) << " and no command may ever pass");
}

TEST_CASE("breaker states have stable names") {
  CHECK(to_string(BreakerState::kClosed) == "closed");
  CHECK(to_string(BreakerState::kOpen) == "open");
  CHECK(to_string(BreakerState::kHalfOpen) == "half_open");
  CHECK(to_string(static_cast<BreakerState>(42)) == "unknown");
}

TEST_CASE("the default options are the documented ones") {
  BreakerOptions o;
  CHECK(o.enabled);
  CHECK(o.window == 20);
  CHECK(o.min_calls == 10);
  CHECK(o.failure_rate == doctest::Approx(0.5));
  CHECK(o.open_for == Duration{5'000});
  CHECK(o.probes == 3);
}

}  // namespace
}  // namespace saga
