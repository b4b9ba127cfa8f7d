// Replicas over the fixture's real Apache Kafka broker (docs/replicas.md):
// two processes' worth of one participant (each its own transport, store and
// engine thread, one consumer group) share the shards as the group assigns
// the command topic's partitions; when one leaves, the other takes its shards,
// restores them from their changelogs and answers copies of commands the
// first one applied from the restored inbox (the test plays the orchestrator).
// Two replicas of an orchestrator share the booking sagas' shards the same
// way; one leaves with sagas in flight and the other finishes them.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "saga/shard.h"
#include "support/booking.h"
#include "support/booking_run.h"
#include "support/eventually.h"
#include "support/kafka_test_env.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kShards = 4;
constexpr int kKeys = 12;  // three in each shard

std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "rp" + std::to_string(rng() % 1'000'000'000) + ".";
}

// `instance`: the member's group.instance.id (static membership), or none.
std::unique_ptr<Transport> connect(const std::string& prefix, const std::string& endpoint,
                                   const std::string& group, const std::string& instance = "") {
  KafkaOptions o;
  o.brokers = testing::kafka_bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + group;
  o.client_id = endpoint;
  o.partitions = static_cast<int>(kShards);
  o.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  if (!instance.empty()) o.properties["group.instance.id"] = prefix + instance;
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(*t);
}

// Plays the orchestrator of the participant tests: sends "add" commands of
// sagas n (saga-n/add, keyed key_of(n)) and counts each one's successful replies.
class AddCommands {
 public:
  AddCommands(const std::string& prefix, std::function<std::string(int)> key_of)
      : orch_(connect(prefix, "orchestrator", "orchestrator")), key_of_(std::move(key_of)) {
    REQUIRE(orch_->subscribe("orchestrator.replies", [this](Message m, Transport::Ack ack) {
                   std::lock_guard lock(mu_);
                   if (m.outcome == ReplyOutcome::kSuccess) ++answered_[m.in_reply_to];
                   ack();
                 }).ok());
  }
  void send(int from, int to) {
    for (int n = from; n < to; ++n) {
      Message m;
      m.id = "saga-" + std::to_string(n) + "/add";
      m.kind = MessageKind::kCommand;
      m.type = "add";
      m.destination = "inventory";
      m.key = key_of_(n);
      m.saga_id = "saga-" + std::to_string(n);
      m.reply_to = "orchestrator.replies";
      m.payload = "{}";
      orch_->send(std::move(m), nullptr);
    }
  }
  // Polls for replies once; whether every command in [from, to) has at least
  // `n` successful replies.
  bool replied_now(int from, int to, int n) {
    orch_->poll(std::chrono::milliseconds(50));
    std::lock_guard lock(mu_);
    for (int k = from; k < to; ++k) {
      auto it = answered_.find("saga-" + std::to_string(k) + "/add");
      if (it == answered_.end() || it->second < n) return false;
    }
    return true;
  }
  // Waits until replied_now(from, to, n).
  bool replied(int from, int to, int n) {
    return testing::eventually([&] { return replied_now(from, to, n); }, 120s);
  }

 private:
  std::unique_ptr<Transport> orch_;
  std::function<std::string(int)> key_of_;
  std::mutex mu_;
  std::map<std::string, int> answered_;  // GUARDED_BY(mu_): command id -> successful replies
};

TEST_CASE("participant replicas over Kafka: shards move with the group, every command applied once") {
  const std::string prefix = unique_prefix();
  testing::TempDir dirs;
  std::vector<std::string> keys;  // three places in each shard
  std::map<uint32_t, int> per_shard;
  for (int i = 0; keys.size() < static_cast<size_t>(kKeys); ++i) {
    const std::string key = "place-" + std::to_string(i);
    if (per_shard[shard_of(key, kShards)]++ < kKeys / static_cast<int>(kShards)) keys.push_back(key);
  }
  std::mutex mu;
  std::map<std::string, int> calls;      // command id -> handler calls, on either replica
  auto add = [&](CommandContext& ctx) {
    {
      std::lock_guard lock(mu);
      ++calls[ctx.command.id];
    }
    const std::string key = "count/" + ctx.command.key;
    auto v = ctx.state.get(key);
    if (!v.ok()) return HandlerResult::retry(v.status().to_string());
    ctx.state.put(key, std::to_string((*v ? std::stoi(**v) : 0) + 1));
    return HandlerResult::success();
  };
  auto open_replica = [&](int i) {
    ParticipantOptions o;
    o.name = "inventory";
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.sync = false;
    o.shards = kShards;
    o.changelog = true;
    o.replicas = true;
    auto p = Participant::open(o, std::shared_ptr<Transport>(connect(
                                      prefix, "inventory-" + std::to_string(i), "inventory")));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    REQUIRE((*p)->on("add", add).ok());
    (*p)->start_background();
    return std::move(*p);
  };

  AddCommands commands(prefix, [&](int n) { return keys[static_cast<size_t>(n % kKeys)]; });
  auto send = [&](int from, int to) { commands.send(from, to); };
  auto replied = [&](int from, int to, int n) { return commands.replied(from, to, n); };

  auto first = open_replica(1);
  auto second = open_replica(2);
  REQUIRE(testing::eventually(
      [&] {
        return first->stats().shards_owned + second->stats().shards_owned == kShards &&
               first->stats().shards_owned > 0 && second->stats().shards_owned > 0;
      },
      120s));
  send(0, 120);
  REQUIRE(replied(0, 120, 1));
  const uint64_t applied_by_first = first->stats().applied;
  CHECK(applied_by_first > 0);  // both replicas worked
  CHECK(second->stats().applied > 0);

  first.reset();  // leaves the group: its shards go to the second replica
  REQUIRE(testing::eventually([&] { return second->stats().shards_owned == kShards; }, 120s));
  send(0, 60);  // copies of commands, some applied by the replica that left
  send(120, 180);
  REQUIRE(replied(0, 60, 2));
  REQUIRE(replied(120, 180, 1));
  second->stop();

  std::lock_guard lock(mu);
  CHECK(calls.size() == 180);
  for (const auto& [id, n] : calls) CHECK_MESSAGE(n == 1, id << " handled " << n << " times");
  for (int k = 0; k < kKeys; ++k) {
    auto v = second->get("count/" + keys[static_cast<size_t>(k)]);
    REQUIRE(v.ok());
    CHECK(*v == std::to_string(180 / kKeys));
  }
}


// Static membership (group.instance.id, for StatefulSets): a replica that
// restarts within the session timeout gets its own shards back, and the
// other replica never takes them meanwhile.
TEST_CASE("participant replicas with static membership: a quick restart keeps the shards where they were") {
  const std::string prefix = unique_prefix();
  testing::TempDir dirs;
  std::mutex mu;
  std::map<std::string, int> calls;
  auto open_replica = [&](int i) {
    ParticipantOptions o;
    o.name = "inventory";
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.sync = false;
    o.shards = kShards;
    o.changelog = true;
    o.replicas = true;
    auto p = Participant::open(
        o, std::shared_ptr<Transport>(connect(prefix, "inventory-" + std::to_string(i),
                                              "inventory", "inventory-" + std::to_string(i))));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    REQUIRE((*p)->on("add", [&](CommandContext& ctx) {
                  std::lock_guard lock(mu);
                  ++calls[ctx.command.id];
                  return HandlerResult::success();
                }).ok());
    (*p)->start_background();
    return std::move(*p);
  };
  auto here = [](const Participant& p) {
    std::vector<uint32_t> out;
    for (const ShardOwner& w : p.owners())
      if (w.where == ShardOwner::Where::kHere) out.push_back(w.shard);
    return out;
  };
  AddCommands commands(prefix, [](int n) { return "place-" + std::to_string(n % kKeys); });
  auto send = [&](int from, int to) { commands.send(from, to); };
  auto all_answered = [&](int n) { return commands.replied(0, n, 1); };

  auto first = open_replica(1);
  auto second = open_replica(2);
  REQUIRE(testing::eventually(
      [&] {
        return first->stats().shards_owned + second->stats().shards_owned == kShards &&
               first->stats().shards_owned > 0 && second->stats().shards_owned > 0;
      },
      120s));
  const std::vector<uint32_t> firsts = here(*first), seconds = here(*second);
  send(0, 40);
  REQUIRE(all_answered(40));

  first.reset();  // a static member does not leave the group on close
  send(40, 80);   // the first's shards' commands wait for it
  first = open_replica(1);
  // The restarted member gets its shards back; the second never gets more
  // than its own meanwhile (no rebalance moved them), watched until every
  // command was answered, past the 6 s session timeout.
  const auto watch_until = std::chrono::steady_clock::now() + 8s;
  bool second_kept_its_own = true;
  REQUIRE(testing::eventually(
      [&] {
        second_kept_its_own = second_kept_its_own && here(*second) == seconds;
        return commands.replied_now(0, 80, 1) && std::chrono::steady_clock::now() > watch_until;
      },
      120s));
  CHECK(second_kept_its_own);
  CHECK(here(*first) == firsts);
  first->stop();
  second->stop();
  std::lock_guard lock(mu);
  for (const auto& [id, n] : calls) CHECK_MESSAGE(n == 1, id << " handled " << n << " times");
  CHECK(calls.size() == 80);
}

TEST_CASE("orchestrator replicas over Kafka: sagas move with their shards when a replica leaves") {
  constexpr int kSagas = 160;
  const std::string prefix = unique_prefix();
  testing::TempDir dirs;
  auto open_participant = [&](const std::string& name) {
    ParticipantOptions o;
    o.name = name;
    o.data_dir = (dirs.path() / name).string();
    o.sync = false;
    auto p = Participant::open(o, std::shared_ptr<Transport>(connect(prefix, name, name)));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    return std::move(*p);
  };
  testing::BookingFaults faults;
  faults.confirm_failure = 0.1;
  auto inventory = open_participant("inventory");
  auto payment = open_participant("payment");
  REQUIRE(testing::register_inventory(*inventory, kSagas, faults, [] { return 0.5; }).ok());
  REQUIRE(testing::register_payment(*payment, faults, [] { return 0.5; }).ok());
  inventory->start_background();
  payment->start_background();

  std::mutex mu;
  std::map<std::string, int> settled;  // saga id -> on_settled calls, on either replica
  auto open_replica = [&](int i) {
    Options o;
    o.data_dir = (dirs.path() / ("orchestrator-" + std::to_string(i))).string();
    o.sync = false;
    o.shards = kShards;
    o.changelog = true;
    o.replicas = true;
    o.advertised_address = "replica-" + std::to_string(i);
    o.breaker.enabled = false;
    o.on_settled = [&](const SagaView& v) {
      std::lock_guard lock(mu);
      ++settled[v.id];
    };
    auto r = Orchestrator::open(
        o,
        std::shared_ptr<Transport>(
            connect(prefix, "orchestrator-" + std::to_string(i), "orchestrator")),
        {testing::booking_definition(Duration{10'000})});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    (*r)->start_background();
    return std::move(*r);
  };
  std::map<int, std::unique_ptr<Orchestrator>> replicas;
  replicas[1] = open_replica(1);
  replicas[2] = open_replica(2);
  auto owned = [&](int i) { return replicas.at(i)->stats().shards_owned; };
  REQUIRE(testing::eventually([&] { return owned(1) + owned(2) == kShards && owned(1) > 0 && owned(2) > 0; },
                              120s));
  // Both replicas learn from the owners table where every shard is driven:
  // one says here, the other names it.
  auto agreed = [&] {
    for (int n = 0; n < 64; ++n) {
      const std::string id = prefix + "probe-" + std::to_string(n);
      const ShardOwner a = replicas.at(1)->owner_of(id), b = replicas.at(2)->owner_of(id);
      const bool a_here = a.where == ShardOwner::Where::kHere;
      if ((b.where == ShardOwner::Where::kHere) == a_here) return false;
      const ShardOwner& other = a_here ? b : a;
      if (other.where != ShardOwner::Where::kElsewhere ||
          other.address != (a_here ? "replica-1" : "replica-2"))
        return false;
    }
    return true;
  };
  REQUIRE(testing::eventually(agreed, 60s));
  // Starts saga `n` through the first replica's routing: there, or on the
  // replica it names.
  std::vector<std::string> ids;
  auto start = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      StartOptions so;
      so.id = prefix + "booking-" + std::to_string(n);
      REQUIRE(testing::eventually(
          [&] {
            const ShardOwner w = replicas.begin()->second->owner_of(so.id);
            if (w.where == ShardOwner::Where::kUnknown) return false;
            Orchestrator& target =
                w.where == ShardOwner::Where::kHere
                    ? *replicas.begin()->second
                    : *replicas.at(std::stoi(w.address.substr(w.address.find('-') + 1)));
            auto r = target.start("booking", Json{{"qty", 1}, {"amount", 100 + n}}, so);
            if (r.ok() || r.status().code() == StatusCode::kAlreadyExists) return true;
            REQUIRE_MESSAGE(r.status().code() == StatusCode::kUnavailable, r.status().to_string());
            return false;  // the shard is moving: ask again
          },
          60s));
      ids.push_back(so.id);
    }
  };
  auto settled_count = [&] {
    std::lock_guard lock(mu);
    return settled.size();
  };
  start(0, kSagas / 2);
  REQUIRE(testing::eventually([&] { return settled_count() >= kSagas / 4; }, 120s));
  replicas.erase(1);  // leaves with sagas in flight: the other takes its shards
  REQUIRE(testing::eventually([&] { return owned(2) == kShards; }, 120s));
  start(kSagas / 2, kSagas);
  REQUIRE_MESSAGE(testing::eventually([&] { return settled_count() == ids.size(); }, 180s),
                  settled_count(), " of ", ids.size(), " settled");
  replicas.at(2)->stop();
  inventory->stop();
  payment->stop();

  for (const auto& [id, n] : settled) CHECK_MESSAGE(n == 1, id << " settled " << n << " times");
  std::map<SagaState, int> outcomes;
  const auto views = testing::terminal_views(*replicas.at(2), ids, outcomes);
  const auto bad = testing::check_booking_invariants(views, *inventory, *payment, kSagas);
  for (const std::string& b : bad) FAIL_CHECK(b);
  CHECK(outcomes[SagaState::kCompleted] > 0);
}

}  // namespace
}  // namespace saga
