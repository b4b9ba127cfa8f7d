// The whole system end to end: the five reference services as real processes
// over the fixture's Kafka broker. One booking through the gateway must be
// confirmed, paid once, counted on both nights, announced on the events topic,
// shown on the user's page, and still be confirmed after the orchestrator
// (the reservation service) restarts.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "e2e/e2e_support.h"

namespace saga::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

using e2e::body_of;
using e2e::eventually;
using e2e::is_accepted_status;

// The id at the end of a Location header ("/places/p-1" -> "p-1").
std::string id_from_location(const service::ClientResponse& r) {
  auto loc = r.header("Location");
  REQUIRE_MESSAGE(loc.has_value(), "no Location header: " << r.status << " " << r.body);
  const std::string l(*loc);
  REQUIRE(l.find('/') != std::string::npos);
  return l.substr(l.rfind('/') + 1);
}

// A list answer: the array itself, or the array under `field`.
json list_of(const json& j, const char* field) {
  if (j.is_array()) return j;
  if (j.is_object() && j.contains(field) && j[field].is_array()) return j[field];
  FAIL("expected a JSON array (or {\"" << field << "\": [...]}), got " << j.dump());
  return json::array();
}

TEST_CASE("a booking through the gateway is confirmed, paid, published and survives a restart") {
  ServiceStack stack;
  try {
    stack.start();
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  EventTap tap(stack);

  for (const std::string& name : all_services()) {
    auto r = stack.client(name)->get("/readyz");
    REQUIRE_MESSAGE(r.ok(), name << ": " << r.status().to_string());
    CHECK_MESSAGE(r->status == 200, name << " /readyz: " << r->status << " " << r->body);
  }

  auto gw = stack.admin_gateway();

  // A place with two rooms.
  auto placed =
      gw->post_json("/places", {{"name", "Seaside"},
                                {"ownerId", "owner-1"},
                                {"rooms", 2},
                                {"price", {{"amount", 50}, {"currency", "KRW"}}}});
  REQUIRE_MESSAGE(placed.ok(), placed.status().to_string());
  REQUIRE_MESSAGE(placed->status == 201, placed->status << " " << placed->body);
  const std::string place_id = id_from_location(*placed);
  INFO("place ", place_id);

  // One booking of two nights.
  auto booked = gw->post_json("/reservations", {{"placeId", place_id},
                                                {"userId", "user-1"},
                                                {"checkIn", "2030-01-10"},
                                                {"checkOut", "2030-01-12"},
                                                {"qty", 1},
                                                {"amount", 100}});
  REQUIRE_MESSAGE(booked.ok(), booked.status().to_string());
  REQUIRE_MESSAGE(booked->status == 202, booked->status << " " << booked->body);
  CHECK_MESSAGE(is_accepted_status(body_of(*booked).value("status", "")), booked->body);
  const std::string id = id_from_location(*booked);
  CHECK(body_of(*booked).value("id", "") == id);
  INFO("reservation ", id);

  auto reservation_status = [&] {
    auto r = gw->get("/reservations/" + id);
    if (!r.ok() || r->status != 200) return std::string("?");
    return body_of(*r).value("status", "");
  };
  std::string status;
  const bool settled = eventually(
      [&] {
        status = reservation_status();
        return status == "CONFIRMED" || status == "REJECTED" || status == "CANCELLED";
      },
      60s);
  REQUIRE_MESSAGE(settled, "still " << status << " after 60 s\n" << stack.all_log_tails());
  REQUIRE_MESSAGE(status == "CONFIRMED", status << "\n" << stack.all_log_tails());

  // Paid once.
  auto paid = gw->get("/payments?reservationId=" + id);
  REQUIRE_MESSAGE(paid.ok(), paid.status().to_string());
  REQUIRE_MESSAGE(paid->status == 200, paid->status << " " << paid->body);
  const json payments = list_of(body_of(*paid), "payments");
  REQUIRE_MESSAGE(payments.size() == 1, payments.dump());
  CHECK(payments[0].value("status", "") == "APPROVED");
  CHECK(payments[0]["amount"] == 100);  // 2 nights x 1 room x 50, computed by the server
  CHECK(payments[0]["amount"].is_number_integer());

  // One room confirmed on both nights.
  auto avail = gw->get("/places/" + place_id + "/availability?from=2030-01-10&to=2030-01-12");
  REQUIRE_MESSAGE(avail.ok(), avail.status().to_string());
  REQUIRE_MESSAGE(avail->status == 200, avail->status << " " << avail->body);
  const json nights = list_of(body_of(*avail), "nights");
  REQUIRE_MESSAGE(nights.size() == 2, nights.dump());
  for (const json& n : nights) {
    CHECK_MESSAGE(n.value("confirmed", -1) == 1, n.dump());
    CHECK_MESSAGE(n.value("held", -1) == 0, n.dump());
  }

  // The events of the booking.
  const std::vector<std::string> expected = {"ReservationPlaced", "PaymentApproved",
                                             "ReservationConfirmed", "ReservationStatusChanged"};
  auto has_all = [&] {
    const std::vector<std::string> types = tap.types_for(id);
    return std::all_of(expected.begin(), expected.end(), [&](const std::string& t) {
      return std::find(types.begin(), types.end(), t) != types.end();
    });
  };
  CHECK_MESSAGE(tap.wait_for([&](const auto&) { return has_all(); }, 30s),
                "events for " << id << ": " << join_types(tap.types_for(id)));

  // The user's page (read model from the events) catches up.
  std::string page;
  const bool on_page = eventually(
      [&] {
        auto r = gw->get("/mypages/" + id);
        page = r.ok() ? std::to_string(r->status) + " " + r->body : r.status().to_string();
        return r.ok() && r->status == 200 && body_of(*r).value("status", "") == "CONFIRMED";
      },
      30s);
  CHECK_MESSAGE(on_page, "GET /mypages/" << id << ": " << page);

  // The orchestrator stops cleanly, restarts on its data, and still knows the booking.
  CHECK(stack.stop("reservation") == 0);
  stack.restart("reservation");
  std::string after;
  CHECK_MESSAGE(eventually(
                    [&] {
                      after = reservation_status();
                      return after == "CONFIRMED";
                    },
                    30s),
                "after the restart: " << after << "\n"
                                      << stack.log_tail("reservation"));
}

}  // namespace
}  // namespace saga::testing
