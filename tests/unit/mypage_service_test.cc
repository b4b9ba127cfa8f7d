// The mypage read model (services/mypage): ReadModel directly, the EventRunner
// over a MemoryBus (a "producer" endpoint plays reservation, payment and
// inventory), and the HTTP API through HttpClient against an in-process server.
#include <doctest/doctest.h>

#include <algorithm>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <string>
#include <thread>
#include <vector>

#include "saga/clock.h"
#include "saga/memory_transport.h"
#include "saga/message.h"
#include "saga/mypage/mypage.h"
#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/eventually.h"
#include "support/identity.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using Json = nlohmann::json;
using mypage::ReadModel;

// An event as its producer sends it: payload = body + eventType + timestamp.
Message event(const std::string& msg_id, const std::string& reservation, const std::string& type,
              Json body, int64_t ts) {
  body["eventType"] = type;
  body["timestamp"] = ts;
  Message m;
  m.id = msg_id;
  m.kind = MessageKind::kEvent;
  m.type = type;
  m.destination = "reserveplace";
  m.key = reservation;
  m.saga_id = reservation;
  m.payload = body.dump();
  return m;
}

Json reservation_body(const std::string& id, const std::string& status) {
  return {{"orderId", id},         {"placeId", "p1"}, {"usrId", "u1"},    {"strDt", "2025-03-01"},
          {"endDt", "2025-03-03"}, {"qty", 2},        {"amount", 5000}, {"status", status}};
}

Message placed(const std::string& id, int64_t ts = 1000) {
  return event(id + "/placed", id, "ReservationPlaced", reservation_body(id, "PENDING"), ts);
}
Message confirmed(const std::string& id, int64_t ts = 4000) {
  return event(id + "/completed", id, "ReservationStatusChanged", reservation_body(id, "CONFIRMED"),
               ts);
}
Message canceled(const std::string& id, const std::string& status, int64_t ts = 5000) {
  return event(id + "/compensated", id, "ReservationCanceled", reservation_body(id, status), ts);
}
Message pay_approved(const std::string& id, int64_t ts = 2000) {
  return event("payment/" + id + "/e0", id, "PaymentApproved",
               {{"payId", "pay-" + id},
                {"orderId", id},
                {"usrId", "u1"},
                {"status", "APPROVED"},
                {"amount", 5000}},
               ts);
}
Message pay_refunded(const std::string& id, int64_t ts = 4500) {
  return event(
      "payment/" + id + "/e1", id, "PaymentCancelApproved",
      {{"payId", "pay-" + id}, {"orderId", id}, {"status", "REFUNDED"}, {"amount", 5000}}, ts);
}
Message rooms_confirmed(const std::string& id, int64_t ts = 3000) {
  return event("inventory/" + id + "/e0", id, "ReservationConfirmed",
               {{"placeId", "p1"}, {"orderId", id}, {"stock", 8}}, ts);
}
Message rooms_released(const std::string& id, int64_t ts = 4800) {
  return event("inventory/" + id + "/e1", id, "ReservationCancelConfirmed",
               {{"placeId", "p1"}, {"orderId", id}, {"stock", 10}}, ts);
}

// The row a fully confirmed booking converges to.
Json confirmed_row(const std::string& id, const Json& events) {
  return {{"id", id},
          {"userId", "u1"},
          {"placeId", "p1"},
          {"checkIn", "2025-03-01"},
          {"checkOut", "2025-03-03"},
          {"qty", 2},
          {"amount", 5000},
          {"status", "CONFIRMED"},
          {"payment", {{"status", "APPROVED"}, {"payId", "pay-" + id}}},
          {"rooms", {{"status", "CONFIRMED"}, {"stock", 8}}},
          {"events", events},
          {"updatedMs", 4000}};
}

std::unique_ptr<ReadModel> open_model(const testing::TempDir& dir) {
  auto m = ReadModel::open(dir.path().string());
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  return std::move(*m);
}

Json get_row(ReadModel& model, const std::string& id) {
  auto r = model.get(id);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return *r;
}

void apply_all(ReadModel& model, const std::vector<Message>& events) {
  for (const Message& e : events) REQUIRE_MESSAGE(model.apply(e).ok(), e.id);
}

TEST_CASE("happy path in order builds the confirmed row") {
  testing::TempDir dir;
  auto model = open_model(dir);
  apply_all(*model, {placed("r1"), pay_approved("r1"), rooms_confirmed("r1"), confirmed("r1")});
  CHECK(get_row(*model, "r1") ==
        confirmed_row("r1", {"ReservationPlaced", "PaymentApproved", "ReservationConfirmed",
                             "ReservationStatusChanged"}));
  const mypage::ReadModelStats s = model->stats();
  CHECK(s.applied == 4);
  CHECK(s.duplicates == 0);
  CHECK(s.unknown_types == 0);
  CHECK(s.store_keys >= 4 + 1 + 1);  // a duplicate mark per event, the row, the user's index entry
  CHECK(s.store_bytes > 0);
  auto list = model->list_by_user("u1");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK((*list)[0]["id"] == "r1");
}

TEST_CASE("a compensated booking ends REJECTED, refunded and released") {
  testing::TempDir dir;
  auto model = open_model(dir);
  apply_all(*model, {placed("r2"), pay_approved("r2"), pay_refunded("r2"), rooms_released("r2"),
                     canceled("r2", "REJECTED")});
  const Json row = get_row(*model, "r2");
  CHECK(row["status"] == "REJECTED");
  CHECK(row["payment"] ==
        Json{{"status", "REFUNDED"}, {"payId", "pay-r2"}, {"refundedAmount", 5000}});
  CHECK(row["amount"] == 5000);  // the booking's, not taken from the refund
  CHECK(row["rooms"] == Json{{"status", "RELEASED"}, {"stock", 10}});
  CHECK(row["events"] == Json{"ReservationPlaced", "PaymentApproved", "PaymentCancelApproved",
                              "ReservationCancelConfirmed", "ReservationCanceled"});
  CHECK(row["updatedMs"] == 5000);
}

TEST_CASE("out-of-order arrival converges to the same row") {
  testing::TempDir dir;
  auto model = open_model(dir);
  // Payment first: the row exists at once, with the user from the payment.
  REQUIRE(model->apply(pay_approved("r3")).ok());
  Json early = get_row(*model, "r3");
  CHECK(early["status"] == "PENDING");
  CHECK(early["userId"] == "u1");
  CHECK_FALSE(early.contains("checkIn"));
  auto list = model->list_by_user("u1");
  REQUIRE(list.ok());
  CHECK(list->size() == 1);
  apply_all(*model, {confirmed("r3"), rooms_confirmed("r3"), placed("r3")});
  CHECK(get_row(*model, "r3") ==
        confirmed_row("r3", {"PaymentApproved", "ReservationStatusChanged", "ReservationConfirmed",
                             "ReservationPlaced"}));
}

TEST_CASE("duplicates are dropped and statuses never move down") {
  testing::TempDir dir;
  auto model = open_model(dir);
  apply_all(*model,
            {placed("r4"), canceled("r4", "CANCELLED"), pay_refunded("r4"), rooms_released("r4")});
  const Json before = get_row(*model, "r4");
  // Late lower-ranked events: PENDING/CONFIRMED after CANCELLED, APPROVED after
  // REFUNDED, CONFIRMED rooms after RELEASED.
  apply_all(*model, {confirmed("r4"), pay_approved("r4"), rooms_confirmed("r4")});
  Json after = get_row(*model, "r4");
  CHECK(after["status"] == "CANCELLED");
  CHECK(after["payment"]["status"] == "REFUNDED");
  CHECK(after["rooms"] == Json{{"status", "RELEASED"}, {"stock", 10}});
  CHECK(after["events"].size() == 7);
  CHECK(model->stats().duplicates == 0);

  // The same messages again: nothing changes, all counted as duplicates.
  apply_all(*model, {placed("r4"), confirmed("r4"), pay_approved("r4")});
  CHECK(get_row(*model, "r4") == after);
  CHECK(model->stats().duplicates == 3);
  CHECK(model->stats().applied == 7);

  // A new message id for an already seen type adds no second history entry,
  // and a null field never erases a known one.
  Message again = placed("r4");
  again.id = "r4/placed-again";
  Json body = Json::parse(again.payload);
  body["placeId"] = nullptr;
  body.erase("qty");
  again.payload = body.dump();
  REQUIRE(model->apply(again).ok());
  after = get_row(*model, "r4");
  CHECK(after["events"].size() == 7);
  CHECK(after["placeId"] == "p1");
  CHECK(after["qty"] == 2);
  CHECK(after["status"] == "CANCELLED");
  CHECK(before["status"] == "CANCELLED");
}

TEST_CASE("unknown types are recorded in the history; malformed events are refused") {
  testing::TempDir dir;
  auto model = open_model(dir);
  REQUIRE(model->apply(placed("r5")).ok());
  REQUIRE(model
              ->apply(event("r5/x", "r5", "ReservationCancelRequested",
                            {{"orderId", "r5"}, {"status", "CONFIRMED"}}, 1500))
              .ok());
  const Json row = get_row(*model, "r5");
  CHECK(row["events"] == Json{"ReservationPlaced", "ReservationCancelRequested"});
  CHECK(row["status"] == "PENDING");
  CHECK(model->stats().unknown_types == 1);

  Message junk = placed("r6");
  junk.payload = "not json";
  CHECK(model->apply(junk).code() == StatusCode::kInvalidArgument);
  Message no_id = event("x/1", "", "PaymentApproved", {{"payId", "p"}}, 1);
  no_id.saga_id.clear();
  CHECK(model->apply(no_id).code() == StatusCode::kInvalidArgument);
  CHECK(model->stats().invalid == 2);
  CHECK(model->get("r6").status().code() == StatusCode::kNotFound);
}

TEST_CASE("reopening the store keeps the rows, the index and the duplicate marks") {
  testing::TempDir dir;
  Json row;
  {
    auto model = open_model(dir);
    CHECK(model->empty());  // new: its consumer reads the events from the start
    apply_all(*model, {placed("r7"), pay_approved("r7"), placed("r8")});
    CHECK(!model->empty());
    row = get_row(*model, "r7");
  }
  auto model = open_model(dir);
  CHECK(!model->empty());  // reopened: its consumer resumes from the group's offsets
  CHECK(get_row(*model, "r7") == row);
  auto list = model->list_by_user("u1");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0]["id"] == "r7");
  CHECK((*list)[1]["id"] == "r8");
  apply_all(*model, {placed("r7"), pay_approved("r7")});
  CHECK(model->stats().duplicates == 2);
  CHECK(model->stats().applied == 0);
  CHECK(get_row(*model, "r7") == row);
}

TEST_CASE("duplicate marks expire after the horizon; an older store's marks are given one") {
  testing::TempDir dir;
  int64_t now = 1'000'000'000;
  mypage::ReadModelOptions o;
  o.dedup_horizon = std::chrono::hours(1);
  o.sweep_interval = std::chrono::minutes(1);
  o.now_ms = [&now] { return now; };
  constexpr int64_t kMinute = 60'000;
  {
    auto model = ReadModel::open(dir.path().string(), o);
    REQUIRE(model.ok());
    apply_all(**model, {placed("r1"), pay_approved("r1")});
    now += 30 * kMinute;
    apply_all(**model, {placed("r1")});  // within the horizon: a duplicate
    CHECK((*model)->stats().duplicates == 1);
    now += 31 * kMinute;
    apply_all(**model, {placed("r2")});  // the sweep it runs removes r1's two marks
    CHECK((*model)->stats().marks_expired == 2);
    const Json row = get_row(**model, "r1");
    apply_all(**model, {placed("r1")});  // forgotten: applied again, and changes nothing
    CHECK((*model)->stats().duplicates == 1);
    CHECK((*model)->stats().applied == 4);
    CHECK(get_row(**model, "r1") == row);
    CHECK((*model)->metrics_text().find("mypage_marks_expired_total 2") != std::string::npos);
  }
  {  // As an older version left it: marks without expiry keys.
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), dir.path().string(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteBatch drop;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string k = it->key().ToString();
      if (k.rfind("x/", 0) == 0 || k.rfind("meta/", 0) == 0) drop.Delete(k);
    }
    it.reset();
    REQUIRE(db->Write(rocksdb::WriteOptions(), &drop).ok());
  }
  auto model = ReadModel::open(dir.path().string(), o);
  REQUIRE(model.ok());
  CHECK_FALSE((*model)->empty());
  apply_all(**model, {placed("r2")});
  CHECK((*model)->stats().duplicates == 1);  // its mark is still there
  now += 61 * kMinute;
  apply_all(**model, {placed("r3")});
  CHECK((*model)->stats().marks_expired == 2);  // r1's and r2's, dated from this open
}

// ---- the runner over a MemoryBus, and HTTP ----------------------------------

using testing::eventually;

struct Service {
  explicit Service(const testing::TempDir& dir) : model(open_model(dir)) {
    runner = std::make_unique<mypage::EventRunner>(*model, bus->connect("mypage"));
    REQUIRE(runner->start().ok());
    service::Router router;
    mypage::add_routes(router, *model, [this] { return runner->health(); });
    service::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    server = std::make_unique<service::HttpServer>(so, std::move(router));
    REQUIRE(server->start().ok());
    http = testing::client_as(server->port(), testing::admin_identity());
  }
  ~Service() {
    http->close();
    server->stop();
    runner->stop();
  }

  void send(const std::vector<Message>& events) {
    for (const Message& e : events) producer->send(e, nullptr);
    producer->poll(std::chrono::milliseconds(0));
  }
  service::ClientResponse get(const std::string& target) {
    auto r = http->get(target);
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    return *r;
  }
  Json get_json(const std::string& target, int status) {
    service::ClientResponse r = get(target);
    REQUIRE_MESSAGE(r.status == status, target << " -> " << r.status << " " << r.body);
    auto j = r.json();
    REQUIRE(j.ok());
    return *j;
  }

  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 11);
  std::unique_ptr<Transport> producer = bus->connect("producer");
  std::unique_ptr<ReadModel> model;
  std::unique_ptr<mypage::EventRunner> runner;
  std::unique_ptr<service::HttpServer> server;
  std::unique_ptr<service::HttpClient> http;
};

TEST_CASE("the runner applies bus events and HTTP serves the view") {
  testing::TempDir dir;
  Service svc(dir);
  svc.send({rooms_confirmed("r1"), placed("r1"), pay_approved("r1"), confirmed("r1"), placed("r1"),
            placed("r2"), canceled("r2", "CANCELLED")});
  REQUIRE(
      eventually([&] { return svc.model->stats().applied + svc.model->stats().duplicates >= 7; }));
  CHECK(svc.model->stats().applied == 6);
  CHECK(svc.model->stats().duplicates == 1);
  CHECK(svc.bus->pending() == 0);

  const Json r1 = svc.get_json("/mypages/r1", 200);
  CHECK(r1 == confirmed_row("r1", {"ReservationConfirmed", "ReservationPlaced", "PaymentApproved",
                                   "ReservationStatusChanged"}));
  const Json list = svc.get_json("/mypages?userId=u1", 200);
  REQUIRE(list.is_array());
  REQUIRE(list.size() == 2);
  CHECK(list[0]["id"] == "r1");
  CHECK(list[1]["id"] == "r2");
  CHECK(list[1]["status"] == "CANCELLED");
  CHECK(svc.get_json("/mypages?userId=nobody", 200) == Json::array());

  const Json missing = svc.get_json("/mypages/nope", 404);
  CHECK(missing["status"] == 404);
  CHECK(svc.get("/mypages/nope").header("Content-Type") == "application/problem+json");
  CHECK(svc.get_json("/mypages", 200) == Json::array());  // the admin's own: none
  const Json no_user = svc.get_json("/mypages?userId=", 400);
  CHECK(no_user["status"] == 400);
  CHECK(no_user["detail"].get<std::string>().find("userId") != std::string::npos);

  const Json ready = svc.get_json("/readyz", 200);
  CHECK(ready["status"] == "ready");
  const std::string metrics = svc.get("/metrics").body;
  CHECK(metrics.find("mypage_events_applied_total 6") != std::string::npos);
  CHECK(metrics.find("mypage_events_duplicate_total 1") != std::string::npos);
  CHECK(metrics.find("# TYPE mypage_store_bytes gauge\nmypage_store_bytes ") != std::string::npos);
  CHECK(metrics.find("mypage_store_keys 0") == std::string::npos);  // 6 events applied

  svc.bus->set_available(false);
  CHECK(svc.get("/readyz").status == 503);
  svc.bus->set_available(true);
  svc.runner->stop();
  const Json stopped = svc.get_json("/readyz", 503);
  CHECK(stopped["status"] == "not ready");
}

TEST_CASE("GET /mypages pages with limit and pageToken; a bad one is 400") {
  testing::TempDir dir;
  Service svc(dir);
  svc.send({placed("r1"), placed("r2"), placed("r3"), placed("r4"), placed("r5")});
  REQUIRE(eventually([&] { return svc.model->stats().applied >= 5; }));
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    service::ClientResponse r = svc.get("/mypages?userId=u1&limit=2" +
                                        (token.empty() ? std::string() : "&pageToken=" + token));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Json items = *r.json();
    for (const Json& row : items) seen.push_back(row["id"]);
    token = std::string(r.header("Next-Page-Token").value_or(""));
    ++pages;
  } while (!token.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(seen == std::vector<std::string>{"r1", "r2", "r3", "r4", "r5"});
  CHECK(svc.get_json("/mypages?userId=u1", 200).size() == 5);
  for (const char* bad : {"limit=0", "limit=201", "limit=ten", "pageToken="})
    CHECK_MESSAGE(svc.get(std::string("/mypages?userId=u1&") + bad).status == 400, bad);
}

// A placed booking of `user` (reservation_body is u1's).
Message placed_by(const std::string& user, const std::string& id) {
  Json body = reservation_body(id, "PENDING");
  body["usrId"] = user;
  return event(id + "/placed", id, "ReservationPlaced", body, 1000);
}

TEST_CASE("list_by_user reads from the cursor and no further than the limit") {
  testing::TempDir dir;
  auto model = open_model(dir);
  // Ids whose order is not their number's, and a user whose id starts with u1's.
  for (const char* id : {"r1", "r10", "r2", "r20", "r3"}) REQUIRE(model->apply(placed(id)).ok());
  REQUIRE(model->apply(placed_by("u10", "r15")).ok());
  auto ids = [](const StatusOr<std::vector<Json>>& rows) {
    REQUIRE(rows.ok());
    std::vector<std::string> out;
    for (const Json& r : *rows) out.push_back(r["id"]);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(ids(model->list_by_user("u1")) == V{"r1", "r10", "r2", "r20", "r3"});
  CHECK(ids(model->list_by_user("u1", "", 2)) == V{"r1", "r10"});
  CHECK(ids(model->list_by_user("u1", "r10", 2)) == V{"r2", "r20"});
  CHECK(ids(model->list_by_user("u1", "r1", 1)) == V{"r10"});
  CHECK(ids(model->list_by_user("u1", "r15", 10)) == V{"r2", "r20", "r3"});  // not a u1 id
  CHECK(ids(model->list_by_user("u1", "r3", 10)).empty());
  CHECK(ids(model->list_by_user("u1", "", 0)).empty());
  CHECK(ids(model->list_by_user("u10")) == V{"r15"});
}

TEST_CASE("GET /mypages pages return every row exactly once, whatever the page size") {
  testing::TempDir dir;
  Service svc(dir);
  std::vector<Message> events;
  std::vector<std::string> all;
  for (int i = 1; i <= 12; ++i) {
    const std::string id = "r" + std::to_string(i);
    all.push_back(id);
    events.push_back(placed(id));
    events.push_back(placed_by("u10", "x" + std::to_string(i)));  // another user, interleaved
  }
  svc.send(events);
  REQUIRE(eventually([&] { return svc.model->stats().applied >= events.size(); }));
  std::sort(all.begin(), all.end());  // id order: r1, r10, r11, r12, r2, ...
  for (size_t limit : {1, 2, 5, 11, 12, 13, 200}) {
    std::vector<std::string> seen;
    std::string token;
    size_t pages = 0;
    do {
      service::ClientResponse r =
          svc.get("/mypages?userId=u1&limit=" + std::to_string(limit) +
                  (token.empty() ? std::string() : "&pageToken=" + token));
      REQUIRE_MESSAGE(r.status == 200, r.body);
      const Json items = *r.json();
      CHECK(items.size() <= limit);
      for (const Json& row : items) seen.push_back(row["id"]);
      token = std::string(r.header("Next-Page-Token").value_or(""));
      ++pages;
    } while (!token.empty() && pages < 20);
    CHECK_MESSAGE(seen == all, "limit " << limit);
    CHECK_MESSAGE(pages == (all.size() + limit - 1) / limit, "limit " << limit);
  }
}

TEST_CASE("a guest sees only its own rows; someone else's are 404 like missing ones") {
  testing::TempDir dir;
  Service svc(dir);
  svc.send({placed("r1"), pay_approved("r1")});
  REQUIRE(eventually([&] { return svc.model->stats().applied >= 2; }));
  auto u1 = testing::client_as(svc.server->port(), testing::guest_identity("u1"));
  auto u2 = testing::client_as(svc.server->port(), testing::guest_identity("u2"));

  auto own = u1->get("/mypages/r1");
  REQUIRE(own.ok());
  CHECK(own->status == 200);
  auto own_list = u1->get("/mypages");  // no userId: the caller's own
  REQUIRE(own_list.ok());
  CHECK(own_list->json()->size() == 1);

  auto other = u2->get("/mypages/r1");
  auto missing = u2->get("/mypages/r404");
  REQUIRE((other.ok() && missing.ok()));
  CHECK(other->status == 404);
  CHECK(other->header("Content-Type") == "application/problem+json");
  CHECK((*other->json())["detail"] == "no reservation 'r1'");  // as for a missing one:
  CHECK((*missing->json())["detail"] == "no reservation 'r404'");
  auto other_list = u2->get("/mypages?userId=u1");
  REQUIRE(other_list.ok());
  CHECK(other_list->status == 404);
  CHECK(u2->get("/mypages")->body == "[]");

  // No identity headers (the gateway bypassed): 401, nothing served.
  service::HttpClient anonymous("127.0.0.1", svc.server->port());
  for (const char* target : {"/mypages/r1", "/mypages?userId=u1"}) {
    auto r = anonymous.get(target);
    REQUIRE(r.ok());
    CHECK(r->status == 401);
    CHECK(r->header("WWW-Authenticate").has_value());
    CHECK(r->body.find("u1") == std::string::npos);
  }
  // A malformed subject header is no identity either.
  auto forged = anonymous.get(
      "/mypages/r1", {{service::kSubjectHeader, "u1/x"}, {service::kRolesHeader, "admin"}});
  REQUIRE(forged.ok());
  CHECK(forged->status == 401);
  CHECK(anonymous.get("/readyz")->status == 200);  // probes stay open
}

TEST_CASE("a restarted runner on the same store drops redelivered events") {
  testing::TempDir dir;
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 5);
  std::unique_ptr<Transport> producer = bus->connect("producer");
  for (const Message& e : {placed("r9"), pay_approved("r9")}) producer->send(e, nullptr);
  Json row;
  {
    auto model = open_model(dir);
    mypage::EventRunner runner(*model, bus->connect("mypage"));
    REQUIRE(runner.start().ok());
    REQUIRE(eventually([&] { return model->stats().applied == 2; }));
    row = get_row(*model, "r9");
  }
  // The same events delivered again (as after a crash before the commit).
  for (const Message& e : {placed("r9"), pay_approved("r9"), confirmed("r9")})
    producer->send(e, nullptr);
  auto model = open_model(dir);
  mypage::EventRunner runner(*model, bus->connect("mypage"));
  REQUIRE(runner.start().ok());
  REQUIRE(eventually([&] { return model->stats().applied == 1; }));
  REQUIRE(eventually([&] { return model->stats().duplicates == 2; }));
  const Json now = get_row(*model, "r9");
  CHECK(now["status"] == "CONFIRMED");
  CHECK(now["events"] == Json{"ReservationPlaced", "PaymentApproved", "ReservationStatusChanged"});
  CHECK(row["events"] == Json{"ReservationPlaced", "PaymentApproved"});
}

}  // namespace
}  // namespace saga
