// Proves the pipeline is real: librdkafka produces keyed messages with headers
// to the fixture's Apache Kafka broker and reads them back.
#include <doctest/doctest.h>
#include <librdkafka/rdkafkacpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/kafka_test_env.h"

namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<RdKafka::Conf> make_conf(const std::map<std::string, std::string>& kv) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  for (const auto& [k, v] : kv) {
    REQUIRE_MESSAGE(conf->set(k, v, err) == RdKafka::Conf::CONF_OK, k, ": ", err);
  }
  return conf;
}

std::string header_value(const RdKafka::Headers* headers, const std::string& name) {
  if (!headers) return {};
  auto h = headers->get_last(name);
  if (h.err() != RdKafka::ERR_NO_ERROR || !h.value()) return {};
  return std::string(static_cast<const char*>(h.value()), h.value_size());
}

struct Received {
  std::string key, value, message_id;
  int32_t partition;
};

TEST_CASE("keyed messages with headers survive a round trip through the real broker") {
  const std::string bootstrap = saga::testing::kafka_bootstrap();
  const std::string topic = saga::testing::unique_topic("roundtrip");
  saga::testing::create_topic(bootstrap, topic, /*partitions=*/3);

  constexpr int kMessages = 30;
  const std::vector<std::string> keys = {"saga-a", "saga-b", "saga-c", "saga-d"};

  {
    auto conf = make_conf(
        {{"bootstrap.servers", bootstrap}, {"enable.idempotence", "true"}, {"linger.ms", "1"}});
    std::string err;
    std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), err));
    REQUIRE_MESSAGE(producer, err);
    for (int i = 0; i < kMessages; ++i) {
      const std::string& key = keys[i % keys.size()];
      std::string value = "payload-" + std::to_string(i);
      std::string id = "msg-" + std::to_string(i);
      RdKafka::Headers* headers = RdKafka::Headers::create();
      headers->add("message-id", id);
      headers->add("message-type", "Test");
      RdKafka::ErrorCode rc = producer->produce(
          topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY, value.data(),
          value.size(), key.data(), key.size(), 0, headers, nullptr);
      if (rc != RdKafka::ERR_NO_ERROR) delete headers;  // freed by librdkafka only on success
      REQUIRE_MESSAGE(rc == RdKafka::ERR_NO_ERROR, RdKafka::err2str(rc));
    }
    REQUIRE(producer->flush(30'000) == RdKafka::ERR_NO_ERROR);
    REQUIRE(producer->outq_len() == 0);
  }

  auto conf = make_conf({{"bootstrap.servers", bootstrap},
                         {"group.id", topic + "-group"},
                         {"auto.offset.reset", "earliest"},
                         {"enable.auto.commit", "false"},
                         {"partition.assignment.strategy", "cooperative-sticky"},
                         {"session.timeout.ms", "6000"},
                         {"heartbeat.interval.ms", "500"}});
  std::string err;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(RdKafka::KafkaConsumer::create(conf.get(), err));
  REQUIRE_MESSAGE(consumer, err);
  REQUIRE(consumer->subscribe({topic}) == RdKafka::ERR_NO_ERROR);

  std::vector<Received> got;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (static_cast<int>(got.size()) < kMessages && Clock::now() < deadline) {
    std::unique_ptr<RdKafka::Message> msg(consumer->consume(200));
    if (msg->err() == RdKafka::ERR__TIMED_OUT || msg->err() == RdKafka::ERR__PARTITION_EOF)
      continue;
    REQUIRE_MESSAGE(msg->err() == RdKafka::ERR_NO_ERROR, msg->errstr());
    got.push_back({msg->key() ? *msg->key() : std::string(),
                   std::string(static_cast<const char*>(msg->payload()), msg->len()),
                   header_value(msg->headers(), "message-id"), msg->partition()});
    CHECK(header_value(msg->headers(), "message-type") == "Test");
  }
  CHECK(consumer->commitSync() == RdKafka::ERR_NO_ERROR);
  consumer->close();

  REQUIRE(got.size() == static_cast<size_t>(kMessages));
  std::map<std::string, int32_t> partition_of_key;
  std::map<std::string, int> last_index_of_key;
  for (const Received& r : got) {
    // The value and the message-id header travel together.
    const int i = std::stoi(r.value.substr(r.value.find('-') + 1));
    CHECK(r.message_id == "msg-" + std::to_string(i));
    CHECK(r.key == keys[i % keys.size()]);
    // One key, one partition, and order kept within it.
    auto [it, fresh] = partition_of_key.emplace(r.key, r.partition);
    CHECK(it->second == r.partition);
    if (!fresh) CHECK(last_index_of_key[r.key] < i);
    last_index_of_key[r.key] = i;
  }
  CHECK(partition_of_key.size() == keys.size());
}

}  // namespace
