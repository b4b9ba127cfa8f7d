// The payment participant (services/payment) over a MemoryBus: the test plays
// the orchestrator with a raw endpoint (commands out, replies and reserveplace
// events in) and drives the engine with run_once(); the HTTP API is exercised
// through HttpClient against an in-process server on port 0.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "saga/clock.h"
#include "saga/memory_transport.h"
#include "saga/message.h"
#include "saga/participant.h"
#include "saga/payment/payment.h"
#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/participant_service_harness.h"

namespace saga {
namespace {

using service::ClientResponse;
using std::chrono::steady_clock;

Message command(const std::string& saga, const std::string& type, const Json& payload,
                const std::string& compensates = {}) {
  return testing::participant_command(payment::kParticipantName, saga, type, payload, compensates);
}

Json charge_of(const std::string& reservation, int64_t amount) {
  return {{"reservationId", reservation}, {"userId", "2"}, {"amount", amount}};
}

struct Harness : testing::ParticipantServiceHarness {
  explicit Harness(payment::Config config = {})
      : ParticipantServiceHarness(
            payment::kParticipantName, payment::kEventDestination,
            [config](Participant& p) {
              return payment::register_handlers(
                  p, {.config = config, .now_ms = [] { return int64_t{1'700'000'000'000}; }});
            },
            [](service::Router& r, Participant& p) { payment::add_routes(r, p); }) {}
};

std::string error_of(const Message& reply) {
  Json j = Json::parse(reply.payload, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].dump() : reply.payload;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_CASE("charge approves, stores the payment and emits PaymentApproved") {
  Harness h;
  const Message r = h.roundtrip(command("s1", "charge", charge_of("r1", 5000)));
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  CHECK(Json::parse(r.payload) == Json{{"paymentId", "pay-s1"}});
  h.await_events(1);
  const Message& e = h.events.back();
  CHECK(e.type == "PaymentApproved");
  CHECK(e.destination == "reserveplace");
  CHECK(e.key == "r1");
  CHECK(Json::parse(e.payload) == Json{{"eventType", "PaymentApproved"},
                                       {"timestamp", 1'700'000'000'000},
                                       {"payId", "pay-s1"},
                                       {"orderId", "r1"},
                                       {"usrId", "2"},
                                       {"status", "APPROVED"},
                                       {"amount", 5000}});
  const Json pay = h.get_json("/payments/pay-s1");
  CHECK(pay == Json{{"id", "pay-s1"},
                    {"reservationId", "r1"},
                    {"userId", "2"},
                    {"amount", 5000},
                    {"status", "APPROVED"}});
  const Json list = h.get_json("/payments?reservationId=r1");
  REQUIRE(list.size() == 1);
  CHECK(list[0]["id"] == "pay-s1");
  CHECK(h.get_json("/payments?reservationId=r2").empty());
  CHECK(h.get_json("/payments?reservationId=r").empty());  // prefix of r1 is not r1
}

TEST_CASE("charge refuses bad payloads for good") {
  Harness h;
  Message r = h.roundtrip(command("s1", "charge", {{"reservationId", "r1"}, {"userId", "u"}}));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "amount"));
  r = h.roundtrip(command("s2", "charge", charge_of("r2", -1)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "amount"));
  r = h.roundtrip(command("s3", "charge", {{"userId", "u"}, {"amount", 1}}));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "reservationId"));
  CHECK_FALSE(h.p->get("payment/s1")->has_value());
  // Money is an integer: floats (even whole ones) and text are refused.
  for (const Json& amount : {Json(10.5), Json(10.0), Json("10"), Json(true)}) {
    Json c = charge_of("r5", 0);
    c["amount"] = amount;
    r = h.roundtrip(command("s5", "charge", c));
    CHECK_MESSAGE(r.outcome == ReplyOutcome::kFailure, amount.dump());
    CHECK(contains(error_of(r), "amount"));
  }
  CHECK_FALSE(h.p->get("payment/s5")->has_value());
  // Zero is a valid amount.
  CHECK(h.roundtrip(command("s4", "charge", charge_of("r4", 0))).outcome == ReplyOutcome::kSuccess);
}

TEST_CASE("a declined card is a failure and stores nothing") {
  Harness h({.decline_rate = 1.0});
  const Message r = h.roundtrip(command("s1", "charge", charge_of("r1", 10)));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(r), "card declined"));
  CHECK_FALSE(h.p->get("payment/s1")->has_value());
  h.settle();
  CHECK(h.events.empty());
  CHECK(h.get("/payments/pay-s1").status == 404);
}

TEST_CASE("a provider failure answers retry and stores nothing") {
  Harness h({.failure_rate = 1.0});
  const Message r = h.roundtrip(command("s1", "charge", charge_of("r1", 10)));
  CHECK(r.outcome == ReplyOutcome::kRetry);
  CHECK(contains(error_of(r), "payment provider unavailable"));
  CHECK_FALSE(h.p->get("payment/s1")->has_value());
  CHECK(h.get_json("/payments?reservationId=r1").empty());
  CHECK(h.p->stats().retried == 1);
  // The orchestrator's retry runs the handler again (not answered from the inbox).
  Message again = command("s1", "charge", charge_of("r1", 10));
  again.attempt = 2;
  CHECK(h.roundtrip(again).outcome == ReplyOutcome::kRetry);
  CHECK(h.p->stats().retried == 2);
}

TEST_CASE("latency is spent inside the handler") {
  Harness h({.latency = std::chrono::milliseconds(60)});
  const auto start = steady_clock::now();
  CHECK(h.roundtrip(command("s1", "charge", charge_of("r1", 1))).outcome == ReplyOutcome::kSuccess);
  CHECK(steady_clock::now() - start >= std::chrono::milliseconds(60));
}

TEST_CASE("refund keeps the record as REFUNDED and emits PaymentCancelApproved once") {
  Harness h;
  REQUIRE(h.roundtrip(command("s1", "charge", charge_of("r1", 7050))).outcome ==
          ReplyOutcome::kSuccess);
  const Message r = h.roundtrip(command("s1", "refund", Json::object(), "s1/charge/a"));
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  h.await_events(2);
  CHECK(h.events[0].type == "PaymentApproved");
  CHECK(h.events[1].type == "PaymentCancelApproved");
  CHECK(h.events[1].key == "r1");
  CHECK(Json::parse(h.events[1].payload) == Json{{"eventType", "PaymentCancelApproved"},
                                                 {"timestamp", 1'700'000'000'000},
                                                 {"payId", "pay-s1"},
                                                 {"orderId", "r1"},
                                                 {"status", "REFUNDED"},
                                                 {"amount", 7050}});
  CHECK(h.get_json("/payments/pay-s1")["status"] == "REFUNDED");
  CHECK(h.get_json("/payments?reservationId=r1").at(0)["status"] == "REFUNDED");

  // A second refund of the same charge (another command id) changes nothing.
  Message second = command("s1", "refund", Json::object(), "s1/charge/a");
  second.id = "s1/refund/c2";
  CHECK(h.roundtrip(second).outcome == ReplyOutcome::kSuccess);
  h.settle();
  CHECK(h.events.size() == 2);

  // A refund for a saga whose charge was declined: nothing to undo.
  Message declined_refund = command("s9", "refund", Json::object(), "s9/charge/a");
  CHECK(h.roundtrip(declined_refund).outcome == ReplyOutcome::kSuccess);
  h.settle();
  CHECK(h.events.size() == 2);
}

TEST_CASE("a cancellation's refund of a part: refundedAmount recorded; more than the charge refused") {
  Harness h;
  REQUIRE(h.roundtrip(command("s1", "charge", charge_of("r1", 7050))).outcome ==
          ReplyOutcome::kSuccess);
  Message too_much = command("s1.cancel", "refund", {{"bookingId", "s1"}, {"amount", 7051}});
  too_much.key = "s1";
  const Message refused = h.roundtrip(too_much);
  CHECK(refused.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(refused), "refund of 7051 exceeds the charge of 7050"));
  Message fractional = command("s1.cancel.2", "refund", {{"bookingId", "s1"}, {"amount", 10.5}});
  fractional.key = "s1";
  CHECK(h.roundtrip(fractional).outcome == ReplyOutcome::kFailure);
  CHECK(h.get_json("/payments/pay-s1")["status"] == "APPROVED");

  Message part = command("s1.cancel.3", "refund", {{"bookingId", "s1"}, {"amount", 3525}});
  part.key = "s1";
  const Message r = h.roundtrip(part);
  REQUIRE_MESSAGE(r.outcome == ReplyOutcome::kSuccess, r.payload);
  CHECK(Json::parse(r.payload) == Json{{"refunded", true}, {"amount", 3525}});
  const Json pay = h.get_json("/payments/pay-s1");
  CHECK(pay["status"] == "REFUNDED");
  CHECK(pay["amount"] == 7050);
  CHECK(pay["refundedAmount"] == 3525);
  h.await_events(2);
  CHECK(Json::parse(h.events[1].payload)["amount"] == 3525);
}

TEST_CASE("a payment is its customer's to see; someone else's is 404 or left out") {
  Harness h;
  REQUIRE(h.roundtrip(command("s1", "charge", charge_of("r1", 5000))).outcome ==
          ReplyOutcome::kSuccess);  // user "2"
  auto customer = h.client_as(testing::guest_identity("2"));
  auto other = h.client_as(testing::guest_identity("3"));
  CHECK(customer->get("/payments/pay-s1")->status == 200);
  CHECK(customer->get("/payments?reservationId=r1")->json()->size() == 1);
  auto r = other->get("/payments/pay-s1");
  REQUIRE(r.ok());
  CHECK(r->status == 404);
  CHECK((*r->json())["detail"] == "payment pay-s1 not found");
  CHECK(other->get("/payments?reservationId=r1")->body == "[]");
  auto anonymous = h.anonymous();
  CHECK(anonymous->get("/payments/pay-s1")->status == 401);
  CHECK(anonymous->get("/payments?reservationId=r1")->status == 401);
}

TEST_CASE("GET endpoints: 404 for unknown payments, 400 without reservationId") {
  Harness h;
  CHECK(h.get("/payments/pay-nothing").status == 404);
  CHECK(h.get("/payments/xyz").status == 404);
  auto r = h.get("/payments");
  CHECK(r.status == 400);
  REQUIRE(r.header("Content-Type").has_value());
  CHECK(contains(std::string(*r.header("Content-Type")), "problem+json"));
  CHECK(contains((*r.json()).value("detail", ""), "reservationId"));
  CHECK(h.get("/payments?reservationId=").status == 400);
  CHECK(h.get("/healthz").status == 200);
  CHECK(h.get("/readyz").status == 200);
  CHECK(
      contains(h.get("/metrics").body, "saga_participant_applied_total{participant=\"payment\"}"));
}

TEST_CASE("GET /payments pages with limit and pageToken; a bad one is 400") {
  Harness h;
  // Several payments of one reservation (as if several sagas charged it).
  for (int i = 0; i < 5; ++i) {
    Message c = command("s" + std::to_string(i), "charge", charge_of("r1", 100 + i));
    REQUIRE(h.roundtrip(c).outcome == ReplyOutcome::kSuccess);
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    service::ClientResponse r = h.get("/payments?reservationId=r1&limit=2" +
                                      (token.empty() ? std::string() : "&pageToken=" + token));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Json items = *r.json();
    for (const Json& p : items) {
      seen.push_back(p["id"]);
      CHECK(p["amount"].is_number_integer());
    }
    token = std::string(r.header("Next-Page-Token").value_or(""));
    ++pages;
  } while (!token.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(seen == std::vector<std::string>{"pay-s0", "pay-s1", "pay-s2", "pay-s3", "pay-s4"});
  CHECK(h.get_json("/payments?reservationId=r1").size() == 5);
  for (const char* bad : {"limit=0", "limit=201", "limit=1.5", "pageToken="})
    CHECK_MESSAGE(h.get(std::string("/payments?reservationId=r1&") + bad).status == 400, bad);
}

TEST_CASE("configuration: rates are validated with clear errors") {
  CHECK(*payment::parse_rate("X", "0.25") == 0.25);
  CHECK(*payment::parse_rate("X", "1") == 1.0);
  CHECK(*payment::parse_rate("X", "0") == 0.0);
  for (const char* bad : {"1.5", "-0.1", "abc", "0.5x", "nan", "inf", ""}) {
    auto r = payment::parse_rate("PAYMENT_DECLINE_RATE", bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(contains(r.status().message(), "PAYMENT_DECLINE_RATE must be a number in 0..1"));
  }

  ::setenv("PAYMENT_FAILURE_RATE", "2", 1);
  auto c = payment::Config::from_env();
  REQUIRE_FALSE(c.ok());
  CHECK(contains(c.status().message(), "PAYMENT_FAILURE_RATE"));
  CHECK(contains(c.status().message(), "'2'"));
  ::unsetenv("PAYMENT_FAILURE_RATE");

  ::setenv("PAYMENT_LATENCY_MS", "-5", 1);
  c = payment::Config::from_env();
  REQUIRE_FALSE(c.ok());
  CHECK(contains(c.status().message(), "PAYMENT_LATENCY_MS"));
  ::unsetenv("PAYMENT_LATENCY_MS");

  ::setenv("PAYMENT_DECLINE_RATE", "0.3", 1);
  ::setenv("PAYMENT_LATENCY_MS", "20", 1);
  c = payment::Config::from_env();
  REQUIRE(c.ok());
  CHECK(c->decline_rate == 0.3);
  CHECK(c->failure_rate == 0.0);
  CHECK(c->latency == std::chrono::milliseconds(20));
  ::unsetenv("PAYMENT_DECLINE_RATE");
  ::unsetenv("PAYMENT_LATENCY_MS");

  // register_handlers refuses rates out of range too.
  testing::TempDir dir;
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  ParticipantOptions o;
  o.name = payment::kParticipantName;
  o.data_dir = dir.path().string();
  o.sync = false;
  auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("payment")));
  REQUIRE(p.ok());
  Status s = payment::register_handlers(**p, {.config = {.decline_rate = 1.5}});
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(contains(s.message(), "decline_rate"));
}

}  // namespace
}  // namespace saga

namespace saga {
namespace {

struct NoSource final : ReshardSource {
  StatusOr<std::optional<std::string>> get(std::string_view) const override {
    return std::optional<std::string>();
  }
};

TEST_CASE("payment's shard key: the booking's saga id of every key it writes, an error for others") {
  const NoSource src;
  CHECK(*payment::shard_key("payment/s1", "{}", src) == "s1");
  CHECK(*payment::shard_key("byres/r1/pay-s1", "{}", src) == "s1");
  for (const char* other : {"balance", "payment/", "byres/r1", "byres/r1/other", "byres/r1/pay-"})
    CHECK_MESSAGE(!payment::shard_key(other, "{}", src).ok(), other);
}

TEST_CASE("a payment store resharded from 12 to 5 shards: duplicates answered, refunds find their charge") {
  Harness h;
  const Message charge_s1 = command("s1", "charge", charge_of("r1", 5000));
  REQUIRE(h.roundtrip(charge_s1).outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s2", "charge", charge_of("r2", 700))).outcome ==
          ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(command("s3", "charge", charge_of("r3", 900))).outcome ==
          ReplyOutcome::kSuccess);

  h.reshard(5, payment::shard_key);
  h.settle();  // replies whose send was not yet confirmed go out again

  const uint64_t dups = h.p->stats().duplicates;
  const Message again = h.roundtrip(charge_s1);
  CHECK(again.outcome == ReplyOutcome::kSuccess);
  CHECK(h.p->stats().duplicates == dups + 1);
  // The booking's own compensation (keyed by its saga id) and a cancellation's
  // refund (keyed by the booking id) find the charge in its new shard.
  REQUIRE(h.roundtrip(command("s2", "refund", Json::object(), "s2/charge/a")).outcome ==
          ReplyOutcome::kSuccess);
  Message cancel = command("s3.cancel", "refund", {{"bookingId", "s3"}});
  cancel.key = "s3";
  const Message refunded = h.roundtrip(cancel);
  REQUIRE(refunded.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(refunded.payload) == Json{{"refunded", true}, {"amount", 900}});
  for (const char* saga : {"s2", "s3"}) {
    auto record = h.p->get(std::string("payment/") + saga);
    REQUIRE(record.ok());
    REQUIRE(record->has_value());
    CHECK(Json::parse(**record)["status"] == "REFUNDED");
  }
  CHECK(Json::parse(**h.p->get("payment/s1"))["status"] == "APPROVED");
  const Json listed = h.get_json("/payments?reservationId=r1");
  CHECK(listed.dump().find("pay-s1") != std::string::npos);
}

}  // namespace
}  // namespace saga
