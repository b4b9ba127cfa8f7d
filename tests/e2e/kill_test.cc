// Crash safety of the whole system: 1,000 bookings through the gateway while
// each of the five services in turn is killed with SIGKILL at a random moment
// and restarted; and again with two replicas of every stateful service, one of
// each killed for good. Clients retry a failed POST with the same Idempotency-Key, as
// a careful client does. Afterwards every booking is CONFIRMED or REJECTED,
// exactly once, and the services agree (payments, rooms, owners, mypage).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <vector>

#include "e2e/booking_load.h"

namespace saga::testing::e2e {
namespace {

constexpr int kBookings = 1000;

TEST_CASE("SIGKILL of any service during 1,000 bookings loses none and doubles none") {
  ServiceStack stack;  // a killed member's partitions move after the transport's 6 s session
  start_or_fail(stack);
  bookings_survive(stack, "e2e.kill", BookingLoad{},
                   [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
    // The killer: each service once, in a random order, at random points of the run.
    std::vector<std::string> victims = all_services();
    std::shuffle(victims.begin(), victims.end(), rng);
    std::vector<int> at;
    for (size_t v = 0; v < victims.size(); ++v) at.push_back(50 + static_cast<int>(rng() % 850));
    std::sort(at.begin(), at.end());
    for (size_t v = 0; v < victims.size(); ++v) {
      const bool reached = eventually([&] { return accepted >= at[v]; }, 300s);
      REQUIRE_MESSAGE(reached, "stuck at " << accepted << " accepted bookings\n"
                                           << stack.all_log_tails());
      MESSAGE("SIGKILL " << victims[v] << " after " << accepted.load() << " bookings");
      stack.kill(victims[v]);
      try {
        stack.start(victims[v]);
      } catch (const std::exception& e) {
        FAIL(e.what());
      }
    }
  });
}

// Replicas of every stateful service: one of each is SIGKILLed for good; the
// others take its shards over (or, for mypage, the gateway skips it) and no
// booking is lost or doubled.
TEST_CASE("replicas: one of two of each stateful service SIGKILLed for good during 1,000 bookings loses none and doubles none") {
  ServiceStack::Options options;
  options.replicas = {{"reservation", 2}, {"inventory", 2}, {"payment", 2}, {"mypage", 2}};
  ServiceStack stack(options);
  start_or_fail(stack);
  bookings_survive(stack, "e2e.kill replicas", BookingLoad{},
                   [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
    std::vector<std::string> victims;  // one instance of each, either one
    for (const char* service : {"reservation", "inventory", "payment", "mypage"})
      victims.push_back(stack.instances(service)[rng() % 2]);
    std::shuffle(victims.begin(), victims.end(), rng);
    for (const std::string& victim : victims) {
      const int at = accepted + 50 + static_cast<int>(rng() % 150);
      const bool reached = eventually([&] { return accepted >= std::min(at, kBookings); }, 300s);
      REQUIRE_MESSAGE(reached, "stuck at " << accepted << " accepted bookings\n"
                                           << stack.all_log_tails());
      MESSAGE("SIGKILL " << victim << " (not restarted) after " << accepted.load()
                         << " bookings");
      stack.kill(victim);
    }
  });
}

}  // namespace
}  // namespace saga::testing::e2e
