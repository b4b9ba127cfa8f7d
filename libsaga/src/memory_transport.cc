#include "saga/memory_transport.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace saga {
namespace internal {
namespace {

// Upper bound on handler invocations plus send callbacks per poll(), so one
// busy destination cannot keep a caller inside poll() forever.
constexpr size_t kMaxItemsPerPoll = 1024;

// While a subscribed queue holds delayed messages, poll() re-checks the clock
// at least this often: the injected clock may be a ManualClock that another
// thread advances without waking anyone.
constexpr std::chrono::milliseconds kDelayedRecheck{5};

using SteadyClock = std::chrono::steady_clock;
using HandlerPtr = std::shared_ptr<const Transport::Handler>;

struct QueuedMessage {
  Message message;
  int64_t due_ms = 0;  // clock time (ms) from which it may be delivered
};

// A delivered message whose Ack has not been called yet.
struct InFlight {
  std::string destination;
  Message message;
};

struct Confirmation {
  Transport::SendCallback callback;
  Status status;
};

// Bus-side state of one endpoint; GUARDED_BY(MemoryBusImpl::mu_).
struct EndpointState {
  std::map<std::string, HandlerPtr, std::less<>> handlers;
  std::deque<Confirmation> confirmations;
  // Keyed by delivery id, which increases with each delivery, so iteration
  // order is delivery order (what requeueing at close needs).
  std::map<uint64_t, InFlight> in_flight;
};

// One unit of work poll() performs outside the lock.
struct Work {
  // Either a delivery (handler set) or a confirmation (callback set).
  HandlerPtr handler;
  Message message;
  uint64_t delivery_id = 0;
  Transport::SendCallback callback;
  Status status;
};

// One shard's changelog; GUARDED_BY(MemoryBusImpl::mu_).
struct LogShard {
  uint64_t epoch = 0;  // of the latest claim
  std::vector<ShardChange> records;
};

class MemoryBusImpl final : public MemoryBus {
 public:
  MemoryBusImpl(std::shared_ptr<Clock> clock, uint64_t seed)
      : clock_(std::move(clock)), random_(seed) {}

  std::unique_ptr<Transport> connect(std::string name) override;

  void set_faults(const FaultOptions& faults) override {
    std::lock_guard lock(mu_);
    faults_ = faults;
  }

  void set_available(bool available) override {
    {
      std::lock_guard lock(mu_);
      available_ = available;
    }
    cv_.notify_all();
  }

  size_t pending() const override {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [destination, queue] : queues_) n += queue.size();
    return n;
  }

  BusStats stats() const override {
    std::lock_guard lock(mu_);
    return stats_;
  }

  Status health() const {
    std::lock_guard lock(mu_);
    if (!available_) return Status::unavailable("memory bus is unavailable");
    return ok_status();
  }

  uint64_t add_endpoint() {
    std::lock_guard lock(mu_);
    const uint64_t id = next_endpoint_id_++;
    endpoints_.emplace(id, EndpointState{});
    return id;
  }

  // Puts the endpoint's unacked messages back at the front of their queues,
  // in their original order, and forgets the endpoint.
  void remove_endpoint(uint64_t endpoint_id) {
    {
      std::lock_guard lock(mu_);
      auto it = endpoints_.find(endpoint_id);
      if (it == endpoints_.end()) return;
      const int64_t now_ms = to_millis(clock_->now());
      auto& in_flight = it->second.in_flight;
      for (auto rit = in_flight.rbegin(); rit != in_flight.rend(); ++rit) {
        queues_[rit->second.destination].push_front(
            QueuedMessage{std::move(rit->second.message), now_ms});
        ++stats_.redelivered;
      }
      endpoints_.erase(it);
    }
    cv_.notify_all();
  }

  Status subscribe(uint64_t endpoint_id, std::string_view destination, Transport::Handler handler) {
    if (destination.empty()) return Status::invalid_argument("subscribe: empty destination");
    if (!handler) return Status::invalid_argument("subscribe: empty handler");
    {
      std::lock_guard lock(mu_);
      auto& handlers = endpoints_.at(endpoint_id).handlers;
      if (handlers.find(destination) != handlers.end()) {
        return Status::already_exists("subscribe: already subscribed to \"" +
                                      std::string(destination) + "\"");
      }
      handlers.emplace(std::string(destination),
                       std::make_shared<const Transport::Handler>(std::move(handler)));
    }
    // Messages may have been waiting for a subscriber.
    cv_.notify_all();
    return ok_status();
  }

  void send(uint64_t endpoint_id, Message message, Transport::SendCallback on_sent) {
    {
      std::lock_guard lock(mu_);
      Status status = available_ ? enqueue_locked(std::move(message))
                                 : Status::unavailable("memory bus is unavailable");
      if (on_sent) {
        endpoints_.at(endpoint_id)
            .confirmations.push_back(Confirmation{std::move(on_sent), std::move(status)});
      }
    }
    cv_.notify_all();
  }

  size_t poll(uint64_t endpoint_id, std::chrono::milliseconds max_wait);

  // Fences every earlier claim of the shard; returns the new claim's epoch.
  StatusOr<uint64_t> claim(const std::string& log, uint32_t shard, uint32_t shards) {
    if (log.empty()) return Status::invalid_argument("claim_shard: empty log name");
    if (shard >= shards) {
      return Status::invalid_argument("claim_shard: shard " + std::to_string(shard) +
                                      " of a log of " + std::to_string(shards));
    }
    std::lock_guard lock(mu_);
    auto [it, created] = log_shards_.emplace(log, shards);
    if (!created && it->second != shards) {
      return Status::failed_precondition("changelog \"" + log + "\" has " +
                                         std::to_string(it->second) + " shards, not " +
                                         std::to_string(shards));
    }
    return ++logs_[{log, shard}].epoch;
  }

  void commit(const std::string& log, uint32_t shard, uint64_t epoch, ShardCommit c,
              const ShardLog::CommitCallback& done) {
    StatusOr<uint64_t> end = Status::internal("unset");
    {
      std::lock_guard lock(mu_);
      LogShard& ls = logs_[{log, shard}];
      if (ls.epoch != epoch) {
        end = Status::aborted("fenced: shard " + std::to_string(shard) + " of changelog \"" +
                              log + "\" was claimed again (epoch " + std::to_string(ls.epoch) +
                              ", this claim " + std::to_string(epoch) + ")");
      } else if (!available_) {
        end = Status::unavailable("memory bus is unavailable");
      } else {
        for (ShardChange& ch : c.changes) ls.records.push_back(std::move(ch));
        for (Message& m : c.messages) (void)enqueue_locked(std::move(m));
        end = static_cast<uint64_t>(ls.records.size());
        // Drawn only when asked for, so that other faults replay unchanged.
        if (faults_.commit_in_doubt > 0 && random_.uniform() < faults_.commit_in_doubt) {
          end = Status::unavailable("memory bus: the commit's answer was lost (it was appended)");
          ++stats_.commits_in_doubt;
        }
      }
    }
    cv_.notify_all();
    done(std::move(end));
  }

  Status read(const std::string& log, uint32_t shard, uint64_t from,
              const std::function<void(const ShardChange&, uint64_t)>& fn) {
    std::vector<ShardChange> tail;
    {
      std::lock_guard lock(mu_);
      const auto& records = logs_[{log, shard}].records;
      if (from > records.size()) {
        return Status::out_of_range("changelog \"" + log + "\" shard " + std::to_string(shard) +
                                    " ends at " + std::to_string(records.size()) +
                                    ", before offset " + std::to_string(from));
      }
      tail.assign(records.begin() + static_cast<long>(from), records.end());
    }
    for (size_t i = 0; i < tail.size(); ++i) fn(tail[i], from + i);
    return ok_status();
  }

  uint64_t log_end(const std::string& log, uint32_t shard) const override {
    std::lock_guard lock(mu_);
    auto it = logs_.find({log, shard});
    return it == logs_.end() ? 0 : it->second.records.size();
  }

  void ack(uint64_t endpoint_id, uint64_t delivery_id) {
    std::lock_guard lock(mu_);
    // After the endpoint closed its unacked messages were already requeued;
    // like a commit from a dead consumer, a late ack changes nothing.
    auto it = endpoints_.find(endpoint_id);
    if (it == endpoints_.end()) return;
    it->second.in_flight.erase(delivery_id);
  }

 private:
  // Applies the fault options to one accepted message. REQUIRES: mu_ held.
  Status enqueue_locked(Message message) {
    ++stats_.sent;
    // Always draw the same number of values per send, so changing one
    // probability does not shift the random sequence every other fault sees.
    const double drop_roll = random_.uniform();
    const double duplicate_roll = random_.uniform();
    const double delay_roll = random_.uniform();
    const double reorder_roll = random_.uniform();
    const uint64_t delay_draw = random_.next();

    if (drop_roll < faults_.drop) {
      ++stats_.dropped;
      return ok_status();  // the fabric lies: confirmed, never delivered
    }
    int64_t due_ms = to_millis(clock_->now());
    if (delay_roll < faults_.delay) {
      const auto max_delay = static_cast<uint64_t>(std::max<int64_t>(faults_.max_delay.count(), 1));
      due_ms += static_cast<int64_t>(1 + delay_draw % max_delay);
      ++stats_.delayed;
    }
    const bool duplicate = duplicate_roll < faults_.duplicate;
    const bool reorder = reorder_roll < faults_.reorder;
    if (duplicate) ++stats_.duplicated;
    if (reorder) ++stats_.reordered;

    auto& queue = queues_[message.destination];
    if (duplicate) {
      if (reorder) {
        queue.push_front(QueuedMessage{message, due_ms});
      } else {
        queue.push_back(QueuedMessage{message, due_ms});
      }
    }
    if (reorder) {
      queue.push_front(QueuedMessage{std::move(message), due_ms});
    } else {
      queue.push_back(QueuedMessage{std::move(message), due_ms});
    }
    return ok_status();
  }

  // Moves up to kMaxItemsPerPoll items due for the endpoint into `out`, registering
  // deliveries as in flight. REQUIRES: mu_ held.
  void take_ready_locked(EndpointState& ep, std::vector<Work>& out) {
    while (!ep.confirmations.empty() && out.size() < kMaxItemsPerPoll) {
      Work w;
      w.callback = std::move(ep.confirmations.front().callback);
      w.status = std::move(ep.confirmations.front().status);
      ep.confirmations.pop_front();
      out.push_back(std::move(w));
    }
    if (!available_) return;
    const int64_t now_ms = to_millis(clock_->now());
    for (const auto& [destination, handler] : ep.handlers) {
      auto qit = queues_.find(destination);
      if (qit == queues_.end()) continue;
      auto& queue = qit->second;
      // A message still delayed stays where it is; later ones that are due
      // overtake it, as a retried produce overtakes on a real broker.
      for (auto it = queue.begin(); it != queue.end() && out.size() < kMaxItemsPerPoll;) {
        if (it->due_ms > now_ms) {
          ++it;
          continue;
        }
        const uint64_t delivery_id = next_delivery_id_++;
        ep.in_flight.emplace(delivery_id, InFlight{destination, it->message});
        Work w;
        w.handler = handler;
        w.message = std::move(it->message);
        w.delivery_id = delivery_id;
        out.push_back(std::move(w));
        ++stats_.delivered;
        it = queue.erase(it);
      }
      if (queue.empty()) queues_.erase(qit);
    }
  }

  // The earliest due time among delayed messages the endpoint could receive,
  // or nullopt. REQUIRES: mu_ held.
  std::optional<int64_t> earliest_due_locked(const EndpointState& ep) const {
    std::optional<int64_t> earliest;
    for (const auto& [destination, handler] : ep.handlers) {
      auto qit = queues_.find(destination);
      if (qit == queues_.end()) continue;
      for (const auto& q : qit->second) {
        if (!earliest || q.due_ms < *earliest) earliest = q.due_ms;
      }
    }
    return earliest;
  }

  const std::shared_ptr<Clock> clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // signalled when queues, confirmations or availability change
  SeededRandom random_;         // drawn only under mu_, so the sequence is deterministic
  FaultOptions faults_;         // GUARDED_BY(mu_)
  bool available_ = true;       // GUARDED_BY(mu_)
  BusStats stats_;              // GUARDED_BY(mu_)
  std::map<std::string, std::deque<QueuedMessage>, std::less<>> queues_;  // GUARDED_BY(mu_)
  std::map<uint64_t, EndpointState> endpoints_;                           // GUARDED_BY(mu_)
  uint64_t next_endpoint_id_ = 1;                                         // GUARDED_BY(mu_)
  uint64_t next_delivery_id_ = 1;                                         // GUARDED_BY(mu_)
  std::map<std::pair<std::string, uint32_t>, LogShard> logs_;             // GUARDED_BY(mu_)
  std::map<std::string, uint32_t> log_shards_;  // log -> shard count; GUARDED_BY(mu_)
};

// One claim of a shard's changelog on a MemoryBusImpl.
class MemoryShardLog final : public ShardLog {
 public:
  MemoryShardLog(std::shared_ptr<MemoryBusImpl> bus, std::string log, uint32_t shard,
                 uint64_t epoch)
      : bus_(std::move(bus)), log_(std::move(log)), shard_(shard), epoch_(epoch) {}

  void commit(ShardCommit c, CommitCallback done) override {
    bus_->commit(log_, shard_, epoch_, std::move(c), done);
  }
  Status read(uint64_t from,
              const std::function<void(const ShardChange&, uint64_t)>& fn) override {
    return bus_->read(log_, shard_, from, fn);
  }
 private:
  const std::shared_ptr<MemoryBusImpl> bus_;
  const std::string log_;
  const uint32_t shard_;
  const uint64_t epoch_;
};

// One connection to a MemoryBusImpl. The bus owns the endpoint's state so
// that Acks, which may outlive the endpoint, only need a weak_ptr to the bus.
class MemoryEndpoint final : public Transport {
 public:
  MemoryEndpoint(std::shared_ptr<MemoryBusImpl> bus, std::string name)
      : bus_(std::move(bus)), name_(std::move(name)), id_(bus_->add_endpoint()) {}

  ~MemoryEndpoint() override { bus_->remove_endpoint(id_); }

  MemoryEndpoint(const MemoryEndpoint&) = delete;
  MemoryEndpoint& operator=(const MemoryEndpoint&) = delete;

  Status subscribe(std::string_view destination, Handler handler) override {
    return bus_->subscribe(id_, destination, std::move(handler))
        .with_context("endpoint \"" + name_ + "\"");
  }

  void send(Message message, SendCallback on_sent) override {
    bus_->send(id_, std::move(message), std::move(on_sent));
  }

  size_t poll(std::chrono::milliseconds max_wait) override { return bus_->poll(id_, max_wait); }

  Status health() const override { return bus_->health(); }

  StatusOr<std::unique_ptr<ShardLog>> claim_shard(std::string_view log, uint32_t shard,
                                                  uint32_t shards) override {
    SAGA_ASSIGN_OR_RETURN(uint64_t epoch, bus_->claim(std::string(log), shard, shards));
    return std::unique_ptr<ShardLog>(
        std::make_unique<MemoryShardLog>(bus_, std::string(log), shard, epoch));
  }

 private:
  const std::shared_ptr<MemoryBusImpl> bus_;
  const std::string name_;
  const uint64_t id_;
};

std::unique_ptr<Transport> MemoryBusImpl::connect(std::string name) {
  return std::make_unique<MemoryEndpoint>(
      std::static_pointer_cast<MemoryBusImpl>(shared_from_this()), std::move(name));
}

size_t MemoryBusImpl::poll(uint64_t endpoint_id, std::chrono::milliseconds max_wait) {
  const auto deadline = SteadyClock::now() + std::max(max_wait, std::chrono::milliseconds(0));
  std::vector<Work> work;
  {
    std::unique_lock lock(mu_);
    EndpointState& ep = endpoints_.at(endpoint_id);  // std::map: stable while we wait
    for (;;) {
      take_ready_locked(ep, work);
      if (!work.empty()) break;
      const auto now = SteadyClock::now();
      if (now >= deadline) break;
      auto wake = deadline;
      if (available_) {
        if (auto due = earliest_due_locked(ep)) {
          const auto until_due =
              std::chrono::milliseconds(std::max<int64_t>(*due - to_millis(clock_->now()), 1));
          wake = std::min(wake, now + std::min(until_due, kDelayedRecheck));
        }
      }
      cv_.wait_until(lock, wake);
    }
  }

  // User code runs unlocked: handlers and callbacks may send, ack or poll.
  // A handler may destroy the last endpoint holding the bus; keep it alive
  // until the batch is done.
  const auto self = std::static_pointer_cast<MemoryBusImpl>(shared_from_this());
  const std::weak_ptr<MemoryBusImpl> weak_bus = self;
  for (Work& w : work) {
    if (w.handler) {
      Transport::Ack ack = [weak_bus, endpoint_id, delivery_id = w.delivery_id] {
        if (auto bus = weak_bus.lock()) bus->ack(endpoint_id, delivery_id);
      };
      (*w.handler)(std::move(w.message), std::move(ack));
    } else {
      w.callback(std::move(w.status));
    }
  }
  return work.size();
}

}  // namespace
}  // namespace internal

std::shared_ptr<MemoryBus> MemoryBus::create(std::shared_ptr<Clock> clock, uint64_t seed) {
  if (!clock) clock = std::make_shared<SystemClock>();
  return std::make_shared<internal::MemoryBusImpl>(std::move(clock), seed);
}

}  // namespace saga
