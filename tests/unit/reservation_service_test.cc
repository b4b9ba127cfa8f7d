// The reservation service (services/reservation) end to end in-process: its
// orchestrator and the REAL inventory and payment participants over one
// MemoryBus, every engine on its own background thread, and the reservation
// HTTP API on 127.0.0.1:0 through HttpClient. The inventory and payment HTTP
// routes are called through their Routers directly. No fixed sleeps: every
// wait polls with a deadline.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "saga/clock.h"
#include "saga/inventory/inventory.h"
#include "saga/memory_transport.h"
#include "saga/message.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "saga/payment/payment.h"
#include "saga/reservation/reservation.h"
#include "saga/service/http_client.h"
#include "saga/service/http_message.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/eventually.h"
#include "support/identity.h"
#include "support/service_stack.h"
#include "support/temp_dir.h"
#include "key_claims.h"
#include "store/families.h"
#include "store/store.h"

namespace saga {
namespace {

using service::ClientResponse;
using std::chrono::steady_clock;
using testing::TempDir;

constexpr int64_t kNow = 1'700'000'000'000;

using testing::eventually;

std::unique_ptr<Participant> open_participant(const std::string& name, const TempDir& dir,
                                              MemoryBus& bus) {
  ParticipantOptions o;
  o.name = name;
  o.data_dir = dir.path().string();
  o.sync = false;
  auto p = Participant::open(o, std::shared_ptr<Transport>(bus.connect(name)));
  REQUIRE(p.ok());
  return std::move(*p);
}

struct World {
  // `lookup`: where the reservation service learns prices; default: the real
  // inventory's GET /places/{id} through its router.
  explicit World(reservation::PlaceLookup lookup = {}) {
    REQUIRE(events_endpoint
                ->subscribe(reservation::kEventDestination,
                            [this](Message m, Transport::Ack ack) {
                              events.push_back(std::move(m));
                              ack();
                            })
                .ok());
    inventory = open_participant(inventory::kParticipantName, inv_dir, *bus);
    REQUIRE(inventory::register_handlers(*inventory, {.now_ms = [] { return kNow; }}).ok());
    payment = open_participant(payment::kParticipantName, pay_dir, *bus);
    payment::Config pc;
    pc.decline_rate = 0.5;
    REQUIRE(payment::register_handlers(*payment, {.config = pc,
                                                  .chance = [this] { return chance.load(); },
                                                  .now_ms = [] { return kNow; }})
                .ok());
    inventory::add_routes(inv_router, *inventory);
    payment::add_routes(pay_router, *payment);

    if (!lookup) lookup = [this](const std::string& id) { return inventory_lookup(id); };
    ro = {.now_ms = [this] { return now.load(); }, .place_lookup = std::move(lookup)};
    inventory->start_background();
    payment->start_background();
    open_reservation();
  }
  ~World() {
    stop_reservation();
    payment->stop();
    inventory->stop();
  }
  // The reservation service: its orchestrator and HTTP server.
  void open_reservation() {
    auto defs = reservation::definitions(ro);
    REQUIRE_MESSAGE(defs.ok(), defs.status().to_string());
    Options o;
    o.name = reservation::kServiceName;
    o.data_dir = orch_dir.path().string();
    o.sync = false;
    if (tweak_orchestrator) tweak_orchestrator(o);
    auto opened = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect(o.name)), *defs);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    orch = std::move(*opened);

    service::Router router;
    reservation::add_routes(router, *orch, ro);
    service::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    so.threads = 4;
    server = std::make_unique<service::HttpServer>(so, std::move(router));
    REQUIRE(server->start().ok());
    http = testing::client_as(server->port(), testing::admin_identity());
    orch->start_background();
  }
  void stop_reservation() {
    if (!orch) return;  // stopped already
    http->close();
    server->stop();
    orch->stop();
    http.reset();
    server.reset();
    orch.reset();  // closes its store
  }

  service::Response call(const service::Router& r, const std::string& method,
                         const std::string& target, const Json& body = nullptr) {
    service::Headers h = service::identity_headers(testing::admin_identity());
    std::string text;
    if (!body.is_null()) {
      h.emplace_back("Content-Type", "application/json");
      text = body.dump();
    }
    service::Request req(method, target, h, text);
    return r.handle(req);
  }
  StatusOr<std::optional<reservation::PlaceInfo>> inventory_lookup(const std::string& id) {
    service::Response r = call(inv_router, "GET", "/places/" + id);
    if (r.status() == 404) return std::optional<reservation::PlaceInfo>();
    if (r.status() != 200) return Status::unavailable("inventory answered " + r.body());
    const Json place = Json::parse(r.body());
    reservation::PlaceInfo info;
    if (place.contains("price")) {
      info.priced = true;
      info.price = place["price"]["amount"];
      info.currency = place["price"]["currency"];
    }
    return std::optional<reservation::PlaceInfo>(info);
  }
  // Creates place `id` through the seed's call: `rooms` rooms at 5000 KRW a night.
  void add_place(const std::string& id, int rooms) {
    service::Response r =
        call(inv_router, "POST", "/reservationManagements", {{"placeId", id}, {"stock", rooms}});
    REQUIRE_MESSAGE(r.status() == 201, r.body());
  }
  Json availability(const std::string& place, const std::string& from, const std::string& to) {
    service::Response r =
        call(inv_router, "GET", "/places/" + place + "/availability?from=" + from + "&to=" + to);
    REQUIRE_MESSAGE(r.status() == 200, r.body());
    return Json::parse(r.body());
  }
  Json payments_of(const std::string& reservation_id) {
    service::Response r = call(pay_router, "GET", "/payments?reservationId=" + reservation_id);
    REQUIRE_MESSAGE(r.status() == 200, r.body());
    return Json::parse(r.body());
  }

  ClientResponse post(const std::string& target, const Json& body) {
    auto r = http->post_json(target, body);
    REQUIRE(r.ok());
    return *r;
  }
  /// POSTs `body` to `route` with an Idempotency-Key.
  ClientResponse post_keyed(const std::string& route, const std::string& key, const Json& body) {
    auto r = http->request("POST", route,
                           {{"Content-Type", "application/json"}, {"Idempotency-Key", key}},
                           body.dump());
    REQUIRE(r.ok());
    return *r;
  }
  ClientResponse get(const std::string& target) {
    auto r = http->get(target);
    REQUIRE(r.ok());
    return *r;
  }
  Json get_json(const std::string& target) {
    ClientResponse r = get(target);
    REQUIRE_MESSAGE(r.status == 200, target << " -> " << r.status << " " << r.body);
    return Json::parse(r.body);
  }
  /// POSTs a booking; returns its id after checking the 202. The 202 carries
  /// the booking's status when it was answered: PENDING, or already its
  /// outcome when the participants were quicker than the HTTP answer.
  std::string book(const Json& body) {
    ClientResponse r = post("/reservations", body);
    REQUIRE_MESSAGE(r.status == 202, r.status << " " << r.body);
    Json j = Json::parse(r.body);
    const std::string status = j["status"];
    CHECK_MESSAGE((status == "PENDING" || status == "CONFIRMED" || status == "REJECTED"), status);
    const std::string id = j["id"];
    CHECK(id.rfind("r-", 0) == 0);
    CHECK(r.header("Location") == "/reservations/" + id);
    accepted_as[id] = status;
    return id;
  }
  /// Polls GET /reservations/{id} until its status is not PENDING. An outcome
  /// the 202 already reported must be the one the booking keeps.
  Json settle(const std::string& id) {
    Json last;
    const bool done = eventually([&] {
      last = get_json("/reservations/" + id);
      return last["status"] != "PENDING";
    });
    REQUIRE_MESSAGE(done, "still pending: " << last.dump());
    if (auto it = accepted_as.find(id); it != accepted_as.end() && it->second != "PENDING")
      CHECK_MESSAGE(last["status"] == it->second, "the 202 said " << it->second);
    return last;
  }
  /// Every event type for `id`, in the order the events arrived.
  std::vector<std::string> event_types(const std::string& id) {
    std::vector<std::string> out;
    for (const Message& m : events)
      if (m.key == id) out.push_back(m.type);
    return out;
  }
  /// Polls until `n` events for `id` have arrived; returns their types.
  std::vector<std::string> await_types(const std::string& id, size_t n) {
    const bool ok = eventually([&] {
      events_endpoint->poll(std::chrono::milliseconds(1));
      return event_types(id).size() >= n;
    });
    REQUIRE_MESSAGE(ok,
                    "expected " << n << " events for " << id << ", got " << event_types(id).size());
    return event_types(id);
  }
  /// The reservation service's own events for `id` (not the participants').
  std::vector<Json> reservation_events(const std::string& id) {
    std::vector<Json> out;
    for (const Message& m : events)
      if (m.key == id && (m.type == "ReservationPlaced" || m.type == "ReservationStatusChanged" ||
                          m.type == "ReservationCanceled"))
        out.push_back(Json::parse(m.payload));
    return out;
  }
  std::vector<Json> await_events(const std::string& id, size_t n) {
    const bool ok = eventually([&] {
      events_endpoint->poll(std::chrono::milliseconds(1));
      return reservation_events(id).size() >= n;
    });
    REQUIRE_MESSAGE(
        ok, "expected " << n << " events for " << id << ", got " << reservation_events(id).size());
    return reservation_events(id);
  }

  std::atomic<int64_t> now{kNow};  // the reservation service's clock
  std::function<void(Options&)> tweak_orchestrator;  // before each open_reservation
  reservation::Options ro;
  TempDir inv_dir, pay_dir, orch_dir;
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(std::make_shared<SystemClock>(), 11);
  std::unique_ptr<Transport> events_endpoint = bus->connect("events");
  std::vector<Message> events;
  std::map<std::string, std::string> accepted_as;  // booking id -> status in its 202
  std::atomic<double> chance{0.99};  // >= decline_rate: approve
  std::unique_ptr<Participant> inventory, payment;
  service::Router inv_router, pay_router;
  std::unique_ptr<Orchestrator> orch;
  std::unique_ptr<service::HttpServer> server;
  std::unique_ptr<service::HttpClient> http;
};

// One night, one room at the seed's price (5000 KRW): amount 5000.
Json booking(const std::string& place, const std::string& user, int64_t amount = 5000) {
  return {{"placeId", place},         {"userId", user}, {"checkIn", "2030-05-01"},
          {"checkOut", "2030-05-02"}, {"qty", 1},       {"amount", amount}};
}

TEST_CASE("a booking is confirmed; the same night again is rejected without a charge") {
  World w;
  w.add_place("1", 1);

  const std::string id = w.book(booking("1", "u1"));
  const Json r = w.settle(id);
  CHECK_MESSAGE(r["status"] == "CONFIRMED", r.dump());
  CHECK(r["id"] == id);
  CHECK(r["placeId"] == "1");
  CHECK(r["userId"] == "u1");
  CHECK(r["checkIn"] == "2030-05-01");
  CHECK(r["checkOut"] == "2030-05-02");
  CHECK(r["qty"] == 1);
  CHECK(r["amount"] == 5000);
  CHECK(r["amount"].is_number_integer());
  CHECK(r["currency"] == "KRW");
  CHECK_FALSE(r.contains("reason"));
  REQUIRE(r["steps"].size() == 3);
  CHECK(r["steps"][0] == Json{{"name", "reserve"}, {"status", "SUCCEEDED"}});
  CHECK(r["steps"][1]["name"] == "pay");
  CHECK(r["steps"][2]["name"] == "confirm");
  CHECK(w.payments_of(id).size() == 1);
  const Json night = w.availability("1", "2030-05-01", "2030-05-02");
  CHECK(night[0]["confirmed"] == 1);
  CHECK(night[0]["free"] == 0);

  // Events: ReservationPlaced (PENDING) ... ReservationStatusChanged (CONFIRMED).
  const std::vector<Json> ev = w.await_events(id, 2);
  REQUIRE(ev.size() == 2);
  CHECK(ev[0] == Json{{"eventType", "ReservationPlaced"},
                      {"timestamp", kNow},
                      {"orderId", id},
                      {"placeId", "1"},
                      {"usrId", "u1"},
                      {"strDt", "2030-05-01"},
                      {"endDt", "2030-05-02"},
                      {"qty", 1},
                      {"amount", 5000},
                      {"status", "PENDING"},
                      {"currency", "KRW"}});
  CHECK(ev[1]["eventType"] == "ReservationStatusChanged");
  CHECK(ev[1]["status"] == "CONFIRMED");
  CHECK(ev[1]["orderId"] == id);

  CHECK(w.post("/reservations/r-nope/cancel", Json::object()).status == 404);

  // Same night, no room left: rejected, nothing charged.
  const std::string second = w.book(booking("1", "u2"));
  const Json r2 = w.settle(second);
  CHECK_MESSAGE(r2["status"] == "REJECTED", r2.dump());
  REQUIRE(r2.contains("reason"));
  CHECK(r2["reason"].get<std::string>().find("no availability") != std::string::npos);
  CHECK(w.payments_of(second).empty());
  CHECK_FALSE(w.payment->get("payment/" + second)->has_value());
  const std::vector<Json> ev2 = w.await_events(second, 2);
  CHECK(ev2[1]["eventType"] == "ReservationCanceled");
  CHECK(ev2[1]["status"] == "REJECTED");
  // A rejected booking cannot be cancelled.
  ClientResponse c = w.post("/reservations/" + second + "/cancel", Json::object());
  CHECK_MESSAGE(c.status == 409, c.body);
  CHECK(c.header("Content-Type") == "application/problem+json");

  // Listing by user.
  const Json mine = w.get_json("/reservations?userId=u1");
  REQUIRE(mine.size() == 1);
  CHECK(mine[0]["id"] == id);
  CHECK(w.get_json("/reservations?userId=u2").size() == 1);
  CHECK(w.get_json("/reservations?userId=nobody").empty());
  CHECK(w.get_json("/reservations").empty());  // without userId: the caller's (an admin's) own
  CHECK(w.get("/reservations?userId=").status == 400);
  CHECK(w.get("/reservations/r-unknown").status == 404);
}

TEST_CASE("a booking taken while the inventory is away answers PENDING and confirms later") {
  World w;
  w.add_place("4", 1);
  w.inventory->stop();  // the owner side is down: the reserve command waits
  ClientResponse r = w.post("/reservations", booking("4", "u4"));
  REQUIRE_MESSAGE(r.status == 202, r.body);
  const Json accepted = Json::parse(r.body);
  CHECK(accepted["status"] == "PENDING");
  const std::string id = accepted["id"];
  CHECK(w.get_json("/reservations/" + id)["status"] == "PENDING");
  w.inventory->start_background();
  CHECK(w.settle(id)["status"] == "CONFIRMED");
}

TEST_CASE("a declined payment rejects the booking and releases the rooms") {
  World w;
  w.add_place("2", 1);
  w.chance = 0.0;  // < decline_rate: declined
  const std::string id = w.book(booking("2", "u3"));
  const Json r = w.settle(id);
  CHECK_MESSAGE(r["status"] == "REJECTED", r.dump());
  CHECK(r["reason"].get<std::string>().find("declined") != std::string::npos);
  CHECK(r["steps"][0]["status"] == "COMPENSATED");
  const Json night = w.availability("2", "2030-05-01", "2030-05-02");
  CHECK(night[0]["held"] == 0);
  CHECK(night[0]["confirmed"] == 0);
  CHECK(night[0]["free"] == 1);
  CHECK(w.payments_of(id).empty());

  // The room is free again: the next booking goes through.
  w.chance = 0.99;
  const std::string again = w.book(booking("2", "u4"));
  CHECK(w.settle(again)["status"] == "CONFIRMED");
}

// The saga admin API (saga/service/admin_routes.h, docs/admin.md): an
// operator lists sagas with filters a page at a time, reads one, and
// compensates or aborts one with a reason; guests may not; bad input is 400.
TEST_CASE("the admin API lists, reads and acts on sagas: admins only, with a reason") {
  World w;
  w.add_place("5", 3);
  const std::string done = w.book(booking("5", "u5"));
  CHECK(w.settle(done)["status"] == "CONFIRMED");
  w.inventory->stop();  // the next two wait on their reserve
  const std::string waiting = w.book(booking("5", "u6"));
  const std::string stopped = w.book(booking("5", "u7"));

  auto list = [&](const std::string& query) {
    std::vector<std::string> ids;
    std::string token;
    for (int page = 0; page < 10; ++page) {
      ClientResponse r = w.get("/admin/sagas?" + query + (token.empty() ? "" : "&pageToken=" + token));
      REQUIRE_MESSAGE(r.status == 200, r.body);
      for (const Json& s : Json::parse(r.body)) ids.push_back(s["id"]);
      auto next = r.header("Next-Page-Token");
      if (!next) break;
      token = std::string(*next);
    }
    return ids;
  };
  // Oldest first (the two waiting ones may share a millisecond: then by id).
  std::vector<std::string> later = {waiting, stopped};
  std::sort(later.begin(), later.end());
  auto ordered = [&](std::vector<std::string> ids) {
    if (ids.size() == 3) std::sort(ids.begin() + 1, ids.end());
    return ids;
  };
  CHECK(ordered(list("type=booking&limit=1")) == std::vector<std::string>{done, later[0], later[1]});
  CHECK(list("type=booking&state=RUNNING&limit=2").size() == 2);
  CHECK(ordered(list("type=booking&limit=2")) == std::vector<std::string>{done, later[0], later[1]});
  CHECK(list("state=COMPLETED") == std::vector<std::string>{done});
  CHECK(list("type=cancellation").empty());

  const Json one = w.get_json("/admin/sagas/" + waiting);
  CHECK(one["state"] == "RUNNING");
  CHECK(one["type"] == "booking");
  CHECK(one["steps"][0]["name"] == "reserve");
  CHECK(one["steps"][0]["status"] == "RUNNING");
  CHECK(one["steps"][0]["attempts"].get<int>() >= 1);
  CHECK(one["createdMs"].get<int64_t>() > 0);
  CHECK(one["awaiting"] == "inventory");
  REQUIRE(one["timeline"].size() == 1);
  CHECK(one["timeline"][0]["event"] == "STARTED");
  CHECK(one["timeline"][0]["stepName"] == "reserve");
  CHECK(one["timeline"][0]["commandId"] == waiting + "/0/a");
  CHECK(one["timelineDropped"] == 0);
  const Json listed = w.get_json("/admin/sagas?state=RUNNING");
  REQUIRE(listed.size() == 2);
  CHECK_FALSE(listed[0].contains("timeline"));  // a list is light; one saga has it all
  CHECK(list("awaiting=inventory").size() == 2);
  CHECK(list("awaiting=payment").empty());

  // Counts of the sagas in flight, by state, step and awaited participant.
  const Json counts = w.get_json("/admin/saga-counts");
  CHECK(counts["byState"] == Json{{"RUNNING", 2}, {"COMPENSATING", 0}, {"FAILED", 0}});
  CHECK(counts["bySteps"] ==
        Json::array({{{"type", "booking"}, {"step", "reserve"}, {"state", "RUNNING"}, {"count", 2}}}));
  CHECK(counts["byParticipant"] == Json::array({{{"participant", "inventory"}, {"count", 2}}}));

  // Acting needs a reason; the answer is the saga after the action.
  ClientResponse r = w.post("/admin/sagas/" + stopped + "/abort", Json::object());
  CHECK_MESSAGE(r.status == 400, r.body);
  CHECK(r.body.find("reason") != std::string::npos);
  r = w.post("/admin/sagas/" + stopped + "/abort", {{"reason", "guest called: duplicate"}});
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(Json::parse(r.body)["state"] == "ABORTED");
  // The action is in the saga's timeline with who and why.
  const Json aborted = Json::parse(r.body)["timeline"].back();
  CHECK(aborted["event"] == "OPERATOR_ABORT");
  CHECK(aborted["actor"] == "test-admin");
  CHECK(aborted["reason"] == "guest called: duplicate");
  r = w.post("/admin/sagas/" + waiting + "/compensate", {{"reason", "room closed for repairs"}});
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(Json::parse(r.body)["state"] == "COMPENSATING");
  w.inventory->start_background();  // the release goes through
  REQUIRE(eventually([&] { return w.get_json("/admin/sagas/" + waiting)["state"] == "COMPENSATED"; }));
  CHECK(w.settle(waiting)["status"] == "REJECTED");
  // Acting on a saga in the wrong state is 409, on an unknown one 404.
  r = w.post("/admin/sagas/" + done + "/retry", {{"reason", "try it"}});
  CHECK_MESSAGE(r.status == 409, r.body);
  r = w.post("/admin/sagas/" + done + "/skip", {{"reason", "refunded by hand"}});
  CHECK_MESSAGE(r.status == 409, r.body);  // only a failed compensation can be skipped
  r = w.post("/admin/sagas/" + done + "/skip", {{"reason", 5}});
  CHECK_MESSAGE(r.status == 400, r.body);
  r = w.post("/admin/sagas/" + stopped + "/abort", {{"reason", "again"}});
  CHECK_MESSAGE(r.status == 409, r.body);
  CHECK(w.get("/admin/sagas/no-such-saga").status == 404);
  r = w.post("/admin/sagas/no-such-saga/compensate", {{"reason", "x"}});
  CHECK(r.status == 404);

  // Bad queries say what is wrong.
  for (const char* query : {"state=SLEEPING", "limit=0", "limit=1001", "limit=x",
                            "createdFrom=-1", "createdTo=yesterday", "type=", "pageToken=zz",
                            "awaiting="}) {
    ClientResponse bad = w.get(std::string("/admin/sagas?") + query);
    CHECK_MESSAGE(bad.status == 400, query << " -> " << bad.status << " " << bad.body);
  }
  // The creation window.
  const int64_t created = one["createdMs"];
  const std::vector<std::string> from = list("type=booking&createdFrom=" + std::to_string(created));
  CHECK(std::count(from.begin(), from.end(), waiting) == 1);
  CHECK(std::count(from.begin(), from.end(), done) == 0);
  CHECK(list("type=booking&createdTo=" + std::to_string(created)) == std::vector<std::string>{done});

  // Guests: 403 on every admin route.
  auto guest = testing::client_as(w.server->port(), testing::guest_identity("u5"));
  CHECK(guest->get("/admin/sagas")->status == 403);
  CHECK(guest->get("/admin/sagas/" + done)->status == 403);
  CHECK(guest->post_json("/admin/sagas/" + done + "/abort", {{"reason", "mine"}})->status == 403);
  CHECK(guest->post_json("/admin/sagas/" + done + "/skip", {{"reason", "mine"}})->status == 403);
  CHECK(guest->get("/admin/saga-counts")->status == 403);
}

TEST_CASE("the seed's walkthrough: stock 1, two bookings, events in the seed's order") {
  World w;
  w.add_place("1", 1);
  // As httpie sends it: every value a string, dates as YYYYMMDD.
  const Json seed = {{"placeNm", "test01"}, {"status", "예약처리"}, {"usrId", "2"},
                     {"strDt", "20240221"}, {"endDt", "20240222"},  {"qty", "1"},
                     {"amount", "5000"},    {"placeId", "1"}};
  ClientResponse created = w.post("/accommodations", seed);
  REQUIRE_MESSAGE(created.status == 201, created.body);
  const Json first = Json::parse(created.body);
  const std::string id = first["id"];
  CHECK(created.header("Location") == "/accommodations/" + id);
  CHECK(first["strDt"] == "2024-02-21");  // a date, not epoch milliseconds
  CHECK(first["endDt"] == "2024-02-22");
  CHECK(first["qty"] == 1);
  CHECK(first["amount"] == 5000.0);
  // The status when answered: PENDING, or already the outcome.
  CHECK_MESSAGE((first["status"] == "PENDING" || first["status"] == "CONFIRMED"), first.dump());
  const Json r = w.settle(id);
  CHECK_MESSAGE(r["status"] == "CONFIRMED", r.dump());
  CHECK(r["placeNm"] == "test01");
  CHECK(w.get_json("/accommodations/" + id)["status"] == "CONFIRMED");
  CHECK(w.await_types(id, 4) == std::vector<std::string>{"ReservationPlaced", "PaymentApproved",
                                                         "ReservationConfirmed",
                                                         "ReservationStatusChanged"});

  Json again = seed;
  again["usrId"] = "33";
  created = w.post("/accommodations", again);
  REQUIRE_MESSAGE(created.status == 201, created.body);
  const std::string second = Json::parse(created.body)["id"];
  const Json r2 = w.settle(second);
  CHECK_MESSAGE(r2["status"] == "REJECTED", r2.dump());
  CHECK(r2["reason"].get<std::string>().find("no availability on 2024-02-21") != std::string::npos);
  CHECK(w.await_types(second, 5) == std::vector<std::string>{"ReservationPlaced", "PaymentApproved",
                                                             "ReservationCancelConfirmed",
                                                             "PaymentCancelApproved",
                                                             "ReservationCanceled"});
  // Charged, then refunded: nobody pays in the end.
  const Json pays = w.payments_of(second);
  REQUIRE(pays.size() == 1);
  CHECK(pays[0]["status"] == "REFUNDED");
  const Json night = w.availability("1", "2024-02-21", "2024-02-22");
  CHECK(night[0]["confirmed"] == 1);
  CHECK(night[0]["held"] == 0);

  // The seed's shape is checked as strictly as ours.
  Json bad = seed;
  bad["strDt"] = "2024-02-30";
  CHECK(w.post("/accommodations", bad).status == 400);
  bad = seed;
  bad["qty"] = "one";
  CHECK(w.post("/accommodations", bad).status == 400);
  bad = seed;
  bad["endDt"] = "20240221";
  CHECK(w.post("/accommodations", bad).status == 400);
}

TEST_CASE("a confirmed booking cancelled by its customer: rooms released, money refunded") {
  World w;
  w.add_place("5", 1);
  const std::string id = w.book(booking("5", "u5"));
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");

  ClientResponse c = w.post("/reservations/" + id + "/cancel", Json::object());
  REQUIRE_MESSAGE(c.status == 202, c.body);
  const std::string first_status = Json::parse(c.body)["status"];
  CHECK((first_status == "CANCELLING" || first_status == "CANCELLED"));
  Json r;
  REQUIRE(eventually([&] {
    r = w.get_json("/reservations/" + id);
    return r["status"] == "CANCELLED";
  }));
  CHECK(r["steps"].size() == 5);  // reserve, pay, confirm, cancel-release, cancel-refund
  const Json pays = w.payments_of(id);
  REQUIRE(pays.size() == 1);
  CHECK(pays[0]["status"] == "REFUNDED");
  const Json night = w.availability("5", "2030-05-01", "2030-05-02");
  CHECK(night[0]["confirmed"] == 0);
  CHECK(night[0]["free"] == 1);
  const std::vector<std::string> types = w.await_types(id, 8);
  CHECK(std::vector<std::string>(types.begin() + 4, types.end()) ==
        std::vector<std::string>{"ReservationCancelRequested", "ReservationCancelConfirmed",
                                 "PaymentCancelApproved", "ReservationCanceled"});
  CHECK(Json::parse(w.events.back().payload)["status"] == "CANCELLED");

  // Cancelling again changes nothing; a cancelled booking stays cancelled.
  c = w.post("/reservations/" + id + "/cancel", Json::object());
  CHECK_MESSAGE(c.status == 202, c.body);
  CHECK(Json::parse(c.body)["status"] == "CANCELLED");
  CHECK(w.payments_of(id)[0]["status"] == "REFUNDED");
  // The room can be booked again.
  CHECK(w.settle(w.book(booking("5", "u6")))["status"] == "CONFIRMED");
}

TEST_CASE("a confirmed booking outlives its saga: read, listed, replayed and cancelled from its record") {
  World w;
  w.add_place("r", 2);
  w.stop_reservation();
  w.tweak_orchestrator = [](Options& o) {  // sagas go 50 ms after they finish
    o.retention = Duration{50};
    o.retention_interval = Duration{20};
  };
  w.open_reservation();
  ClientResponse made = w.post_keyed("/reservations", "k-1", booking("r", "u7"));
  REQUIRE_MESSAGE(made.status == 202, made.body);
  const std::string id = Json::parse(made.body)["id"];
  const Json confirmed = w.settle(id);
  REQUIRE(confirmed["status"] == "CONFIRMED");
  REQUIRE(eventually([&] { return w.orch->get(id).status().code() == StatusCode::kNotFound; }));

  Json r = w.get_json("/reservations/" + id);
  CHECK(r["status"] == "CONFIRMED");
  CHECK(r["amount"] == confirmed["amount"]);
  CHECK(r["steps"] == confirmed["steps"]);
  REQUIRE(r["history"].size() == 2);
  CHECK(r["history"][0]["status"] == "PENDING");
  CHECK(r["history"][1]["status"] == "CONFIRMED");
  CHECK(r["history"][0]["atMs"] <= r["history"][1]["atMs"]);
  const Json listed = w.get_json("/reservations?userId=u7");
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["id"] == id);
  ClientResponse replay = w.post_keyed("/reservations", "k-1", booking("r", "u7"));
  CHECK_MESSAGE(replay.status == 202, replay.body);
  CHECK(Json::parse(replay.body)["id"] == id);
  CHECK(Json::parse(replay.body)["status"] == "CONFIRMED");

  ClientResponse c = w.post("/reservations/" + id + "/cancel", Json::object());
  REQUIRE_MESSAGE(c.status == 202, c.body);
  REQUIRE(eventually([&] {
    r = w.get_json("/reservations/" + id);
    return r["status"] == "CANCELLED";
  }));
  CHECK(r["refundAmount"] == confirmed["amount"]);
  CHECK(r["steps"].size() == 5);
  std::vector<std::string> history;
  for (const Json& h : r["history"]) history.push_back(h["status"]);
  CHECK(history == std::vector<std::string>{"PENDING", "CONFIRMED", "CANCELLING", "CANCELLED"});
  CHECK(w.payments_of(id)[0]["status"] == "REFUNDED");
  // Its cancellation's saga goes too; the record stays, and says so after a restart.
  REQUIRE(eventually([&] {
    return w.orch->get(reservation::cancellation_id(*w.orch, id)).status().code() ==
           StatusCode::kNotFound;
  }));
  w.stop_reservation();
  w.open_reservation();
  CHECK(w.get_json("/reservations/" + id)["status"] == "CANCELLED");
  c = w.post("/reservations/" + id + "/cancel", Json::object());
  CHECK_MESSAGE(c.status == 202, c.body);
  CHECK(Json::parse(c.body)["status"] == "CANCELLED");
}

TEST_CASE("a booking's records go at their retention after its check-out") {
  World w;
  w.add_place("q", 2);
  w.stop_reservation();
  w.ro.booking_retention = std::chrono::milliseconds(0);  // gone once its check-out date began
  w.tweak_orchestrator = [](Options& o) {
    o.retention = Duration{50};
    o.retention_interval = Duration{20};
  };
  w.open_reservation();
  const std::string id = w.book(booking("q", "u8"));  // checks out 2030-05-02: kept until then
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");
  auto record = w.orch->record(id, "booking/" + id);
  REQUIRE(record.ok());
  REQUIRE(record->has_value());
  using namespace std::chrono;
  CHECK((*record)->expires_ms ==
        duration_cast<milliseconds>(sys_days(year(2030) / May / 2).time_since_epoch()).count());
}

// Bookings made before bookings had records: their records are written from
// their sagas when the service starts (a store whose records are removed
// stands in for one of an older version).
TEST_CASE("bookings made before records get theirs from their sagas when the service starts") {
  World w;
  w.add_place("o", 3);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    w.now += 1;
    ClientResponse r = w.post_keyed("/reservations", "old-" + std::to_string(i), booking("o", "u9"));
    REQUIRE_MESSAGE(r.status == 202, r.body);
    ids.push_back(Json::parse(r.body)["id"]);
  }
  for (const std::string& id : ids) REQUIRE(w.settle(id)["status"] == "CONFIRMED");
  ClientResponse c = w.post("/reservations/" + ids[0] + "/cancel", Json::object());
  REQUIRE(c.status == 202);
  REQUIRE(eventually([&] { return w.get_json("/reservations/" + ids[0])["status"] == "CANCELLED"; }));
  w.stop_reservation();
  {  // No records, as an older version left its store.
    auto store = internal::Store::open(w.orch_dir.path().string(), internal::kOrchestratorFamilies,
                                       false, {0, 1});
    REQUIRE_MESSAGE(store.ok(), store.status().to_string());
    internal::Batch drop;
    auto* index = (*store)->cf(4);
    auto it = (*store)->iterator(index);
    size_t dropped = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      if (k.size() > 2 && (k[2] == 'r' || k[2] == 'e')) {
        drop.del(index, std::string_view(k.data(), k.size()));
        ++dropped;
      }
    }
    REQUIRE(dropped > 0);
    REQUIRE((*store)->write(drop).ok());
  }
  w.open_reservation();
  for (const std::string& id : ids) {
    auto r = w.orch->record(id, "booking/" + id);
    REQUIRE(r.ok());
    CHECK_MESSAGE(r->has_value(), id);
  }
  const Json listed = w.get_json("/reservations?userId=u9");
  REQUIRE(listed.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(listed[i]["id"] == ids[i]);
  CHECK(listed[0]["status"] == "CANCELLED");
  CHECK(w.get_json("/reservations/" + ids[1])["status"] == "CONFIRMED");
  ClientResponse replay = w.post_keyed("/reservations", "old-2", booking("o", "u9"));
  CHECK_MESSAGE(replay.status == 202, replay.body);
  CHECK(Json::parse(replay.body)["id"] == ids[2]);
  CHECK(w.post_keyed("/reservations", "old-2", booking("o", "u9", 1)).status == 422);
  // Cancelled through its record's new cancellation.
  c = w.post("/reservations/" + ids[1] + "/cancel", Json::object());
  REQUIRE_MESSAGE(c.status == 202, c.body);
  REQUIRE(eventually([&] { return w.get_json("/reservations/" + ids[1])["status"] == "CANCELLED"; }));
}

// 2030-05-01 15:00 UTC, when a stay of booking() begins under the default policy.
int64_t stay_begins_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>((sys_days(year(2030) / May / 1) + hours(15)).time_since_epoch())
      .count();
}

TEST_CASE("the cancellation policy: all back in time, a share later, nothing once the stay began") {
  const Json data = booking("5", "u5", 999);
  const int64_t begins = stay_begins_ms();
  const int64_t hour = 3'600'000;
  reservation::CancellationPolicy policy;  // 48 h free, then 50 %, check-in 15:00 UTC
  auto at = [&](int64_t now) { return reservation::cancellation_refund(data, now, policy); };
  auto full = at(begins - 48 * hour);
  REQUIRE(full.ok());
  CHECK(full->amount == 999);
  CHECK(full->kind == "FULL");
  auto late = at(begins - 48 * hour + 1);
  REQUIRE(late.ok());
  CHECK(late->amount == 499);  // rounded down to a minor unit
  CHECK(late->kind == "PARTIAL");
  CHECK(at(begins - 1)->amount == 499);
  auto begun = at(begins);
  CHECK(begun.status().code() == StatusCode::kFailedPrecondition);
  CHECK(begun.status().message() == "its stay began on 2030-05-01 at 15:00 UTC");

  policy.late_refund_percent = 0;
  CHECK(at(begins - hour)->amount == 0);
  policy.late_refund_percent = 100;
  CHECK(at(begins - hour)->amount == 999);
  policy.late_refund_percent = 101;
  CHECK(at(begins - hour).status().code() == StatusCode::kInvalidArgument);
  policy = {};
  policy.check_in_time = std::chrono::hours(0);
  CHECK(at(begins - 15 * hour).status().code() == StatusCode::kFailedPrecondition);
  CHECK(at(begins - 15 * hour - 1)->kind == "PARTIAL");
}

TEST_CASE("the cancellation policy from the environment, with clear errors") {
  ::setenv("CANCEL_FREE_UNTIL", "7d", 1);
  auto bad = reservation::cancellation_policy_from_env();
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_MESSAGE(bad.status().message().find("CANCEL_FREE_UNTIL") != std::string::npos,
                bad.status().to_string());
  ::setenv("CANCEL_FREE_UNTIL", "24h", 1);
  ::setenv("CANCEL_LATE_REFUND_PERCENT", "101", 1);
  bad = reservation::cancellation_policy_from_env();
  CHECK_MESSAGE(bad.status().message().find("CANCEL_LATE_REFUND_PERCENT") != std::string::npos,
                bad.status().to_string());
  ::setenv("CANCEL_LATE_REFUND_PERCENT", "25", 1);
  ::setenv("CHECK_IN_TIME", "14h", 1);
  auto good = reservation::cancellation_policy_from_env();
  REQUIRE_MESSAGE(good.ok(), good.status().to_string());
  CHECK(good->free_until == std::chrono::hours(24));
  CHECK(good->late_refund_percent == 25);
  CHECK(good->check_in_time == std::chrono::hours(14));
  ::setenv("CHECK_IN_TIME", "24h", 1);
  CHECK(reservation::cancellation_policy_from_env().status().code() ==
        StatusCode::kInvalidArgument);
  for (const char* v : {"CANCEL_FREE_UNTIL", "CANCEL_LATE_REFUND_PERCENT", "CHECK_IN_TIME"})
    ::unsetenv(v);
}

TEST_CASE("a booking cancelled a day before its stay gets half back; once the stay began, 409") {
  World w;
  w.add_place("5", 1);
  const std::string id = w.book(booking("5", "u5"));  // 5000
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");

  w.now = stay_begins_ms();  // too late
  ClientResponse c = w.post("/reservations/" + id + "/cancel", Json::object());
  CHECK(c.status == 409);
  CHECK_MESSAGE(c.body.find("its stay began on 2030-05-01 at 15:00 UTC") != std::string::npos,
                c.body);
  CHECK(w.get_json("/reservations/" + id)["status"] == "CONFIRMED");
  CHECK(w.payments_of(id)[0]["status"] == "APPROVED");

  w.now = stay_begins_ms() - 24 * 3'600'000;  // inside the 48 h before it
  c = w.post("/reservations/" + id + "/cancel", Json::object());
  REQUIRE_MESSAGE(c.status == 202, c.body);
  CHECK(Json::parse(c.body)["refundAmount"] == 2500);
  Json r;
  REQUIRE(eventually([&] {
    r = w.get_json("/reservations/" + id);
    return r["status"] == "CANCELLED";
  }));
  CHECK(r["refundAmount"] == 2500);
  CHECK(r["refundKind"] == "PARTIAL");
  const Json pay = w.payments_of(id).at(0);
  CHECK(pay["status"] == "REFUNDED");
  CHECK(pay["amount"] == 5000);
  CHECK(pay["refundedAmount"] == 2500);
  w.await_types(id, 8);
  for (const Message& m : w.events) {
    if (m.key != id) continue;
    const Json p = Json::parse(m.payload);
    if (m.type == "PaymentCancelApproved") CHECK(p["amount"] == 2500);
    if (m.type == "ReservationCanceled") {
      CHECK(p["refundAmount"] == 2500);
      CHECK(p["refundKind"] == "PARTIAL");
    }
  }
}

// Two replicas of the reservation service over one MemoryBus, each with its
// own store and HTTP server, sharing the shards of "reservation.replies": a
// guest's requests may reach either and are answered as by one service
// (docs/replicas.md, "Routing").
TEST_CASE("two reservation replicas: a request to either is answered as by one service") {
  World w;
  w.stop_reservation();  // replaced by the replicas
  w.chance = 0.99;       // every payment approved
  w.add_place("9", 20);
  auto defs = reservation::definitions(w.ro);
  REQUIRE(defs.ok());
  const std::vector<uint16_t> ports = testing::pick_free_ports(2);
  REQUIRE(ports.size() == 2);
  TempDir dirs;
  struct Replica {
    std::unique_ptr<Orchestrator> orch;
    std::unique_ptr<service::HttpServer> server;
  };
  std::vector<Replica> replicas(2);
  for (size_t i = 0; i < 2; ++i) {
    Options o;
    o.name = reservation::kServiceName;
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.sync = false;
    o.shards = 4;
    o.changelog = true;
    o.replicas = true;
    o.advertised_address = "http://127.0.0.1:" + std::to_string(ports[i]);
    auto opened = Orchestrator::open(
        o, std::shared_ptr<Transport>(w.bus->connect("reservation-" + std::to_string(i))), *defs);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    replicas[i].orch = std::move(*opened);
    service::Router router;
    reservation::add_routes(router, *replicas[i].orch, w.ro);
    service::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = ports[i];
    so.threads = 4;
    replicas[i].server = std::make_unique<service::HttpServer>(so, std::move(router));
    REQUIRE(replicas[i].server->start().ok());
    replicas[i].orch->start_background();
  }
  // Both replicas own shards and agree, through the owners table, on where each is.
  auto agreed = [&](const std::string& key) {
    const ShardOwner a = replicas[0].orch->owner_of(key), b = replicas[1].orch->owner_of(key);
    const bool a_here = a.where == ShardOwner::Where::kHere;
    if (a_here == (b.where == ShardOwner::Where::kHere)) return false;
    const ShardOwner& other = a_here ? b : a;
    return other.where == ShardOwner::Where::kElsewhere &&
           other.address == "http://127.0.0.1:" + std::to_string(ports[a_here ? 0 : 1]);
  };
  REQUIRE(eventually([&] {
    for (int u = 0; u < 8; ++u)
      if (!agreed("u" + std::to_string(u))) return false;
    return replicas[0].orch->stats().shards_owned == 2 && replicas[1].orch->stats().shards_owned == 2;
  }));

  auto via = [&](size_t i, const std::string& user) {
    return testing::client_as(ports[i], testing::guest_identity(user));
  };
  std::map<std::string, std::string> booked;  // user -> booking id
  int sent_on = 0;  // bookings posted to the replica that does not drive them
  for (int u = 0; u < 8; ++u) {
    const std::string user = "u" + std::to_string(u);
    const size_t entry = static_cast<size_t>(u % 2);
    auto r = via(entry, user)->request("POST", "/reservations",
                                       {{"Content-Type", "application/json"},
                                        {"Idempotency-Key", "key-" + user}},
                                       booking("9", user).dump());
    REQUIRE(r.ok());
    REQUIRE_MESSAGE(r->status == 202, r->status << " " << r->body);
    const std::string id = Json::parse(r->body)["id"];
    booked[user] = id;
    // The booking lives in its user's shard, driven by one replica.
    CHECK(replicas[0].orch->owner_of(id).shard == replicas[0].orch->owner_of(user).shard);
    sent_on += replicas[entry].orch->owner_of(id).where != ShardOwner::Where::kHere;
    // The same key again, through the other replica: the same booking.
    auto again = via(1 - entry, user)->request("POST", "/reservations",
                                               {{"Content-Type", "application/json"},
                                                {"Idempotency-Key", "key-" + user}},
                                               booking("9", user).dump());
    REQUIRE(again.ok());
    CHECK_MESSAGE(again->status == 202, again->body);
    CHECK(Json::parse(again->body)["id"] == id);
  }
  CHECK(sent_on > 0);
  CHECK(sent_on < 8);

  for (const auto& [user, id] : booked) {
    for (size_t i = 0; i < 2; ++i) {  // read back through either replica
      auto client = via(i, user);
      Json last;
      REQUIRE(eventually([&] {
        auto r = client->get("/reservations/" + id);
        if (!r.ok() || r->status != 200) return false;
        last = Json::parse(r->body);
        return last["status"] == "CONFIRMED";
      }));
      auto list = client->get("/reservations");
      REQUIRE(list.ok());
      REQUIRE_MESSAGE(list->status == 200, list->body);
      const Json ids = Json::parse(list->body);
      REQUIRE(ids.size() == 1);
      CHECK(ids[0]["id"] == id);
    }
  }
  // Cancelled through the replica that does not drive it: the cancellation
  // runs where the booking does, and either replica reads it back.
  const std::string user = "u0";
  const std::string id = booked[user];
  const size_t other = replicas[0].orch->owner_of(id).where == ShardOwner::Where::kHere ? 1 : 0;
  auto c = via(other, user)->post_json("/reservations/" + id + "/cancel", Json::object());
  REQUIRE(c.ok());
  REQUIRE_MESSAGE(c->status == 202, c->body);
  CHECK(replicas[1 - other].orch->owner_of(reservation::cancellation_id(*replicas[1 - other].orch, id))
            .where == ShardOwner::Where::kHere);
  REQUIRE(eventually([&] {
    auto r = via(other, user)->get("/reservations/" + id);
    return r.ok() && r->status == 200 && Json::parse(r->body)["status"] == "CANCELLED";
  }));
  CHECK(w.payments_of(id)[0]["status"] == "REFUNDED");

  // The admin API through either replica: the list gathers both replicas'
  // shards, pages of 3 cover every booking once; a saga reads from either.
  std::set<std::string> all_booked;
  for (const auto& [u, b] : booked) all_booked.insert(b);
  for (size_t i = 0; i < 2; ++i) {
    auto admin = testing::client_as(ports[i], testing::admin_identity());
    std::vector<std::string> listed;
    std::string token;
    for (int page = 0; page < 10; ++page) {
      auto r = admin->get("/admin/sagas?type=booking&limit=3" +
                          (token.empty() ? std::string() : "&pageToken=" + token));
      REQUIRE(r.ok());
      REQUIRE_MESSAGE(r->status == 200, r->body);
      const Json items = Json::parse(r->body);
      CHECK(items.size() <= 3);
      for (const Json& v : items) listed.push_back(v["id"]);
      auto next = r->header("Next-Page-Token");
      if (!next) break;
      token = std::string(*next);
    }
    CHECK_MESSAGE(listed.size() == all_booked.size(), "through replica " << i);
    CHECK(std::set<std::string>(listed.begin(), listed.end()) == all_booked);
    for (const auto& [u, b] : booked) {
      auto r = admin->get("/admin/sagas/" + b);
      REQUIRE(r.ok());
      REQUIRE_MESSAGE(r->status == 200, r->body);
      CHECK(Json::parse(r->body)["state"] == "COMPLETED");
    }
    auto counts = admin->get("/admin/saga-counts");
    REQUIRE(counts.ok());
    REQUIRE_MESSAGE(counts->status == 200, counts->body);
    CHECK(Json::parse(counts->body)["byState"] ==
          Json{{"RUNNING", 0}, {"COMPENSATING", 0}, {"FAILED", 0}});
  }
  for (auto& r : replicas) {
    r.server->stop();
    r.orch->stop();
  }
}

TEST_CASE("a guest books, reads, lists and cancels only as itself; others' bookings are 404") {
  World w;
  w.add_place("8", 2);
  auto alice = testing::client_as(w.server->port(), testing::guest_identity("alice"));
  auto bob = testing::client_as(w.server->port(), testing::guest_identity("bob"));

  // Booking as someone else is refused, whatever the body says.
  auto as_bob = alice->post_json("/reservations", booking("8", "bob"));
  REQUIRE(as_bob.ok());
  CHECK(as_bob->status == 403);
  CHECK(as_bob->header("Content-Type") == "application/problem+json");
  auto seed_as_bob = alice->post_json("/accommodations", {{"placeId", "8"},
                                                          {"usrId", "bob"},
                                                          {"strDt", "20300501"},
                                                          {"endDt", "20300502"},
                                                          {"qty", "1"},
                                                          {"amount", "10"}});
  REQUIRE(seed_as_bob.ok());
  CHECK(seed_as_bob->status == 403);
  CHECK(w.get_json("/reservations?userId=bob").empty());  // nothing recorded

  auto made = alice->post_json("/reservations", booking("8", "alice"));
  REQUIRE(made.ok());
  REQUIRE_MESSAGE(made->status == 202, made->body);
  const std::string id = Json::parse(made->body)["id"];
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");

  // Its customer sees it; another guest gets the very 404 of a missing id.
  CHECK(alice->get("/reservations/" + id)->status == 200);
  CHECK(alice->get("/accommodations/" + id)->status == 200);
  CHECK(Json::parse(alice->get("/reservations")->body).size() == 1);  // no userId: one's own
  for (const std::string& target : {"/reservations/" + id, "/accommodations/" + id}) {
    auto r = bob->get(target);
    REQUIRE(r.ok());
    CHECK(r->status == 404);
    CHECK(Json::parse(r->body)["detail"] == "reservation " + id + " not found");
  }
  CHECK(Json::parse(bob->get("/reservations/r-nope")->body)["detail"] ==
        "reservation r-nope not found");
  auto list = bob->get("/reservations?userId=alice");
  REQUIRE(list.ok());
  CHECK(list->status == 404);
  CHECK(list->body.find(id) == std::string::npos);
  CHECK(bob->get("/reservations")->body == "[]");

  // Bob cannot cancel it: 404, and the rooms and the money stay as they were.
  auto cancel = bob->post_json("/reservations/" + id + "/cancel", Json::object());
  REQUIRE(cancel.ok());
  CHECK(cancel->status == 404);
  CHECK(w.get_json("/reservations/" + id)["status"] == "CONFIRMED");
  CHECK(w.availability("8", "2030-05-01", "2030-05-02")[0]["confirmed"] == 1);
  CHECK(w.payments_of(id)[0]["status"] == "APPROVED");

  // Without identity headers nothing is served or changed.
  service::HttpClient anonymous("127.0.0.1", w.server->port());
  CHECK(anonymous.get("/reservations/" + id)->status == 401);
  CHECK(anonymous.get("/reservations?userId=alice")->status == 401);
  CHECK(anonymous.post_json("/reservations", booking("8", "alice"))->status == 401);
  CHECK(anonymous.post_json("/reservations/" + id + "/cancel", Json::object())->status == 401);

  // Alice cancels her own; an admin reads anyone's.
  auto own_cancel = alice->post_json("/reservations/" + id + "/cancel", Json::object());
  REQUIRE(own_cancel.ok());
  CHECK(own_cancel->status == 202);
  CHECK(eventually([&] { return w.get_json("/reservations/" + id)["status"] == "CANCELLED"; }));
}

TEST_CASE("the per-user list survives a restart of the reservation service") {
  World w;
  w.add_place("7", 3);
  const std::string a = w.book(booking("7", "alice"));
  const std::string b = w.book(booking("7", "bob"));
  const std::string c = w.book(booking("7", "alice"));
  for (const auto& id : {a, b, c}) REQUIRE(w.settle(id)["status"] == "CONFIRMED");
  w.stop_reservation();
  w.open_reservation();
  const Json alice = w.get_json("/reservations?userId=alice");
  std::vector<std::string> ids;
  for (const Json& r : alice) ids.push_back(r["id"]);
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> expected{a, c};
  std::sort(expected.begin(), expected.end());
  CHECK(ids == expected);
  CHECK(w.get_json("/reservations?userId=bob").size() == 1);
}

TEST_CASE("an unknown or unpriced place is refused 422; an unreachable inventory is 503") {
  std::atomic<int> mode{0};  // 0: priced, 1: unknown, 2: cannot ask, 3: no price
  World w([&mode](const std::string&) -> StatusOr<std::optional<reservation::PlaceInfo>> {
    if (mode == 2) return Status::unavailable("inventory unreachable");
    if (mode == 1) return std::optional<reservation::PlaceInfo>();
    if (mode == 3) return std::optional<reservation::PlaceInfo>(reservation::PlaceInfo{});
    return std::optional<reservation::PlaceInfo>(reservation::PlaceInfo{true, 5000, "KRW"});
  });
  w.add_place("9", 1);
  mode = 1;
  ClientResponse r = w.post("/reservations", booking("9", "u9"));
  CHECK_MESSAGE(r.status == 422, r.body);
  CHECK(r.header("Content-Type") == "application/problem+json");
  mode = 3;
  r = w.post("/reservations", booking("9", "u9"));
  CHECK_MESSAGE(r.status == 422, r.body);
  CHECK(r.body.find("no price") != std::string::npos);
  mode = 2;  // no price, no amount: refused, to be tried again
  for (const char* route : {"/reservations", "/accommodations"}) {
    r = w.post(route, std::string(route) == "/reservations"
                          ? booking("9", "u9")
                          : Json{{"placeId", "9"}, {"usrId", "u9"}, {"strDt", "20300501"},
                                 {"endDt", "20300502"}, {"qty", 1}});
    CHECK_MESSAGE(r.status == 503, route << " " << r.body);
    CHECK(r.header("Retry-After") == "5");
    CHECK(r.header("Content-Type") == "application/problem+json");
  }
  CHECK(w.get_json("/reservations?userId=u9").empty());  // nothing recorded
  ListQuery all;
  CHECK(w.orch->list(all)->items.empty());
  mode = 0;
  const std::string id = w.book(booking("9", "u9"));
  CHECK(w.settle(id)["status"] == "CONFIRMED");
}

TEST_CASE("the server prices a booking: nights x qty x the place's price; another amount is 422") {
  World w;
  w.add_place("p1", 10);
  // The owner (here an admin) sets 12345 KRW a night.
  service::Response set =
      w.call(w.inv_router, "PUT", "/places/p1/price", {{"amount", 12345}, {"currency", "KRW"}});
  REQUIRE_MESSAGE(set.status() == 200, set.body());
  Json three_nights = booking("p1", "u1");
  three_nights["checkOut"] = "2030-05-04";
  three_nights["qty"] = 2;
  SUBCASE("the right amount is charged as computed") {
    three_nights["amount"] = 3 * 2 * 12345;
    const std::string id = w.book(three_nights);
    const Json r = w.settle(id);
    CHECK(r["status"] == "CONFIRMED");
    CHECK(r["amount"] == 74070);
    CHECK(r["currency"] == "KRW");
    const Json pays = w.payments_of(id);
    REQUIRE(pays.size() == 1);
    CHECK(pays[0]["amount"] == 74070);
    CHECK(pays[0]["amount"].is_number_integer());
    CHECK(pays[0]["currency"] == "KRW");
  }
  SUBCASE("a tampered amount is refused 422 and nothing is charged") {
    for (int64_t amount : {int64_t{0}, int64_t{1}, int64_t{74069}, int64_t{74071}}) {
      three_nights["amount"] = amount;
      ClientResponse r = w.post("/reservations", three_nights);
      CHECK_MESSAGE(r.status == 422, amount << " " << r.body);
      CHECK(r.header("Content-Type") == "application/problem+json");
    }
    ListQuery all;
    CHECK(w.orch->list(all)->items.empty());
  }
  SUBCASE("a non-integer amount is 400") {
    for (const Json& amount : {Json(74070.0), Json(74070.5), Json("74070"), Json(true)}) {
      three_nights["amount"] = amount;
      CHECK_MESSAGE(w.post("/reservations", three_nights).status == 400, amount.dump());
    }
  }
  SUBCASE("the seed's route may leave the amount out; a wrong one is 422, a float 400") {
    Json seed = {{"placeId", "p1"},      {"usrId", "u1"}, {"strDt", "20300501"},
                 {"endDt", "20300504"}, {"qty", "2"},    {"placeNm", "x"}};
    ClientResponse r = w.post("/accommodations", seed);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    CHECK(Json::parse(r.body)["amount"] == 74070);
    CHECK(w.settle(Json::parse(r.body)["id"])["status"] == "CONFIRMED");
    seed["amount"] = "5000";
    CHECK(w.post("/accommodations", seed).status == 422);
    seed["amount"] = "74070.5";
    CHECK(w.post("/accommodations", seed).status == 400);
    seed["amount"] = "74070";
    CHECK(w.post("/accommodations", seed).status == 201);
  }
  SUBCASE("a changed price applies to the next booking") {
    REQUIRE(w.call(w.inv_router, "PUT", "/places/p1/price", {{"amount", 100}, {"currency", "KRW"}})
                .status() == 200);
    three_nights["amount"] = 600;
    CHECK(w.settle(w.book(three_nights))["amount"] == 600);
  }
}

TEST_CASE("reservation ids are 128 random bits: 32 hex digits, never derived from the key") {
  World w;
  w.add_place("6", 100);
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    auto r = w.http->request(
        "POST", "/reservations",
        {{"Content-Type", "application/json"}, {"Idempotency-Key", "same-key"}},
        booking("6", "user-" + std::to_string(i)).dump());
    REQUIRE(r.ok());
    REQUIRE_MESSAGE(r->status == 202, r->body);
    const std::string id = Json::parse(r->body)["id"];
    REQUIRE(id.size() == 2 + 32);
    CHECK(id.rfind("r-", 0) == 0);
    CHECK(id.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
    ids.insert(id);
  }
  CHECK(ids.size() == 20);
}

TEST_CASE("GET /reservations pages with limit and pageToken; a bad limit or token is 400") {
  World w;
  w.add_place("l", 100);
  std::vector<std::string> made;
  for (int i = 0; i < 5; ++i) {
    w.now += 1;  // oldest first; bookings of one millisecond come by id
    made.push_back(w.book(booking("l", "u1")));
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    ClientResponse r = w.get("/reservations?userId=u1&limit=2" +
                             (token.empty() ? std::string() : "&pageToken=" + token));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Json page = Json::parse(r.body);
    CHECK(page.size() <= 2);
    for (const Json& b : page) seen.push_back(b["id"]);
    token = std::string(r.header("Next-Page-Token").value_or(""));
    ++pages;
  } while (!token.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK_MESSAGE(seen == made, Json(seen).dump() << " vs " << Json(made).dump());  // oldest first, each once
  CHECK(w.get_json("/reservations?userId=u1").size() == 5);  // default limit 50
  for (const char* bad : {"limit=0", "limit=201", "limit=x", "limit=-1", "limit=", "pageToken=nope",
                          "pageToken="})
    CHECK_MESSAGE(w.get(std::string("/reservations?userId=u1&") + bad).status == 400, bad);
  CHECK(w.get("/reservations?userId=u1&limit=200").status == 200);
}

TEST_CASE("a request repeated with the same Idempotency-Key makes one booking") {
  World w;
  w.add_place("3", 5);
  auto post = [&](const std::string& key, const Json& body) {
    return w.post_keyed("/reservations", key, body);
  };
  ClientResponse first = post("k-1", booking("3", "u1"));
  REQUIRE_MESSAGE(first.status == 202, first.body);
  const std::string id = Json::parse(first.body)["id"];
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");
  ClientResponse again = post("k-1", booking("3", "u1"));
  CHECK(again.status == 202);
  CHECK(Json::parse(again.body) == Json{{"id", id}, {"status", "CONFIRMED"}});
  CHECK(w.payments_of(id).size() == 1);
  CHECK(w.get_json("/reservations?userId=u1").size() == 1);
  // The same key with another body: 422 problem+json, nothing new.
  Json changed = booking("3", "u1");
  changed["qty"] = 2;
  changed["amount"] = 10000;
  ClientResponse different = post("k-1", changed);
  CHECK_MESSAGE(different.status == 422, different.body);
  CHECK(different.header("Content-Type") == "application/problem+json");
  CHECK(w.get_json("/reservations?userId=u1").size() == 1);
  // The key is kept across a restart of the service.
  w.stop_reservation();
  w.open_reservation();
  CHECK(Json::parse(post("k-1", booking("3", "u1")).body)["id"] == id);
  CHECK(post("k-1", changed).status == 422);
  // Another user's key is another booking; a malformed key is refused.
  ClientResponse other = post("k-1", booking("3", "u2"));
  CHECK(other.status == 202);
  CHECK(Json::parse(other.body)["id"] != id);
  CHECK(post("bad/key", booking("3", "u1")).status == 400);
}

TEST_CASE("the seed's POST /accommodations admits an Idempotency-Key as POST /reservations does") {
  World w;
  w.add_place("s", 5);
  const Json seed = {{"placeNm", "test01"}, {"usrId", "u1"},  {"strDt", "20300501"},
                     {"endDt", "20300502"}, {"qty", "1"},     {"placeId", "s"}};
  ClientResponse first = w.post_keyed("/accommodations", "seed-1", seed);
  REQUIRE_MESSAGE(first.status == 201, first.body);
  const std::string id = Json::parse(first.body)["id"];
  REQUIRE(w.settle(id)["status"] == "CONFIRMED");
  // The same body (numbers as text or as numbers: one canonical request): the same booking.
  Json same = seed;
  same["qty"] = 1;
  ClientResponse again = w.post_keyed("/accommodations", "seed-1", same);
  CHECK_MESSAGE(again.status == 201, again.body);
  CHECK(Json::parse(again.body)["id"] == id);
  CHECK(Json::parse(again.body)["placeNm"] == "test01");
  // Another body, or the same key on the other booking route: 422, nothing new.
  Json other = seed;
  other["placeNm"] = "test02";
  CHECK(w.post_keyed("/accommodations", "seed-1", other).status == 422);
  CHECK(w.post_keyed("/reservations", "seed-1", booking("s", "u1")).status == 422);
  CHECK(w.get_json("/reservations?userId=u1").size() == 1);
  CHECK(w.payments_of(id).size() == 1);
  // A refused booking (unknown place) does not keep its key.
  Json unknown = seed;
  unknown["placeId"] = "nowhere";
  CHECK(w.post_keyed("/accommodations", "seed-2", unknown).status == 422);
  ClientResponse later = w.post_keyed("/accommodations", "seed-2", same);
  CHECK_MESSAGE(later.status == 201, later.body);
  CHECK(Json::parse(later.body)["id"] != id);
}

TEST_CASE("a key is claimed once: a claim in flight, then the store, answer it") {
  reservation::KeyClaims claims;
  using Keyed = reservation::KeyClaims::Keyed;
  std::map<std::string, Keyed> store;  // "<user>/<key>": each started booking's
  int reads = 0;
  auto stored = [&](const std::string& user,
                    const std::string& key) -> StatusOr<std::optional<Keyed>> {
    ++reads;
    auto it = store.find(user + "/" + key);
    if (it == store.end()) return std::optional<Keyed>();
    return std::optional<Keyed>(it->second);
  };
  auto first = claims.claim("u1", "k", "h1", "r-1", stored);
  REQUIRE(first.ok());
  CHECK(first->fresh);
  CHECK(first->id == "r-1");
  // In flight: the same key gets the claim, not a second booking, without a read.
  reads = 0;
  auto during = claims.claim("u1", "k", "h2", "r-2", stored);
  REQUIRE(during.ok());
  CHECK_FALSE(during->fresh);
  CHECK(during->id == "r-1");
  CHECK(during->request_hash == "h1");
  CHECK(reads == 0);
  // Another user's same key is theirs.
  auto other = claims.claim("u2", "k", "h1", "r-3", stored);
  REQUIRE(other.ok());
  CHECK(other->fresh);
  CHECK(claims.claims_for_test() == 2);
  // Started: the store answers from now on, and memory holds nothing of it.
  store["u1/k"] = {"r-1", "h1", false};
  claims.release("u1", "k");
  claims.release("u2", "k");  // not started: the key is free again
  CHECK(claims.claims_for_test() == 0);
  auto after = claims.claim("u1", "k", "h1", "r-4", stored);
  REQUIRE(after.ok());
  CHECK_FALSE(after->fresh);
  CHECK(after->id == "r-1");
  auto again = claims.claim("u2", "k", "h9", "r-5", stored);
  REQUIRE(again.ok());
  CHECK(again->fresh);
  CHECK(again->id == "r-5");
  // A store that cannot be read fails the claim (no second booking is guessed).
  auto broken = [](const std::string&, const std::string&) -> StatusOr<std::optional<Keyed>> {
    return Status::unavailable("store away");
  };
  CHECK(claims.claim("u3", "k", "h", "r-6", broken).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("an Idempotency-Key answers its booking from its record, also after a restart") {
  World w;
  w.add_place("b", 10);
  auto post = [&](const std::string& key, const Json& body) {
    return w.post_keyed("/reservations", key, body);
  };
  Json changed = booking("b", "u1");
  changed["qty"] = 2;
  changed["amount"] = 10000;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ClientResponse r = post("key-" + std::to_string(i), booking("b", "u1"));
    REQUIRE_MESSAGE(r.status == 202, r.body);
    ids.push_back(Json::parse(r.body)["id"]);
  }
  auto check_keys = [&] {
    for (int i = 0; i < 3; ++i) {
      const std::string key = "key-" + std::to_string(i);
      ClientResponse same = post(key, booking("b", "u1"));
      CHECK_MESSAGE(same.status == 202, same.body);
      CHECK(Json::parse(same.body)["id"] == ids[static_cast<size_t>(i)]);
      CHECK_MESSAGE(post(key, changed).status == 422, key);
    }
    CHECK(w.get_json("/reservations?userId=u1").size() == 3);
  };
  check_keys();
  for (const std::string& id : ids) CHECK(w.settle(id)["status"] == "CONFIRMED");
  w.stop_reservation();
  w.open_reservation();
  check_keys();
  for (const std::string& id : ids) CHECK(w.payments_of(id).size() == 1);
}

TEST_CASE("invalid bookings are refused with 400 problem+json") {
  World w;
  auto expect_400 = [&](const std::string& body, const std::string& what) {
    auto r = w.http->request("POST", "/reservations", {{"Content-Type", "application/json"}}, body);
    REQUIRE(r.ok());
    CHECK_MESSAGE(r->status == 400, what << ": " << r->status << " " << r->body);
    CHECK_MESSAGE(r->header("Content-Type") == "application/problem+json", what);
  };
  expect_400("{not json", "malformed JSON");
  expect_400("[]", "not an object");
  for (const char* field : {"placeId", "userId", "checkIn", "checkOut", "qty", "amount"}) {
    Json b = booking("1", "u1");
    b.erase(field);
    expect_400(b.dump(), std::string("missing ") + field);
  }
  Json b = booking("1", "u1");
  b["checkOut"] = "2030-05-01";
  expect_400(b.dump(), "checkOut == checkIn");
  b["checkOut"] = "2030-04-01";
  expect_400(b.dump(), "checkOut < checkIn");
  b = booking("1", "u1");
  b["checkIn"] = "2030-02-30";
  expect_400(b.dump(), "bad date");
  b["checkIn"] = "20300501";
  expect_400(b.dump(), "the seed's date format on our API");
  b["checkIn"] = 20300501;
  expect_400(b.dump(), "a date as a number");
  b = booking("1", "u1");
  b["checkOut"] = "2031-05-03";
  expect_400(b.dump(), "too long");
  b = booking("1", "u1");
  b["qty"] = 0;
  expect_400(b.dump(), "qty 0");
  b = booking("1", "u1", -1);
  expect_400(b.dump(), "negative amount");
  b["amount"] = 5000.0;
  expect_400(b.dump(), "a float amount, even a whole one");
  CHECK(w.get_json("/healthz")["status"] == "ok");
  CHECK(w.get("/readyz").status == 200);
  ClientResponse m = w.get("/metrics");
  CHECK(m.status == 200);
}

}  // namespace
}  // namespace saga
