// The mypage read model over a real Kafka broker: events are produced to a
// topic of this run's own by a second Kafka endpoint, the EventRunner applies
// them, and a new runner on the same data directory catches up after a
// restart without applying the old events again (their offsets were committed).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/message.h"
#include "saga/mypage/mypage.h"
#include "support/eventually.h"
#include "support/kafka_test_env.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Message event(const std::string& msg_id, const std::string& reservation, const std::string& type,
              Json body, int64_t ts) {
  body["eventType"] = type;
  body["timestamp"] = ts;
  body["orderId"] = reservation;
  Message m;
  m.id = msg_id;
  m.kind = MessageKind::kEvent;
  m.type = type;
  m.destination = mypage::kEventDestination;
  m.key = reservation;
  m.saga_id = reservation;
  m.payload = body.dump();
  return m;
}

Json reservation_body(const std::string& status) {
  return {{"placeId", "p1"}, {"usrId", "u1"},   {"strDt", "2025-03-01"}, {"endDt", "2025-03-03"},
          {"qty", 1},        {"amount", 700.0}, {"status", status},      {"placeNm", "Sea View"}};
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  return testing::eventually(done, limit, std::chrono::milliseconds(20));
}

// Sends `events` and waits until the broker confirmed every one.
void produce(Transport& producer, const std::vector<Message>& events) {
  std::atomic<size_t> ok{0};
  std::atomic<size_t> failed{0};
  for (const Message& e : events) {
    producer.send(e, [&ok, &failed](Status s) { s.ok() ? ++ok : ++failed; });
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (ok + failed < events.size() && Clock::now() < deadline)
    producer.poll(std::chrono::milliseconds(100));
  REQUIRE(failed == 0);
  REQUIRE(ok == events.size());
}

StatusOr<Json> row_of(mypage::ReadModel& model, const std::string& id) { return model.get(id); }

std::vector<std::string> events_of(mypage::ReadModel& model, const std::string& id) {
  auto row = row_of(model, id);
  if (!row.ok()) return {};
  return (*row)["events"].get<std::vector<std::string>>();
}

TEST_CASE("mypage follows the events topic and catches up after a restart") {
  const std::string bootstrap = testing::kafka_bootstrap();
  const std::string topic = testing::unique_topic("mypage-events");
  const std::string group = testing::unique_topic("mypage-group");
  testing::create_topic(bootstrap, topic, 3);

  KafkaOptions options;
  options.brokers = bootstrap;
  options.group_id = group;
  options.topic_overrides[mypage::kEventDestination] = topic;
  KafkaOptions producer_options = options;
  producer_options.group_id = group + "-producer";
  auto producer = make_kafka_transport("mypage-test-producer", producer_options);
  REQUIRE_MESSAGE(producer.ok(), producer.status().to_string());

  testing::TempDir dir;
  auto start_runner = [&](mypage::ReadModel& model) {
    auto transport = make_kafka_transport("mypage", options);
    REQUIRE_MESSAGE(transport.ok(), transport.status().to_string());
    auto runner = std::make_unique<mypage::EventRunner>(model, std::move(*transport));
    REQUIRE(runner->start().ok());
    return runner;
  };

  // ---- first run: out of order, one duplicate ----
  const Message placed1 =
      event("r1/placed", "r1", "ReservationPlaced", reservation_body("PENDING"), 1000);
  const std::vector<Message> first = {
      event("pay/r1/e0", "r1", "PaymentApproved",
            {{"payId", "pay-r1"}, {"usrId", "u1"}, {"status", "APPROVED"}, {"amount", 700.0}},
            2000),
      placed1,
      event("inv/r1/e0", "r1", "ReservationConfirmed", {{"placeId", "p1"}, {"stock", 4}}, 3000),
      placed1,  // delivered twice
      event("r1/completed", "r1", "ReservationStatusChanged", reservation_body("CONFIRMED"), 4000),
      event("r2/placed", "r2", "ReservationPlaced", reservation_body("PENDING"), 1100),
      event("r2/compensated", "r2", "ReservationCanceled", reservation_body("REJECTED"), 1900),
  };
  std::vector<std::string> r1_events;
  std::vector<std::string> r2_events;
  {
    auto model = mypage::ReadModel::open(dir.path().string());
    REQUIRE(model.ok());
    auto runner = start_runner(**model);
    produce(**producer, first);
    REQUIRE_MESSAGE(
        eventually(
            [&] {
              const auto s = (*model)->stats();
              return s.applied == 6 && s.duplicates == 1;
            },
            std::chrono::seconds(90)),
        "applied " << (*model)->stats().applied << ", duplicates " << (*model)->stats().duplicates);
    const Json r1 = *row_of(**model, "r1");
    CHECK(r1["status"] == "CONFIRMED");
    CHECK(r1["placeNm"] == "Sea View");
    CHECK(r1["payment"] == Json{{"status", "APPROVED"}, {"payId", "pay-r1"}});
    CHECK(r1["rooms"] == Json{{"status", "CONFIRMED"}, {"stock", 4}});
    CHECK(r1["updatedMs"] == 4000);
    CHECK(r1["events"].size() == 4);
    const Json r2 = *row_of(**model, "r2");
    CHECK(r2["status"] == "REJECTED");
    auto list = (*model)->list_by_user("u1");
    REQUIRE(list.ok());
    CHECK(list->size() == 2);
    CHECK(runner->health().ok());
    r1_events = events_of(**model, "r1");
    r2_events = events_of(**model, "r2");
    runner->stop();  // closes the consumer: the acked offsets are committed
  }

  // ---- while mypage is down ----
  produce(**producer,
          {event("r1/cancel-requested", "r1", "ReservationCancelRequested", Json::object(), 5000),
           event("pay/r2/e1", "r2", "PaymentCancelApproved",
                 {{"payId", "pay-r2"}, {"status", "REFUNDED"}, {"amount", 700.0}}, 1800),
           event("r3/placed", "r3", "ReservationPlaced", reservation_body("PENDING"), 6000)});

  // ---- second run on the same data directory and consumer group ----
  auto model = mypage::ReadModel::open(dir.path().string());
  REQUIRE(model.ok());
  auto runner = start_runner(**model);
  // The new events of r1 and r2 follow their old ones in the same partitions,
  // so once they are applied any redelivered old event would have been seen.
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            return events_of(**model, "r1").size() == 5 && events_of(**model, "r2").size() == 3 &&
                   row_of(**model, "r3").ok();
          },
          std::chrono::seconds(90)),
      "r1 " << events_of(**model, "r1").size() << ", r2 " << events_of(**model, "r2").size());
  const auto s = (*model)->stats();
  CHECK(s.applied == 3);
  CHECK(s.duplicates == 0);
  CHECK(s.unknown_types == 1);
  std::vector<std::string> expected_r1 = r1_events;
  expected_r1.push_back("ReservationCancelRequested");
  CHECK(events_of(**model, "r1") == expected_r1);
  std::vector<std::string> expected_r2 = r2_events;
  expected_r2.push_back("PaymentCancelApproved");
  CHECK(events_of(**model, "r2") == expected_r2);
  const Json r2 = *row_of(**model, "r2");
  CHECK(r2["status"] == "REJECTED");
  CHECK(r2["payment"] == Json{{"status", "REFUNDED"}, {"payId", "pay-r2"}, {"refundedAmount", 700.0}});
  CHECK(r2["updatedMs"] == 1900);
  CHECK((*row_of(**model, "r1"))["status"] == "CONFIRMED");
  CHECK((*model)->list_by_user("u1")->size() == 3);
  runner->stop();
}

}  // namespace
}  // namespace saga
