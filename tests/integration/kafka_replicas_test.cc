// Replicas over the fixture's real Apache Kafka broker (docs/replicas.md):
// two processes' worth of one participant (each its own transport, store and
// engine thread, one consumer group) share the shards as the group assigns
// the command topic's partitions; when one leaves, the other takes its shards,
// restores them from their changelogs and answers copies of commands the
// first one applied from the restored inbox. The test plays the orchestrator.
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/participant.h"
#include "saga/shard.h"
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

std::unique_ptr<Transport> connect(const std::string& prefix, const std::string& endpoint,
                                   const std::string& group) {
  KafkaOptions o;
  o.brokers = testing::kafka_bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + group;
  o.client_id = endpoint;
  o.partitions = static_cast<int>(kShards);
  o.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(*t);
}

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
  std::map<std::string, int> answered;   // command id -> successful replies
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

  std::unique_ptr<Transport> orch = connect(prefix, "orchestrator", "orchestrator");
  REQUIRE(orch->subscribe("orchestrator.replies", [&](Message m, Transport::Ack ack) {
                 std::lock_guard lock(mu);
                 if (m.outcome == ReplyOutcome::kSuccess) ++answered[m.in_reply_to];
                 ack();
               }).ok());
  auto send = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      Message m;
      m.id = "saga-" + std::to_string(n) + "/add";
      m.kind = MessageKind::kCommand;
      m.type = "add";
      m.destination = "inventory";
      m.key = keys[static_cast<size_t>(n % kKeys)];
      m.saga_id = "saga-" + std::to_string(n);
      m.reply_to = "orchestrator.replies";
      m.payload = "{}";
      orch->send(std::move(m), nullptr);
    }
  };
  // Waits until every command in [from, to) has at least `n` successful replies.
  auto replied = [&](int from, int to, int n) {
    return testing::eventually(
        [&] {
          orch->poll(std::chrono::milliseconds(50));
          std::lock_guard lock(mu);
          for (int k = from; k < to; ++k) {
            auto it = answered.find("saga-" + std::to_string(k) + "/add");
            if (it == answered.end() || it->second < n) return false;
          }
          return true;
        },
        120s);
  };

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

}  // namespace
}  // namespace saga
