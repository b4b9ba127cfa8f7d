// Helpers of the e2e tests: bookings through the gateway, waiting for them to
// settle, and the cross-service consistency check every e2e test ends with:
// no confirmed booking unpaid, no charge left on a rejected or cancelled one,
// rooms counted exactly once, and the read model agreeing.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/eventually.h"
#include "support/service_stack.h"

namespace saga::testing::e2e {

using namespace std::chrono_literals;
using nlohmann::json;
using service::ClientResponse;
using service::HttpClient;
using Steady = std::chrono::steady_clock;

/// Polls `done` every 50 ms (each poll may be many HTTP calls) until it holds
/// or `limit` passes.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  return testing::eventually(done, limit, 50ms);
}

/// The response body as JSON (fails the test when it is not JSON).
inline json body_of(const ClientResponse& r) {
  auto j = r.json();
  REQUIRE_MESSAGE(j.ok(), "not JSON: " << r.status << " " << r.body);
  return *j;
}

/// GET `target`, expecting 200 and JSON.
inline json get_json(HttpClient& http, const std::string& target) {
  auto r = http.get(target);
  REQUIRE_MESSAGE(r.ok(), target << ": " << r.status().to_string());
  REQUIRE_MESSAGE(r->status == 200, target << " -> " << r->status << " " << r->body);
  return body_of(*r);
}

/// Every item of the paginated list at `target` (which has a query string):
/// pages of 200, following Next-Page-Token.
inline json get_all(HttpClient& http, const std::string& target) {
  json out = json::array();
  std::string token;
  for (int page = 0; page < 10'000; ++page) {
    std::string t = target + "&limit=200";
    if (!token.empty()) t += "&pageToken=" + service::percent_encode(token);
    auto r = http.get(t);
    REQUIRE_MESSAGE(r.ok(), t << ": " << r.status().to_string());
    REQUIRE_MESSAGE(r->status == 200, t << " -> " << r->status << " " << r->body);
    for (json& item : body_of(*r)) out.push_back(std::move(item));
    token = std::string(r->header("Next-Page-Token").value_or(""));
    if (token.empty()) break;
  }
  return out;
}

/// A booking as the test asked for it.
struct Booking {
  std::string id;
  std::string user;
  std::string place;
  std::string check_in, check_out;  // YYYY-MM-DD
  int qty = 1;
  int64_t amount = 0;  // minor units, as the server computes it
};

/// The nightly price of the seed's places (inventory::kSeedPriceAmount, KRW).
inline constexpr int64_t kSeedPrice = 5000;

/// The amount of `qty` rooms at a seed place from `in` to `out` (YYYY-MM-DD).
inline int64_t seed_amount(const std::string& in, const std::string& out, int qty) {
  auto day = [](const std::string& d) {
    const std::chrono::year_month_day ymd{std::chrono::year{std::stoi(d.substr(0, 4))},
                                          std::chrono::month{unsigned(std::stoi(d.substr(5, 2)))},
                                          std::chrono::day{unsigned(std::stoi(d.substr(8, 2)))}};
    return std::chrono::sys_days{ymd};
  };
  return (day(out) - day(in)).count() * qty * kSeedPrice;
}

/// The body of POST /reservations for `b`.
inline json request_body(const Booking& b) {
  return {{"placeId", b.place},      {"userId", b.user}, {"checkIn", b.check_in},
          {"checkOut", b.check_out}, {"qty", b.qty},     {"amount", b.amount}};
}

/// Creates (or resizes) place `id` with `rooms` per night through the seed's call.
inline void set_stock(HttpClient& gw, const std::string& id, int rooms) {
  auto r = gw.post_json("/reservationManagements", {{"placeId", id}, {"stock", rooms}});
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  REQUIRE_MESSAGE((r->status == 201 || r->status == 200), r->status << " " << r->body);
}

/// Whether `status` may stand in the 202 of a new booking: the status when the
/// answer was written, PENDING or already the saga's outcome.
inline bool is_accepted_status(const std::string& status) {
  return status == "PENDING" || status == "CONFIRMED" || status == "REJECTED";
}

/// POSTs `b` and expects 202; fills in and returns its id.
inline std::string book(HttpClient& gw, Booking& b) {
  auto r = gw.post_json("/reservations", request_body(b));
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  REQUIRE_MESSAGE(r->status == 202, r->status << " " << r->body);
  const json j = body_of(*r);
  CHECK_MESSAGE(is_accepted_status(j.value("status", "")), r->body);
  b.id = j["id"];
  CHECK(r->header("Location") == "/reservations/" + b.id);
  return b.id;
}

inline bool is_final(const std::string& status) {
  return status == "CONFIRMED" || status == "REJECTED" || status == "CANCELLED";
}

/// Waits until every booking is CONFIRMED, REJECTED or CANCELLED (as the
/// reservation service reports it); returns id -> status.
inline std::map<std::string, std::string> settle_all(HttpClient& gw,
                                                     const std::vector<Booking>& bookings,
                                                     std::chrono::milliseconds limit) {
  std::map<std::string, std::string> status;
  std::string last_pending;
  const bool done = eventually(
      [&] {
        for (const Booking& b : bookings) {
          if (is_final(status[b.id])) continue;
          auto r = gw.get("/reservations/" + b.id);
          if (!r.ok() || r->status != 200) {
            last_pending = b.id + ": " + (r.ok() ? r->body : r.status().to_string());
            return false;
          }
          status[b.id] = body_of(*r)["status"];
          if (!is_final(status[b.id])) {
            last_pending = b.id + ": " + r->body;
            return false;
          }
        }
        return true;
      },
      limit);
  REQUIRE_MESSAGE(done, "bookings not settled in time; e.g. " << last_pending);
  return status;
}

/// The cross-service invariants over `bookings` with their final `status`
/// (all the bookings ever made at their places must be in `bookings`):
/// - payment: a CONFIRMED booking has exactly one APPROVED payment of its
///   amount; any other has no APPROVED payment (none, or REFUNDED);
/// - inventory: on every night nothing is left held, and the confirmed rooms
///   are exactly the CONFIRMED bookings' quantities; each owner sees exactly
///   the CONFIRMED bookings of their places;
/// - mypage: eventually shows every booking with the same status.
inline void check_consistency(HttpClient& gw, const std::vector<Booking>& bookings,
                              const std::map<std::string, std::string>& status) {
  std::map<std::string, std::map<std::string, int>> confirmed_rooms;  // place -> night -> rooms
  std::map<std::string, std::set<std::string>> confirmed_ids;         // place -> ids
  std::map<std::string, std::pair<std::string, std::string>> span;    // place -> [from, to)
  for (const Booking& b : bookings) {
    const std::string& st = status.at(b.id);
    const json pays = get_json(gw, "/payments?reservationId=" + b.id);
    int approved = 0;
    for (const json& p : pays)
      if (p["status"] == "APPROVED") {
        ++approved;
        CHECK_MESSAGE(p["amount"] == b.amount, b.id << " charged " << p.dump());
      }
    if (st == "CONFIRMED") {
      CHECK_MESSAGE(approved == 1, b.id << " CONFIRMED with payments " << pays.dump());
      confirmed_ids[b.place].insert(b.id);
    } else {
      CHECK_MESSAGE(approved == 0, b.id << " " << st << " but charged: " << pays.dump());
    }
    CHECK_MESSAGE(pays.size() <= 1, b.id << " paid more than once: " << pays.dump());
    auto& [from, to] = span[b.place];
    if (from.empty() || b.check_in < from) from = b.check_in;
    if (to.empty() || b.check_out > to) to = b.check_out;
    if (st == "CONFIRMED") {
      const json nights = get_json(
          gw, "/places/" + b.place + "/availability?from=" + b.check_in + "&to=" + b.check_out);
      for (const json& n : nights) confirmed_rooms[b.place][n["date"]] += b.qty;
    }
  }
  for (const auto& [place, range] : span) {
    const json place_view = get_json(gw, "/places/" + place);
    const json nights = get_json(
        gw, "/places/" + place + "/availability?from=" + range.first + "&to=" + range.second);
    for (const json& n : nights) {
      const std::string date = n["date"];
      CHECK_MESSAGE(n["held"] == 0, place << " " << date << ": " << n.dump());
      CHECK_MESSAGE(n["confirmed"] == confirmed_rooms[place][date],
                    place << " " << date << ": " << n.dump() << " but "
                          << confirmed_rooms[place][date] << " rooms confirmed by bookings");
      CHECK_MESSAGE(n["confirmed"].get<int>() <= n["rooms"].get<int>(),
                    place << " overbooked on " << date << ": " << n.dump());
    }
    const std::string owner = place_view["ownerId"];
    std::set<std::string> owner_sees;
    for (const json& r : get_all(gw, "/owners/" + owner + "/reservations?"))
      if (r["placeId"] == place) owner_sees.insert(r["reservationId"].get<std::string>());
    CHECK_MESSAGE(owner_sees == confirmed_ids[place],
                  "owner " << owner << " of " << place << " sees " << owner_sees.size()
                           << " bookings, expected " << confirmed_ids[place].size());
  }
  std::string mismatch;
  const bool mypage_agrees = eventually(
      [&] {
        for (const Booking& b : bookings) {
          auto r = gw.get("/mypages/" + b.id);
          const std::string want = status.at(b.id);
          if (!r.ok() || r->status != 200 || body_of(*r)["status"] != want) {
            mismatch = b.id + " (want " + want + "): " + (r.ok() ? r->body : r.status().message());
            return false;
          }
        }
        return true;
      },
      60s);
  CHECK_MESSAGE(mypage_agrees, "mypage disagrees: " << mismatch);
}

/// Starts `stack`, failing the test with the services' logs when it cannot.
inline void start_or_fail(ServiceStack& stack) {
  try {
    stack.start();
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
}

}  // namespace saga::testing::e2e
