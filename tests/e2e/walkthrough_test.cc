// The seed's walkthrough, as its README runs it with httpie, through the
// gateway of the five real services over a real broker: stock 1; a booking is
// confirmed with the happy-path events in order; a second booking finds no
// stock left and is compensated with the seed's events in order, its charge
// refunded; mypage shows both. Each step with the token of whoever takes it:
// the place's owner sets the stock, users 2 and 33 book and read their own.
// Once with one process per service, once with two replicas of each.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "e2e/e2e_support.h"

namespace saga::testing::e2e {
namespace {

// The seed's POST /accommodations as httpie sends `key=value` pairs: strings.
json seed_booking(const std::string& user) {
  return {{"placeNm", "test01"}, {"status", "예약처리"}, {"usrId", user},    {"strDt", "20240221"},
          {"endDt", "20240222"}, {"qty", "1"},           {"amount", "5000"}, {"placeId", "1"}};
}

// The walkthrough on `stack` (not started yet).
void walkthrough(ServiceStack& stack) {
  start_or_fail(stack);
  EventTap tap(stack);
  auto owner = stack.gateway_as("owner-1", {"owner"});
  auto user2 = stack.gateway_as("2", {"guest"});
  auto user33 = stack.gateway_as("33", {"guest"});
  auto admin = stack.admin_gateway();

  // //재고생성 (stock): http POST :8080/reservationManagements placeId=1 stock=1
  auto stocked = owner->post_json("/reservationManagements", {{"placeId", "1"}, {"stock", "1"}});
  REQUIRE_MESSAGE(stocked.ok(), stocked.status().to_string());
  REQUIRE_MESSAGE(stocked->status == 201, stocked->status << " " << stocked->body);
  CHECK(body_of(*stocked)["stock"] == 1);

  // //숙소예약 (booking) by user 2.
  auto first = user2->post_json("/accommodations", seed_booking("2"));
  REQUIRE_MESSAGE(first.ok(), first.status().to_string());
  REQUIRE_MESSAGE(first->status == 201, first->status << " " << first->body);
  const json placed = body_of(*first);
  CHECK(placed["strDt"] == "2024-02-21");  // a date, not 1970-01-01T05:37:20.221
  CHECK(placed["endDt"] == "2024-02-22");
  CHECK(placed["qty"] == 1);
  CHECK(placed["amount"] == 5000);  // computed by the server: 1 night x 1 x 5000 KRW
  Booking a{placed["id"], "2", "1", "2024-02-21", "2024-02-22", 1, 5000};
  CHECK(first->header("Location") == "/accommodations/" + a.id);

  const std::vector<std::string> happy = {"ReservationPlaced", "PaymentApproved",
                                          "ReservationConfirmed", "ReservationStatusChanged"};
  CHECK_MESSAGE(tap.wait_for([&](const auto&) { return tap.types_for(a.id).size() >= 4; }, 60s),
                "events of " << a.id << ": " << join_types(tap.types_for(a.id)));
  CHECK(tap.types_for(a.id) == happy);
  CHECK(get_json(*user2, "/accommodations/" + a.id)["status"] == "CONFIRMED");

  // //보상트랜젝션 확인 (compensation): user 33 books the same night, no stock left.
  auto second = user33->post_json("/accommodations", seed_booking("33"));
  REQUIRE_MESSAGE(second.ok(), second.status().to_string());
  REQUIRE_MESSAGE(second->status == 201, second->status << " " << second->body);
  Booking b{body_of(*second)["id"], "33", "1", "2024-02-21", "2024-02-22", 1, 5000};

  const std::vector<std::string> compensated = {"ReservationPlaced", "PaymentApproved",
                                                "ReservationCancelConfirmed",
                                                "PaymentCancelApproved", "ReservationCanceled"};
  CHECK_MESSAGE(tap.wait_for([&](const auto&) { return tap.types_for(b.id).size() >= 5; }, 60s),
                "events of " << b.id << ": " << join_types(tap.types_for(b.id)));
  CHECK(tap.types_for(b.id) == compensated);

  const std::map<std::string, std::string> status = settle_all(*admin, {a, b}, 60s);
  CHECK(status.at(a.id) == "CONFIRMED");
  CHECK(status.at(b.id) == "REJECTED");
  const json refunded = get_json(*user33, "/payments?reservationId=" + b.id);
  REQUIRE(refunded.size() == 1);
  CHECK(refunded[0]["status"] == "REFUNDED");  // charged, then refunded: nobody pays

  // //CQRS - mypage: both bookings, as the events told it.
  check_consistency(*admin, {a, b}, status);
  // With replicas of mypage each read model catches up on its own: every read
  // below is asked until it says so (or the deadline), whichever replica answers.
  json page;
  CHECK(eventually([&] {
    page = get_json(*user2, "/mypages/" + a.id);
    return page["status"] == "CONFIRMED";
  }, 60s));
  CHECK(page["placeNm"] == "test01");
  CHECK(page["amount"] == 5000);
  CHECK(page["userId"] == "2");
  CHECK(eventually(
      [&] { return get_json(*user33, "/mypages/" + b.id)["status"] == "REJECTED"; }, 60s));
  CHECK(eventually([&] { return get_json(*user33, "/mypages?userId=33").size() == 1; }, 60s));
  CHECK(eventually([&] { return get_json(*user2, "/mypages").size() == 1; }, 60s));  // own rows
}

TEST_CASE("the seed's walkthrough through the gateway") {
  ServiceStack stack;
  walkthrough(stack);
}

// The same with two replicas of every stateful service (docs/replicas.md):
// whichever replica the gateway picks answers as one service would.
TEST_CASE("the seed's walkthrough through the gateway with two replicas of each service") {
  ServiceStack::Options options;
  options.replicas = {{"reservation", 2}, {"inventory", 2}, {"payment", 2}, {"mypage", 2}};
  ServiceStack stack(options);
  walkthrough(stack);
}

}  // namespace
}  // namespace saga::testing::e2e
