// The load of the e2e crash tests: bookings through the gateway from several
// careful clients while a test disrupts the services, then the checks that
// every booking ended once and that the services agree.
#pragma once

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

/// How many bookings bookings_survive() makes, from how many clients, over
/// how many places with how many rooms a night (one night each, among three:
/// with fewer rooms than bookings some are refused), by how many users.
struct BookingLoad {
  int bookings = 1000;
  int clients = 6;
  int places = 5;
  int rooms = 50;
  int users = 97;
};

/// Posts `load.bookings` bookings through the gateway from `load.clients`
/// clients (a failed POST is sent again with the same Idempotency-Key, as a
/// careful client does) while `disrupt` runs on this thread with the count of
/// accepted bookings; then checks that every booking ended CONFIRMED or
/// REJECTED exactly once and that the services agree. `seed_name` seeds the
/// bookings and `disrupt`'s random source (test_seed).
inline void bookings_survive(ServiceStack& stack, const std::string& seed_name,
                             const BookingLoad& load,
                             const std::function<void(const std::atomic<int>& accepted,
                                                      std::mt19937_64& rng)>& disrupt) {
  static const char* const kNights[] = {"2031-01-10", "2031-01-11", "2031-01-12", "2031-01-13"};
  const int total = load.bookings;
  const auto started = Steady::now();
  const uint16_t gateway_port = stack.port("gateway");
  {
    auto gw = stack.admin_gateway();
    for (int p = 0; p < load.places; ++p) set_stock(*gw, "k" + std::to_string(p), load.rooms);
  }

  // Each user books with its own token (HS256, valid across gateway restarts).
  std::map<std::string, std::string> tokens;
  for (int u = 0; u < load.users; ++u)
    tokens["u" + std::to_string(u)] = stack.token("u" + std::to_string(u), {"guest"});

  std::mt19937_64 rng(test_seed(seed_name));
  std::vector<Booking> bookings(total);
  for (int i = 0; i < total; ++i) {
    Booking& b = bookings[i];
    b.user = "u" + std::to_string(i % load.users);
    b.place = "k" + std::to_string(rng() % load.places);
    const int night = static_cast<int>(rng() % 3);
    b.check_in = kNights[night];
    b.check_out = kNights[night + 1];
    b.amount = seed_amount(b.check_in, b.check_out, b.qty);
  }

  // The clients: POST each booking until it is accepted (202), retrying
  // transport errors, 502/503/504 and 409 with Retry-After, with the same Idempotency-Key.
  std::atomic<int> next{0};
  std::atomic<int> accepted{0};
  std::atomic<int> retries{0};
  std::vector<std::string> retry_reasons;  // the first few
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> clients;
  for (int c = 0; c < load.clients; ++c) {
    clients.emplace_back([&] {
      service::ClientOptions co;
      co.connect_timeout = 1s;
      co.request_timeout = 15s;
      service::HttpClient gw("127.0.0.1", gateway_port, co);
      for (int i = next++; i < total; i = next++) {
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
          // 409 with Retry-After: the key's first request (sent before a
          // replica died, say) is still being recorded; try again.
          const bool transient =
              !r.ok() || r->status == 502 || r->status == 503 || r->status == 504 ||
              (r->status == 409 && r->header("Retry-After").has_value());
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
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(Steady::now() - started).count();
  MESSAGE(total << " bookings accepted in " << seconds << " s; " << retries.load()
                << " POSTs retried");
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
  CHECK(confirmed + rejected == total);
  CHECK(confirmed > 0);
  CHECK(confirmed <= load.places * 3 * load.rooms);

  // Exactly one booking per request: the users' lists hold every id, no more.
  std::set<std::string> listed;
  size_t listed_total = 0;
  for (int u = 0; u < load.users; ++u) {
    const json mine = get_all(*gw, "/reservations?userId=u" + std::to_string(u));
    listed_total += mine.size();
    for (const json& r : mine) listed.insert(r["id"].get<std::string>());
  }
  std::set<std::string> expected;
  for (const Booking& b : bookings) expected.insert(b.id);
  CHECK(listed_total == static_cast<size_t>(total));
  CHECK(listed == expected);

  check_consistency(*gw, bookings, status);
}

}  // namespace saga::testing::e2e
