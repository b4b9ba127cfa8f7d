// The reference system's promises under trouble, end to end through the
// gateway (five real services, a real broker): a participant away, a failing
// payment provider behind the circuit breaker, a rush on the last rooms, and
// bad input. Every case ends with the cross-service consistency check.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "e2e/e2e_support.h"

namespace saga::testing::e2e {
namespace {

// A one-room stay at a seed place, at the amount the server computes (5000 a night).
Booking stay(const std::string& place, const std::string& user, const std::string& in,
             const std::string& out) {
  return Booking{"", user, place, in, out, 1, seed_amount(in, out, 1)};
}

TEST_CASE("inventory stopped: bookings are refused 503 (no price) and succeed once it is back") {
  ServiceStack stack;
  start_or_fail(stack);
  auto gw = stack.admin_gateway();
  set_stock(*gw, "inv-1", 3);

  REQUIRE(stack.stop("inventory") == 0);
  std::vector<Booking> bookings;
  for (int i = 0; i < 3; ++i) {
    bookings.push_back(stay("inv-1", "u" + std::to_string(i), "2030-03-01", "2030-03-03"));
    // Without the inventory there is no price, so no amount: refused, to be retried.
    auto r = gw->post_json("/reservations", request_body(bookings.back()));
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    CHECK_MESSAGE(r->status == 503, r->status << " " << r->body);
    CHECK(r->header("Retry-After").has_value());
  }
  CHECK(get_json(*gw, "/reservations?userId=u0").empty());  // nothing recorded
  auto away = gw->get("/places/inv-1");
  REQUIRE(away.ok());
  CHECK(away->status == 503);  // the gateway: upstream unreachable
  CHECK(away->header("Retry-After").has_value());

  try {
    stack.start("inventory");
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  for (Booking& b : bookings) book(*gw, b);
  const auto status = settle_all(*gw, bookings, 120s);
  for (const Booking& b : bookings) CHECK(status.at(b.id) == "CONFIRMED");
  check_consistency(*gw, bookings, status);
}

TEST_CASE("payment slow and failing: the breaker answers 503 fast, bookings recover after") {
  ServiceStack stack;
  stack.set_env("payment", "PAYMENT_LATENCY_MS", "200");
  stack.set_env("payment", "PAYMENT_FAILURE_RATE", "1");
  start_or_fail(stack);
  auto gw = stack.admin_gateway();
  set_stock(*gw, "pay-1", 100);

  // Bookings keep being accepted until the payment breaker has seen enough
  // failures; then a new booking is refused at once.
  std::vector<Booking> bookings;
  std::optional<ClientResponse> refused;
  int n = 0;
  const bool opened = eventually(
      [&] {
        Booking b = stay("pay-1", "u" + std::to_string(n++), "2030-04-01", "2030-04-02");
        auto r = gw->post_json("/reservations", request_body(b));
        REQUIRE_MESSAGE(r.ok(), r.status().to_string());
        if (r->status == 202) {
          b.id = body_of(*r)["id"];
          bookings.push_back(b);
          return false;
        }
        refused = *r;
        return true;
      },
      120s);
  REQUIRE_MESSAGE(opened, "the breaker never opened after " << bookings.size() << " bookings");
  REQUIRE(refused.has_value());
  CHECK_MESSAGE(refused->status == 503, refused->status << " " << refused->body);  // not a 504
  CHECK(refused->header("Content-Type") == "application/problem+json");
  REQUIRE(refused->header("Retry-After").has_value());
  CHECK(std::stoi(std::string(*refused->header("Retry-After"))) >= 1);

  // The provider recovers: after the breaker's pause, bookings go through again.
  try {
    stack.restart("payment", {{"PAYMENT_LATENCY_MS", "0"}, {"PAYMENT_FAILURE_RATE", "0"}});
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  std::optional<Booking> recovered;
  CHECK(eventually(
      [&] {
        Booking b = stay("pay-1", "late" + std::to_string(n++), "2030-04-01", "2030-04-02");
        auto r = gw->post_json("/reservations", request_body(b));
        REQUIRE(r.ok());
        if (r->status != 202) return false;
        b.id = body_of(*r)["id"];
        bookings.push_back(b);
        recovered = b;
        return true;
      },
      60s));
  REQUIRE(recovered.has_value());
  const auto status = settle_all(*gw, bookings, 180s);
  CHECK(status.at(recovered->id) == "CONFIRMED");
  check_consistency(*gw, bookings, status);
}

TEST_CASE("200 concurrent bookings of the last 10 rooms: exactly 10 confirmed") {
  ServiceStack stack;
  start_or_fail(stack);
  auto gw = stack.admin_gateway();
  set_stock(*gw, "rush", 10);

  constexpr int kThreads = 8;
  constexpr int kEach = 25;
  std::vector<Booking> bookings;
  std::mutex mu;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = stack.admin_gateway();
      for (int i = 0; i < kEach; ++i) {
        Booking b = stay("rush", "u" + std::to_string(t * kEach + i), "2030-06-01", "2030-06-02");
        auto r = client->post_json("/reservations", request_body(b));
        if (!r.ok() || r->status != 202) {
          ++failures;
          continue;
        }
        auto j = r->json();
        if (!j.ok()) {
          ++failures;
          continue;
        }
        b.id = (*j)["id"];
        std::lock_guard lock(mu);
        bookings.push_back(b);
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(failures == 0);
  REQUIRE(bookings.size() == kThreads * kEach);

  const auto status = settle_all(*gw, bookings, 300s);
  int confirmed = 0;
  int rejected = 0;
  for (const auto& [id, st] : status) {
    confirmed += st == "CONFIRMED";
    rejected += st == "REJECTED";
  }
  CHECK(confirmed == 10);
  CHECK(rejected == kThreads * kEach - 10);
  check_consistency(*gw, bookings, status);
}

TEST_CASE("bad input gets a 4xx problem, never a 500, and nothing is recorded") {
  ServiceStack stack;
  start_or_fail(stack);
  auto gw = stack.admin_gateway();
  set_stock(*gw, "bad-1", 5);

  const json good = request_body(stay("bad-1", "mallory", "2030-07-01", "2030-07-02"));
  auto expect = [&](const std::string& method, const std::string& target, const std::string& body,
                    int want, const std::string& what,
                    const std::string& content_type = "application/json") {
    service::Headers h;
    if (!content_type.empty()) h.emplace_back("Content-Type", content_type);
    auto r = gw->request(method, target, h, body);
    REQUIRE_MESSAGE(r.ok(), what << ": " << r.status().to_string());
    CHECK_MESSAGE(r->status == want, what << ": " << r->status << " " << r->body);
    CHECK_MESSAGE(r->header("Content-Type") == "application/problem+json",
                  what << ": " << r->header("Content-Type").value_or("no Content-Type"));
    if (r->status >= 400) {
      auto j = r->json();
      CHECK_MESSAGE((j.ok() && j->contains("detail")), what << ": " << r->body);
    }
  };
  auto with = [&](const char* field, const json& value) {
    json b = good;
    b[field] = value;
    return b.dump();
  };
  auto without = [&](const char* field) {
    json b = good;
    b.erase(field);
    return b.dump();
  };

  expect("POST", "/reservations", "{\"placeId\": ", 400, "malformed JSON");
  expect("POST", "/reservations", "[1,2]", 400, "not an object");
  expect("POST", "/reservations", good.dump(), 415, "text/plain body", "text/plain");
  for (const char* field : {"placeId", "userId", "checkIn", "checkOut", "qty", "amount"})
    expect("POST", "/reservations", without(field), 400, std::string("missing ") + field);
  expect("POST", "/reservations", with("qty", "two"), 400, "qty as a word");
  expect("POST", "/reservations", with("qty", 1.5), 400, "qty not whole");
  expect("POST", "/reservations", with("amount", "lots"), 400, "amount as a word");
  expect("POST", "/reservations", with("checkIn", 20300701), 400, "checkIn as a number");
  expect("POST", "/reservations", with("checkIn", "2030-02-30"), 400, "no such date");
  expect("POST", "/reservations", with("checkOut", "2030-07-01"), 400, "checkOut == checkIn");
  expect("POST", "/reservations", with("checkOut", "2030-06-01"), 400, "checkOut < checkIn");
  expect("POST", "/reservations", with("qty", 0), 400, "qty 0");
  expect("POST", "/reservations", with("qty", -3), 400, "qty negative");
  expect("POST", "/reservations", with("amount", -1), 400, "negative amount");
  expect("POST", "/reservations", with("amount", 5000.5), 400, "amount not whole");
  expect("POST", "/reservations", with("amount", 4999), 422, "amount not the price");
  expect("POST", "/reservations", with("placeId", "no-such-place"), 422, "unknown place");
  expect("POST", "/reservations", std::string(2 * 1024 * 1024, ' '), 413, "oversized body");
  expect("POST", "/accommodations", with("strDt", "2030-07-01"), 400, "seed call, our shape");
  expect("GET", "/no/such/route", "", 404, "unknown route", "");
  expect("GET", "/reservations?userId=", "", 400, "list with an empty userId", "");
  expect("GET", "/reservations/r-000000000000000000000000", "", 404, "unknown reservation", "");
  expect("DELETE", "/reservations/r-1", "", 405, "method not allowed", "");
  expect("POST", "/reservationManagements", "{\"placeId\": \"x\", \"stock\": -1}", 400,
         "negative stock");
  expect("POST", "/places", "{\"name\": \"\", \"ownerId\": \"o\", \"rooms\": 1}", 400,
         "empty place name");

  // Nothing was recorded anywhere.
  CHECK(get_json(*gw, "/reservations?userId=mallory").empty());
  CHECK(get_json(*gw, "/mypages?userId=mallory").empty());
  const json nights = get_json(*gw, "/places/bad-1/availability?from=2030-06-01&to=2030-07-03");
  for (const json& n : nights) {
    CHECK(n["held"] == 0);
    CHECK(n["confirmed"] == 0);
  }
  auto unknown = gw->get("/places/x");
  REQUIRE(unknown.ok());
  CHECK(unknown->status == 404);

  // The same request, well-formed, goes through.
  Booking ok = stay("bad-1", "mallory", "2030-07-01", "2030-07-02");
  book(*gw, ok);
  const auto status = settle_all(*gw, {ok}, 60s);
  CHECK(status.at(ok.id) == "CONFIRMED");
  check_consistency(*gw, {ok}, status);
}

}  // namespace
}  // namespace saga::testing::e2e
