// librdkafka at the edge: one RAII deleter per C handle type, error
// conversion to saga::Status, and topic creation through the C admin API
// (the C++ binding has none). Only src/kafka/ includes this.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "saga/status.h"

namespace saga::internal::kafka {

struct QueueDeleter {
  void operator()(rd_kafka_queue_t* q) const noexcept { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const noexcept { rd_kafka_event_destroy(e); }
};
struct NewTopicDeleter {
  void operator()(rd_kafka_NewTopic_t* t) const noexcept { rd_kafka_NewTopic_destroy(t); }
};
struct TopicDeleter {
  void operator()(rd_kafka_topic_t* t) const noexcept { rd_kafka_topic_destroy(t); }
};
struct AdminOptionsDeleter {
  void operator()(rd_kafka_AdminOptions_t* o) const noexcept { rd_kafka_AdminOptions_destroy(o); }
};
using QueuePtr = std::unique_ptr<rd_kafka_queue_t, QueueDeleter>;
using EventPtr = std::unique_ptr<rd_kafka_event_t, EventDeleter>;
using NewTopicPtr = std::unique_ptr<rd_kafka_NewTopic_t, NewTopicDeleter>;
using AdminOptionsPtr = std::unique_ptr<rd_kafka_AdminOptions_t, AdminOptionsDeleter>;
using TopicPtr = std::unique_ptr<rd_kafka_topic_t, TopicDeleter>;

/// Wakes a thread that waits for any of several librdkafka queues or for
/// another thread (Transport::wake): a non-blocking pipe that the queues
/// given to watch() write to when they receive something, as does signal().
/// The waiting thread calls drain(), then serves the queues without
/// waiting, then wait(): whatever arrives after drain() ends that wait.
class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  /// False when the pipe could not be made (then wait() only sleeps).
  bool ok() const { return fds_[0] >= 0; }
  /// Makes `queue` write to the pipe when it receives an event; unwatch()
  /// it before the queue's client is destroyed.
  void watch(rd_kafka_queue_t* queue);
  /// Stops `queue` from writing to the pipe.
  static void unwatch(rd_kafka_queue_t* queue);
  /// Ends the current or next wait(). Thread-safe; one write until drain().
  void signal();
  /// Empties the pipe. By the waiting thread, before it serves the queues.
  /// Returns whether signal() was called since the last drain().
  bool drain();
  /// Waits until something was written since drain(), or `timeout` passed.
  void wait(std::chrono::milliseconds timeout);

 private:
  int fds_[2] = {-1, -1};
  std::atomic<bool> signalled_{false};
};

/// Converts a librdkafka error code: OK for no error; Internal for errors no
/// retry can fix (fatal, authorization, message too large, invalid request);
/// Unavailable for everything else (timeouts, transport, leader changes, full
/// queue), which a later retry may overcome. The message reads
/// "<context>: <librdkafka's text>".
Status status_from_kafka(RdKafka::ErrorCode code, std::string_view context);

/// The timeout, in whole milliseconds, for a librdkafka wait that must last
/// `remaining`: rounded up, so that a wait never ends before its deadline (a
/// rounded-down 0 would return at once and make a caller that loops until its
/// deadline spin through the last fraction of a millisecond), and clamped to
/// [0, INT32_MAX].
int wait_timeout_ms(std::chrono::steady_clock::duration remaining);

/// True for a name Kafka accepts as a topic: 1-249 of [a-zA-Z0-9._-], not "." or "..".
bool valid_topic_name(std::string_view name);

/// Makes the client `rk` look `topic` up now: returns a handle on the topic
/// (keep it for as long as `rk` produces to the topic; it must be destroyed
/// before `rk`). Creating the handle of a topic `rk` does not know yet sends a
/// metadata request for it at once, without waiting for the answer, so that a
/// later produce() finds the topic's partitions and leaders already known or
/// on their way. A produce() by topic name alone leaves a new topic unknown
/// until librdkafka's periodic scan of unknown topics (every second) asks for
/// it, which delays the first message to each topic by up to a second.
/// Null when librdkafka refuses the handle (it then logs why).
TopicPtr start_topic_lookup(rd_kafka_t* rk, const std::string& topic);

/// Topic-level settings of a topic to create (e.g. cleanup.policy=compact).
using TopicConfig = std::vector<std::pair<std::string, std::string>>;

/// Asks the cluster behind `rk` to create `topics` without waiting; the result
/// event (RD_KAFKA_EVENT_CREATETOPICS_RESULT) arrives on `queue`. Fails only
/// when the request cannot be built (bad partition or replication numbers).
Status start_create_topics(rd_kafka_t* rk, const std::vector<std::string>& topics, int partitions,
                           int replication_factor, std::chrono::milliseconds timeout,
                           rd_kafka_queue_t* queue, const TopicConfig& config = {});

/// The outcome per topic of a CreateTopics result event; a topic that already
/// exists counts as OK. A request-level failure is reported for every topic.
std::vector<std::pair<std::string, Status>> create_topics_results(
    rd_kafka_event_t* event, const std::vector<std::string>& requested);

/// Creates `topics` and waits up to `timeout` for the answer. OK when each one
/// was created or already existed.
Status create_topics(rd_kafka_t* rk, const std::vector<std::string>& topics, int partitions,
                     int replication_factor, std::chrono::milliseconds timeout,
                     const TopicConfig& config = {});

}  // namespace saga::internal::kafka
