// saga::Transport over Kafka. One idempotent producer for sends, one consumer
// (cooperative-sticky group member) for subscriptions. librdkafka calls back
// only from inside producer poll/flush and consumer consume/close, which this
// class calls only from poll() and the destructor, so user callbacks run on the
// poll() thread as the Transport contract requires. The exception is
// librdkafka's log callback, which may run on its internal threads and
// therefore only writes to spdlog.
#include "saga/kafka_transport.h"

#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kafka/envelope_headers.h"
#include "kafka/fetch_watchdog.h"
#include "kafka/kafka_options.h"
#include "kafka/kafka_shard_log.h"
#include "kafka/offset_tracker.h"
#include "kafka/rdkafka_util.h"
#include "saga/json.h"
#include "trace.h"

namespace saga {
namespace internal::kafka {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Bound on messages handed to handlers by one poll(), so a busy topic cannot
// keep the caller (and its batch of acks) inside poll() indefinitely.
constexpr size_t kMaxMessagesPerPoll = 500;
// How long the destructor lets queued sends reach the broker. Anything still
// queued afterwards was never confirmed, so its sender re-sends it.
constexpr milliseconds kCloseFlush{5'000};
// librdkafka 2.0.2 aborts when a cooperative-sticky consumer is destroyed
// between joining its group and receiving its first assignment (librdkafka
// issue #4312, fixed by #4381 in a later release). The destructor waits this
// long for the first assignment before closing.
constexpr milliseconds kFirstAssignmentWait{10'000};
// An assigned partition whose fetch has not started for this long, while its
// group coordinator and leader are up, is assigned again (FetchWatchdog). A
// healthy assignment starts fetching within milliseconds.
constexpr milliseconds kStalledFetchLimit{10'000};
// A subscribed topic of which this member holds no partition while its group
// is settled is subscribed to again after this long (EmptyTopicWatch); then
// after twice as long each time, up to the second figure. A member of a group
// with more members than partitions holds none legitimately: it rejoins
// rarely, and says so in the log.
constexpr milliseconds kEmptyTopicFirst{15'000};
constexpr milliseconds kEmptyTopicLongest{300'000};

int to_ms(milliseconds d) { return static_cast<int>(std::clamp<int64_t>(d.count(), 0, INT32_MAX)); }

// What is left until `deadline`, in whole milliseconds rounded up (see
// wait_timeout_ms()): poll() loops until its deadline, and a remainder rounded
// down to 0 made it spin on consume(0) through the last fraction of every wait.
milliseconds remaining_until(SteadyClock::time_point deadline) {
  return milliseconds(wait_timeout_ms(deadline - SteadyClock::now()));
}

std::vector<TopicPartitionId> ids_of(const std::vector<RdKafka::TopicPartition*>& partitions) {
  std::vector<TopicPartitionId> out;
  out.reserve(partitions.size());
  for (const RdKafka::TopicPartition* tp : partitions)
    out.emplace_back(tp->topic(), tp->partition());
  return out;
}

class KafkaTransport final : public Transport,
                             private RdKafka::DeliveryReportCb,
                             private RdKafka::EventCb,
                             private RdKafka::RebalanceCb {
 public:
  KafkaTransport(std::string endpoint, KafkaOptions options)
      : endpoint_(std::move(endpoint)), opts_(std::move(options)) {
    log_ = spdlog::get(opts_.logger);
    if (!log_) log_ = spdlog::default_logger()->clone(opts_.logger);
  }

  ~KafkaTransport() override;

  KafkaTransport(const KafkaTransport&) = delete;
  KafkaTransport& operator=(const KafkaTransport&) = delete;

  Status init();

  Status subscribe(std::string_view destination, Handler handler) override;
  Status subscribe_partitioned(std::string_view destination, Handler handler,
                               PartitionedSubscription how) override;
  Status subscribe_table(std::string_view destination, Handler handler) override;
  void send(Message message, SendCallback on_sent) override;
  size_t poll(milliseconds max_wait) override;
  void wake() override { waker_.signal(); }
  Status health() const override;
  StatusOr<std::unique_ptr<ShardLog>> claim_shard(std::string_view log, uint32_t shard,
                                                  uint32_t shards) override;
  StatusOr<std::unique_ptr<ShardTail>> tail_shards(std::string_view log,
                                                   uint32_t shards) override;

 private:
  struct Subscription {
    std::string destination;
    std::shared_ptr<const Handler> handler;
    // subscribe_partitioned: told of the group's decisions on the topic.
    std::shared_ptr<const PartitionListener> listener;
  };
  struct Completion {
    SendCallback callback;
    Status status;
  };

  // ---- librdkafka callbacks (run inside poll/consume/flush/close)
  void dr_cb(RdKafka::Message& message) override;
  void trace_delivery(RdKafka::Message& message);
  void event_cb(RdKafka::Event& event) override;
  void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                    std::vector<RdKafka::TopicPartition*>& partitions) override;

  std::unique_ptr<RdKafka::Conf> make_conf(const std::map<std::string, std::string>& ours,
                                           Status& status);
  std::string topic_for(std::string_view destination) const;
  // The topic of a subscription to `destination`; InvalidArgument (after
  // `context`) for an empty destination or handler, or a name Kafka refuses.
  StatusOr<std::string> subscription_topic(const std::string& context,
                                           std::string_view destination, bool has_handler) const;
  // Starts the producer's metadata lookup of `topic` the first time it is named.
  void warm_topic(const std::string& topic);
  void ensure_topic_async(const std::string& topic);
  Status wait_until_visible(const std::string& topic, SteadyClock::time_point deadline);
  // Creates the changelog topic `topic` with `shards` partitions when it is
  // missing, and checks its partition count; once per topic.
  Status ensure_changelog(const std::string& topic, uint32_t shards);
  // The topic of changelog `log`, created or checked (shard count), for a
  // claim of its shard `shard` or a tail of its shards.
  StatusOr<std::string> changelog_topic(const std::string& context, std::string_view log,
                                        uint32_t shard, uint32_t shards);
  // What a claim or tail of shard `shard` of changelog topic `topic` needs.
  ShardLogSpec shard_spec(const std::string& topic, uint32_t shard);
  // FailedPrecondition unless `topic` has `partitions` partitions.
  Status check_partitions(const std::string& topic, uint32_t partitions, const std::string& what,
                          SteadyClock::time_point deadline);
  // subscribe() and subscribe_partitioned(): `partitions` 0 = the options'.
  Status subscribe_topic(std::string_view destination, Handler handler, uint32_t partitions,
                         std::shared_ptr<const PartitionListener> listener);
  // Tells the partitioned subscriptions what the group decided.
  void notify(const std::vector<RdKafka::TopicPartition*>& partitions,
              void (*call)(const PartitionListener&, const std::vector<uint32_t>&));

  // Queues the outcome of send `id` for the next poll().
  void complete(uint64_t id, Status status);
  // Serves producer events and admin results, then runs send callbacks.
  size_t serve_producer();
  size_t run_completions();
  void serve_admin_results();
  // Hands one consumed record to its handler; true when a handler ran.
  bool handle_record(RdKafka::Message& record);
  // Hands the records that have arrived to their handlers, up to a bound
  // (then sets backlog_). Returns how many.
  size_t serve_consumer();
  // The envelope of a consumed record, read as a message to `destination`.
  static StatusOr<Message> decode_record(RdKafka::Message& record, std::string destination);
  // Delivers what the tables' reader has ready; returns how many.
  size_t serve_tables();

  void mark_down(Status status);
  void mark_up();
  void on_stats(const std::string& json);
  // Assigns again the partitions the watchdog found stalled, and subscribes
  // again when a topic was left without partitions here (polling thread).
  void restart_stalled();
  // Adds `delta` to the partitions held of each topic in `partitions`.
  void count_held(const std::vector<RdKafka::TopicPartition*>& partitions, int delta);

  const std::string endpoint_;
  const KafkaOptions opts_;
  std::shared_ptr<spdlog::logger> log_;

  // Ends poll()'s wait: written to by the queues below and by wake(). It
  // outlives the handles, whose threads write to it.
  Waker waker_;
  // Handles; the destructor resets them explicitly, in this order: queues,
  // consumer, producer (admin_queue_ belongs to the producer's handle).
  std::unique_ptr<RdKafka::Producer> producer_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  // Reads the tables (subscribe_table): assigned their one partition each,
  // from the beginning, never in a group. Made by the first subscribe_table().
  std::unique_ptr<RdKafka::KafkaConsumer> table_reader_;
  QueuePtr admin_queue_;  // results of ensure_topic_async()
  // The queues poll() serves, watched by waker_: delivery reports and
  // producer events; records and consumer events; table records.
  QueuePtr producer_queue_, consumer_queue_, table_queue_;
  // poll() left records in a queue (its bound): the next one must not wait.
  bool backlog_ = false;
  std::shared_ptr<OffsetTracker> tracker_;

  // Sends awaiting their delivery report, by the id passed as msg_opaque, and
  // outcomes not yet reported to their senders.
  mutable std::mutex sends_mu_;
  std::unordered_map<uint64_t, SendCallback> pending_;  // GUARDED_BY(sends_mu_)
  std::deque<Completion> completions_;                  // GUARDED_BY(sends_mu_)
  uint64_t next_send_id_ = 1;                           // GUARDED_BY(sends_mu_)

  // Topics this transport asked the broker to create (or found existing), and
  // the producer's handles on the topics it was asked to send to (see
  // warm_topic(); destroyed before the producer).
  std::mutex topics_mu_;
  std::set<std::string> requested_topics_;           // GUARDED_BY(topics_mu_)
  std::map<std::string, TopicPtr> producer_topics_;  // GUARDED_BY(topics_mu_)

  mutable std::mutex subs_mu_;
  std::map<std::string, Subscription> subs_by_topic_;  // GUARDED_BY(subs_mu_)
  std::map<std::string, Subscription> tables_by_topic_;  // GUARDED_BY(subs_mu_)
  std::atomic<bool> has_tables_{false};

  std::mutex changelogs_mu_;
  std::set<std::string> changelogs_;  // GUARDED_BY(changelogs_mu_): checked changelog topics

  // Set by subscribe() and the rebalance callback; read by the destructor.
  std::atomic<bool> subscribed_{false};
  std::atomic<bool> assigned_once_{false};
  // KafkaOptions::from_beginning: the partitions already read from their start
  // (touched only by the rebalance callback, on the polling thread).
  std::set<std::pair<std::string, int32_t>> read_from_start_;
  // Reads the group consumer's statistics (event_cb, on the polling thread);
  // what it finds waits in stalled_ for restart_stalled().
  FetchWatchdog watchdog_{kStalledFetchLimit};
  std::mutex stalled_mu_;
  std::vector<FetchWatchdog::Partition> stalled_;  // GUARDED_BY(stalled_mu_)
  // Subscribed topics known to have partitions -> how many this member holds
  // (GUARDED_BY(subs_mu_)), watched by empty_topics_ (on the polling thread),
  // which sets resubscribe_ for restart_stalled().
  std::map<std::string, int> held_;
  EmptyTopicWatch empty_topics_{kEmptyTopicFirst, kEmptyTopicLongest};
  std::atomic<bool> resubscribe_{false};
  // Set by the destructor: the group's last decisions are not reported.
  std::atomic<bool> closing_{false};

  // health(): fatal wins over down; both are set from callbacks.
  mutable std::mutex health_mu_;
  Status fatal_;                      // GUARDED_BY(health_mu_)
  Status down_;                       // GUARDED_BY(health_mu_)
  // librdkafka's last connection failure (its FAIL log line): 2.12 reports
  // a broker that closes the connection there only, not as an error event
  // as 2.0 does, so a failed init() quotes it.
  std::string last_failure_;  // GUARDED_BY(health_mu_)
  std::atomic<bool> is_down_{false};  // mirrors !down_.ok(), read without the lock
};

// ------------------------------------------------------------------ setup

std::unique_ptr<RdKafka::Conf> KafkaTransport::make_conf(
    const std::map<std::string, std::string>& ours, Status& status) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  auto set = [&](const std::string& key, const std::string& value) {
    if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK) {
      // Never echo the value: it may be a password.
      status = Status::invalid_argument("kafka property \"" + key + "\": " + err);
      return false;
    }
    return true;
  };
  for (const auto& [key, value] : ours) {
    if (!set(key, value)) return nullptr;
  }
  for (const auto& [key, value] : opts_.properties) {
    if (!set(key, value)) return nullptr;
  }
  if (conf->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) != RdKafka::Conf::CONF_OK) {
    status = Status::internal("kafka: cannot install the event callback: " + err);
    return nullptr;
  }
  return conf;
}

Status KafkaTransport::init() {
  Status status;
  auto producer_conf = make_conf(
      {
          {"bootstrap.servers", opts_.brokers},
          {"client.id", opts_.client_id},
          // Idempotence implies acks=all and retries without duplicates or
          // reordering within a partition: what "confirmed" must mean.
          {"enable.idempotence", "true"},
          {"acks", "all"},
          // Send at once: a lone saga's every hop would wait the linger out
          // (2 ms of a 2.7 ms hop). Under load, records batch by themselves
          // while earlier requests are in flight (bench/README.md, "Where a
          // saga's time goes"); a deployment that prefers fewer, larger
          // requests sets linger.ms in KafkaOptions::properties.
          {"linger.ms", "0"},
          // Requests are written whole: Nagle's algorithm could only hold
          // a small one back until the previous one is acknowledged.
          {"socket.nagle.disable", "true"},
          // A send that cannot be delivered fails after this long; the outbox
          // keeps the record and tries again, so nothing is lost.
          {"message.timeout.ms", "30000"},
          // Java's partitioner, so other Kafka clients agree on key -> partition.
          {"partitioner", "murmur2_random"},
          // We create topics with the configured partition count; a broker that
          // auto-creates topics must not win the race with its own defaults.
          {"allow.auto.create.topics", "false"},
          {"statistics.interval.ms", kStatsIntervalMs},
      },
      status);
  if (!producer_conf) return status;
  std::string err;
  if (producer_conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this), err) !=
      RdKafka::Conf::CONF_OK) {
    return Status::internal("kafka: cannot install the delivery report callback: " + err);
  }
  producer_.reset(RdKafka::Producer::create(producer_conf.get(), err));
  if (!producer_) return Status::invalid_argument("kafka: cannot create the producer: " + err);

  auto consumer_conf = make_conf(consumer_properties(opts_), status);
  if (!consumer_conf) return status;
  if (consumer_conf->set("rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this), err) !=
      RdKafka::Conf::CONF_OK) {
    return Status::internal("kafka: cannot install the rebalance callback: " + err);
  }
  consumer_.reset(RdKafka::KafkaConsumer::create(consumer_conf.get(), err));
  if (!consumer_) return Status::invalid_argument("kafka: cannot create the consumer: " + err);

  admin_queue_.reset(rd_kafka_queue_new(producer_->c_ptr()));
  producer_queue_.reset(rd_kafka_queue_get_main(producer_->c_ptr()));
  consumer_queue_.reset(rd_kafka_queue_get_consumer(consumer_->c_ptr()));
  waker_.watch(producer_queue_.get());
  if (consumer_queue_) waker_.watch(consumer_queue_.get());
  tracker_ = std::make_shared<OffsetTracker>(
      [consumer = consumer_.get(), log = log_](const std::string& topic, int32_t partition,
                                               int64_t next) {
        std::unique_ptr<RdKafka::TopicPartition> tp(
            RdKafka::TopicPartition::create(topic, partition, next));
        std::vector<RdKafka::TopicPartition*> list{tp.get()};
        RdKafka::ErrorCode rc = consumer->offsets_store(list);
        if (rc == RdKafka::ERR_NO_ERROR) rc = tp->err();
        if (rc != RdKafka::ERR_NO_ERROR) {
          // Typically the partition was revoked meanwhile; its new owner
          // redelivers from the last commit.
          log->debug("kafka: cannot store offset {} of {}[{}]: {}", next, topic, partition,
                     RdKafka::err2str(rc));
        }
        return status_from_kafka(rc, "kafka: offsets_store");
      });

  // Prove a broker answers before anyone relies on this transport. Asked in
  // slices, serving error events in between, so that a broker refusing the
  // credentials (event_cb: an authentication error, which librdkafka would
  // retry until the timeout) fails at once rather than after startup_timeout.
  const auto deadline = SteadyClock::now() + opts_.startup_timeout;
  RdKafka::ErrorCode rc = RdKafka::ERR__TIMED_OUT;
  while (true) {
    RdKafka::Metadata* raw_md = nullptr;
    rc = producer_->metadata(
        false, nullptr, &raw_md,
        std::max(1, to_ms(std::min<milliseconds>(remaining_until(deadline), milliseconds(200)))));
    std::unique_ptr<RdKafka::Metadata> md(raw_md);
    if (rc == RdKafka::ERR_NO_ERROR) break;
    producer_->poll(0);  // error events -> event_cb
    {
      std::lock_guard lock(health_mu_);
      // Connection errors are Unavailable; an authentication failure is not.
      if (!down_.ok() && down_.code() != StatusCode::kUnavailable) return down_;
    }
    if (SteadyClock::now() >= deadline) break;
  }
  if (rc != RdKafka::ERR_NO_ERROR) {
    producer_->poll(0);  // collect the error events that say why (connection refused, ...)
    std::string why = RdKafka::err2str(rc);
    {
      std::lock_guard lock(health_mu_);
      if (!down_.ok()) {
        why += "; " + down_.message();
      } else if (!last_failure_.empty()) {
        why += "; " + last_failure_;
      }
    }
    // A TLS or SASL listener closes a plaintext client's connection at its
    // first request (ApiVersion); librdkafka 2.0 says so, later ones do not.
    if (why.find("APIVERSION_QUERY") != std::string::npos &&
        why.find("security.protocol") == std::string::npos) {
      why += "; the broker closed the connection at the first request: check "
             "security.protocol (is it a TLS or SASL listener?)";
    }
    return Status::unavailable("kafka: no broker of \"" + opts_.brokers + "\" answered within " +
                               std::to_string(opts_.startup_timeout.count()) + " ms (" + why + ")");
  }
  mark_up();
  log_->info("kafka transport \"{}\" connected to {} (group \"{}\")", endpoint_, opts_.brokers,
             opts_.group_id);
  return ok_status();
}

KafkaTransport::~KafkaTransport() {
  closing_ = true;
  for (QueuePtr* q : {&producer_queue_, &consumer_queue_, &table_queue_}) {
    if (*q) Waker::unwatch(q->get());
    q->reset();
  }
  if (consumer_) {
    if (subscribed_ && !assigned_once_) {
      // Records consumed here are neither handled nor acked: redelivered later.
      const auto deadline = SteadyClock::now() + kFirstAssignmentWait;
      while (!assigned_once_ && SteadyClock::now() < deadline) {
        std::unique_ptr<RdKafka::Message> m(consumer_->consume(100));
      }
    }
    if (tracker_) tracker_->detach();
    // close() waits for the group coordinator and never returns when no broker
    // answers. So ask first; without a broker, leave without closing (the
    // consumer's destructor then skips the close): acked offsets not yet
    // committed are delivered again later, which the inbox and reply checks absorb.
    RdKafka::Metadata* md = nullptr;
    const RdKafka::ErrorCode reach = consumer_->metadata(false, nullptr, &md, 2000);
    delete md;
    if (reach != RdKafka::ERR_NO_ERROR) {
      log_->warn("kafka: no broker answers ({}); leaving the group without closing",
                 RdKafka::err2str(reach));
    } else {
      // Runs the revoke callback, which commits the acked offsets, and leaves the group.
      const RdKafka::ErrorCode rc = consumer_->close();
      if (rc != RdKafka::ERR_NO_ERROR)
        log_->warn("kafka: closing the consumer: {}", RdKafka::err2str(rc));
    }
  }
  if (producer_ && producer_->outq_len() > 0) {
    const RdKafka::ErrorCode rc = producer_->flush(to_ms(kCloseFlush));
    if (rc != RdKafka::ERR_NO_ERROR) {
      log_->warn("kafka: {} sends still queued at close; their senders will re-send them",
                 producer_->outq_len());
    }
  }
  // Callbacks still pending are dropped: the contract runs them only in poll().
  {
    std::lock_guard lock(topics_mu_);
    producer_topics_.clear();
  }
  if (table_reader_) {
    RdKafka::Metadata* md = nullptr;
    const RdKafka::ErrorCode reach = table_reader_->metadata(false, nullptr, &md, 2000);
    delete md;
    if (reach == RdKafka::ERR_NO_ERROR) (void)table_reader_->close();  // no group: nothing to commit
  }
  admin_queue_.reset();
  table_reader_.reset();
  consumer_.reset();
  producer_.reset();
}

std::string KafkaTransport::topic_for(std::string_view destination) const {
  auto it = opts_.topic_overrides.find(std::string(destination));
  if (it != opts_.topic_overrides.end()) return it->second;
  return opts_.topic_prefix + std::string(destination);
}

// ------------------------------------------------------------------ topics

void KafkaTransport::warm_topic(const std::string& topic) {
  std::lock_guard lock(topics_mu_);
  if (producer_topics_.count(topic)) return;
  // Without this, the first record to a topic waits in librdkafka's queue for
  // its periodic unknown-topic scan (up to 1 s) before anyone asks the broker
  // where the topic's partitions are; on each hop between services.
  TopicPtr handle = start_topic_lookup(producer_->c_ptr(), topic);
  if (!handle) {
    log_->warn("kafka transport \"{}\": cannot look up topic {}: {}", endpoint_, topic,
               rd_kafka_err2str(rd_kafka_last_error()));
    return;  // produce() still works, only the first record may wait longer
  }
  producer_topics_.emplace(topic, std::move(handle));
}

void KafkaTransport::ensure_topic_async(const std::string& topic) {
  if (!opts_.create_topics) return;
  {
    std::lock_guard lock(topics_mu_);
    if (!requested_topics_.insert(topic).second) return;
  }
  Status s =
      start_create_topics(producer_->c_ptr(), {topic}, opts_.partitions, opts_.replication_factor,
                          opts_.startup_timeout, admin_queue_.get());
  if (!s.ok()) {
    log_->error("{}", s.to_string());
    std::lock_guard lock(topics_mu_);
    requested_topics_.erase(topic);
  }
}

void KafkaTransport::serve_admin_results() {
  for (;;) {
    EventPtr event(rd_kafka_queue_poll(admin_queue_.get(), 0));
    if (!event) return;
    if (rd_kafka_event_type(event.get()) != RD_KAFKA_EVENT_CREATETOPICS_RESULT) continue;
    if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // The request as a whole failed and the event does not say for which
      // topics: forget them all; asking again for an existing topic is harmless.
      log_->warn("kafka: topic creation failed: {}", rd_kafka_event_error_string(event.get()));
      std::lock_guard lock(topics_mu_);
      requested_topics_.clear();
      continue;
    }
    for (auto& [topic, status] : create_topics_results(event.get(), {})) {
      if (status.ok()) continue;
      // Forget the request so that the next send to this topic tries again.
      log_->warn("{}", status.to_string());
      std::lock_guard lock(topics_mu_);
      requested_topics_.erase(topic);
    }
  }
}

Status KafkaTransport::wait_until_visible(const std::string& topic,
                                          SteadyClock::time_point deadline) {
  // The consumer's handle asks, so that its metadata cache knows the topic
  // before the subscription needs it.
  std::string last = "not in the cluster's metadata";
  for (;;) {
    RdKafka::Metadata* raw = nullptr;
    const RdKafka::ErrorCode rc = consumer_->metadata(
        true, nullptr, &raw, to_ms(std::max(remaining_until(deadline), milliseconds(1))));
    std::unique_ptr<RdKafka::Metadata> md(raw);
    if (rc != RdKafka::ERR_NO_ERROR) {
      last = RdKafka::err2str(rc);
    } else {
      for (const RdKafka::TopicMetadata* t : *md->topics()) {
        if (t->topic() != topic) continue;
        if (t->err() == RdKafka::ERR_NO_ERROR && !t->partitions()->empty()) return ok_status();
        last = RdKafka::err2str(t->err());
      }
    }
    if (SteadyClock::now() >= deadline) {
      return Status::unavailable("kafka: topic \"" + topic + "\" did not appear within " +
                                 std::to_string(opts_.startup_timeout.count()) + " ms (" + last +
                                 ")");
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

// ------------------------------------------------------------------ API

Status KafkaTransport::subscribe(std::string_view destination, Handler handler) {
  return subscribe_topic(destination, std::move(handler), 0, nullptr);
}

Status KafkaTransport::subscribe_partitioned(std::string_view destination, Handler handler,
                                             PartitionedSubscription how) {
  if (how.partitions == 0)
    return Status::invalid_argument("kafka: subscribe_partitioned: zero partitions");
  if (!how.listener.assigned || !how.listener.revoked || !how.listener.lost)
    return Status::invalid_argument("kafka: subscribe_partitioned: every listener callback is required");
  return subscribe_topic(destination, std::move(handler), how.partitions,
                         std::make_shared<const PartitionListener>(std::move(how.listener)));
}

StatusOr<std::string> KafkaTransport::subscription_topic(const std::string& context,
                                                         std::string_view destination,
                                                         bool has_handler) const {
  if (destination.empty()) return Status::invalid_argument(context + ": empty destination");
  if (!has_handler) return Status::invalid_argument(context + ": empty handler");
  std::string topic = topic_for(destination);
  if (!valid_topic_name(topic)) {
    return Status::invalid_argument(context + ": \"" + topic +
                                    "\" is not a valid Kafka topic name");
  }
  return topic;
}

Status KafkaTransport::subscribe_table(std::string_view destination, Handler handler) {
  const std::string context = "kafka transport \"" + endpoint_ + "\": subscribe_table";
  SAGA_ASSIGN_OR_RETURN(const std::string topic,
                        subscription_topic(context, destination, handler != nullptr));
  {
    std::lock_guard lock(subs_mu_);
    if (tables_by_topic_.count(topic) != 0) {
      return Status::already_exists(context + ": already reading \"" + std::string(destination) +
                                    "\"");
    }
  }
  const auto deadline = SteadyClock::now() + opts_.startup_timeout;
  if (opts_.create_topics) {
    // One partition (one order for the whole table), compacted: the last
    // record of each key stays.
    const TopicConfig config = {{"cleanup.policy", "compact"},
                                {"segment.ms", "3600000"},
                                {"min.cleanable.dirty.ratio", "0.1"}};
    SAGA_RETURN_IF_ERROR(create_topics(producer_->c_ptr(), {topic}, 1, opts_.replication_factor,
                                       opts_.startup_timeout, config)
                             .with_context(context));
    {
      std::lock_guard lock(topics_mu_);
      requested_topics_.insert(topic);
    }
    SAGA_RETURN_IF_ERROR(wait_until_visible(topic, deadline).with_context(context));
  }
  SAGA_RETURN_IF_ERROR(check_partitions(topic, 1, "table topic", deadline).with_context(context));
  if (!table_reader_) {
    Status made;
    std::map<std::string, std::string> props = consumer_properties(opts_);
    props["group.id"] = opts_.group_id + ".tables";  // never joins: assign() only
    props["enable.auto.commit"] = "false";
    props["isolation.level"] = "read_committed";
    props["auto.offset.reset"] = "earliest";
    props["client.id"] = opts_.client_id + ".tables";
    std::unique_ptr<RdKafka::Conf> conf = make_conf(props, made);
    if (!made.ok()) return made.with_context(context);
    std::string err;
    table_reader_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!table_reader_) return Status::internal(context + ": cannot create the reader: " + err);
    table_queue_.reset(rd_kafka_queue_get_consumer(table_reader_->c_ptr()));
    if (table_queue_) waker_.watch(table_queue_.get());
  }
  std::unique_ptr<RdKafka::TopicPartition> tp(
      RdKafka::TopicPartition::create(topic, 0, RdKafka::Topic::OFFSET_BEGINNING));
  std::vector<RdKafka::TopicPartition*> partitions{tp.get()};
  std::unique_ptr<RdKafka::Error> error(table_reader_->incremental_assign(partitions));
  if (error) return Status::unavailable(context + ": assign " + topic + ": " + error->str());
  {
    std::lock_guard lock(subs_mu_);
    tables_by_topic_.emplace(
        topic, Subscription{std::string(destination),
                            std::make_shared<const Handler>(std::move(handler)), nullptr});
  }
  has_tables_ = true;
  log_->debug("kafka transport \"{}\" reads table \"{}\" (topic {})", endpoint_, destination,
              topic);
  return ok_status();
}

Status KafkaTransport::subscribe_topic(std::string_view destination, Handler handler,
                                       uint32_t partitions,
                                       std::shared_ptr<const PartitionListener> listener) {
  const std::string context = "kafka transport \"" + endpoint_ + "\": subscribe";
  SAGA_ASSIGN_OR_RETURN(const std::string topic,
                        subscription_topic(context, destination, handler != nullptr));
  {
    std::lock_guard lock(subs_mu_);
    auto it = subs_by_topic_.find(topic);
    if (it != subs_by_topic_.end()) {
      if (it->second.destination == destination) {
        return Status::already_exists(context + ": already subscribed to \"" +
                                      std::string(destination) + "\"");
      }
      return Status::invalid_argument(context + ": destinations \"" + it->second.destination +
                                      "\" and \"" + std::string(destination) +
                                      "\" would share topic \"" + topic + "\"");
    }
  }
  const auto deadline = SteadyClock::now() + opts_.startup_timeout;
  if (opts_.create_topics) {
    SAGA_RETURN_IF_ERROR(create_topics(producer_->c_ptr(), {topic},
                                       partitions != 0 ? static_cast<int>(partitions)
                                                       : opts_.partitions,
                                       opts_.replication_factor, opts_.startup_timeout)
                             .with_context(context));
    {
      std::lock_guard lock(topics_mu_);
      requested_topics_.insert(topic);
    }
    SAGA_RETURN_IF_ERROR(wait_until_visible(topic, deadline).with_context(context));
  }
  // Partition k is shard k: the count must be the engine's.
  if (partitions != 0)
    SAGA_RETURN_IF_ERROR(check_partitions(topic, partitions, "topic", deadline).with_context(context));
  std::vector<std::string> topics;
  {
    std::lock_guard lock(subs_mu_);
    // Created or checked above: it has partitions, so holding none is watched.
    if (opts_.create_topics || partitions != 0) held_.emplace(topic, 0);
    subs_by_topic_.emplace(topic,
                           Subscription{std::string(destination),
                                        std::make_shared<const Handler>(std::move(handler)),
                                        std::move(listener)});
    for (const auto& [t, sub] : subs_by_topic_) topics.push_back(t);
  }
  const RdKafka::ErrorCode rc = consumer_->subscribe(topics);
  if (rc != RdKafka::ERR_NO_ERROR) {
    std::lock_guard lock(subs_mu_);
    subs_by_topic_.erase(topic);
    return status_from_kafka(rc, context);
  }
  subscribed_ = true;
  log_->debug("kafka transport \"{}\" subscribed to \"{}\" (topic {})", endpoint_, destination,
              topic);
  return ok_status();
}

void KafkaTransport::send(Message message, SendCallback on_sent) {
  trace::point("k.send", message.saga_id, message.id);
  uint64_t id = 0;
  if (on_sent) {
    std::lock_guard lock(sends_mu_);
    id = next_send_id_++;
    pending_.emplace(id, std::move(on_sent));
  }
  if (message.destination.empty()) {
    return complete(id, Status::invalid_argument("kafka: send of \"" + message.id +
                                                 "\" without a destination"));
  }
  const std::string topic = topic_for(message.destination);
  if (!valid_topic_name(topic)) {
    return complete(
        id, Status::invalid_argument("kafka: \"" + topic + "\" is not a valid Kafka topic name"));
  }
  warm_topic(topic);
  ensure_topic_async(topic);

  std::unique_ptr<RdKafka::Headers> headers(RdKafka::Headers::create());
  for (const auto& [name, value] : encode_headers(message))
    headers->add(name, value.data(), value.size());
  const std::string& key = message.key.empty() ? message.saga_id : message.key;
  // RK_MSG_COPY: librdkafka copies payload and key before produce() returns.
  const RdKafka::ErrorCode rc = producer_->produce(
      topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY, message.payload.data(),
      message.payload.size(), key.empty() ? nullptr : key.data(), key.size(), 0, headers.get(),
      reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  if (rc == RdKafka::ERR_NO_ERROR) {
    (void)headers.release();  // librdkafka owns them once produce() succeeded
    return;
  }
  // Refused at once (local queue full, fatal producer, ...): reported like a
  // failed delivery, in the next poll(), never from inside send().
  complete(id, status_from_kafka(rc, "kafka: produce to " + topic));
}

size_t KafkaTransport::poll(milliseconds max_wait) {
  const auto deadline = SteadyClock::now() + std::max(max_wait, milliseconds(0));
  bool subscribed;
  {
    std::lock_guard lock(subs_mu_);
    subscribed = !subs_by_topic_.empty();
  }
  size_t n = 0;
  for (;;) {
    // Whatever reaches a queue after drain() ends the wait below; wake() since
    // the last drain() ends this poll().
    const bool woken = waker_.drain();
    backlog_ = false;
    n += serve_producer();
    if (has_tables_) n += serve_tables();
    if (subscribed) n += serve_consumer();
    if (woken || n > 0 || backlog_ || SteadyClock::now() >= deadline) break;
    waker_.wait(remaining_until(deadline));
  }
  restart_stalled();
  return n;
}

size_t KafkaTransport::serve_consumer() {
  // Error events count toward the bound too, so this loop always ends.
  size_t delivered = 0, tries = 0;
  for (; delivered < kMaxMessagesPerPoll && tries < 2 * kMaxMessagesPerPoll; ++tries) {
    std::unique_ptr<RdKafka::Message> record(consumer_->consume(0));
    if (record->err() == RdKafka::ERR__TIMED_OUT) return delivered;
    if (handle_record(*record)) ++delivered;
  }
  backlog_ = true;  // perhaps more: the next poll() serves them at once
  return delivered;
}

Status KafkaTransport::health() const {
  std::lock_guard lock(health_mu_);
  if (!fatal_.ok()) return fatal_;
  return down_;
}

// ------------------------------------------------------------------ changelogs

Status KafkaTransport::ensure_changelog(const std::string& topic, uint32_t shards) {
  std::lock_guard lock(changelogs_mu_);
  if (changelogs_.count(topic)) return ok_status();
  const auto deadline = SteadyClock::now() + opts_.startup_timeout;
  if (opts_.create_topics) {
    // Compacted: the topic is the shards' snapshot, one record per live key
    // after compaction (docs/sharding.md, "Records").
    const TopicConfig config = {{"cleanup.policy", "compact"},
                                {"segment.bytes", std::to_string(64 << 20)},
                                {"segment.ms", "3600000"},
                                {"min.cleanable.dirty.ratio", "0.1"},
                                // Tombstones outlive every checkpoint a restore trusts
                                // (kCheckpointHorizon in src/changelog.h: 6 days).
                                {"delete.retention.ms", std::to_string(7 * 24 * 3600 * 1000LL)}};
    SAGA_RETURN_IF_ERROR(create_topics(producer_->c_ptr(), {topic}, static_cast<int>(shards),
                                       opts_.replication_factor, opts_.startup_timeout, config));
    SAGA_RETURN_IF_ERROR(wait_until_visible(topic, deadline));
  }
  SAGA_RETURN_IF_ERROR(check_partitions(topic, shards, "changelog topic", deadline));
  changelogs_.insert(topic);
  return ok_status();
}

Status KafkaTransport::check_partitions(const std::string& topic, uint32_t partitions,
                                        const std::string& what,
                                        SteadyClock::time_point deadline) {
  // A topic just made (by this process or another) may not be in the answer
  // of every broker yet: asked again until the deadline.
  for (;;) {
    Status missing;
    RdKafka::Metadata* raw = nullptr;
    const RdKafka::ErrorCode rc =
        producer_->metadata(true, nullptr, &raw, to_ms(remaining_until(deadline)));
    std::unique_ptr<RdKafka::Metadata> md(raw);
    if (rc != RdKafka::ERR_NO_ERROR) return status_from_kafka(rc, "kafka: metadata of " + topic);
    missing = Status::unavailable("kafka: " + what + " " + topic + " is not in the metadata");
    for (const RdKafka::TopicMetadata* t : *md->topics()) {
      if (t->topic() != topic) continue;
      if (t->err() == RdKafka::ERR_UNKNOWN_TOPIC_OR_PART ||
          t->err() == RdKafka::ERR_LEADER_NOT_AVAILABLE) {
        missing = status_from_kafka(t->err(), "kafka: " + what + " " + topic);
        break;
      }
      if (t->err() != RdKafka::ERR_NO_ERROR)
        return status_from_kafka(t->err(), "kafka: " + what + " " + topic);
      if (t->partitions()->size() != partitions) {
        return Status::failed_precondition(
            "kafka: " + what + " " + topic + " has " + std::to_string(t->partitions()->size()) +
            " partitions, but the engine has " + std::to_string(partitions) +
            " shards: partition k is shard k (docs/storage.md: changing the shard count)");
      }
      return ok_status();
    }
    if (SteadyClock::now() >= deadline) return missing;
    std::this_thread::sleep_for(milliseconds(100));
  }
}

ShardLogSpec KafkaTransport::shard_spec(const std::string& topic, uint32_t shard) {
  ShardLogSpec spec;
  spec.topic = topic;
  spec.partition = static_cast<int32_t>(shard);
  spec.transactional_id = topic + ".shard-" + std::to_string(shard);
  spec.producer_properties = {
      {"bootstrap.servers", opts_.brokers},
      {"client.id", opts_.client_id},
      {"linger.ms", "2"},
      {"partitioner", "murmur2_random"},
      {"allow.auto.create.topics", "false"},
  };
  spec.consumer_properties = consumer_properties(opts_);
  for (const auto& [key, value] : opts_.properties) {
    spec.producer_properties[key] = value;
    spec.consumer_properties[key] = value;
  }
  spec.topic_for = [this](std::string_view destination) { return topic_for(destination); };
  spec.prepare_topic = [this](const std::string& t) { ensure_topic_async(t); };
  spec.timeout = opts_.startup_timeout;
  spec.log = log_;
  return spec;
}

StatusOr<std::string> KafkaTransport::changelog_topic(const std::string& context,
                                                      std::string_view log, uint32_t shard,
                                                      uint32_t shards) {
  std::string topic = topic_for(log);
  if (!valid_topic_name(topic))
    return Status::invalid_argument(context + ": not a valid Kafka topic name");
  if (shards == 0 || shard >= shards)
    return Status::invalid_argument(context + ": shard out of range");
  SAGA_RETURN_IF_ERROR(ensure_changelog(topic, shards).with_context(context));
  return topic;
}

StatusOr<std::unique_ptr<ShardLog>> KafkaTransport::claim_shard(std::string_view log,
                                                                uint32_t shard, uint32_t shards) {
  const std::string context = "kafka transport \"" + endpoint_ + "\": claim shard " +
                              std::to_string(shard) + " of " + topic_for(log);
  SAGA_ASSIGN_OR_RETURN(std::string topic, changelog_topic(context, log, shard, shards));
  auto claimed = claim_kafka_shard(shard_spec(topic, shard));
  if (!claimed.ok()) return claimed.status().with_context(context);
  return claimed;
}

StatusOr<std::unique_ptr<ShardTail>> KafkaTransport::tail_shards(std::string_view log,
                                                                 uint32_t shards) {
  const std::string context =
      "kafka transport \"" + endpoint_ + "\": tail the shards of " + topic_for(log);
  SAGA_ASSIGN_OR_RETURN(std::string topic, changelog_topic(context, log, 0, shards));
  auto tail = tail_kafka_shards(shard_spec(topic, 0), shards);
  if (!tail.ok()) return tail.status().with_context(context);
  return tail;
}

// ------------------------------------------------------------------ sends

void KafkaTransport::complete(uint64_t id, Status status) {
  if (id == 0) return;  // the sender asked for no confirmation
  std::lock_guard lock(sends_mu_);
  auto node = pending_.extract(id);
  if (node.empty()) return;
  completions_.push_back(Completion{std::move(node.mapped()), std::move(status)});
}

size_t KafkaTransport::serve_producer() {
  producer_->poll(0);  // delivery reports -> completions_, errors and stats -> health
  serve_admin_results();
  return run_completions();
}

size_t KafkaTransport::run_completions() {
  std::deque<Completion> ready;
  {
    std::lock_guard lock(sends_mu_);
    ready.swap(completions_);
  }
  // Unlocked: a callback may send again.
  size_t done = 0;
  try {
    for (; done < ready.size(); ++done) ready[done].callback(std::move(ready[done].status));
  } catch (...) {
    // The sender's code threw: keep the outcomes not reported yet for the
    // next poll() rather than losing them, then let the exception go on.
    std::lock_guard lock(sends_mu_);
    completions_.insert(completions_.begin(), std::make_move_iterator(ready.begin() + done + 1),
                        std::make_move_iterator(ready.end()));
    throw;
  }
  return done;
}

void KafkaTransport::dr_cb(RdKafka::Message& message) {
  const auto id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(message.msg_opaque()));
  if (message.err() == RdKafka::ERR_NO_ERROR) {
    if (trace::enabled()) trace_delivery(message);
    mark_up();
    return complete(id, ok_status());
  }
  if (message.err() == RdKafka::ERR__UNKNOWN_TOPIC ||
      message.err() == RdKafka::ERR_UNKNOWN_TOPIC_OR_PART) {
    // Perhaps our creation request failed or the topic was deleted: let the
    // next send to it ask again.
    std::lock_guard lock(topics_mu_);
    requested_topics_.erase(message.topic_name());
  }
  Status status = status_from_kafka(message.err(), "kafka: delivery to " + message.topic_name());
  if (message.err() == RdKafka::ERR__FATAL) {
    std::lock_guard lock(health_mu_);
    if (!fatal_.ok()) status = fatal_;
  }
  complete(id, std::move(status));
}

// Records the delivery of a traced message (src/trace.h), named by its headers.
void KafkaTransport::trace_delivery(RdKafka::Message& message) {
  std::string saga_id, id;
  if (const RdKafka::Headers* h = message.headers()) {
    for (const RdKafka::Headers::Header& header : h->get_all()) {
      if (header.value() == nullptr) continue;
      std::string value(static_cast<const char*>(header.value()), header.value_size());
      if (header.key() == kHeaderSagaId) saga_id = std::move(value);
      if (header.key() == kHeaderMessageId) id = std::move(value);
    }
  }
  trace::point("k.acked", saga_id, id);
}

// ------------------------------------------------------------------ receive

bool KafkaTransport::handle_record(RdKafka::Message& record) {
  switch (record.err()) {
    case RdKafka::ERR_NO_ERROR:
      break;
    case RdKafka::ERR__TIMED_OUT:
    case RdKafka::ERR__PARTITION_EOF:
      return false;
    default:
      // Consumer-level trouble (unknown topic, broker gone, ...): librdkafka
      // keeps retrying by itself; record it for health() and carry on.
      if (record.err() == RdKafka::ERR__ALL_BROKERS_DOWN ||
          record.err() == RdKafka::ERR__TRANSPORT) {
        mark_down(Status::unavailable(std::string(record.err() == RdKafka::ERR__ALL_BROKERS_DOWN
                                                      ? "kafka: all brokers down: "
                                                      : "kafka: broker connection failed: ") +
                                      record.errstr()));
      }
      log_->warn("kafka consumer \"{}\": {}", endpoint_, record.errstr());
      return false;
  }
  mark_up();

  const std::string topic = record.topic_name();
  const int32_t partition = record.partition();
  const int64_t offset = record.offset();
  OffsetTracker::Token token = tracker_->delivered(topic, partition, offset);

  std::shared_ptr<const Handler> handler;
  std::string destination;
  {
    std::lock_guard lock(subs_mu_);
    auto it = subs_by_topic_.find(topic);
    if (it != subs_by_topic_.end()) {
      handler = it->second.handler;
      destination = it->second.destination;
    }
  }
  if (!handler) {
    log_->warn("kafka: record {}[{}]@{} from a topic nobody subscribed to; skipped", topic,
               partition, offset);
    tracker_->ack(token);
    return false;
  }

  StatusOr<Message> message = decode_record(record, std::move(destination));
  if (!message.ok()) {
    // A foreign or corrupt record can never be handled; acking it keeps it
    // from blocking the commits of every later record of its partition.
    log_->error("kafka: skipping undecodable record {}[{}]@{}: {}", topic, partition, offset,
                message.status().to_string());
    tracker_->ack(token);
    return false;
  }
  trace::point("k.recv", message->saga_id, message->id);
  Ack ack = [tracker = std::weak_ptr<OffsetTracker>(tracker_), token = std::move(token)] {
    if (auto t = tracker.lock()) t->ack(token);
  };
  (*handler)(std::move(*message), std::move(ack));
  return true;
}

StatusOr<Message> KafkaTransport::decode_record(RdKafka::Message& record, std::string destination) {
  std::vector<Header> headers;
  if (const RdKafka::Headers* h = record.headers()) {
    for (const RdKafka::Headers::Header& header : h->get_all()) {
      const char* value = static_cast<const char*>(header.value());
      headers.emplace_back(header.key(),
                           value ? std::string(value, header.value_size()) : std::string());
    }
  }
  std::string key =
      record.key_pointer()
          ? std::string(static_cast<const char*>(record.key_pointer()), record.key_len())
          : std::string();
  std::string payload = record.payload()
                            ? std::string(static_cast<const char*>(record.payload()), record.len())
                            : std::string();
  return decode_headers(headers, std::move(destination), std::move(key), std::move(payload));
}

size_t KafkaTransport::serve_tables() {
  size_t delivered = 0;
  for (size_t tries = 0; tries < 2 * kMaxMessagesPerPoll; ++tries) {
    std::unique_ptr<RdKafka::Message> record(table_reader_->consume(0));
    if (record->err() == RdKafka::ERR__TIMED_OUT) return delivered;
    if (record->err() != RdKafka::ERR_NO_ERROR) {
      if (record->err() != RdKafka::ERR__PARTITION_EOF)
        log_->warn("kafka table reader \"{}\": {}", endpoint_, record->errstr());
      continue;
    }
    std::shared_ptr<const Handler> handler;
    std::string destination;
    {
      std::lock_guard lock(subs_mu_);
      auto it = tables_by_topic_.find(record->topic_name());
      if (it == tables_by_topic_.end()) continue;
      handler = it->second.handler;
      destination = it->second.destination;
    }
    StatusOr<Message> message = decode_record(*record, std::move(destination));
    if (!message.ok()) {
      log_->error("kafka: skipping undecodable table record {}@{}: {}", record->topic_name(),
                  record->offset(), message.status().to_string());
      continue;
    }
    (*handler)(std::move(*message), [] {});  // a table's position is never committed
    if (++delivered == kMaxMessagesPerPoll) break;
  }
  backlog_ = true;  // perhaps more: the next poll() serves them at once
  return delivered;
}

void KafkaTransport::rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                                  std::vector<RdKafka::TopicPartition*>& partitions) {
  const bool cooperative = consumer->rebalance_protocol() == "COOPERATIVE";
  std::unique_ptr<RdKafka::Error> error;
  RdKafka::ErrorCode rc = RdKafka::ERR_NO_ERROR;
  if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
    if (opts_.from_beginning) {  // the first time: from the start, not the group's offset
      for (RdKafka::TopicPartition* p : partitions)
        if (read_from_start_.insert({p->topic(), p->partition()}).second)
          p->set_offset(RdKafka::Topic::OFFSET_BEGINNING);
    }
    tracker_->assign(ids_of(partitions));
    count_held(partitions, +1);
    if (cooperative) {
      error.reset(consumer->incremental_assign(partitions));
    } else {
      rc = consumer->assign(partitions);
    }
    assigned_once_ = true;
    log_->info("kafka transport \"{}\": assigned {} partition(s)", endpoint_, partitions.size());
    notify(partitions, [](const PartitionListener& l, const std::vector<uint32_t>& ps) {
      l.assigned(ps);
    });
  } else if (err == RdKafka::ERR__REVOKE_PARTITIONS) {
    // The engines stop for these partitions first (their last acks count),
    // then the acked offsets are committed and the partitions let go.
    if (consumer->assignment_lost()) {
      notify(partitions, [](const PartitionListener& l, const std::vector<uint32_t>& ps) {
        l.lost(ps);
      });
    } else {
      notify(partitions, [](const PartitionListener& l, const std::vector<uint32_t>& ps) {
        l.revoked(ps);
      });
    }
    if (!consumer->assignment_lost()) {
      // What was acked so far is durable: commit it before someone else takes over.
      const RdKafka::ErrorCode commit = consumer->commitSync();
      if (commit != RdKafka::ERR_NO_ERROR && commit != RdKafka::ERR__NO_OFFSET) {
        log_->warn("kafka transport \"{}\": commit on revoke failed: {}", endpoint_,
                   RdKafka::err2str(commit));
      }
    }
    tracker_->revoke(ids_of(partitions));
    count_held(partitions, -1);
    if (cooperative) {
      error.reset(consumer->incremental_unassign(partitions));
    } else {
      rc = consumer->unassign();
    }
    log_->info("kafka transport \"{}\": revoked {} partition(s)", endpoint_, partitions.size());
  } else {
    log_->error("kafka transport \"{}\": rebalance failed: {}", endpoint_, RdKafka::err2str(err));
    notify(partitions, [](const PartitionListener& l, const std::vector<uint32_t>& ps) {
      l.lost(ps);
    });
    tracker_->revoke(ids_of(partitions));
    rc = consumer->unassign();
    std::lock_guard lock(subs_mu_);
    for (auto& [topic, held] : held_) held = 0;
  }
  if (error) log_->error("kafka transport \"{}\": rebalance: {}", endpoint_, error->str());
  if (rc != RdKafka::ERR_NO_ERROR) {
    log_->error("kafka transport \"{}\": rebalance: {}", endpoint_, RdKafka::err2str(rc));
  }
}

void KafkaTransport::notify(const std::vector<RdKafka::TopicPartition*>& partitions,
                            void (*call)(const PartitionListener&, const std::vector<uint32_t>&)) {
  if (closing_) return;  // the engine that listens is being destroyed
  std::map<std::shared_ptr<const PartitionListener>, std::vector<uint32_t>> by_listener;
  {
    std::lock_guard lock(subs_mu_);
    for (const RdKafka::TopicPartition* tp : partitions) {
      auto it = subs_by_topic_.find(tp->topic());
      if (it == subs_by_topic_.end() || !it->second.listener) continue;
      by_listener[it->second.listener].push_back(static_cast<uint32_t>(tp->partition()));
    }
  }
  for (auto& [listener, ps] : by_listener) call(*listener, ps);
}

// ------------------------------------------------------------------ health and logs

void KafkaTransport::mark_down(Status status) {
  std::lock_guard lock(health_mu_);
  down_ = std::move(status);
  is_down_ = true;
}

void KafkaTransport::mark_up() {
  if (!is_down_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(health_mu_);
  if (!down_.ok()) log_->info("kafka transport \"{}\": brokers reachable again", endpoint_);
  down_ = ok_status();
  is_down_ = false;
}

void KafkaTransport::on_stats(const std::string& json) {
  const bool down = is_down_.load(std::memory_order_relaxed);
  if (!down && !subscribed_.load(std::memory_order_relaxed)) return;
  const StatusOr<nlohmann::json> parsed = parse_json(json);
  if (!parsed.ok() || !parsed->is_object()) return;
  const nlohmann::json& doc = *parsed;
  if (subscribed_.load(std::memory_order_relaxed) && consumer_ &&
      doc.value("name", "") == consumer_->name()) {
    const auto now = SteadyClock::now();
    std::vector<FetchWatchdog::Partition> stalled = watchdog_.observe(doc, now);
    if (!stalled.empty()) {
      std::lock_guard lock(stalled_mu_);
      stalled_.insert(stalled_.end(), stalled.begin(), stalled.end());
    }
    auto cgrp = doc.find("cgrp");
    const bool steady = cgrp != doc.end() && cgrp->is_object() &&
                        cgrp->value("state", "") == "up" &&
                        cgrp->value("join_state", "") == "steady";
    std::map<std::string, int> held;
    {
      std::lock_guard lock(subs_mu_);
      held = held_;
    }
    for (const std::string& topic : empty_topics_.observe(steady, held, now)) {
      log_->warn("kafka transport \"{}\": the group gave this member no partition of {} "
                 "(a topic its coordinator may not have known yet when the group formed): "
                 "subscribing again",
                 endpoint_, topic);
      resubscribe_ = true;
    }
  }
  if (!down) return;
  auto brokers = doc.find("brokers");
  if (brokers == doc.end() || !brokers->is_object()) return;
  for (const auto& [name, broker] : brokers->items()) {
    if (broker.is_object() && broker.value("state", "") == "UP") return mark_up();
  }
}

void KafkaTransport::count_held(const std::vector<RdKafka::TopicPartition*>& partitions,
                                int delta) {
  std::lock_guard lock(subs_mu_);
  for (const RdKafka::TopicPartition* p : partitions) {
    auto it = held_.find(p->topic());
    if (it != held_.end()) it->second = std::max(0, it->second + delta);
  }
}

void KafkaTransport::restart_stalled() {
  if (resubscribe_.exchange(false) && !closing_) {
    std::vector<std::string> topics;
    {
      std::lock_guard lock(subs_mu_);
      for (const auto& [topic, sub] : subs_by_topic_) topics.push_back(topic);
    }
    RdKafka::ErrorCode rc = consumer_->unsubscribe();
    if (rc == RdKafka::ERR_NO_ERROR) rc = consumer_->subscribe(topics);
    if (rc != RdKafka::ERR_NO_ERROR) {
      log_->warn("kafka transport \"{}\": subscribing again failed: {}", endpoint_,
                 RdKafka::err2str(rc));
    }
  }
  std::vector<FetchWatchdog::Partition> stalled;
  {
    std::lock_guard lock(stalled_mu_);
    stalled.swap(stalled_);
  }
  if (stalled.empty() || closing_) return;
  std::vector<std::unique_ptr<RdKafka::TopicPartition>> owned;
  std::vector<RdKafka::TopicPartition*> list;
  for (const auto& [topic, partition] : stalled) {
    log_->warn("kafka transport \"{}\": {}[{}] assigned but not fetched for {} s: assigning it "
               "again",
               endpoint_, topic, partition, kStalledFetchLimit.count() / 1000);
    owned.emplace_back(RdKafka::TopicPartition::create(topic, partition));
    list.push_back(owned.back().get());
  }
  // Assigned again without an offset, the partition asks for its committed
  // offset anew; the engines are not told (the ownership did not change).
  if (consumer_->rebalance_protocol() == "COOPERATIVE") {
    std::unique_ptr<RdKafka::Error> error(consumer_->incremental_unassign(list));
    if (!error) error.reset(consumer_->incremental_assign(list));
    if (error) {
      log_->warn("kafka transport \"{}\": assigning stalled partitions again failed: {}",
                 endpoint_, error->str());
    }
    return;
  }
  std::vector<RdKafka::TopicPartition*> all;
  RdKafka::ErrorCode rc = consumer_->assignment(all);
  if (rc == RdKafka::ERR_NO_ERROR) rc = consumer_->assign(all);
  RdKafka::TopicPartition::destroy(all);
  if (rc != RdKafka::ERR_NO_ERROR) {
    log_->warn("kafka transport \"{}\": assigning stalled partitions again failed: {}",
               endpoint_, RdKafka::err2str(rc));
  }
}

void KafkaTransport::event_cb(RdKafka::Event& event) {
  // An authentication or TLS failure (below) says more than the connection
  // errors that follow it ("all brokers down"), which do not replace it.
  const auto mark_down_unless_refused = [this](Status status) {
    {
      std::lock_guard lock(health_mu_);
      if (!down_.ok() && down_.code() != StatusCode::kUnavailable) return;
    }
    mark_down(std::move(status));
  };
  try {
    switch (event.type()) {
      case RdKafka::Event::EVENT_ERROR:
        if (event.fatal()) {
          std::string reason = event.str();
          std::string original;
          if (producer_ && producer_->fatal_error(original) != RdKafka::ERR_NO_ERROR)
            reason = original;
          std::lock_guard lock(health_mu_);
          fatal_ =
              Status::internal("kafka: fatal error, the transport must be recreated: " + reason);
          log_->critical("kafka transport \"{}\": {}", endpoint_, fatal_.message());
        } else if (event.err() == RdKafka::ERR__ALL_BROKERS_DOWN) {
          mark_down_unless_refused(Status::unavailable("kafka: all brokers down: " + event.str()));
          log_->warn("kafka transport \"{}\": {}", endpoint_, event.str());
        } else if (event.err() == RdKafka::ERR__TRANSPORT) {
          mark_down_unless_refused(
              Status::unavailable("kafka: broker connection failed: " + event.str()));
          log_->warn("kafka transport \"{}\": {}", endpoint_, event.str());
        } else if (event.err() == RdKafka::ERR__AUTHENTICATION ||
                   event.err() == RdKafka::ERR__SSL) {
          // The broker refused the credentials or the SASL mechanism, or TLS
          // failed (e.g. a certificate the CA file does not vouch for): no retry
          // fixes that, so init() fails at once. librdkafka's text names the
          // broker, mechanism and reason, never the password.
          const char* what =
              event.err() == RdKafka::ERR__SSL ? "TLS handshake failed" : "authentication failed";
          mark_down(
              status_from_kafka(event.err(), std::string("kafka: ") + what + ": " + event.str()));
          log_->error("kafka transport \"{}\": {}: {}", endpoint_, what, event.str());
        } else {
          log_->warn("kafka transport \"{}\": {}: {}", endpoint_, RdKafka::err2str(event.err()),
                     event.str());
        }
        break;
      case RdKafka::Event::EVENT_STATS:
        on_stats(event.str());
        break;
      case RdKafka::Event::EVENT_LOG: {
        // May run on a librdkafka thread: only spdlog (thread-safe) is used.
        spdlog::level::level_enum level = spdlog::level::debug;
        switch (event.severity()) {
          case RdKafka::Event::EVENT_SEVERITY_EMERG:
          case RdKafka::Event::EVENT_SEVERITY_ALERT:
          case RdKafka::Event::EVENT_SEVERITY_CRITICAL:
            level = spdlog::level::critical;
            break;
          case RdKafka::Event::EVENT_SEVERITY_ERROR:
            level = spdlog::level::err;
            break;
          case RdKafka::Event::EVENT_SEVERITY_WARNING:
            level = spdlog::level::warn;
            break;
          case RdKafka::Event::EVENT_SEVERITY_NOTICE:
          case RdKafka::Event::EVENT_SEVERITY_INFO:
            level = spdlog::level::info;
            break;
          default:
            break;
        }
        // The same properties go to producer and consumer, so each one that
        // only applies to the other draws a harmless CONFWARN. Connection
        // failures (FAIL) are kept for init()'s message; librdkafka 2.0 also
        // reports them as error events, logged below.
        if (event.fac() == "CONFWARN" || event.fac() == "FAIL") level = spdlog::level::debug;
        if (event.fac() == "FAIL") {
          std::lock_guard lock(health_mu_);
          last_failure_ = event.str();
        }
        log_->log(level, "librdkafka {} [{}]: {}", endpoint_, event.fac(), event.str());
        break;
      }
      default:
        break;
    }
  } catch (const std::exception& e) {
    // Nothing may unwind into librdkafka's C frames.
    log_->error("kafka transport \"{}\": event callback failed: {}", endpoint_, e.what());
  }
}

}  // namespace
}  // namespace internal::kafka

StatusOr<std::unique_ptr<Transport>> make_kafka_transport(std::string endpoint,
                                                          KafkaOptions options) {
  SAGA_ASSIGN_OR_RETURN(KafkaOptions resolved,
                        internal::kafka::resolve_options(endpoint, std::move(options)));
  auto transport =
      std::make_unique<internal::kafka::KafkaTransport>(std::move(endpoint), std::move(resolved));
  SAGA_RETURN_IF_ERROR(transport->init());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace saga
