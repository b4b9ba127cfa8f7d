#include "kafka/rdkafka_util.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>

namespace saga::internal::kafka {

Status status_from_kafka(RdKafka::ErrorCode code, std::string_view context) {
  if (code == RdKafka::ERR_NO_ERROR) return ok_status();
  std::string msg(context);
  msg += ": ";
  msg += RdKafka::err2str(code);
  switch (code) {
    case RdKafka::ERR__FATAL:
    case RdKafka::ERR__INVALID_ARG:
    case RdKafka::ERR__NOT_IMPLEMENTED:
    case RdKafka::ERR__AUTHENTICATION:
    case RdKafka::ERR__SSL:
    case RdKafka::ERR_MSG_SIZE_TOO_LARGE:
    case RdKafka::ERR_INVALID_MSG:
    case RdKafka::ERR_INVALID_RECORD:
    case RdKafka::ERR_RECORD_LIST_TOO_LARGE:
    case RdKafka::ERR_TOPIC_EXCEPTION:
    case RdKafka::ERR_INVALID_REQUIRED_ACKS:
    case RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED:
    case RdKafka::ERR_GROUP_AUTHORIZATION_FAILED:
    case RdKafka::ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RdKafka::ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RdKafka::ERR_SASL_AUTHENTICATION_FAILED:
    case RdKafka::ERR_UNSUPPORTED_VERSION:
    case RdKafka::ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RdKafka::ERR_POLICY_VIOLATION:
      return Status::internal(std::move(msg));
    default:
      return Status::unavailable(std::move(msg));
  }
}

int wait_timeout_ms(std::chrono::steady_clock::duration remaining) {
  if (remaining <= std::chrono::steady_clock::duration::zero()) return 0;
  const int64_t ms = std::chrono::ceil<std::chrono::milliseconds>(remaining).count();
  return static_cast<int>(std::min<int64_t>(ms, INT32_MAX));
}

bool valid_topic_name(std::string_view name) {
  if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

TopicPtr start_topic_lookup(rd_kafka_t* rk, const std::string& topic) {
  // rd_kafka_topic_new (unlike the produce path) issues the "leader query" for
  // a topic it creates locally; a null configuration keeps the client's
  // default topic configuration (partitioner and all), as produce() would.
  return TopicPtr(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
}

Status start_create_topics(rd_kafka_t* rk, const std::vector<std::string>& topics, int partitions,
                           int replication_factor, std::chrono::milliseconds timeout,
                           rd_kafka_queue_t* queue, const TopicConfig& config) {
  char err[512] = {0};
  std::vector<NewTopicPtr> owned;
  std::vector<rd_kafka_NewTopic_t*> raw;
  for (const std::string& topic : topics) {
    NewTopicPtr nt(
        rd_kafka_NewTopic_new(topic.c_str(), partitions, replication_factor, err, sizeof err));
    if (!nt)
      return Status::invalid_argument("kafka: cannot describe topic \"" + topic + "\": " + err);
    for (const auto& [name, value] : config) {
      if (rd_kafka_NewTopic_set_config(nt.get(), name.c_str(), value.c_str()) !=
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        return Status::invalid_argument("kafka: topic \"" + topic + "\": bad setting " + name);
      }
    }
    raw.push_back(nt.get());
    owned.push_back(std::move(nt));
  }
  AdminOptionsPtr options(rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS));
  const int timeout_ms = static_cast<int>(std::max<int64_t>(timeout.count(), 1));
  // The operation timeout makes the broker answer only once the topic exists
  // on the controller, rather than as soon as creation was accepted.
  if (rd_kafka_AdminOptions_set_request_timeout(options.get(), timeout_ms, err, sizeof err) ||
      rd_kafka_AdminOptions_set_operation_timeout(options.get(), timeout_ms, err, sizeof err)) {
    return Status::invalid_argument(std::string("kafka: admin options: ") + err);
  }
  rd_kafka_CreateTopics(rk, raw.data(), raw.size(), options.get(), queue);
  return ok_status();
}

std::vector<std::pair<std::string, Status>> create_topics_results(
    rd_kafka_event_t* event, const std::vector<std::string>& requested) {
  std::vector<std::pair<std::string, Status>> out;
  if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    const Status s = status_from_kafka(static_cast<RdKafka::ErrorCode>(rd_kafka_event_error(event)),
                                       "kafka: create topics")
                         .with_context(rd_kafka_event_error_string(event));
    for (const std::string& topic : requested) out.emplace_back(topic, s);
    return out;
  }
  size_t n = 0;
  const rd_kafka_topic_result_t** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &n);
  for (size_t i = 0; i < n; ++i) {
    const std::string name = rd_kafka_topic_result_name(results[i]);
    const rd_kafka_resp_err_t code = rd_kafka_topic_result_error(results[i]);
    if (code == RD_KAFKA_RESP_ERR_NO_ERROR || code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      out.emplace_back(name, ok_status());
      continue;
    }
    const char* detail = rd_kafka_topic_result_error_string(results[i]);
    out.emplace_back(
        name, status_from_kafka(static_cast<RdKafka::ErrorCode>(code),
                                "kafka: create topic \"" + name + "\"" +
                                    (detail ? std::string(" (") + detail + ")" : std::string())));
  }
  return out;
}

Status create_topics(rd_kafka_t* rk, const std::vector<std::string>& topics, int partitions,
                     int replication_factor, std::chrono::milliseconds timeout,
                     const TopicConfig& config) {
  QueuePtr queue(rd_kafka_queue_new(rk));
  SAGA_RETURN_IF_ERROR(start_create_topics(rk, topics, partitions, replication_factor, timeout,
                                           queue.get(), config));
  // The admin request times out by itself after `timeout`; the margin only
  // covers the result's trip through the queue.
  EventPtr event(rd_kafka_queue_poll(queue.get(), static_cast<int>(timeout.count()) + 5'000));
  if (!event) {
    return Status::unavailable("kafka: no answer to topic creation within " +
                               std::to_string(timeout.count()) + " ms");
  }
  for (auto& [topic, status] : create_topics_results(event.get(), topics))
    SAGA_RETURN_IF_ERROR(status);
  return ok_status();
}

Waker::Waker() {
  if (::pipe2(fds_, O_NONBLOCK | O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
}

Waker::~Waker() {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

void Waker::watch(rd_kafka_queue_t* queue) {
  if (ok()) rd_kafka_queue_io_event_enable(queue, fds_[1], "w", 1);
}

void Waker::unwatch(rd_kafka_queue_t* queue) { rd_kafka_queue_io_event_enable(queue, -1, nullptr, 0); }

void Waker::signal() {
  if (!ok() || signalled_.exchange(true)) return;
  const char w = 's';
  (void)!::write(fds_[1], &w, 1);  // a full pipe already wakes the waiter
}

bool Waker::drain() {
  const bool signalled = signalled_.exchange(false);
  char buf[64];
  while (ok() && ::read(fds_[0], buf, sizeof buf) > 0) {
  }
  return signalled;
}

void Waker::wait(std::chrono::milliseconds timeout) {
  pollfd p{fds_[0], POLLIN, 0};
  (void)::poll(ok() ? &p : nullptr, ok() ? 1 : 0,
               static_cast<int>(std::clamp<int64_t>(timeout.count(), 0, INT32_MAX)));
}

}  // namespace saga::internal::kafka
