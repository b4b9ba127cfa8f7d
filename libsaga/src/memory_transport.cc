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

#include "saga/shard.h"

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
  int64_t partition = -1;  // of a partitioned destination, else -1
};

using ListenerPtr = std::shared_ptr<const PartitionListener>;

// A change of an endpoint's partitions, reported by its next poll().
struct OwnershipEvent {
  enum Kind { kAssigned, kRevoked, kLost } kind = kAssigned;
  std::string destination;
  std::vector<uint32_t> partitions;
};

// A partitioned destination and the consumer group that owns its
// partitions; GUARDED_BY(MemoryBusImpl::mu_).
struct Group {
  uint32_t partitions = 0;
  std::vector<uint64_t> members;  // endpoint ids, in join order
  std::vector<uint64_t> owner;    // per partition: its owner, 0 = none
  // Per partition: the member it is being handed to once its owner's
  // `revoked` returned (0 = no handover). Not delivered meanwhile.
  std::vector<uint64_t> incoming;
  std::vector<std::deque<QueuedMessage>> queues;  // per partition
};

struct Confirmation {
  Transport::SendCallback callback;
  Status status;
};

// Bus-side state of one endpoint; GUARDED_BY(MemoryBusImpl::mu_).
struct EndpointState {
  std::string name;
  std::map<std::string, HandlerPtr, std::less<>> handlers;
  std::map<std::string, ListenerPtr, std::less<>> listeners;  // partitioned subscriptions
  std::deque<OwnershipEvent> events;                           // not yet reported
  std::deque<Confirmation> confirmations;
  // Keyed by delivery id, which increases with each delivery, so iteration
  // order is delivery order (what requeueing at close needs).
  std::map<uint64_t, InFlight> in_flight;
  // Tables read (Transport::subscribe_table): the handler and the index of
  // the next message of the table's log to deliver.
  std::map<std::string, std::pair<HandlerPtr, size_t>, std::less<>> tables;
  bool woken = false;  // Transport::wake() since the last poll() returned
};

// One unit of work poll() performs outside the lock.
struct Work {
  // A delivery (handler set), a confirmation (callback set) or an ownership
  // change (listener set).
  ListenerPtr listener;
  OwnershipEvent event;
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
    for (const auto& [destination, g] : groups_)
      for (const auto& queue : g.queues) n += queue.size();
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

  uint64_t add_endpoint(const std::string& name) {
    std::lock_guard lock(mu_);
    const uint64_t id = next_endpoint_id_++;
    endpoints_.emplace(id, EndpointState{}).first->second.name = name;
    return id;
  }

  // Puts the endpoint's unacked messages back at the front of their queues,
  // in their original order, and forgets the endpoint.
  void remove_endpoint(uint64_t endpoint_id) {
    {
      std::lock_guard lock(mu_);
      auto it = endpoints_.find(endpoint_id);
      if (it == endpoints_.end()) return;
      requeue_locked(it->second, [](const InFlight&) { return true; });
      for (auto& [destination, g] : groups_) leave_locked(destination, g, endpoint_id);
      endpoints_.erase(it);
    }
    cv_.notify_all();
  }

  Status subscribe_partitioned(uint64_t endpoint_id, std::string_view destination,
                               Transport::Handler handler, PartitionedSubscription how) {
    if (how.partitions == 0)
      return Status::invalid_argument("subscribe_partitioned: zero partitions");
    if (!how.listener.assigned || !how.listener.revoked || !how.listener.lost)
      return Status::invalid_argument("subscribe_partitioned: every listener callback is required");
    {
      std::lock_guard lock(mu_);
      auto git = groups_.find(destination);
      if (git != groups_.end() && git->second.partitions != how.partitions) {
        return Status::failed_precondition(
            "subscribe_partitioned: \"" + std::string(destination) + "\" has " +
            std::to_string(git->second.partitions) + " partitions, not " +
            std::to_string(how.partitions));
      }
      if (endpoints_.at(endpoint_id).handlers.count(destination) != 0) {
        return Status::already_exists("subscribe: already subscribed to \"" +
                                      std::string(destination) + "\"");
      }
      if (git == groups_.end()) {
        Group g;
        g.partitions = how.partitions;
        g.owner.assign(how.partitions, 0);
        g.incoming.assign(how.partitions, 0);
        g.queues.resize(how.partitions);
        git = groups_.emplace(std::string(destination), std::move(g)).first;
        // Messages that waited for a subscriber go to their partitions.
        if (auto qit = queues_.find(destination); qit != queues_.end()) {
          for (QueuedMessage& q : qit->second)
            git->second.queues[partition_of(git->second, q.message)].push_back(std::move(q));
          queues_.erase(qit);
        }
      }
      EndpointState& ep = endpoints_.at(endpoint_id);
      ep.handlers.emplace(std::string(destination),
                          std::make_shared<const Transport::Handler>(std::move(handler)));
      ep.listeners.emplace(std::string(destination),
                           std::make_shared<const PartitionListener>(std::move(how.listener)));
      git->second.members.push_back(endpoint_id);
      rebalance_locked(git->first, git->second);
    }
    cv_.notify_all();
    return ok_status();
  }

  void expire(std::string_view name) override {
    {
      std::lock_guard lock(mu_);
      for (auto& [id, ep] : endpoints_) {
        if (ep.name != name) continue;
        for (auto& [destination, g] : groups_) {
          if (std::find(g.members.begin(), g.members.end(), id) == g.members.end()) continue;
          std::vector<uint32_t> lost;
          for (uint32_t p = 0; p < g.partitions; ++p)
            if (g.owner[p] == id) lost.push_back(p);
          const std::string& dest = destination;
          requeue_locked(ep, [&](const InFlight& f) { return f.destination == dest; });
          leave_locked(destination, g, id);
          ep.events.push_back({OwnershipEvent::kLost, destination, std::move(lost)});
        }
      }
    }
    cv_.notify_all();
  }

  std::vector<std::string> owners(std::string_view destination) const override {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    auto git = groups_.find(destination);
    if (git == groups_.end()) return out;
    for (uint32_t p = 0; p < git->second.partitions; ++p) {
      const uint64_t o = git->second.incoming[p] == 0 ? git->second.owner[p] : 0;
      out.push_back(o == 0 ? std::string() : endpoints_.at(o).name);
    }
    return out;
  }

  // After `endpoint_id`'s `revoked` for these partitions returned: its
  // unacked messages of them are requeued and each goes to its new owner.
  void revocation_done(uint64_t endpoint_id, const OwnershipEvent& e) {
    {
      std::lock_guard lock(mu_);
      auto eit = endpoints_.find(endpoint_id);
      auto git = groups_.find(e.destination);
      if (eit == endpoints_.end() || git == groups_.end()) return;
      Group& g = git->second;
      std::vector<uint32_t> done;
      for (uint32_t p : e.partitions)
        if (g.owner[p] == endpoint_id) done.push_back(p);
      requeue_locked(eit->second, [&](const InFlight& f) {
        return f.destination == e.destination &&
               std::find(done.begin(), done.end(), static_cast<uint32_t>(f.partition)) !=
                   done.end();
      });
      std::map<uint64_t, std::vector<uint32_t>> assigned;
      for (uint32_t p : done) {
        g.owner[p] = g.incoming[p];
        g.incoming[p] = 0;
        if (g.owner[p] != 0) {
          ++stats_.rebalances;
          assigned[g.owner[p]].push_back(p);
        }
      }
      for (auto& [id, ps] : assigned)
        endpoints_.at(id).events.push_back({OwnershipEvent::kAssigned, e.destination, ps});
      rebalance_locked(git->first, g);  // partitions whose target left meanwhile
    }
    cv_.notify_all();
  }

  // After an endpoint's `lost` returned: it joins its group again.
  void rejoin(uint64_t endpoint_id, const std::string& destination) {
    {
      std::lock_guard lock(mu_);
      auto git = groups_.find(destination);
      if (endpoints_.count(endpoint_id) == 0 || git == groups_.end()) return;
      Group& g = git->second;
      if (std::find(g.members.begin(), g.members.end(), endpoint_id) == g.members.end())
        g.members.push_back(endpoint_id);
      rebalance_locked(git->first, g);
    }
    cv_.notify_all();
  }

  // The table keeps every message sent to it, in order; each reader has its
  // own position. Messages that waited for a subscriber become its start.
  Status subscribe_table(uint64_t endpoint_id, std::string_view destination,
                         Transport::Handler handler) {
    if (destination.empty()) return Status::invalid_argument("subscribe_table: empty destination");
    if (!handler) return Status::invalid_argument("subscribe_table: empty handler");
    {
      std::lock_guard lock(mu_);
      auto& tables = endpoints_.at(endpoint_id).tables;
      if (tables.find(destination) != tables.end()) {
        return Status::already_exists("subscribe_table: already reading \"" +
                                      std::string(destination) + "\"");
      }
      if (tables_.find(destination) == tables_.end()) {
        auto& log = tables_[std::string(destination)];
        if (auto qit = queues_.find(destination); qit != queues_.end()) {
          for (QueuedMessage& q : qit->second) log.push_back(std::move(q.message));
          queues_.erase(qit);
        }
      }
      tables.emplace(std::string(destination),
                     std::pair{std::make_shared<const Transport::Handler>(std::move(handler)), 0});
    }
    cv_.notify_all();
    return ok_status();
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

  void wake(uint64_t endpoint_id) {
    {
      std::lock_guard lock(mu_);
      auto it = endpoints_.find(endpoint_id);
      if (it == endpoints_.end()) return;
      it->second.woken = true;
    }
    cv_.notify_all();
  }

  // Fences every earlier claim of the shard; returns the new claim's epoch.
  StatusOr<uint64_t> claim(const std::string& log, uint32_t shard, uint32_t shards) {
    std::lock_guard lock(mu_);
    SAGA_RETURN_IF_ERROR(check_log_locked("claim_shard", log, shard, shards));
    return ++logs_[{log, shard}].epoch;
  }

  // For a tail: the log's shard count as for a claim, without fencing.
  Status check_log(const std::string& log, uint32_t shard, uint32_t shards) {
    std::lock_guard lock(mu_);
    return check_log_locked("tail_shards", log, shard, shards);
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

  // The log's shard count is fixed by its first claim or tail. REQUIRES: mu_.
  Status check_log_locked(const char* what, const std::string& log, uint32_t shard,
                          uint32_t shards) {
    if (log.empty()) return Status::invalid_argument(std::string(what) + ": empty log name");
    if (shard >= shards) {
      return Status::invalid_argument(std::string(what) + ": shard " + std::to_string(shard) +
                                      " of a log of " + std::to_string(shards));
    }
    auto [it, created] = log_shards_.emplace(log, shards);
    if (!created && it->second != shards) {
      return Status::failed_precondition("changelog \"" + log + "\" has " +
                                         std::to_string(it->second) + " shards, not " +
                                         std::to_string(shards));
    }
    return ok_status();
  }

  static uint32_t partition_of(const Group& g, const Message& m) {
    return shard_of(m.key.empty() ? m.saga_id : m.key, g.partitions);
  }

  // Puts the endpoint's unacked messages that `which` selects back at the
  // front of their queues, in their original order; their acks are then
  // ignored. REQUIRES: mu_ held.
  template <typename Pred>
  void requeue_locked(EndpointState& ep, Pred which) {
    const int64_t now_ms = to_millis(clock_->now());
    for (auto rit = ep.in_flight.rbegin(); rit != ep.in_flight.rend();) {
      InFlight& f = rit->second;
      if (!which(f)) {
        ++rit;
        continue;
      }
      QueuedMessage q{std::move(f.message), now_ms};
      auto git = groups_.find(f.destination);
      if (f.partition >= 0 && git != groups_.end()) {
        git->second.queues[static_cast<size_t>(f.partition)].push_front(std::move(q));
      } else {
        queues_[f.destination].push_front(std::move(q));
      }
      ++stats_.redelivered;
      rit = decltype(rit)(ep.in_flight.erase(std::next(rit).base()));
    }
  }

  // `id` leaves the group: what it owned goes to the others (or waits for
  // a member). REQUIRES: mu_ held.
  void leave_locked(const std::string& destination, Group& g, uint64_t id) {
    auto mit = std::find(g.members.begin(), g.members.end(), id);
    if (mit == g.members.end()) return;
    g.members.erase(mit);
    std::map<uint64_t, std::vector<uint32_t>> assigned;
    for (uint32_t p = 0; p < g.partitions; ++p) {
      if (g.incoming[p] == id) g.incoming[p] = 0;  // its owner's revocation finds no target
      if (g.owner[p] == id) {
        g.owner[p] = g.incoming[p];  // a handover in progress completes at once
        g.incoming[p] = 0;
        if (g.owner[p] != 0) {
          ++stats_.rebalances;
          assigned[g.owner[p]].push_back(p);
        }
      }
    }
    for (auto& [owner, ps] : assigned)
      endpoints_.at(owner).events.push_back({OwnershipEvent::kAssigned, destination, ps});
    rebalance_locked(destination, g);
  }

  // Cooperative-sticky: every member holds its fair share (partitions / n,
  // the first members one more); a partition keeps its holder while that
  // holder is within its share. Unowned partitions are assigned at once;
  // owned ones that must move are revoked first (their new owner gets them
  // in revocation_done). REQUIRES: mu_ held.
  void rebalance_locked(const std::string& destination, Group& g) {
    const size_t n = g.members.size();
    if (n == 0) return;
    std::map<uint64_t, size_t> quota, held;
    for (size_t i = 0; i < n; ++i)
      quota[g.members[i]] = g.partitions / n + (i < g.partitions % n ? 1 : 0);
    // Who holds each partition (its handover target counts as its holder).
    std::vector<uint64_t> target(g.partitions, 0);
    std::vector<uint32_t> free;
    for (uint32_t p = 0; p < g.partitions; ++p) {
      const uint64_t h = g.incoming[p] != 0 ? g.incoming[p] : g.owner[p];
      if (h != 0 && quota.count(h) != 0 && held[h] < quota[h]) {
        target[p] = h;
        ++held[h];
      } else {
        free.push_back(p);
      }
    }
    size_t next = 0;
    for (uint64_t m : g.members) {
      while (held[m] < quota[m] && next < free.size()) {
        target[free[next++]] = m;
        ++held[m];
      }
    }
    std::map<uint64_t, std::vector<uint32_t>> assigned, revoked;
    for (uint32_t p = 0; p < g.partitions; ++p) {
      const uint64_t t = target[p];
      if (g.incoming[p] != 0) {
        g.incoming[p] = t;  // a handover in progress goes to the new target
      } else if (g.owner[p] == 0) {
        g.owner[p] = t;
        if (t != 0) {
          assigned[t].push_back(p);
          ++stats_.rebalances;
        }
      } else if (g.owner[p] != t) {
        g.incoming[p] = t;
        revoked[g.owner[p]].push_back(p);
      }
    }
    for (auto& [id, ps] : revoked)
      endpoints_.at(id).events.push_back({OwnershipEvent::kRevoked, destination, ps});
    for (auto& [id, ps] : assigned)
      endpoints_.at(id).events.push_back({OwnershipEvent::kAssigned, destination, ps});
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
    if (auto table = tables_.find(message.destination); table != tables_.end()) {
      table->second.push_back(std::move(message));  // no faults: a table is the truth
      return ok_status();
    }
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

    auto git = groups_.find(message.destination);
    auto& queue = git != groups_.end()
                      ? git->second.queues[partition_of(git->second, message)]
                      : queues_[message.destination];
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
  void take_ready_locked(uint64_t ep_id, EndpointState& ep, std::vector<Work>& out) {
    while (!ep.events.empty() && out.size() < kMaxItemsPerPoll) {
      Work w;
      w.listener = ep.listeners.at(ep.events.front().destination);
      w.event = std::move(ep.events.front());
      ep.events.pop_front();
      out.push_back(std::move(w));
    }
    while (!ep.confirmations.empty() && out.size() < kMaxItemsPerPoll) {
      Work w;
      w.callback = std::move(ep.confirmations.front().callback);
      w.status = std::move(ep.confirmations.front().status);
      ep.confirmations.pop_front();
      out.push_back(std::move(w));
    }
    if (!available_) return;
    for (auto& [destination, reader] : ep.tables) {
      const std::vector<Message>& log = tables_.at(destination);
      for (; reader.second < log.size() && out.size() < kMaxItemsPerPoll; ++reader.second) {
        Work w;
        w.handler = reader.first;
        w.message = log[reader.second];
        out.push_back(std::move(w));  // delivery id 0: nothing to ack
        ++stats_.delivered;
      }
    }
    const int64_t now_ms = to_millis(clock_->now());
    for (const auto& [destination, handler] : ep.handlers) {
      if (ep.listeners.count(destination) != 0) {
        Group& g = groups_.find(destination)->second;
        for (uint32_t p = 0; p < g.partitions; ++p) {
          if (g.owner[p] == ep_id && g.incoming[p] == 0)
            take_due_locked(ep, destination, handler, g.queues[p], p, now_ms, out);
        }
        continue;
      }
      auto qit = queues_.find(destination);
      if (qit == queues_.end()) continue;
      take_due_locked(ep, destination, handler, qit->second, -1, now_ms, out);
      if (qit->second.empty()) queues_.erase(qit);
    }
  }

  // Moves the due messages of `queue` into `out` as deliveries to `ep`.
  // A message still delayed stays where it is; later ones that are due
  // overtake it, as a retried produce overtakes on a real broker.
  // REQUIRES: mu_ held.
  void take_due_locked(EndpointState& ep, const std::string& destination,
                       const HandlerPtr& handler, std::deque<QueuedMessage>& queue,
                       int64_t partition, int64_t now_ms, std::vector<Work>& out) {
    for (auto it = queue.begin(); it != queue.end() && out.size() < kMaxItemsPerPoll;) {
      if (it->due_ms > now_ms) {
        ++it;
        continue;
      }
      const uint64_t delivery_id = next_delivery_id_++;
      ep.in_flight.emplace(delivery_id, InFlight{destination, it->message, partition});
      Work w;
      w.handler = handler;
      w.message = std::move(it->message);
      w.delivery_id = delivery_id;
      out.push_back(std::move(w));
      ++stats_.delivered;
      it = queue.erase(it);
    }
  }

  // The earliest due time among delayed messages the endpoint could receive,
  // or nullopt. REQUIRES: mu_ held.
  std::optional<int64_t> earliest_due_locked(uint64_t ep_id, const EndpointState& ep) const {
    std::optional<int64_t> earliest;
    auto consider = [&](const std::deque<QueuedMessage>& queue) {
      for (const auto& q : queue) {
        if (!earliest || q.due_ms < *earliest) earliest = q.due_ms;
      }
    };
    for (const auto& [destination, handler] : ep.handlers) {
      if (ep.listeners.count(destination) != 0) {
        const Group& g = groups_.find(destination)->second;
        for (uint32_t p = 0; p < g.partitions; ++p)
          if (g.owner[p] == ep_id && g.incoming[p] == 0) consider(g.queues[p]);
        continue;
      }
      auto qit = queues_.find(destination);
      if (qit != queues_.end()) consider(qit->second);
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
  std::map<std::string, Group, std::less<>> groups_;  // partitioned destinations; GUARDED_BY(mu_)
  std::map<std::string, std::vector<Message>, std::less<>> tables_;  // GUARDED_BY(mu_)
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

// A reader of a changelog's shards on a MemoryBusImpl: every record is there
// at once, so a read delivers each followed shard up to its log's end.
class MemoryShardTail final : public ShardTail {
 public:
  MemoryShardTail(std::shared_ptr<MemoryBusImpl> bus, std::string log, uint32_t shards)
      : bus_(std::move(bus)), log_(std::move(log)), shards_(shards) {}

  Status follow(uint32_t shard, uint64_t from) override {
    SAGA_RETURN_IF_ERROR(check(shard));
    next_[shard] = from;
    return ok_status();
  }
  Status unfollow(uint32_t shard) override {
    SAGA_RETURN_IF_ERROR(check(shard));
    next_.erase(shard);
    return ok_status();
  }
  Status read(const RecordFn& fn) override {
    for (auto& [shard, next] : next_) {
      const uint32_t k = shard;
      uint64_t& at = next;
      SAGA_RETURN_IF_ERROR(bus_->read(log_, k, at, [&](const ShardChange& c, uint64_t offset) {
        fn(k, c, offset);
        at = offset + 1;
      }));
    }
    return ok_status();
  }

 private:
  Status check(uint32_t shard) const {
    if (shard >= shards_) {
      return Status::invalid_argument("tail of changelog \"" + log_ + "\": shard " +
                                      std::to_string(shard) + " of " + std::to_string(shards_));
    }
    return ok_status();
  }

  const std::shared_ptr<MemoryBusImpl> bus_;
  const std::string log_;
  const uint32_t shards_;
  std::map<uint32_t, uint64_t> next_;  // followed shard -> offset after the last delivered
};

// One connection to a MemoryBusImpl. The bus owns the endpoint's state so
// that Acks, which may outlive the endpoint, only need a weak_ptr to the bus.
class MemoryEndpoint final : public Transport {
 public:
  MemoryEndpoint(std::shared_ptr<MemoryBusImpl> bus, std::string name)
      : bus_(std::move(bus)), name_(std::move(name)), id_(bus_->add_endpoint(name_)) {}

  ~MemoryEndpoint() override { bus_->remove_endpoint(id_); }

  MemoryEndpoint(const MemoryEndpoint&) = delete;
  MemoryEndpoint& operator=(const MemoryEndpoint&) = delete;

  Status subscribe(std::string_view destination, Handler handler) override {
    return bus_->subscribe(id_, destination, std::move(handler))
        .with_context("endpoint \"" + name_ + "\"");
  }

  Status subscribe_partitioned(std::string_view destination, Handler handler,
                               PartitionedSubscription how) override {
    return bus_->subscribe_partitioned(id_, destination, std::move(handler), std::move(how))
        .with_context("endpoint \"" + name_ + "\"");
  }

  Status subscribe_table(std::string_view destination, Handler handler) override {
    return bus_->subscribe_table(id_, destination, std::move(handler))
        .with_context("endpoint \"" + name_ + "\"");
  }

  void send(Message message, SendCallback on_sent) override {
    bus_->send(id_, std::move(message), std::move(on_sent));
  }

  size_t poll(std::chrono::milliseconds max_wait) override { return bus_->poll(id_, max_wait); }

  void wake() override { bus_->wake(id_); }

  Status health() const override { return bus_->health(); }

  StatusOr<std::unique_ptr<ShardLog>> claim_shard(std::string_view log, uint32_t shard,
                                                  uint32_t shards) override {
    SAGA_ASSIGN_OR_RETURN(uint64_t epoch, bus_->claim(std::string(log), shard, shards));
    return std::unique_ptr<ShardLog>(
        std::make_unique<MemoryShardLog>(bus_, std::string(log), shard, epoch));
  }

  StatusOr<std::unique_ptr<ShardTail>> tail_shards(std::string_view log, uint32_t shards) override {
    SAGA_RETURN_IF_ERROR(bus_->check_log(std::string(log), 0, shards));
    return std::unique_ptr<ShardTail>(
        std::make_unique<MemoryShardTail>(bus_, std::string(log), shards));
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
      take_ready_locked(endpoint_id, ep, work);
      if (!work.empty() || ep.woken) break;
      const auto now = SteadyClock::now();
      if (now >= deadline) break;
      auto wake = deadline;
      if (available_) {
        if (auto due = earliest_due_locked(endpoint_id, ep)) {
          const auto until_due =
              std::chrono::milliseconds(std::max<int64_t>(*due - to_millis(clock_->now()), 1));
          wake = std::min(wake, now + std::min(until_due, kDelayedRecheck));
        }
      }
      cv_.wait_until(lock, wake);
    }
    ep.woken = false;
  }

  // User code runs unlocked: handlers and callbacks may send, ack or poll.
  // A handler may destroy the last endpoint holding the bus; keep it alive
  // until the batch is done.
  const auto self = std::static_pointer_cast<MemoryBusImpl>(shared_from_this());
  const std::weak_ptr<MemoryBusImpl> weak_bus = self;
  for (Work& w : work) {
    if (w.listener) {
      switch (w.event.kind) {
        case OwnershipEvent::kAssigned:
          w.listener->assigned(w.event.partitions);
          break;
        case OwnershipEvent::kRevoked:
          w.listener->revoked(w.event.partitions);
          revocation_done(endpoint_id, w.event);
          break;
        case OwnershipEvent::kLost:
          w.listener->lost(w.event.partitions);
          rejoin(endpoint_id, w.event.destination);
          break;
      }
    } else if (w.handler) {
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
