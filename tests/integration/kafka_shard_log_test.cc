// Shard changelogs over the fixture's real Apache Kafka broker
// (docs/sharding.md, "The transport side"): a commit's changes land in the
// shard's partition of a compacted topic and its messages reach their
// consumers only with it; a later claim fences the earlier one, whose next
// commit fails Aborted and publishes nothing a read_committed consumer sees;
// a new claim reads everything the old one committed; the shard count of a
// changelog is fixed.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/transport.h"
#include "support/eventually.h"
#include "support/kafka_test_env.h"

namespace saga {
namespace {

using namespace std::chrono_literals;

std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "sl" + std::to_string(rng() % 1'000'000'000) + ".";
}

std::unique_ptr<Transport> connect(const std::string& prefix, const std::string& endpoint) {
  KafkaOptions o;
  o.brokers = testing::kafka_bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + endpoint;
  o.partitions = 2;
  o.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(*t);
}

StatusOr<uint64_t> commit_now(ShardLog& log, ShardCommit c) {
  std::mutex mu;
  std::optional<StatusOr<uint64_t>> result;
  log.commit(std::move(c), [&](StatusOr<uint64_t> end) {
    std::lock_guard lock(mu);
    result = std::move(end);
  });
  REQUIRE(testing::eventually(
      [&] {
        std::lock_guard lock(mu);
        return result.has_value();
      },
      60s));
  return *result;
}

ShardChange change(uint8_t family, std::string key, std::optional<std::string> value) {
  return ShardChange{family, std::move(key), std::move(value)};
}

Message command(std::string id, std::string destination) {
  Message m;
  m.id = std::move(id);
  m.kind = MessageKind::kCommand;
  m.type = "reserve";
  m.destination = std::move(destination);
  m.saga_id = "saga-" + m.id;
  m.reply_to = "orchestrator";
  m.payload = "{}";
  return m;
}

// Everything shard `log` holds from `from`, as "family/key=value" strings.
std::vector<std::string> read_all(ShardLog& log, uint64_t from = 0) {
  std::vector<std::string> out;
  const Status s = log.read(from, [&](const ShardChange& c, uint64_t) {
    out.push_back(std::to_string(c.family) + "/" + c.key + "=" +
                  (c.value ? *c.value : std::string("<deleted>")));
  });
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  return out;
}

// A read_committed consumer of `destination`: what it received.
struct Receiver {
  explicit Receiver(const std::string& prefix, const std::string& destination)
      : transport(connect(prefix, destination + "-receiver")) {
    REQUIRE(transport
                ->subscribe(destination,
                            [this](Message m, Transport::Ack ack) {
                              ids.push_back(m.id);
                              ack();
                            })
                .ok());
  }
  // Polls until `id` arrived (true) or `wait` passed (false).
  bool receives(const std::string& id, std::chrono::milliseconds wait) {
    return testing::eventually(
        [&] {
          transport->poll(50ms);
          return std::find(ids.begin(), ids.end(), id) != ids.end();
        },
        wait);
  }
  std::unique_ptr<Transport> transport;
  std::vector<std::string> ids;
};

TEST_CASE("a shard commit appends its changes to the shard's partition and publishes its messages") {
  const std::string prefix = unique_prefix();
  auto owner = connect(prefix, "orch");
  Receiver inventory(prefix, "inventory");

  auto log = owner->claim_shard("orch.changelog", 1, 3);
  REQUIRE_MESSAGE(log.ok(), log.status().to_string());
  CHECK(read_all(**log).empty());

  auto end = commit_now(**log, {{change(0, "a", "1"), change(2, "b", "2")},
                                {command("c1", "inventory")}});
  REQUIRE_MESSAGE(end.ok(), end.status().to_string());
  CHECK(*end == 2);  // offsets 0 and 1; the commit marker follows
  end = commit_now(**log, {{change(0, "a", std::nullopt)}, {}});
  REQUIRE(end.ok());
  const uint64_t after_delete = *end;
  CHECK(after_delete > 2);  // past the first transaction's marker
  end = commit_now(**log, {{}, {command("c2", "inventory")}});
  REQUIRE(end.ok());
  CHECK(*end == after_delete);  // no changes: the end stays

  CHECK(read_all(**log) == std::vector<std::string>{"0/a=1", "2/b=2", "0/a=<deleted>"});
  CHECK(read_all(**log, 2) == std::vector<std::string>{"0/a=<deleted>"});
  CHECK(read_all(**log, after_delete).empty());
  CHECK((*log)->read(after_delete + 100, [](const ShardChange&, uint64_t) {}).code() ==
        StatusCode::kOutOfRange);

  CHECK(inventory.receives("c1", 30s));
  CHECK(inventory.receives("c2", 30s));

  // Other shards are other partitions of the same topic.
  auto other = owner->claim_shard("orch.changelog", 0, 3);
  REQUIRE(other.ok());
  CHECK(read_all(**other).empty());
}

TEST_CASE("a later claim fences the earlier one: its commit fails Aborted and publishes nothing") {
  const std::string prefix = unique_prefix();
  auto zombie = connect(prefix, "old");
  auto fresh = connect(prefix, "new");
  Receiver inventory(prefix, "inventory");

  auto old_claim = zombie->claim_shard("orch.changelog", 0, 1);
  REQUIRE_MESSAGE(old_claim.ok(), old_claim.status().to_string());
  REQUIRE(commit_now(**old_claim, {{change(0, "a", "1")}, {command("before", "inventory")}}).ok());

  auto new_claim = fresh->claim_shard("orch.changelog", 0, 1);
  REQUIRE_MESSAGE(new_claim.ok(), new_claim.status().to_string());
  // What the old owner committed is the new owner's.
  CHECK(read_all(**new_claim) == std::vector<std::string>{"0/a=1"});

  auto fenced =
      commit_now(**old_claim, {{change(0, "a", "zombie")}, {command("zombie", "inventory")}});
  CHECK(fenced.status().code() == StatusCode::kAborted);
  // And it stays fenced.
  CHECK(commit_now(**old_claim, {{change(0, "b", "zombie")}, {}}).status().code() ==
        StatusCode::kAborted);

  REQUIRE(commit_now(**new_claim, {{change(0, "a", "2")}, {command("after", "inventory")}}).ok());
  CHECK(inventory.receives("after", 30s));
  CHECK(inventory.receives("before", 1s));
  // The zombie's message never became visible, though "after" (sent later,
  // to the same destination) did; and its change is not in the log.
  CHECK(std::find(inventory.ids.begin(), inventory.ids.end(), "zombie") == inventory.ids.end());
  CHECK(read_all(**new_claim) == std::vector<std::string>{"0/a=1", "0/a=2"});
}

TEST_CASE("a claim that ended without committing leaves nothing; a changelog's shard count is fixed") {
  const std::string prefix = unique_prefix();
  auto owner = connect(prefix, "orch");
  {
    auto log = owner->claim_shard("p.changelog", 0, 2);
    REQUIRE(log.ok());
    REQUIRE(commit_now(**log, {{change(1, "k", "v")}, {}}).ok());
  }
  auto again = owner->claim_shard("p.changelog", 0, 2);
  REQUIRE(again.ok());
  CHECK(read_all(**again) == std::vector<std::string>{"1/k=v"});

  auto other = connect(prefix, "other");
  auto wrong = other->claim_shard("p.changelog", 0, 4);
  CHECK(wrong.status().code() == StatusCode::kFailedPrecondition);
  CHECK(wrong.status().message().find("2 partitions") != std::string::npos);
  CHECK(owner->claim_shard("p.changelog", 2, 2).status().code() == StatusCode::kInvalidArgument);
}


// A standby's reader (Transport::tail_shards) over the real broker: it sees
// what the owner committed, never an aborted transaction's records, follows
// and lets go of shards, and starts again where it is told; it fences no one.
TEST_CASE("a tail of the shards reads what owners commit without claiming anything") {
  const std::string prefix = unique_prefix();
  auto owner = connect(prefix, "orch");
  auto standby = connect(prefix, "standby");
  auto shard0 = owner->claim_shard("t.changelog", 0, 2);
  auto shard1 = owner->claim_shard("t.changelog", 1, 2);
  REQUIRE(shard0.ok());
  REQUIRE(shard1.ok());
  REQUIRE(commit_now(**shard0, {{change(0, "a", "1"), change(0, "b", "1")}, {}}).ok());
  REQUIRE(commit_now(**shard1, {{change(1, "x", "1")}, {}}).ok());

  auto tail = standby->tail_shards("t.changelog", 2);
  REQUIRE_MESSAGE(tail.ok(), tail.status().to_string());
  CHECK(connect(prefix, "wrong")->tail_shards("t.changelog", 3).status().code() ==
        StatusCode::kFailedPrecondition);  // the shard count is the topic's
  std::vector<std::string> got;  // "shard:family/key=value@offset"
  auto read = [&] {
    const Status s = (*tail)->read([&](uint32_t shard, const ShardChange& c, uint64_t offset) {
      got.push_back(std::to_string(shard) + ":" + std::to_string(c.family) + "/" + c.key + "=" +
                    (c.value ? *c.value : std::string("<deleted>")) + "@" +
                    std::to_string(offset));
    });
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  };
  // Polls until `n` records arrived in all (true) or 30 s passed.
  auto until = [&](size_t n) {
    return testing::eventually(
        [&] {
          read();
          return got.size() >= n;
        },
        30s, 20ms);
  };
  REQUIRE((*tail)->follow(0, 0).ok());
  REQUIRE((*tail)->follow(1, 0).ok());
  REQUIRE(until(3));
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<std::string>{"0:0/a=1@0", "0:0/b=1@1", "1:1/x=1@0"});

  // More commits arrive as they are made; shard 1 is let go of.
  REQUIRE((*tail)->unfollow(1).ok());
  got.clear();
  REQUIRE(commit_now(**shard1, {{change(1, "y", "1")}, {}}).ok());
  REQUIRE(commit_now(**shard0, {{change(0, "a", std::nullopt)}, {}}).ok());
  REQUIRE(until(1));
  CHECK(got.size() == 1);
  CHECK(got[0].rfind("0:0/a=<deleted>@", 0) == 0);

  // Followed again from offset 1: from there on.
  got.clear();
  REQUIRE((*tail)->follow(0, 1).ok());
  REQUIRE(until(2));
  CHECK(got[0] == "0:0/b=1@1");
  CHECK(got[1].rfind("0:0/a=<deleted>@", 0) == 0);

  // The owner was never fenced: it still commits.
  CHECK(commit_now(**shard0, {{change(0, "c", "1")}, {}}).ok());
  CHECK((*tail)->follow(2, 0).code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace saga
