// Crash safety of the whole system: 1,000 bookings through the gateway while
// each of the five services in turn is killed with SIGKILL at a random moment
// and restarted; and again with two replicas of every stateful service, one of
// each killed for good. Clients retry a failed POST with the same Idempotency-Key, as
// a careful client does. Afterwards every booking is CONFIRMED or REJECTED,
// exactly once, and the services agree (payments, rooms, owners, mypage).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "e2e/e2e_support.h"
#include "support/test_seed.h"

namespace saga::testing::e2e {
namespace {

constexpr int kBookings = 1000;
constexpr int kClients = 6;
constexpr int kPlaces = 5;
constexpr int kRooms = 50;  // 5 places x 3 nights x 50 rooms = 750: some bookings are refused
constexpr int kUsers = 97;

const char* const kNights[] = {"2031-01-10", "2031-01-11", "2031-01-12", "2031-01-13"};

// Posts kBookings bookings through the gateway from kClients clients (a
// failed POST is sent again with the same Idempotency-Key, as a careful
// client does) while `disrupt` runs on this thread with the count of
// accepted bookings; then checks that every booking ended CONFIRMED or
// REJECTED exactly once and that the services agree.
void bookings_survive(ServiceStack& stack, const std::string& seed_name,
                      const std::function<void(const std::atomic<int>& accepted,
                                               std::mt19937_64& rng)>& disrupt) {
  const uint16_t gateway_port = stack.port("gateway");
  {
    auto gw = stack.admin_gateway();
    for (int p = 0; p < kPlaces; ++p) set_stock(*gw, "k" + std::to_string(p), kRooms);
  }

  // Each user books with its own token (HS256, valid across gateway restarts).
  std::map<std::string, std::string> tokens;
  for (int u = 0; u < kUsers; ++u)
    tokens["u" + std::to_string(u)] = stack.token("u" + std::to_string(u), {"guest"});

  std::mt19937_64 rng(test_seed(seed_name));
  std::vector<Booking> bookings(kBookings);
  for (int i = 0; i < kBookings; ++i) {
    Booking& b = bookings[i];
    b.user = "u" + std::to_string(i % kUsers);
    b.place = "k" + std::to_string(rng() % kPlaces);
    const int night = static_cast<int>(rng() % 3);
    b.check_in = kNights[night];
    b.check_out = kNights[night + 1];
    b.amount = seed_amount(b.check_in, b.check_out, b.qty);
  }

  // The clients: POST each booking until it is accepted (202), retrying
  // transport errors and 502/503/504 with the same Idempotency-Key.
  std::atomic<int> next{0};
  std::atomic<int> accepted{0};
  std::atomic<int> retries{0};
  std::vector<std::string> retry_reasons;  // the first few
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      service::ClientOptions co;
      co.connect_timeout = 1s;
      co.request_timeout = 15s;
      service::HttpClient gw("127.0.0.1", gateway_port, co);
      for (int i = next++; i < kBookings; i = next++) {
        Booking& b = bookings[i];
        const auto deadline = Steady::now() + 180s;
        for (;;) {
          auto r = gw.request("POST", "/reservations",
                              {{"Content-Type", "application/json"},
                               {"Idempotency-Key", "k-" + std::to_string(i)},
                               {"Authorization", "Bearer " + tokens.at(b.user)}},
                              request_body(b).dump());
          if (r.ok() && r->status == 202) {
            auto j = r->json();
            std::lock_guard lock(mu);
            if (j.ok())
              b.id = (*j)["id"];
            else
              errors.push_back("booking " + std::to_string(i) + ": not JSON: " + r->body);
            break;
          }
          const bool transient =
              !r.ok() || r->status == 502 || r->status == 503 || r->status == 504;
          if (!transient || Steady::now() >= deadline) {
            std::lock_guard lock(mu);
            errors.push_back(
                "booking " + std::to_string(i) + ": " +
                (r.ok() ? std::to_string(r->status) + " " + r->body : r.status().to_string()));
            break;
          }
          if (++retries <= 5) {  // what made clients retry, for the report
            std::lock_guard lock(mu);
            retry_reasons.push_back(r.ok() ? std::to_string(r->status) + " " + r->body
                                           : r.status().to_string());
          }
          gw.close();
          std::this_thread::sleep_for(100ms);  // client retry backoff
        }
        ++accepted;
      }
    });
  }

  disrupt(accepted, rng);
  for (auto& t : clients) t.join();
  MESSAGE(retries.load() << " POSTs retried");
  for (const std::string& why : retry_reasons) MESSAGE("  e.g. " << why);
  REQUIRE_MESSAGE(errors.empty(), errors.size() << " bookings failed, e.g. " << errors.front());

  auto gw = stack.admin_gateway();
  const auto status = settle_all(*gw, bookings, 600s);
  int confirmed = 0;
  int rejected = 0;
  for (const auto& [id, st] : status) {
    confirmed += st == "CONFIRMED";
    rejected += st == "REJECTED";
  }
  MESSAGE(confirmed << " confirmed, " << rejected << " rejected");
  CHECK(confirmed + rejected == kBookings);
  CHECK(confirmed > 0);
  CHECK(confirmed <= kPlaces * 3 * kRooms);

  // Exactly one booking per request: the users' lists hold the 1,000 ids, no more.
  std::set<std::string> listed;
  size_t total = 0;
  for (int u = 0; u < kUsers; ++u) {
    const json mine = get_all(*gw, "/reservations?userId=u" + std::to_string(u));
    total += mine.size();
    for (const json& r : mine) listed.insert(r["id"].get<std::string>());
  }
  std::set<std::string> expected;
  for (const Booking& b : bookings) expected.insert(b.id);
  CHECK(total == static_cast<size_t>(kBookings));
  CHECK(listed == expected);

  check_consistency(*gw, bookings, status);
}

TEST_CASE("SIGKILL of any service during 1,000 bookings loses none and doubles none") {
  ServiceStack stack;  // a killed member's partitions move after the transport's 6 s session
  start_or_fail(stack);
  bookings_survive(stack, "e2e.kill", [&](const std::atomic<int>& accepted, std::mt19937_64& rng) {
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
  bookings_survive(stack, "e2e.kill replicas",
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
