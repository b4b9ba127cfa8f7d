// Replicas of the reference services at full size (issue 11's proof): 5,000
// bookings through the gateway over a three-broker cluster (replication
// factor 3, min ISR 2) with three replicas of reservation and of inventory and
// two of payment and of mypage, while one of each is SIGKILLed for good; the
// same with the killed replicas' data directories deleted before they come
// back; and reservation scaled 1 -> 3 -> 2 while bookings flow. Afterwards
// every booking ended CONFIRMED or REJECTED exactly once, money and rooms
// balance, no night is overbooked, and mypage agrees (booking_load.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "e2e/booking_load.h"
#include "support/kafka_brokers.h"

namespace saga::testing::e2e {
namespace {

// 20 places x 3 nights x 70 rooms = 4,200 rooms for 5,000 one-night bookings:
// some are refused.
constexpr BookingLoad kLoad{.bookings = 5000, .clients = 8, .places = 20, .rooms = 70,
                            .users = 97};

// Waits until `accepted` reaches `at` (at most the load), failing with the logs.
void wait_accepted(ServiceStack& stack, const std::atomic<int>& accepted, int at) {
  const int want = std::min(at, kLoad.bookings);
  const bool reached = eventually([&] { return accepted >= want; }, 300s);
  REQUIRE_MESSAGE(reached, "stuck at " << accepted << " accepted bookings\n"
                                       << stack.all_log_tails());
}

// A three-node cluster of this test's own and the options of a stack on it:
// reservation x3, inventory x3, payment x2, mypage x2.
struct ClusterStack {
  TempDir dir{"saga-e2e-cluster"};
  KafkaBrokers brokers{SAGA_KAFKA_SCRIPT, dir.path(), 3};
  ServiceStack::Options options() const {
    ServiceStack::Options o;
    o.brokers = brokers.bootstrap();
    o.env = {{"KAFKA_REPLICATION_FACTOR", "3"}};
    o.replicas = {{"reservation", 3}, {"inventory", 3}, {"payment", 2}, {"mypage", 2}};
    return o;
  }
};

// One instance of each of `services`, picked by `rng`, in a random order.
std::vector<std::string> one_of_each(const ServiceStack& stack,
                                     const std::vector<std::string>& services,
                                     std::mt19937_64& rng) {
  std::vector<std::string> victims;
  for (const std::string& service : services) {
    const auto instances = stack.instances(service);
    victims.push_back(instances[rng() % instances.size()]);
  }
  std::shuffle(victims.begin(), victims.end(), rng);
  return victims;
}

TEST_CASE("three brokers and replicas: one of each service SIGKILLed for good during 5000 bookings") {
  ClusterStack cluster;
  ServiceStack stack(cluster.options());
  start_or_fail(stack);
  bookings_survive(stack, "e2e.replicas cluster", kLoad,
                   [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
    for (const std::string& victim :
         one_of_each(stack, {"reservation", "inventory", "payment", "mypage"}, rng)) {
      wait_accepted(stack, accepted, accepted + 300 + static_cast<int>(rng() % 700));
      MESSAGE("SIGKILL " << victim << " (not restarted) after " << accepted.load()
                         << " bookings");
      stack.kill(victim);
    }
  });
}

// The engines restore their shards from the changelogs; mypage, finding its
// store empty, reads the events from the start (KafkaOptions::from_beginning).
TEST_CASE("three brokers and replicas: one of each service SIGKILLed and back on an empty data directory during 5000 bookings") {
  ClusterStack cluster;
  ServiceStack stack(cluster.options());
  start_or_fail(stack);
  bookings_survive(stack, "e2e.replicas empty disk", kLoad,
                   [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
    for (const std::string& victim :
         one_of_each(stack, {"reservation", "inventory", "payment", "mypage"}, rng)) {
      wait_accepted(stack, accepted, accepted + 300 + static_cast<int>(rng() % 700));
      MESSAGE("SIGKILL " << victim << " after " << accepted.load()
                         << " bookings; its data directory deleted; started again");
      stack.kill(victim);
      std::filesystem::remove_all(stack.data_dir(victim));
      std::filesystem::create_directories(stack.data_dir(victim));
      try {
        stack.start(victim);
      } catch (const std::exception& e) {
        FAIL(e.what());
      }
    }
  });
}

TEST_CASE("scaling reservation 1 to 3 to 2 during 5000 bookings") {
  ServiceStack::Options options;  // on the fixture's broker
  options.replicas = {{"reservation", 3}};
  options.later = {"reservation-1", "reservation-2"};
  ServiceStack stack(options);
  start_or_fail(stack);
  bookings_survive(stack, "e2e.replicas scaling", kLoad,
                   [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
    wait_accepted(stack, accepted, 500 + static_cast<int>(rng() % 1000));
    MESSAGE("scaling out to 3 after " << accepted.load() << " bookings");
    try {
      stack.start("reservation-1");
      stack.start("reservation-2");
    } catch (const std::exception& e) {
      FAIL(e.what());
    }
    wait_accepted(stack, accepted, accepted + 1000 + static_cast<int>(rng() % 1000));
    const std::string leaving = stack.instances("reservation")[rng() % 3];
    MESSAGE("scaling in to 2 after " << accepted.load() << " bookings: SIGTERM " << leaving);
    CHECK(stack.stop(leaving, 30s) == 0);
  });
}

}  // namespace
}  // namespace saga::testing::e2e
