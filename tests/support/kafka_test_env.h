// Test support: where the CTest fixture's real Kafka broker listens, and a
// topic helper built on librdkafka's admin API. Header-only, tests only.
#pragma once

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

namespace saga::testing {

/// Bootstrap address of the test broker: $SAGA_TEST_KAFKA_BOOTSTRAP, else the
/// `bootstrap` file the fixture wrote in $SAGA_TEST_KAFKA_DIR. Throws when
/// neither exists: a Kafka test without a broker fails, it is never skipped.
inline std::string kafka_bootstrap() {
  if (const char* b = std::getenv("SAGA_TEST_KAFKA_BOOTSTRAP"); b && *b) return b;
  const char* dir = std::getenv("SAGA_TEST_KAFKA_DIR");
  if (!dir) throw std::runtime_error("SAGA_TEST_KAFKA_DIR is not set: run through ctest");
  std::ifstream in(std::string(dir) + "/bootstrap");
  std::string addr;
  if (!(in >> addr)) {
    throw std::runtime_error(std::string("no broker bootstrap file in ") + dir +
                             " (did the kafka.start fixture run?)");
  }
  return addr;
}

/// A topic name unique to this process and call, so tests never share topics.
inline std::string unique_topic(const std::string& prefix) {
  static std::mt19937_64 rng{std::random_device{}()};
  return prefix + "-" + std::to_string(rng() % 1'000'000'000);
}

/// Creates `topic` with the given partitions and replication; throws on failure.
inline void create_topic(const std::string& bootstrap, const std::string& topic, int partitions,
                         int replication = 1) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err) !=
      RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(err);
  }
  std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy);
  if (!rk) throw std::runtime_error(err);
  std::unique_ptr<rd_kafka_queue_t, decltype(&rd_kafka_queue_destroy)> queue(
      rd_kafka_queue_new(rk.get()), &rd_kafka_queue_destroy);
  std::unique_ptr<rd_kafka_NewTopic_t, decltype(&rd_kafka_NewTopic_destroy)> nt(
      rd_kafka_NewTopic_new(topic.c_str(), partitions, replication, err, sizeof err),
      &rd_kafka_NewTopic_destroy);
  if (!nt) throw std::runtime_error(err);
  rd_kafka_NewTopic_t* topics[] = {nt.get()};
  rd_kafka_CreateTopics(rk.get(), topics, 1, nullptr, queue.get());
  std::unique_ptr<rd_kafka_event_t, decltype(&rd_kafka_event_destroy)> ev(
      rd_kafka_queue_poll(queue.get(), 30'000), &rd_kafka_event_destroy);
  if (!ev) throw std::runtime_error("CreateTopics timed out for " + topic);
  if (rd_kafka_event_error(ev.get()))
    throw std::runtime_error(rd_kafka_event_error_string(ev.get()));
  size_t n = 0;
  const rd_kafka_topic_result_t** res =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &n);
  for (size_t i = 0; i < n; ++i) {
    if (rd_kafka_topic_result_error(res[i]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("create topic " + topic + ": " +
                               rd_kafka_topic_result_error_string(res[i]));
    }
  }
}

}  // namespace saga::testing
