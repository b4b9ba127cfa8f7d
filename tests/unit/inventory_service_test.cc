// The inventory participant (services/inventory) over a MemoryBus: the test
// plays the orchestrator with a raw endpoint (commands out, replies and
// reserveplace events in) and drives the engine with run_once(); the HTTP API
// is exercised through HttpClient against an in-process server on port 0.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "domain/dates.h"
#include "saga/clock.h"
#include "saga/inventory/inventory.h"
#include "saga/memory_transport.h"
#include "saga/message.h"
#include "saga/participant.h"
#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/eventually.h"
#include "support/participant_service_harness.h"
#include "support/service_stack.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using service::ClientResponse;

// A command keyed by place, as the booking saga sends them (the place of a
// stay's payload, else `place`): a place's holds live in one shard.
Message command(const std::string& saga, const std::string& type, const Json& payload,
                const std::string& compensates = {}, const std::string& place = {}) {
  Message m = testing::participant_command(inventory::kParticipantName, saga, type, payload,
                                           compensates);
  m.key = payload.is_object() && payload.contains("placeId") ? payload["placeId"].get<std::string>()
                                                             : place;
  return m;
}

Json stay(const std::string& reservation, const std::string& place, const std::string& in,
          const std::string& out, int qty) {
  return {{"reservationId", reservation},
          {"placeId", place},
          {"userId", "u-1"},
          {"checkIn", in},
          {"checkOut", out},
          {"qty", qty}};
}

struct Harness : testing::ParticipantServiceHarness {
  Harness()
      : ParticipantServiceHarness(
            inventory::kParticipantName, inventory::kEventDestination,
            [](Participant& p) {
              return inventory::register_handlers(
                  p, {.now_ms = [] { return int64_t{1'700'000'000'000}; }});
            },
            [](service::Router& r, Participant& p) { inventory::add_routes(r, p); }) {}

  // Sets the rooms of `place` through the seed's call.
  void stock(const std::string& place, int rooms) {
    ClientResponse r = post("/reservationManagements", {{"placeId", place}, {"stock", rooms}});
    REQUIRE_MESSAGE(r.status == 201, r.body);
  }

  // Availability of `place` on one night.
  Json night(const std::string& place, const std::string& date) {
    const auto next = domain::format_date(domain::next_day(*domain::parse_iso_date(date)));
    Json a = get_json("/places/" + place + "/availability?from=" + date + "&to=" + next);
    REQUIRE(a.size() == 1);
    return a[0];
  }
};

std::string error_of(const Message& reply) {
  Json j = Json::parse(reply.payload, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].dump() : reply.payload;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void check_problem(const ClientResponse& r, int status, const std::string& detail_part = {}) {
  CHECK_MESSAGE(r.status == status, r.body);
  const auto ct = r.header("Content-Type");
  REQUIRE(ct.has_value());
  CHECK(contains(std::string(*ct), "application/problem+json"));
  auto j = r.json();
  REQUIRE(j.ok());
  CHECK((*j)["status"] == status);
  if (!detail_part.empty())
    CHECK_MESSAGE(contains((*j).value("detail", ""), detail_part), (*j).dump());
}

TEST_CASE("dates: strict YYYY-MM-DD and YYYYMMDD parsing") {
  auto d = domain::parse_iso_date("2024-02-29");
  REQUIRE(d.ok());
  CHECK(domain::format_date(*d) == "2024-02-29");
  CHECK(domain::format_date(domain::next_day(*d)) == "2024-03-01");
  CHECK(domain::parse_compact_date("20240221").ok());
  CHECK(domain::format_date(*domain::parse_date("20240221")) == "2024-02-21");
  CHECK_FALSE(domain::parse_iso_date("2023-02-29").ok());
  CHECK_FALSE(domain::parse_date("20240230").ok());
  CHECK_FALSE(domain::parse_iso_date("2024-2-01").ok());
  CHECK_FALSE(domain::parse_iso_date("2024/02/01").ok());
  CHECK_FALSE(domain::parse_iso_date("2024-13-01").ok());
  CHECK_FALSE(domain::parse_date("+2024-01-01").ok());
  CHECK_FALSE(domain::parse_date("").ok());
  auto bad = domain::parse_date("2024-02-30", "checkIn");
  REQUIRE_FALSE(bad.ok());
  CHECK(contains(bad.status().message(), "checkIn"));
  CHECK(domain::days_between(*domain::parse_date("2024-12-30"), *domain::parse_date("20250102")) ==
        3);
}

TEST_CASE("reserve within capacity holds every night and replies with the hold id") {
  Harness h;
  h.stock("1", 2);
  const Message r =
      h.roundtrip(command("s1", "reserve", stay("r1", "1", "2024-02-21", "2024-02-23", 2)));
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  CHECK(Json::parse(r.payload) == Json{{"holdId", "s1"}});
  const Json n1 = h.night("1", "2024-02-21");
  CHECK(n1["held"] == 2);
  CHECK(n1["free"] == 0);
  CHECK(h.night("1", "2024-02-22")["held"] == 2);
  CHECK(h.night("1", "2024-02-23")["held"] == 0);  // checkout day is not a night
  auto booking = h.p->get("booking/s1");
  REQUIRE(booking.ok());
  REQUIRE(booking->has_value());
  const Json b = Json::parse(**booking);
  CHECK(b["status"] == "HELD");
  CHECK(b["qty"] == 2);
  CHECK(b["reservationId"] == "r1");
  CHECK(b["checkIn"] == "2024-02-21");
}

TEST_CASE("reserve fails without availability on one night of a multi-night stay") {
  Harness h;
  h.stock("1", 1);
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "1", "2024-03-02", "2024-03-03", 1)))
              .outcome == ReplyOutcome::kSuccess);
  const Message r =
      h.roundtrip(command("s2", "reserve", stay("r2", "1", "2024-03-01", "2024-03-04", 1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK_MESSAGE(contains(error_of(r), "no availability on 2024-03-02"), r.payload);
  // Nothing of the refused stay was applied.
  CHECK(h.night("1", "2024-03-01")["held"] == 0);
  CHECK(h.night("1", "2024-03-03")["held"] == 0);
  CHECK(h.night("1", "2024-03-02")["held"] == 1);
  CHECK_FALSE(h.p->get("booking/s2")->has_value());
  // A stay on other nights still fits.
  CHECK(h.roundtrip(command("s3", "reserve", stay("r3", "1", "2024-03-03", "2024-03-05", 1)))
            .outcome == ReplyOutcome::kSuccess);
}

TEST_CASE("reserve refuses an unknown place and bad payloads") {
  Harness h;
  h.stock("1", 5);
  Message r =
      h.roundtrip(command("s1", "reserve", stay("r1", "99", "2024-02-21", "2024-02-22", 1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "unknown place 99"));

  r = h.roundtrip(command("s2", "reserve", stay("r2", "1", "20240230", "20240302", 1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK_MESSAGE(contains(error_of(r), "checkIn"), r.payload);

  r = h.roundtrip(command("s3", "reserve", stay("r3", "1", "2024-02-22", "2024-02-22", 1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "checkOut must be after checkIn"));

  r = h.roundtrip(command("s4", "reserve", stay("r4", "1", "2024-02-23", "2024-02-22", 1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);

  r = h.roundtrip(command("s5", "reserve", stay("r5", "1", "2024-02-21", "2024-02-22", 0)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "qty"));

  // The seed's compact dates are accepted and stored canonically.
  r = h.roundtrip(command("s6", "reserve", stay("r6", "1", "20240221", "20240222", 1)));
  REQUIRE(r.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(**h.p->get("booking/s6"))["checkOut"] == "2024-02-22");
  CHECK(h.night("1", "2024-02-21")["held"] == 1);
}

TEST_CASE("confirm turns the hold into a confirmed booking the owner sees") {
  Harness h;
  ClientResponse created =
      h.post("/places", {{"name", "Sea view"}, {"ownerId", "own-1"}, {"rooms", 3}});
  REQUIRE(created.status == 201);
  const std::string place = (*created.json())["id"];
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", place, "2024-05-01", "2024-05-03", 2)))
              .outcome == ReplyOutcome::kSuccess);
  CHECK(h.get_json("/owners/own-1/reservations").empty());  // held is not confirmed

  const Message r = h.roundtrip(command("s1", "confirm", Json::object(), {}, place));
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  const Json n = h.night(place, "2024-05-02");
  CHECK(n["held"] == 0);
  CHECK(n["confirmed"] == 2);
  CHECK(n["free"] == 1);

  h.await_events(1);
  const Message& e = h.events.back();
  CHECK(e.type == "ReservationConfirmed");
  CHECK(e.key == "r1");
  CHECK(e.destination == "reserveplace");
  const Json ev = Json::parse(e.payload);
  CHECK(ev == Json{{"eventType", "ReservationConfirmed"},
                   {"timestamp", 1'700'000'000'000},
                   {"placeId", place},
                   {"orderId", "r1"},
                   {"stock", 1}});

  const Json owned = h.get_json("/owners/own-1/reservations");
  REQUIRE(owned.size() == 1);
  CHECK(owned[0]["sagaId"] == "s1");
  CHECK(owned[0]["reservationId"] == "r1");
  CHECK(owned[0]["status"] == "CONFIRMED");
  CHECK(owned[0]["placeId"] == place);
  CHECK(h.get_json("/owners/own-2/reservations").empty());

  // Confirm without a hold fails.
  const Message none = h.roundtrip(command("s9", "confirm", Json::object(), {}, place));
  CHECK(none.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(none), "no hold"));
}

TEST_CASE("release of a held booking restores availability and emits ReservationCancelConfirmed") {
  Harness h;
  h.stock("7", 2);
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "7", "2024-06-01", "2024-06-03", 2)))
              .outcome == ReplyOutcome::kSuccess);
  CHECK(h.night("7", "2024-06-01")["free"] == 0);
  const Message r = h.roundtrip(command("s1", "release", Json::object(), "s1/reserve/a", "7"));
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  CHECK(h.night("7", "2024-06-01")["free"] == 2);
  CHECK(h.night("7", "2024-06-02")["held"] == 0);
  CHECK_FALSE(h.p->get("booking/s1")->has_value());
  h.await_events(1);
  CHECK(h.events.back().type == "ReservationCancelConfirmed");
  const Json ev = Json::parse(h.events.back().payload);
  CHECK(ev["eventType"] == "ReservationCancelConfirmed");
  CHECK(ev["orderId"] == "r1");
  CHECK(ev["placeId"] == "7");
  CHECK(ev["stock"] == 2);
  CHECK(ev.contains("timestamp"));
}

TEST_CASE("release of a confirmed booking restores availability and the owner index") {
  Harness h;
  h.stock("8", 1);
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "8", "2024-07-01", "2024-07-02", 1)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s1", "confirm", Json::object(), {}, "8")).outcome ==
          ReplyOutcome::kSuccess);
  CHECK(h.get_json("/owners/owner-8/reservations").size() == 1);
  CHECK(h.night("8", "2024-07-01")["confirmed"] == 1);
  // A confirmed night blocks others.
  CHECK(h.roundtrip(command("s2", "reserve", stay("r2", "8", "2024-07-01", "2024-07-02", 1)))
            .outcome == ReplyOutcome::kFailure);

  REQUIRE(h.roundtrip(command("s1", "release", Json::object(), "s1/reserve/a", "8")).outcome ==
          ReplyOutcome::kSuccess);
  const Json n = h.night("8", "2024-07-01");
  CHECK(n["confirmed"] == 0);
  CHECK(n["free"] == 1);
  CHECK(h.get_json("/owners/owner-8/reservations").empty());
  h.await_events(2);
  CHECK(h.events[0].type == "ReservationConfirmed");
  CHECK(h.events[1].type == "ReservationCancelConfirmed");
  CHECK(Json::parse(h.events[1].payload)["stock"] == 1);
  CHECK(h.roundtrip(command("s3", "reserve", stay("r3", "8", "2024-07-01", "2024-07-02", 1)))
            .outcome == ReplyOutcome::kSuccess);
}

TEST_CASE("availability endpoint reports rooms, held, confirmed and free per night") {
  Harness h;
  h.stock("5", 4);
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "5", "2024-01-01", "2024-01-03", 1)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s2", "reserve", stay("r2", "5", "2024-01-02", "2024-01-04", 2)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s2", "confirm", Json::object(), {}, "5")).outcome ==
          ReplyOutcome::kSuccess);
  const Json a = h.get_json("/places/5/availability?from=2024-01-01&to=2024-01-05");
  REQUIRE(a.size() == 4);
  CHECK(a[0] ==
        Json{{"date", "2024-01-01"}, {"rooms", 4}, {"held", 1}, {"confirmed", 0}, {"free", 3}});
  CHECK(a[1] ==
        Json{{"date", "2024-01-02"}, {"rooms", 4}, {"held", 1}, {"confirmed", 2}, {"free", 1}});
  CHECK(a[2] ==
        Json{{"date", "2024-01-03"}, {"rooms", 4}, {"held", 0}, {"confirmed", 2}, {"free", 2}});
  CHECK(a[3] ==
        Json{{"date", "2024-01-04"}, {"rooms", 4}, {"held", 0}, {"confirmed", 0}, {"free", 4}});

  check_problem(h.get("/places/5/availability?from=2024-01-05&to=2024-01-05"), 400, "after");
  check_problem(h.get("/places/5/availability?from=2024-01-01&to=2025-01-03"), 400, "366");
  check_problem(h.get("/places/5/availability?from=2024-01-01"), 400, "required");
  check_problem(h.get("/places/5/availability?from=2024-02-30&to=2024-03-01"), 400, "from");
  check_problem(h.get("/places/nope/availability?from=2024-01-01&to=2024-01-02"), 404);

  // Rooms cannot drop below what a night uses (3 on 2024-01-02).
  check_problem(h.put("/places/5/rooms", {{"rooms", 2}}), 409, "2024-01-02");
  ClientResponse ok = h.put("/places/5/rooms", {{"rooms", 3}});
  CHECK(ok.status == 200);
  CHECK((*ok.json())["rooms"] == 3);
  CHECK(h.night("5", "2024-01-02")["free"] == 0);
  check_problem(h.put("/places/5/rooms", {{"rooms", -1}}), 400, "rooms");
  check_problem(h.put("/places/none/rooms", {{"rooms", 1}}), 404);
}

TEST_CASE("POST /places validates its body with 400 problems") {
  Harness h;
  ClientResponse ok = h.post("/places", {{"name", "Hanok"}, {"ownerId", "o1"}, {"rooms", 0}});
  REQUIRE(ok.status == 201);
  const Json place = *ok.json();
  CHECK(place["name"] == "Hanok");
  CHECK(place["rooms"] == 0);
  const std::string id = place["id"];
  CHECK(id.rfind("p-", 0) == 0);
  REQUIRE(ok.header("Location").has_value());
  CHECK(std::string(*ok.header("Location")) == "/places/" + id);
  CHECK(h.get_json("/places/" + id) == place);
  check_problem(h.get("/places/p-missing"), 404);

  check_problem(h.post("/places", {{"ownerId", "o1"}, {"rooms", 1}}), 400, "name");
  check_problem(h.post("/places", {{"name", 5}, {"ownerId", "o1"}, {"rooms", 1}}), 400, "name");
  // Without ownerId the place is the caller's.
  ClientResponse mine = h.post("/places", {{"name", "x"}, {"rooms", 1}});
  REQUIRE(mine.status == 201);
  CHECK((*mine.json())["ownerId"] == "test-admin");
  check_problem(h.post("/places", {{"name", "x"}, {"ownerId", "a/b"}, {"rooms", 1}}), 400,
                "ownerId");
  check_problem(h.post("/places", {{"name", "x"}, {"ownerId", "o1"}}), 400, "rooms");
  check_problem(h.post("/places", {{"name", "x"}, {"ownerId", "o1"}, {"rooms", -1}}), 400, "rooms");
  check_problem(h.post("/places", {{"name", "x"}, {"ownerId", "o1"}, {"rooms", 1.5}}), 400,
                "rooms");
  check_problem(h.post("/places", {{"name", "x"}, {"ownerId", "o1"}, {"rooms", "3"}}), 400,
                "rooms");
  check_problem(h.post("/places", Json::array({1, 2})), 400);
  auto raw = h.http->request("POST", "/places", {{"Content-Type", "application/json"}}, "{nope");
  REQUIRE(raw.ok());
  check_problem(*raw, 400);
}

TEST_CASE("a body nested 100,000 deep is a 400 problem and the service keeps answering") {
  Harness h;
  // 200 KB, well under the 1 MiB body limit: it once overflowed the stack.
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  for (const char* target : {"/reservationManagements", "/places"}) {
    CAPTURE(target);
    auto r = h.http->request("POST", target, {{"Content-Type", "application/json"}}, deep);
    REQUIRE(r.ok());
    check_problem(*r, 400, "nested deeper than 64");
  }
  auto objects = std::string();
  for (int i = 0; i < 100'000; ++i) objects += "{\"a\":";
  auto r = h.http->request("POST", "/places", {{"Content-Type", "application/json"}}, objects);
  REQUIRE(r.ok());
  check_problem(*r, 400, "nested deeper than 64");

  h.stock("1", 2);
  CHECK(h.night("1", "2024-01-02")["free"] == 2);
  CHECK(h.get("/healthz").status == 200);
}

TEST_CASE("POST /reservationManagements creates a place or sets its stock") {
  Harness h;
  ClientResponse r = h.post("/reservationManagements", {{"placeId", 1}, {"stock", 3}});
  REQUIRE(r.status == 201);
  CHECK(*r.json() == Json{{"placeId", 1}, {"stock", 3}});
  Json place = h.get_json("/places/1");
  CHECK(place == Json{{"id", "1"},
                      {"name", "place-1"},
                      {"ownerId", "owner-1"},
                      {"rooms", 3},
                      {"price", {{"amount", 5000}, {"currency", "KRW"}}}});  // the seed's price

  r = h.post("/reservationManagements", {{"placeId", "1"}, {"stock", 5}});
  REQUIRE(r.status == 201);
  CHECK(h.get_json("/places/1")["rooms"] == 5);
  CHECK(h.get_json("/places/1")["name"] == "place-1");

  // As httpie sends `stock=2`: a number in a string.
  REQUIRE(h.post("/reservationManagements", {{"placeId", "1"}, {"stock", "2"}}).status == 201);
  CHECK(h.get_json("/places/1")["rooms"] == 2);
  check_problem(h.post("/reservationManagements", {{"placeId", 1}, {"stock", "1.5"}}), 400,
                "stock");
  check_problem(h.post("/reservationManagements", {{"placeId", 1}, {"stock", " 2"}}), 400,
                "stock");
  check_problem(h.post("/reservationManagements", {{"stock", 5}}), 400, "placeId");
  check_problem(h.post("/reservationManagements", {{"placeId", 1}, {"stock", -2}}), 400, "stock");
  check_problem(h.post("/reservationManagements", {{"placeId", 1}, {"stock", "x"}}), 400, "stock");
  check_problem(h.post("/reservationManagements", {{"placeId", true}, {"stock", 1}}), 400,
                "placeId");
}

TEST_CASE("an owner manages only its own places, rooms and guest list") {
  Harness h;
  auto o1 = h.client_as(testing::owner_identity("o1"));
  auto o2 = h.client_as(testing::owner_identity("o2"));
  auto g1 = h.client_as(testing::guest_identity("g1"));
  auto anonymous = h.anonymous();

  // Places are created as oneself, by owners only.
  auto created = o1->post_json("/places", {{"name", "Hanok"}, {"rooms", 2}});
  REQUIRE(created.ok());
  REQUIRE_MESSAGE(created->status == 201, created->body);
  const std::string id = (*created->json())["id"];
  CHECK((*created->json())["ownerId"] == "o1");
  check_problem(*o1->post_json("/places", {{"name", "x"}, {"ownerId", "o2"}, {"rooms", 1}}), 403,
                "yourself");
  check_problem(*g1->post_json("/places", {{"name", "x"}, {"rooms", 1}}), 403, "owner");
  check_problem(*anonymous->post_json("/places", {{"name", "x"}, {"rooms", 1}}), 401);

  // Rooms: the owner's alone (an admin's too).
  check_problem(*o2->put_json("/places/" + id + "/rooms", {{"rooms", 9}}), 403, "another owner");
  check_problem(*g1->put_json("/places/" + id + "/rooms", {{"rooms", 9}}), 403);
  check_problem(*anonymous->put_json("/places/" + id + "/rooms", {{"rooms", 9}}), 401);
  CHECK(h.get_json("/places/" + id)["rooms"] == 2);
  CHECK(o1->put_json("/places/" + id + "/rooms", {{"rooms", 3}})->status == 200);
  CHECK(h.put("/places/" + id + "/rooms", {{"rooms", 4}}).status == 200);  // admin

  // The seed's stock call: creates the place as the caller's, then only its owner sets it.
  REQUIRE(o1->post_json("/reservationManagements", {{"placeId", "70"}, {"stock", 1}})->status ==
          201);
  CHECK(h.get_json("/places/70")["ownerId"] == "o1");
  check_problem(*o2->post_json("/reservationManagements", {{"placeId", "70"}, {"stock", 0}}), 403,
                "another owner");
  check_problem(*g1->post_json("/reservationManagements", {{"placeId", "71"}, {"stock", 5}}), 403);
  check_problem(*anonymous->post_json("/reservationManagements", {{"placeId", "71"}, {"stock", 5}}),
                401);
  CHECK(h.get_json("/places/70")["rooms"] == 1);
  check_problem(h.get("/places/71"), 404);  // nothing created

  // The guest list: a confirmed booking at o1's place is o1's to read.
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "70", "2024-01-01", "2024-01-02", 1)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s1", "confirm", Json::object(), {}, "70")).outcome ==
          ReplyOutcome::kSuccess);
  auto list = o1->get("/owners/o1/reservations");
  REQUIRE(list.ok());
  REQUIRE(list->status == 200);
  CHECK(list->json()->size() == 1);
  check_problem(*o2->get("/owners/o1/reservations"), 403);
  check_problem(*g1->get("/owners/o1/reservations"), 403);
  check_problem(*g1->get("/owners/g1/reservations"), 403);  // a guest is no owner
  check_problem(*anonymous->get("/owners/o1/reservations"), 401);
  CHECK(h.get_json("/owners/o1/reservations").size() == 1);  // admin

  // The catalogue stays public.
  CHECK(anonymous->get("/places/70")->status == 200);
  CHECK(anonymous->get("/places/70/availability?from=2024-01-01&to=2024-01-02")->status == 200);
}

TEST_CASE("a place's nightly price is set, read and changed by its owner only") {
  Harness h;
  auto o1 = h.client_as(testing::owner_identity("o1"));
  auto o2 = h.client_as(testing::owner_identity("o2"));
  auto g1 = h.client_as(testing::guest_identity("g1"));
  auto anonymous = h.anonymous();

  const Json price = {{"amount", 8000}, {"currency", "KRW"}};
  auto created = o1->post_json("/places", {{"name", "Hanok"}, {"rooms", 2}, {"price", price}});
  REQUIRE(created.ok());
  REQUIRE_MESSAGE(created->status == 201, created->body);
  const std::string id = (*created->json())["id"];
  // Ids: "p-" and 128 random bits.
  CHECK(id.size() == 2 + 32);
  CHECK(id.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
  CHECK(h.get_json("/places/" + id)["price"] == Json{{"amount", 8000}, {"currency", "KRW"}});
  CHECK(anonymous->get("/places/" + id)->status == 200);  // prices are public

  const Json cheaper = {{"amount", 7000}, {"currency", "KRW"}};
  check_problem(*o2->put_json("/places/" + id + "/price", cheaper), 403, "another owner");
  check_problem(*g1->put_json("/places/" + id + "/price", cheaper), 403);
  check_problem(*anonymous->put_json("/places/" + id + "/price", cheaper), 401);
  CHECK(h.get_json("/places/" + id)["price"]["amount"] == 8000);
  auto changed = o1->put_json("/places/" + id + "/price", cheaper);
  REQUIRE(changed.ok());
  CHECK_MESSAGE(changed->status == 200, changed->body);
  CHECK(h.get_json("/places/" + id)["price"] == cheaper);
  CHECK(h.get_json("/places/" + id)["rooms"] == 2);  // nothing else changes
  check_problem(*o1->put_json("/places/p-none/price", cheaper), 404);

  // Money is an integer of minor units with a currency code.
  for (const Json& bad : {Json{{"amount", 70.5}, {"currency", "KRW"}},
                          Json{{"amount", 7000.0}, {"currency", "KRW"}},
                          Json{{"amount", -1}, {"currency", "KRW"}},
                          Json{{"amount", "7000"}, {"currency", "KRW"}},
                          Json{{"amount", 7000}, {"currency", "krw"}},
                          Json{{"amount", 7000}}, Json{{"currency", "KRW"}}, Json(7000)}) {
    check_problem(*o1->put_json("/places/" + id + "/price", bad), 400);
    check_problem(*o1->post_json("/places", {{"name", "x"}, {"rooms", 1}, {"price", bad}}), 400);
  }
  CHECK(h.get_json("/places/" + id)["price"] == cheaper);

  // A place made without a price has none; the seed's places cost 5000 KRW a night.
  auto bare = o1->post_json("/places", {{"name", "Bare"}, {"rooms", 1}});
  REQUIRE(bare.ok());
  CHECK_FALSE(bare->json()->contains("price"));
  h.stock("seed-1", 1);
  CHECK(h.get_json("/places/seed-1")["price"] == Json{{"amount", 5000}, {"currency", "KRW"}});
}

TEST_CASE("an owner's guest list pages with limit and pageToken") {
  Harness h;
  h.stock("g", 10);
  std::vector<std::string> sagas;
  for (int i = 0; i < 5; ++i) {
    const std::string saga = "s" + std::to_string(i);
    sagas.push_back(saga);
    REQUIRE(h.roundtrip(command(saga, "reserve", stay("r" + std::to_string(i), "g", "2024-01-01",
                                                      "2024-01-02", 1)))
                .outcome == ReplyOutcome::kSuccess);
    REQUIRE(h.roundtrip(command(saga, "confirm", Json::object(), {}, "g")).outcome ==
            ReplyOutcome::kSuccess);
  }
  const std::string owner = h.get_json("/places/g")["ownerId"];
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    ClientResponse r = h.get("/owners/" + owner + "/reservations?limit=2" +
                             (token.empty() ? std::string() : "&pageToken=" + token));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Json items = *r.json();
    for (const Json& b : items) seen.push_back(b["sagaId"]);
    token = std::string(r.header("Next-Page-Token").value_or(""));
    ++pages;
  } while (!token.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(seen == sagas);
  CHECK(h.get_json("/owners/" + owner + "/reservations").size() == 5);
  for (const char* bad : {"limit=0", "limit=201", "limit=two", "pageToken="})
    check_problem(h.get("/owners/" + owner + "/reservations?" + bad), 400);
}

// Two replicas of the inventory over one MemoryBus, each with its own store
// and HTTP server, sharing the shards of the command topic: an owner's
// requests may reach either and are answered as by one service
// (docs/replicas.md, "Routing").
TEST_CASE("two inventory replicas: places, rooms and the guest list through either") {
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 5);
  auto orch = bus->connect("orch");
  std::mutex mu;
  std::vector<Message> replies;
  REQUIRE(orch->subscribe(testing::ParticipantServiceHarness::kReplyTo,
                          [&](Message m, Transport::Ack ack) {
                            std::lock_guard lock(mu);
                            replies.push_back(std::move(m));
                            ack();
                          })
              .ok());
  REQUIRE(orch->subscribe("reserveplace", [](Message, Transport::Ack ack) { ack(); }).ok());
  const std::vector<uint16_t> ports = testing::pick_free_ports(2);
  REQUIRE(ports.size() == 2);
  testing::TempDir dirs;
  std::vector<std::unique_ptr<Participant>> replicas;
  std::vector<std::unique_ptr<service::HttpServer>> servers;
  for (size_t i = 0; i < 2; ++i) {
    ParticipantOptions o;
    o.name = inventory::kParticipantName;
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.sync = false;
    o.shards = 4;
    o.changelog = true;
    o.replicas = true;
    o.advertised_address = "http://127.0.0.1:" + std::to_string(ports[i]);
    auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("inventory-" +
                                                                          std::to_string(i))));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    REQUIRE(inventory::register_handlers(**p, {.now_ms = [] { return int64_t{1'700'000'000'000}; }})
                .ok());
    service::Router router;
    inventory::add_routes(router, **p);
    service::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = ports[i];
    so.threads = 4;
    servers.push_back(std::make_unique<service::HttpServer>(so, std::move(router)));
    REQUIRE(servers.back()->start().ok());
    (*p)->start_background();
    replicas.push_back(std::move(*p));
  }
  // Both own shards, and each names the other for the shards it does not own.
  REQUIRE(testing::eventually([&] {
    for (size_t i = 0; i < 2; ++i) {
      if (replicas[i]->stats().shards_owned != 2) return false;
      for (const ShardOwner& w : replicas[i]->owners())
        if (w.where == ShardOwner::Where::kElsewhere
                ? w.address != "http://127.0.0.1:" + std::to_string(ports[1 - i])
                : w.where != ShardOwner::Where::kHere)
          return false;
    }
    return true;
  }));
  auto via = [&](size_t i) { return testing::client_as(ports[i], testing::owner_identity("own-1")); };
  for (size_t i = 0; i < 2; ++i) {
    auto m = testing::client_as(ports[i], testing::admin_identity())->get("/metrics");
    REQUIRE(m.ok());
    CHECK_MESSAGE(m->body.find("saga_participant_shards_owned{participant=\"inventory\"} 2") !=
                      std::string::npos,
                  m->body);
    CHECK_MESSAGE(m->body.find("# TYPE saga_participant_store_keys gauge\n"
                               "saga_participant_store_keys{participant=\"inventory\"} ") !=
                      std::string::npos,
                  m->body);
  }

  std::vector<std::string> places;
  for (int n = 0; n < 6; ++n) {
    const size_t entry = static_cast<size_t>(n % 2);
    auto r = via(entry)->post_json("/places", {{"name", "p" + std::to_string(n)}, {"rooms", 2}});
    REQUIRE(r.ok());
    REQUIRE_MESSAGE(r->status == 201, r->body);
    const std::string id = (*r->json())["id"];
    CHECK(replicas[entry]->owner_of(id).where == ShardOwner::Where::kHere);  // made where it landed
    places.push_back(id);
  }
  for (const std::string& id : places) {
    const size_t owner = replicas[0]->owner_of(id).where == ShardOwner::Where::kHere ? 0 : 1;
    auto put = via(1 - owner)->request("PUT", "/places/" + id + "/rooms",
                                       {{"Content-Type", "application/json"}}, R"({"rooms": 3})");
    REQUIRE(put.ok());
    CHECK_MESSAGE(put->status == 200, put->body);
    for (size_t i = 0; i < 2; ++i) {
      auto got = via(i)->get("/places/" + id);
      REQUIRE(got.ok());
      REQUIRE_MESSAGE(got->status == 200, got->body);
      CHECK((*got->json())["rooms"] == 3);
    }
  }
  // A confirmed booking on every place: each replica handles its places' commands.
  for (size_t n = 0; n < places.size(); ++n) {
    const std::string saga = "s" + std::to_string(n);
    orch->send(command(saga, "reserve", stay("r" + std::to_string(n), places[n], "2024-03-01",
                                             "2024-03-02", 1)),
               nullptr);
    orch->send(command(saga, "confirm", Json::object(), {}, places[n]), nullptr);
  }
  // Every command answered with a success (a count could take a duplicate
  // reply for a missing one).
  REQUIRE(testing::eventually([&] {
    orch->poll(std::chrono::milliseconds(1));
    std::lock_guard lock(mu);
    std::set<std::string> done;
    for (const Message& r : replies)
      if (r.outcome == ReplyOutcome::kSuccess) done.insert(r.in_reply_to);
    return done.size() == 2 * places.size();
  }));
  for (const Message& r : replies) CHECK_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  // The guest list through either replica: every replica's part, merged, in pages.
  // A participant with a changelog replies once its changelog has the batch,
  // which may be just before its local store does: the list is read until it
  // has caught up (or the deadline).
  const std::vector<std::string> all = {"s0", "s1", "s2", "s3", "s4", "s5"};
  for (size_t i = 0; i < 2; ++i) {
    std::vector<std::string> seen;
    int pages = 0;
    auto list = [&] {
      seen.clear();
      pages = 0;
      std::string token;
      do {
        auto r = via(i)->get("/owners/own-1/reservations?limit=4" +
                             (token.empty() ? std::string() : "&pageToken=" + token));
        REQUIRE(r.ok());
        REQUIRE_MESSAGE(r->status == 200, r->body);
        const Json page = *r->json();
        for (const Json& b : page) seen.push_back(b["sagaId"]);
        token = std::string(r->header("Next-Page-Token").value_or(""));
        ++pages;
      } while (!token.empty() && pages < 5);
      return seen == all;
    };
    (void)testing::eventually(list);
    CHECK(pages == 2);
    std::string listed;
    for (const std::string& s : seen) listed += s + " ";
    CHECK_MESSAGE(seen == all, "through replica " << i << ": " << listed);
  }
  for (size_t i = 0; i < 2; ++i) {
    servers[i]->stop();
    replicas[i]->stop();
  }
}

TEST_CASE("standard routes: healthz, readyz with the participant, metrics") {
  Harness h;
  CHECK(h.get("/healthz").status == 200);
  const Json ready = h.get_json("/readyz");
  CHECK(ready["status"] == "ready");
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", "x", "2024-01-01", "2024-01-02", 1)))
              .outcome == ReplyOutcome::kFailure);
  ClientResponse m = h.get("/metrics");
  CHECK(m.status == 200);
  CHECK(contains(m.body, "saga_participant_refused_total{participant=\"inventory\"} 1"));
  h.bus->set_available(false);
  CHECK(h.get("/readyz").status == 503);
  h.bus->set_available(true);
}

}  // namespace
}  // namespace saga

namespace saga {
namespace {

// Reads a state key of the old store for inventory::shard_key.
struct MapSource final : ReshardSource {
  std::map<std::string, std::string> keys;
  StatusOr<std::optional<std::string>> get(std::string_view key) const override {
    auto it = keys.find(std::string(key));
    if (it == keys.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
};

TEST_CASE("inventory's shard key: the place of every key it writes, an error for others") {
  MapSource src;
  src.keys["booking/s1"] = Json{{"placeId", "p7"}, {"status", "CONFIRMED"}}.dump();
  CHECK(*inventory::shard_key("place/p7", "{}", src) == "p7");
  CHECK(*inventory::shard_key("night/p7/2024-05-01", "{}", src) == "p7");
  CHECK(*inventory::shard_key("booking/s1", src.keys["booking/s1"], src) == "p7");
  CHECK(*inventory::shard_key("owner/own-1/s1", "{}", src) == "p7");
  CHECK(inventory::shard_key("owner/own-1/s2", "{}", src).status().code() ==
        StatusCode::kFailedPrecondition);  // no booking/s2
  CHECK(inventory::shard_key("booking/s3", "{}", src).status().code() == StatusCode::kDataLoss);
  for (const char* other : {"weird", "place/", "night/p7", "owner/x"})
    CHECK_MESSAGE(!inventory::shard_key(other, "{}", src).ok(), other);
}

TEST_CASE("an inventory resharded from 12 to 5 shards keeps its places, holds, owner index and inbox") {
  Harness h;
  ClientResponse created =
      h.post("/places", {{"name", "Sea view"}, {"ownerId", "own-1"}, {"rooms", 2}});
  REQUIRE(created.status == 201);
  const std::string a = (*created.json())["id"];
  h.stock("b", 1);
  const Message confirm_s1 = command("s1", "confirm", Json::object(), {}, a);
  REQUIRE(h.roundtrip(command("s1", "reserve", stay("r1", a, "2024-05-01", "2024-05-03", 1)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(confirm_s1).outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s2", "reserve", stay("r2", a, "2024-05-01", "2024-05-02", 1)))
              .outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s3", "allocate", stay("r3", "b", "2024-05-01", "2024-05-02", 1)))
              .outcome == ReplyOutcome::kSuccess);

  h.reshard(5, inventory::shard_key);
  h.settle();  // replies whose send was not yet confirmed go out again

  // Every command below finds the state of its place in the place's new shard.
  // A duplicate is answered from the inbox.
  const uint64_t dups = h.p->stats().duplicates;
  CHECK(h.roundtrip(confirm_s1).outcome == ReplyOutcome::kSuccess);
  CHECK(h.p->stats().duplicates == dups + 1);
  // Place a is full on May 1st (s1 confirmed, s2 held): its nights came along.
  CHECK(h.roundtrip(command("s4", "reserve", stay("r4", a, "2024-05-01", "2024-05-02", 1)))
            .outcome == ReplyOutcome::kFailure);
  CHECK(h.roundtrip(command("s5", "reserve", stay("r5", "b", "2024-05-01", "2024-05-02", 1)))
            .outcome == ReplyOutcome::kFailure);
  CHECK(h.get_json("/owners/own-1/reservations").size() == 1);
  // The release of s1 finds its booking and owner entry in place a's shard.
  REQUIRE(h.roundtrip(command("s1", "release", Json::object(), "s1/reserve/a", a)).outcome ==
          ReplyOutcome::kSuccess);
  CHECK(h.get_json("/owners/own-1/reservations").empty());
  CHECK_FALSE(h.p->get("booking/s1")->has_value());
  CHECK(h.night(a, "2024-05-02")["free"] == 2);
  CHECK(h.roundtrip(command("s6", "reserve", stay("r6", a, "2024-05-01", "2024-05-02", 1)))
            .outcome == ReplyOutcome::kSuccess);
}

#ifdef SAGA_INVENTORY_BIN
// A stopped inventory store of 4 shards holding `keys` (written in the shard of place p1).
void make_inventory_store(const std::string& dir, const std::map<std::string, std::string>& keys) {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  ParticipantOptions o;
  o.name = inventory::kParticipantName;
  o.data_dir = dir;
  o.sync = false;
  o.shards = 4;
  auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect(o.name)));
  REQUIRE(p.ok());
  REQUIRE((*p)->write("p1", [&](StateTxn& txn) {
                 for (const auto& [k, v] : keys) txn.put(k, v);
                 return ok_status();
               }).ok());
}

int run_inventory(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {SAGA_INVENTORY_BIN, "reshard"};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::Process p(argv, log);
  return p.wait(std::chrono::seconds(60));
}

TEST_CASE("saga-inventory reshard moves a stopped store with the inventory's key function") {
  testing::TempDir dir;
  const std::string src = (dir.path() / "src").string();
  const std::string dst = (dir.path() / "dst").string();
  const std::string log = (dir.path() / "reshard.log").string();
  make_inventory_store(src, {{"place/p1", R"({"id":"p1","rooms":2})"},
                             {"night/p1/2024-05-01", R"({"held":1,"confirmed":0})"},
                             {"booking/s1", R"({"placeId":"p1","status":"HELD"})"}});
  CHECK(run_inventory({"--from", src, "--to", dst}, log) == 2);
  CHECK(run_inventory({"--from", src, "--to", dst, "--shards", "3", "--kind", "orchestrator"},
                      log) == 2);
  REQUIRE(run_inventory({"--from", src, "--to", dst, "--shards", "3"}, log) == 0);
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  ParticipantOptions o;
  o.name = inventory::kParticipantName;
  o.data_dir = dst;
  o.shards = 3;
  auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect(o.name)));
  REQUIRE_MESSAGE(p.ok(), p.status().to_string());
  for (const char* key : {"place/p1", "night/p1/2024-05-01", "booking/s1"}) {
    auto v = (*p)->get(key);
    REQUIRE(v.ok());
    CHECK_MESSAGE(v->has_value(), key);
  }

  // A key the inventory does not write: the reshard fails and leaves nothing.
  const std::string odd = (dir.path() / "odd").string();
  const std::string odd_dst = (dir.path() / "odd-dst").string();
  make_inventory_store(odd, {{"place/p1", "{}"}, {"stray", "x"}});
  CHECK(run_inventory({"--from", odd, "--to", odd_dst, "--shards", "3"}, log) == 1);
  CHECK(contains(testing::read_file(log), "'stray'"));
  CHECK_FALSE(std::filesystem::exists(odd_dst));
}
#endif

}  // namespace
}  // namespace saga
