// Consumer faults of librdkafka 2.0.2 that the Kafka transport recovers from
// (kafka/fetch_watchdog.h), reproduced on librdkafka's mock cluster (fault
// injection; no real broker):
// - an OffsetFetch answered NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE leaves
//   a newly assigned partition unfetched for good: FetchWatchdog finds it in
//   the consumer's statistics and the transport assigns it again;
// - a group formed while its coordinator did not know the topic yet gets none
//   of its partitions, for good: EmptyTopicWatch notices and the transport
//   subscribes again.
#include "kafka/fetch_watchdog.h"

#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "saga/kafka_transport.h"

namespace saga {
namespace {

using namespace std::chrono_literals;
using internal::kafka::FetchWatchdog;
using Clock = FetchWatchdog::Clock;

// A consumer's statistics with one partition "t"[0] led by broker 1.
nlohmann::json stats(const std::string& fetch_state, bool desired = true,
                     const std::string& cgrp_state = "up", const std::string& leader_state = "UP") {
  return {
      {"name", "rdkafka#consumer-1"},
      {"type", "consumer"},
      {"brokers",
       {{"127.0.0.1:9092/1", {{"nodeid", 1}, {"state", leader_state}}},
        {"127.0.0.1:9093/2", {{"nodeid", 2}, {"state", "UP"}}}}},
      {"topics",
       {{"t",
         {{"partitions",
           {{"0",
             {{"partition", 0},
              {"leader", 1},
              {"desired", desired},
              {"fetch_state", fetch_state}}},
            {"-1", {{"partition", -1}, {"leader", -1}, {"desired", false}, {"fetch_state", "none"}}}}}}}}},
      {"cgrp", {{"state", cgrp_state}}},
  };
}

const std::vector<FetchWatchdog::Partition> kNone;
const std::vector<FetchWatchdog::Partition> kT0{{"t", 0}};

TEST_CASE("watchdog: a partition without a fetcher for the whole limit is returned, once per limit") {
  FetchWatchdog w(10s);
  const Clock::time_point t0 = Clock::now();
  CHECK(w.observe(stats("none"), t0) == kNone);
  CHECK(w.observe(stats("none"), t0 + 9s) == kNone);
  CHECK(w.observe(stats("none"), t0 + 10s) == kT0);
  CHECK(w.observe(stats("none"), t0 + 11s) == kNone);  // watched afresh
  CHECK(w.observe(stats("none"), t0 + 20s) == kT0);
}

TEST_CASE("watchdog: any sample that does not look stalled starts the wait again") {
  const Clock::time_point t0 = Clock::now();
  // Fetching, not assigned, coordinator unknown, leader down: each resets.
  for (const nlohmann::json& fine :
       {stats("active"), stats("none", false), stats("none", true, "query-coord"),
        stats("none", true, "up", "DOWN")}) {
    FetchWatchdog w(10s);
    CHECK(w.observe(stats("none"), t0) == kNone);
    CHECK(w.observe(fine, t0 + 5s) == kNone);
    CHECK(w.observe(stats("none"), t0 + 12s) == kNone);
    CHECK(w.observe(stats("none"), t0 + 22s) == kT0);
  }
}

TEST_CASE("watchdog: documents of another shape are ignored") {
  FetchWatchdog w(1s);
  const Clock::time_point t0 = Clock::now();
  for (const char* text : {"{}", "[]", R"({"cgrp":{"state":"up"},"topics":[]})",
                           R"({"cgrp":{"state":"up"},"topics":{"t":{"partitions":{"0":7}}}})"}) {
    CHECK(w.observe(nlohmann::json::parse(text), t0) == kNone);
    CHECK(w.observe(nlohmann::json::parse(text), t0 + 5s) == kNone);
  }
}

using internal::kafka::EmptyTopicWatch;
using Held = std::map<std::string, int>;
const std::vector<std::string> kNoTopic;
const std::vector<std::string> kTopicT{"t"};

TEST_CASE("empty topics: flagged after the first wait, then after waits twice as long") {
  EmptyTopicWatch w(15s, 60s);
  const Clock::time_point t0 = Clock::now();
  CHECK(w.observe(true, {{"t", 0}, {"u", 3}}, t0) == kNoTopic);
  CHECK(w.observe(true, {{"t", 0}, {"u", 3}}, t0 + 14s) == kNoTopic);
  CHECK(w.observe(true, {{"t", 0}, {"u", 3}}, t0 + 15s) == kTopicT);
  CHECK(w.observe(true, {{"t", 0}}, t0 + 44s) == kNoTopic);
  CHECK(w.observe(true, {{"t", 0}}, t0 + 45s) == kTopicT);   // 30 s later
  CHECK(w.observe(true, {{"t", 0}}, t0 + 105s) == kTopicT);  // 60 s later
  CHECK(w.observe(true, {{"t", 0}}, t0 + 165s) == kTopicT);  // at most 60 s
}

TEST_CASE("empty topics: an unsettled group, or a partition held, starts afresh") {
  const Clock::time_point t0 = Clock::now();
  {
    EmptyTopicWatch w(15s, 60s);
    CHECK(w.observe(true, {{"t", 0}}, t0) == kNoTopic);
    CHECK(w.observe(false, {{"t", 0}}, t0 + 10s) == kNoTopic);  // rebalancing
    CHECK(w.observe(true, {{"t", 0}}, t0 + 20s) == kNoTopic);
    CHECK(w.observe(true, {{"t", 0}}, t0 + 25s) == kTopicT);
  }
  {
    EmptyTopicWatch w(15s, 60s);
    CHECK(w.observe(true, {{"t", 0}}, t0) == kNoTopic);
    CHECK(w.observe(true, {{"t", 0}}, t0 + 15s) == kTopicT);
    CHECK(w.observe(true, {{"t", 1}}, t0 + 16s) == kNoTopic);  // held: forgotten
    CHECK(w.observe(true, {{"t", 0}}, t0 + 20s) == kNoTopic);
    CHECK(w.observe(true, {{"t", 0}}, t0 + 35s) == kTopicT);  // the first wait again
  }
}

// librdkafka's mock cluster of three brokers, owned by a dummy handle.
class MockCluster {
 public:
  MockCluster() {
    char err[512];
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), err, sizeof err);
    REQUIRE_MESSAGE(handle_ != nullptr, err);
    cluster_ = rd_kafka_mock_cluster_new(handle_, 3);
    REQUIRE(cluster_ != nullptr);
    // The mock answers CreateTopics without a controller: the topic is made here.
    REQUIRE(rd_kafka_mock_topic_create(cluster_, "w.work", 1, 3) == RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  ~MockCluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  std::string bootstrap() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  // The next `count` OffsetFetch requests, from anyone, are answered `error`.
  // Every metadata answer reports the topic as `error` (NO_ERROR: as it is).
  void set_topic_error(rd_kafka_resp_err_t error) {
    rd_kafka_mock_topic_set_error(cluster_, "w.work", error);
  }
  void fail_offset_fetches(rd_kafka_resp_err_t error, size_t count) {
    std::vector<rd_kafka_resp_err_t> errors(count, error);
    rd_kafka_mock_push_request_errors_array(cluster_, /*OffsetFetch*/ 9, errors.size(),
                                            errors.data());
  }

 private:
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

std::unique_ptr<Transport> connect(const MockCluster& cluster, const std::string& endpoint) {
  KafkaOptions o;
  o.brokers = cluster.bootstrap();
  o.topic_prefix = "w.";
  o.group_id = "w." + endpoint;
  o.partitions = 1;
  o.replication_factor = 3;
  o.create_topics = false;
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(*t);
}

Transport::Handler collect(std::vector<std::string>& got) {
  return [&got](Message m, Transport::Ack ack) {
    got.push_back(m.id);
    ack();
  };
}

Message work(const std::string& id) {
  Message m;
  m.id = id;
  m.kind = MessageKind::kCommand;
  m.type = "work";
  m.destination = "work";
  m.key = m.saga_id = "saga-1";
  m.payload = "{}";
  return m;
}

// Sends message "m1" from `sender` and returns the ids `worker` (subscribed
// to "work", its handler appending to `got`) got before a deadline of 60 s.
std::vector<std::string> send_and_receive(Transport& sender, Transport& worker,
                                          std::vector<std::string>& got) {
  std::vector<Status> sent;
  sender.send(work("m1"), [&](Status s) { sent.push_back(std::move(s)); });
  const auto deadline = Clock::now() + 60s;
  while (got.empty() && Clock::now() < deadline) {
    sender.poll(10ms);
    worker.poll(50ms);
  }
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].ok());
  return got;
}

TEST_CASE("a partition whose committed offset could not be fetched is assigned again and read") {
  for (const rd_kafka_resp_err_t error :
       {RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE}) {
    const std::string name = rd_kafka_err2name(error);
    CAPTURE(name);
    MockCluster cluster;
    auto sender = connect(cluster, "sender");
    auto worker = connect(cluster, "worker");
    cluster.fail_offset_fetches(error, 1);
    std::vector<std::string> got;
    const Status subscribed = worker->subscribe("work", collect(got));
    REQUIRE_MESSAGE(subscribed.ok(), subscribed.to_string());
    // The mock's first join takes 3 s and the watchdog 10 s on top; without
    // the watchdog the message never arrives.
    CHECK(send_and_receive(*sender, *worker, got) == std::vector<std::string>{"m1"});
  }
}

TEST_CASE("a group formed while its coordinator did not know the topic is formed again") {
  MockCluster cluster;
  auto sender = connect(cluster, "sender");
  auto worker = connect(cluster, "worker");
  std::vector<std::string> got;
  std::vector<uint32_t> owned;
  PartitionedSubscription how;
  how.partitions = 1;
  how.listener.assigned = [&](const std::vector<uint32_t>& ps) {
    owned.insert(owned.end(), ps.begin(), ps.end());
  };
  how.listener.revoked = [](const std::vector<uint32_t>&) {};
  how.listener.lost = [](const std::vector<uint32_t>&) {};
  // The worker subscribes and learns the topic (1 partition); then, as from
  // a coordinator that has not learnt of it yet, metadata answers lack it
  // while the group forms (the mock's first join takes 3 s).
  const Status subscribed = worker->subscribe_partitioned("work", collect(got), how);
  REQUIRE_MESSAGE(subscribed.ok(), subscribed.to_string());
  const auto poll_for = [&](std::chrono::milliseconds d) {
    const auto until = Clock::now() + d;
    while (Clock::now() < until) worker->poll(50ms);
  };
  poll_for(1s);
  cluster.set_topic_error(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  poll_for(4s);
  cluster.set_topic_error(RD_KAFKA_RESP_ERR_NO_ERROR);
  CHECK(owned.empty());  // the fault took: the group gave the worker nothing
  // The member holds nothing of a topic with partitions while its group is
  // settled: after 15 s it subscribes again. Without that, nothing arrives.
  CHECK(send_and_receive(*sender, *worker, got) == std::vector<std::string>{"m1"});
  CHECK(owned == std::vector<uint32_t>{0});
}

}  // namespace
}  // namespace saga
