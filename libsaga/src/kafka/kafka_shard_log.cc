// ShardLog over Kafka. Each shard log owns a transactional producer and a
// worker thread: librdkafka 2.0.2's transactional calls block, and the
// engine commits all its shards of an iteration at once, so each shard's
// transaction runs on its own thread. Delivery reports and the producer's
// events are served by those calls (commit_transaction flushes, and flush
// serves callbacks) on the worker thread, or by read() on the engine's
// thread; the engine never reads while a commit of the shard is outstanding,
// and a mutex keeps the two apart in any case.
#include "kafka/kafka_shard_log.h"

#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "kafka/envelope_headers.h"
#include "kafka/rdkafka_util.h"

namespace saga::internal::kafka {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// A transaction that does not end within this long is aborted by the
// broker; records of one must be delivered within it too.
constexpr char kTransactionTimeoutMs[] = "10000";

// Tags of a produced record, passed as msg_opaque.
void* const kChangeTag = reinterpret_cast<void*>(uintptr_t{1});
void* const kMessageTag = reinterpret_cast<void*>(uintptr_t{2});

bool is_fencing(RdKafka::ErrorCode code) {
  return code == RdKafka::ERR_PRODUCER_FENCED || code == RdKafka::ERR__FENCED ||
         code == RdKafka::ERR_INVALID_PRODUCER_EPOCH ||
         code == RdKafka::ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
}

std::string changelog_name(const ShardLogSpec& spec) {
  return "changelog " + spec.topic + "[" + std::to_string(spec.partition) + "]";
}

// A read_committed consumer of the shard's changelog that never joins its
// group (assign() only); `group_suffix` names it, `extra` adds properties.
StatusOr<std::unique_ptr<RdKafka::KafkaConsumer>> make_reader(
    const ShardLogSpec& spec, const char* group_suffix,
    const std::map<std::string, std::string>& extra, RdKafka::EventCb* events) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  std::map<std::string, std::string> props = spec.consumer_properties;
  props["group.id"] = spec.transactional_id + group_suffix;
  props["enable.auto.commit"] = "false";
  props["enable.auto.offset.store"] = "false";
  props["isolation.level"] = "read_committed";
  props["auto.offset.reset"] = "earliest";
  props["fetch.wait.max.ms"] = "10";
  for (const auto& [key, value] : extra) props[key] = value;
  for (const auto& [key, value] : props) {
    if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK)
      return Status::invalid_argument(changelog_name(spec) + ": kafka property \"" + key +
                                      "\": " + err);
  }
  if (conf->set("event_cb", events, err) != RdKafka::Conf::CONF_OK)
    return Status::internal(changelog_name(spec) + ": cannot install the event callback: " + err);
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(RdKafka::KafkaConsumer::create(conf.get(), err));
  if (!consumer)
    return Status::invalid_argument(changelog_name(spec) + ": cannot create a reader: " + err);
  return consumer;
}

// Points `consumer` at the shard's changelog partition from offset `from`.
Status assign_at(RdKafka::KafkaConsumer& consumer, const ShardLogSpec& spec, uint64_t from) {
  std::unique_ptr<RdKafka::TopicPartition> tp(
      RdKafka::TopicPartition::create(spec.topic, spec.partition, static_cast<int64_t>(from)));
  std::vector<RdKafka::TopicPartition*> assignment{tp.get()};
  return status_from_kafka(consumer.assign(assignment), changelog_name(spec) + ": assign");
}

// The change a changelog record holds: its key is the family byte, then
// the key within the shard; no payload is a deletion.
StatusOr<ShardChange> decode_change(const RdKafka::Message& m, const ShardLogSpec& spec) {
  const auto* key = static_cast<const char*>(m.key_pointer());
  if (!key || m.key_len() < 1) {
    return Status::data_loss(changelog_name(spec) + ": a record at offset " +
                             std::to_string(m.offset()) + " has no family byte");
  }
  ShardChange change;
  change.family = static_cast<uint8_t>(key[0]);
  change.key.assign(key + 1, m.key_len() - 1);
  if (m.payload()) change.value.emplace(static_cast<const char*>(m.payload()), m.len());
  return change;
}

// Logs librdkafka's errors and warnings for one changelog.
void log_event(RdKafka::Event& event, const ShardLogSpec& spec) {
  try {
    if (event.type() == RdKafka::Event::EVENT_ERROR) {
      spec.log->warn("{}: {}: {}", changelog_name(spec), RdKafka::err2str(event.err()), event.str());
    } else if (event.type() == RdKafka::Event::EVENT_LOG && event.fac() != "CONFWARN" &&
               event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
      spec.log->warn("librdkafka {} [{}]: {}", changelog_name(spec), event.fac(), event.str());
    }
  } catch (const std::exception&) {
    // Nothing may unwind into librdkafka's C frames.
  }
}

class KafkaShardLog final : public ShardLog,
                            private RdKafka::DeliveryReportCb,
                            private RdKafka::EventCb {
 public:
  explicit KafkaShardLog(ShardLogSpec spec) : spec_(std::move(spec)) {}

  ~KafkaShardLog() override {
    {
      std::lock_guard lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    for (auto& [c, done] : queue_) done(Status::unavailable(name() + ": closed before the commit"));
    topics_.clear();  // before the producer they belong to
    producer_.reset();
  }

  KafkaShardLog(const KafkaShardLog&) = delete;
  KafkaShardLog& operator=(const KafkaShardLog&) = delete;

  Status claim() {
    std::map<std::string, std::string> props = spec_.producer_properties;
    props["transactional.id"] = spec_.transactional_id;
    props["enable.idempotence"] = "true";
    props["acks"] = "all";
    props["transaction.timeout.ms"] = kTransactionTimeoutMs;
    props["message.timeout.ms"] = kTransactionTimeoutMs;  // may not exceed the transaction's
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    std::string err;
    for (const auto& [key, value] : props) {
      if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK)
        return Status::invalid_argument(name() + ": kafka property \"" + key + "\": " + err);
    }
    if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this), err) !=
            RdKafka::Conf::CONF_OK ||
        conf->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) !=
            RdKafka::Conf::CONF_OK) {
      return Status::internal(name() + ": cannot install callbacks: " + err);
    }
    producer_.reset(RdKafka::Producer::create(conf.get(), err));
    if (!producer_) return Status::invalid_argument(name() + ": cannot create the producer: " + err);
    // Fences every earlier producer of this id and completes or aborts the
    // transaction it left open, so that what the log holds is settled.
    std::unique_ptr<RdKafka::Error> e(
        producer_->init_transactions(static_cast<int>(spec_.timeout.count())));
    if (e) {
      const Status s = (e->is_retriable() || e->code() == RdKafka::ERR__TIMED_OUT)
                           ? Status::unavailable(name() + ": init_transactions: " + e->str())
                           : Status::internal(name() + ": init_transactions: " + e->str());
      return s;
    }
    worker_ = std::thread([this] { work(); });
    spec_.log->info("{}: claimed (transactional id {})", name(), spec_.transactional_id);
    return ok_status();
  }

  void commit(ShardCommit c, CommitCallback done) override {
    {
      std::lock_guard lock(queue_mu_);
      queue_.emplace_back(std::move(c), std::move(done));
    }
    queue_cv_.notify_one();
  }

  Status read(uint64_t from,
              const std::function<void(const ShardChange&, uint64_t)>& fn) override {
    std::lock_guard lock(txn_mu_);
    SAGA_RETURN_IF_ERROR(settle());
    int64_t high = 0;
    SAGA_RETURN_IF_ERROR(end_offset(&high));
    if (from > static_cast<uint64_t>(high)) {
      return Status::out_of_range(name() + " ends at " + std::to_string(high) +
                                  ", before offset " + std::to_string(from) +
                                  " (was the topic deleted or recreated?)");
    }
    if (from == static_cast<uint64_t>(high)) {
      end_ = from;
      return ok_status();
    }
    SAGA_ASSIGN_OR_RETURN(auto consumer,
                          make_reader(spec_, ".reader", {{"enable.partition.eof", "true"}}, this));
    Status result = assign_at(*consumer, spec_, from);
    auto last_progress = SteadyClock::now();
    uint64_t end = from;
    while (result.ok()) {
      std::unique_ptr<RdKafka::Message> m(consumer->consume(100));
      if (m->err() == RdKafka::ERR__PARTITION_EOF) {
        end = std::max<uint64_t>(end, static_cast<uint64_t>(m->offset()));
        break;
      }
      if (m->err() == RdKafka::ERR_NO_ERROR) {
        last_progress = SteadyClock::now();
        StatusOr<ShardChange> change = decode_change(*m, spec_);
        if (!change.ok()) {
          result = change.status();
          break;
        }
        const auto offset = static_cast<uint64_t>(m->offset());
        fn(*change, offset);
        end = offset + 1;
        continue;
      }
      if (m->err() != RdKafka::ERR__TIMED_OUT)
        spec_.log->debug("{}: reading: {}", name(), m->errstr());
      if (SteadyClock::now() - last_progress > spec_.timeout) {
        result = Status::unavailable(name() + ": reading made no progress for " +
                                     std::to_string(spec_.timeout.count()) + " ms at offset " +
                                     std::to_string(end) + " (" + m->errstr() + ")");
      }
    }
    consumer->close();
    if (result.ok()) end_ = end;
    return result;
  }

 private:
  enum class State { kIdle, kCommitting, kAborting, kFenced };

  // The partition's high watermark. A new topic's partition may have no
  // leader for a moment (NOT_LEADER, LEADER_NOT_AVAILABLE): asked again
  // until spec_.timeout.
  Status end_offset(int64_t* high) {
    const auto deadline = SteadyClock::now() + spec_.timeout;
    for (;;) {
      int64_t low = 0;
      const RdKafka::ErrorCode rc = producer_->query_watermark_offsets(
          spec_.topic, spec_.partition, &low, high,
          wait_timeout_ms(std::max(deadline - SteadyClock::now(), SteadyClock::duration(0))));
      if (rc == RdKafka::ERR_NO_ERROR) return ok_status();
      if (SteadyClock::now() >= deadline)
        return status_from_kafka(rc, name() + ": end offset").with_context("retried until timeout");
      spec_.log->debug("{}: end offset: {}; asking again", name(), RdKafka::err2str(rc));
      std::this_thread::sleep_for(milliseconds(50));  // the broker elects a leader meanwhile
    }
  }

  std::string name() const { return changelog_name(spec_); }

  void work() {
    for (;;) {
      std::pair<ShardCommit, CommitCallback> job;
      {
        std::unique_lock lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      StatusOr<uint64_t> end = Status::internal("unset");
      {
        std::lock_guard lock(txn_mu_);
        end = run(job.first);
      }
      job.second(std::move(end));
    }
  }

  // One transaction: the changes to the log's partition, the messages to
  // their topics, committed together.
  StatusOr<uint64_t> run(ShardCommit& c) {
    SAGA_RETURN_IF_ERROR(settle());
    std::unique_ptr<RdKafka::Error> e(producer_->begin_transaction());
    if (e) return on_error(*e, "begin_transaction", State::kIdle);
    tally_ = Tally{};
    std::string key;
    for (ShardChange& ch : c.changes) {
      key.assign(1, static_cast<char>(ch.family));
      key += ch.key;
      const char* value = ch.value ? ch.value->data() : nullptr;
      const size_t len = ch.value ? ch.value->size() : 0;
      SAGA_RETURN_IF_ERROR(produce(spec_.topic, spec_.partition, value, len, key, nullptr,
                                   kChangeTag));
    }
    for (const Message& m : c.messages) {
      const std::string topic = spec_.topic_for(m.destination);
      if (!valid_topic_name(topic)) {
        abort_quietly();
        return Status::invalid_argument(name() + ": \"" + topic +
                                        "\" is not a valid Kafka topic name");
      }
      prepare(topic);
      std::unique_ptr<RdKafka::Headers> headers(RdKafka::Headers::create());
      for (const auto& [hname, hvalue] : encode_headers(m))
        headers->add(hname, hvalue.data(), hvalue.size());
      const std::string& mkey = m.key.empty() ? m.saga_id : m.key;
      SAGA_RETURN_IF_ERROR(produce(topic, RdKafka::Topic::PARTITION_UA, m.payload.data(),
                                   m.payload.size(), mkey, &headers, kMessageTag));
    }
    e.reset(producer_->commit_transaction(-1));
    // A retriable error leaves the commit going on in the background: in doubt.
    if (e) return on_error(*e, "commit_transaction", State::kCommitting);
    // commit_transaction flushed, which served the delivery reports; serve
    // any still queued so that the tally is complete.
    for (int i = 0; tally_.outstanding > 0 && i < 100; ++i) producer_->poll(10);
    if (tally_.last_change >= 0) end_ = static_cast<uint64_t>(tally_.last_change) + 1;
    return end_;
  }

  // Produces one record of the open transaction, waiting while librdkafka's
  // queue is full. On failure the transaction is aborted.
  Status produce(const std::string& topic, int32_t partition, const char* value, size_t len,
                 const std::string& key, std::unique_ptr<RdKafka::Headers>* headers, void* tag) {
    for (;;) {
      const RdKafka::ErrorCode rc = producer_->produce(
          topic, partition, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(value), len,
          key.empty() ? nullptr : key.data(), key.size(), 0, headers ? headers->get() : nullptr,
          tag);
      if (rc == RdKafka::ERR_NO_ERROR) {
        if (headers) (void)headers->release();  // librdkafka owns them now
        ++tally_.outstanding;
        return ok_status();
      }
      if (rc == RdKafka::ERR__QUEUE_FULL) {
        producer_->poll(10);
        continue;
      }
      if (rc == RdKafka::ERR__FATAL || is_fencing(rc)) return fence(RdKafka::err2str(rc));
      abort_quietly();
      return status_from_kafka(rc, name() + ": produce to " + topic);
    }
  }

  // Brings the producer back to no open transaction after an earlier
  // commit whose outcome was unknown: OK once settled, Unavailable while
  // the broker cannot say, Aborted when fenced.
  Status settle() {
    while (state_ == State::kCommitting || state_ == State::kAborting) {
      const bool committing = state_ == State::kCommitting;
      std::unique_ptr<RdKafka::Error> e(committing ? producer_->commit_transaction(-1)
                                                   : producer_->abort_transaction(-1));
      if (!e) {
        state_ = State::kIdle;
        break;
      }
      const Status s =
          on_error(*e, committing ? "settling a commit" : "settling an abort", state_).status();
      if (state_ == State::kFenced) return s;
      if (state_ != State::kIdle && s.code() == StatusCode::kUnavailable) return s;
    }
    if (state_ == State::kFenced) return Status::aborted(name() + ": fenced: " + fenced_why_);
    return ok_status();
  }

  // What a failed transactional call means for the shard (librdkafka's
  // classes: fatal, abortable, retriable); a retriable error leaves the log
  // in `if_retriable`.
  StatusOr<uint64_t> on_error(const RdKafka::Error& e, const char* call, State if_retriable) {
    const std::string what = name() + ": " + call + ": " + e.str();
    if (e.is_fatal() || is_fencing(e.code())) return fence(e.str());
    if (e.txn_requires_abort()) {
      std::unique_ptr<RdKafka::Error> a(producer_->abort_transaction(-1));
      if (!a) {
        state_ = State::kIdle;
        return Status::unavailable(what + " (aborted)");
      }
      if (a->is_fatal() || is_fencing(a->code())) return fence(a->str());
      state_ = State::kAborting;
      return Status::unavailable(what + "; the abort did not finish: " + a->str());
    }
    if (e.is_retriable()) {
      state_ = if_retriable;
      return Status::unavailable(what + (state_ == State::kIdle
                                             ? std::string()
                                             : std::string(" (outcome unknown until settled)")));
    }
    return fence(e.str());  // neither retriable nor abortable: librdkafka says treat as fatal
  }

  Status fence(const std::string& why) {
    if (state_ != State::kFenced) {
      state_ = State::kFenced;
      fenced_why_ = why;
      std::string fatal;
      if (producer_->fatal_error(fatal) != RdKafka::ERR_NO_ERROR) fenced_why_ = fatal;
      spec_.log->error("{}: this claim is over ({}); the shard is not ours any more", name(),
                       fenced_why_);
    }
    return Status::aborted(name() + ": fenced: " + fenced_why_);
  }

  void abort_quietly() {
    std::unique_ptr<RdKafka::Error> a(producer_->abort_transaction(-1));
    if (a) state_ = (a->is_fatal() || is_fencing(a->code())) ? State::kFenced : State::kAborting;
  }

  void prepare(const std::string& topic) {
    if (topics_.count(topic)) return;
    if (spec_.prepare_topic) spec_.prepare_topic(topic);
    if (TopicPtr handle = start_topic_lookup(producer_->c_ptr(), topic))
      topics_.emplace(topic, std::move(handle));
  }

  // ---- librdkafka callbacks (inside flush/poll on the calling thread)
  void dr_cb(RdKafka::Message& message) override {
    if (tally_.outstanding > 0) --tally_.outstanding;
    if (message.err() != RdKafka::ERR_NO_ERROR) return;  // the commit reports it
    if (message.msg_opaque() == kChangeTag)
      tally_.last_change = std::max<int64_t>(tally_.last_change, message.offset());
  }

  void event_cb(RdKafka::Event& event) override { log_event(event, spec_); }

  struct Tally {
    int64_t last_change = -1;  // offset of the transaction's last changelog record
    size_t outstanding = 0;    // records without a delivery report yet
  };

  ShardLogSpec spec_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::map<std::string, TopicPtr> topics_;  // the producer's handles (see prepare())

  std::mutex txn_mu_;  // one transactional call sequence at a time
  State state_ = State::kIdle;
  std::string fenced_why_;
  Tally tally_;
  uint64_t end_ = 0;  // the log's end as of the last read or commit

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::pair<ShardCommit, CommitCallback>> queue_;  // GUARDED_BY(queue_mu_)
  bool stopping_ = false;                                     // GUARDED_BY(queue_mu_)
  std::thread worker_;
};

// A standby's reader of a changelog's shards: one consumer, assigned the
// followed partitions, whose prefetched records each read() drains without
// waiting. The consumer is assigned once: a change of the followed shards
// makes a new one at the next read(). (librdkafka 2.0.2 can abort on an
// assign() that comes while the previous one's partitions are still
// stopping: confluentinc/librdkafka#5573.)
class KafkaShardTail final : public ShardTail, private RdKafka::EventCb {
 public:
  KafkaShardTail(ShardLogSpec spec, uint32_t shards) : spec_(std::move(spec)), shards_(shards) {}

  ~KafkaShardTail() override { close(); }

  KafkaShardTail(const KafkaShardTail&) = delete;
  KafkaShardTail& operator=(const KafkaShardTail&) = delete;

  Status follow(uint32_t shard, uint64_t from) override {
    SAGA_RETURN_IF_ERROR(check(shard));
    next_[shard] = from;
    changed_ = true;
    return ok_status();
  }

  Status unfollow(uint32_t shard) override {
    SAGA_RETURN_IF_ERROR(check(shard));
    changed_ = changed_ || next_.erase(shard) > 0;
    return ok_status();
  }

  Status read(const RecordFn& fn) override {
    if (changed_) {
      close();
      changed_ = false;
      if (!next_.empty()) SAGA_RETURN_IF_ERROR(assign());
    }
    // Bounded, so that a busy log does not hold its standby's thread.
    for (size_t n = 0; n < kMaxPerRead && consumer_; ++n) {
      std::unique_ptr<RdKafka::Message> m(consumer_->consume(0));
      if (m->err() == RdKafka::ERR__TIMED_OUT || m->err() == RdKafka::ERR__PARTITION_EOF)
        return ok_status();
      if (m->err() != RdKafka::ERR_NO_ERROR)
        return status_from_kafka(m->err(), changelog_name(spec_) + ": tailing");
      const auto shard = static_cast<uint32_t>(m->partition());
      const auto offset = static_cast<uint64_t>(m->offset());
      auto it = next_.find(shard);
      if (it == next_.end() || offset < it->second) continue;
      SAGA_ASSIGN_OR_RETURN(ShardChange change, decode_change(*m, spec_));
      fn(shard, change, offset);
      it->second = offset + 1;
    }
    return ok_status();
  }

 private:
  static constexpr size_t kMaxPerRead = 50'000;

  Status check(uint32_t shard) const {
    if (shard >= shards_) {
      return Status::invalid_argument(changelog_name(spec_) + ": shard " + std::to_string(shard) +
                                      " of " + std::to_string(shards_));
    }
    return ok_status();
  }

  // A new consumer, assigned every followed partition at the offset after
  // its last record delivered.
  Status assign() {
    // A standby keeps up with its shards; a small prefetch is enough.
    SAGA_ASSIGN_OR_RETURN(consumer_,
                          make_reader(spec_, ".standby", {{"queued.max.messages.kbytes", "8192"}},
                                      this));
    std::vector<std::unique_ptr<RdKafka::TopicPartition>> owned;
    std::vector<RdKafka::TopicPartition*> assignment;
    for (const auto& [shard, next] : next_) {
      owned.emplace_back(RdKafka::TopicPartition::create(
          spec_.topic, static_cast<int32_t>(shard), static_cast<int64_t>(next)));
      assignment.push_back(owned.back().get());
    }
    return status_from_kafka(consumer_->assign(assignment),
                             changelog_name(spec_) + ": assign the standby's shards");
  }

  void close() {
    if (!consumer_) return;
    consumer_->close();
    consumer_.reset();
  }

  void event_cb(RdKafka::Event& event) override { log_event(event, spec_); }

  ShardLogSpec spec_;
  const uint32_t shards_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;  // null until something is followed
  std::map<uint32_t, uint64_t> next_;  // followed shard -> offset after the last delivered
  bool changed_ = false;               // followed shards changed since the last assign
};

}  // namespace

StatusOr<std::unique_ptr<ShardTail>> tail_kafka_shards(ShardLogSpec spec, uint32_t shards) {
  return std::unique_ptr<ShardTail>(std::make_unique<KafkaShardTail>(std::move(spec), shards));
}

StatusOr<std::unique_ptr<ShardLog>> claim_kafka_shard(ShardLogSpec spec) {
  auto log = std::make_unique<KafkaShardLog>(std::move(spec));
  SAGA_RETURN_IF_ERROR(log->claim());
  return std::unique_ptr<ShardLog>(std::move(log));
}

}  // namespace saga::internal::kafka
