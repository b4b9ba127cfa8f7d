#include "saga/memory_transport.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "saga/shard.h"

namespace saga {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kNoWait{0};

Message make_message(std::string id, std::string destination) {
  Message m;
  m.id = std::move(id);
  m.kind = MessageKind::kCommand;
  m.type = "reserve";
  m.destination = std::move(destination);
  m.key = "saga-1";
  m.saga_id = "saga-1";
  m.payload = "{}";
  return m;
}

// Records what a handler receives; keeps the acks so tests decide when to call them.
struct Inbox {
  std::vector<Message> messages;
  std::vector<Transport::Ack> acks;

  Transport::Handler handler() {
    return [this](Message m, Transport::Ack ack) {
      messages.push_back(std::move(m));
      acks.push_back(std::move(ack));
    };
  }

  std::vector<std::string> ids() const {
    std::vector<std::string> out;
    for (const auto& m : messages) out.push_back(m.id);
    return out;
  }

  void ack_all() {
    for (auto& a : acks) a();
  }
};

// Records the outcome of each send.
struct SendLog {
  std::vector<Status> results;
  Transport::SendCallback callback() {
    return [this](Status s) { results.push_back(std::move(s)); };
  }
};

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 1);
};

TEST_CASE("messages to one destination arrive in send order") {
  Fixture f;
  auto producer = f.bus->connect("producer");
  auto consumer = f.bus->connect("consumer");
  Inbox orders, payments;
  REQUIRE(consumer->subscribe("orders", orders.handler()).ok());
  REQUIRE(consumer->subscribe("payments", payments.handler()).ok());

  std::vector<std::string> want_orders, want_payments;
  for (int i = 0; i < 50; ++i) {
    const std::string o = "o" + std::to_string(i);
    const std::string p = "p" + std::to_string(i);
    producer->send(make_message(o, "orders"), nullptr);
    producer->send(make_message(p, "payments"), nullptr);
    want_orders.push_back(o);
    want_payments.push_back(p);
  }
  CHECK(f.bus->pending() == 100);
  CHECK(consumer->poll(kNoWait) == 100);
  CHECK(orders.ids() == want_orders);
  CHECK(payments.ids() == want_payments);
  CHECK(f.bus->pending() == 0);
  CHECK(f.bus->stats().sent == 100);
  CHECK(f.bus->stats().delivered == 100);
}

TEST_CASE("a message keeps every field on its way through the bus") {
  Fixture f;
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  Message m = make_message("m1", "orders");
  m.kind = MessageKind::kReply;
  m.reply_to = "r";
  m.in_reply_to = "c";
  m.compensates = "x";
  m.attempt = 4;
  m.outcome = ReplyOutcome::kFailure;
  m.traceparent = "00-aa-bb-01";
  m.created_ms = 99;
  ep->send(m, nullptr);
  ep->poll(kNoWait);
  REQUIRE(inbox.messages.size() == 1);
  CHECK(inbox.messages[0] == m);
}

TEST_CASE("send confirms with OK on the sender's next poll, never inside send") {
  Fixture f;
  auto producer = f.bus->connect("producer");
  auto other = f.bus->connect("other");
  SendLog log;
  producer->send(make_message("m1", "orders"), log.callback());
  producer->send(make_message("m2", "orders"), log.callback());
  CHECK(log.results.empty());

  // Another endpoint's poll does not run the producer's callbacks.
  CHECK(other->poll(kNoWait) == 0);
  CHECK(log.results.empty());

  CHECK(producer->poll(kNoWait) == 2);
  REQUIRE(log.results.size() == 2);
  CHECK(log.results[0].ok());
  CHECK(log.results[1].ok());
  CHECK(producer->poll(kNoWait) == 0);  // each callback runs once
}

TEST_CASE("wake() ends the poll that waits, or else the next one") {
  Fixture f;
  auto endpoint = f.bus->connect("engine");
  REQUIRE(endpoint->subscribe("orders", [](Message, Transport::Ack) {}).ok());
  // Before the poll: the next poll returns at once, once.
  endpoint->wake();
  auto first = std::async(std::launch::async, [&] { return endpoint->poll(std::chrono::hours(1)); });
  REQUIRE(first.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
  CHECK(first.get() == 0);
  // From another thread while a poll waits (or just before it does: either
  // way it must end, not after its hour).
  auto second = std::async(std::launch::async, [&] { return endpoint->poll(std::chrono::hours(1)); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (second.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready &&
         std::chrono::steady_clock::now() < deadline)
    endpoint->wake();
  REQUIRE(second.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  CHECK(second.get() == 0);
  CHECK(endpoint->poll(kNoWait) == 0);  // nothing was left behind
}

TEST_CASE("messages wait for a subscriber like a topic") {
  Fixture f;
  auto producer = f.bus->connect("producer");
  auto orders_consumer = f.bus->connect("orders-consumer");
  Inbox orders;
  REQUIRE(orders_consumer->subscribe("orders", orders.handler()).ok());

  producer->send(make_message("pay-1", "payments"), nullptr);
  producer->send(make_message("pay-2", "payments"), nullptr);
  CHECK(orders_consumer->poll(kNoWait) == 0);
  CHECK(orders.messages.empty());
  CHECK(f.bus->pending() == 2);

  auto payments_consumer = f.bus->connect("payments-consumer");
  Inbox payments;
  REQUIRE(payments_consumer->subscribe("payments", payments.handler()).ok());
  CHECK(payments_consumer->poll(kNoWait) == 2);
  CHECK(payments.ids() == std::vector<std::string>{"pay-1", "pay-2"});
  CHECK(f.bus->pending() == 0);
}

TEST_CASE("subscribing twice to one destination or with no handler is refused") {
  Fixture f;
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  CHECK(ep->subscribe("orders", inbox.handler()).code() == StatusCode::kAlreadyExists);
  CHECK(ep->subscribe("", inbox.handler()).code() == StatusCode::kInvalidArgument);
  CHECK(ep->subscribe("payments", nullptr).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("with drop probability 1 sends are confirmed but nothing is delivered") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.drop = 1.0});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  SendLog log;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  for (int i = 0; i < 3; ++i)
    ep->send(make_message("m" + std::to_string(i), "orders"), log.callback());
  CHECK(f.bus->pending() == 0);
  CHECK(ep->poll(kNoWait) == 3);  // the three confirmations
  REQUIRE(log.results.size() == 3);
  for (const auto& s : log.results) CHECK(s.ok());
  CHECK(inbox.messages.empty());
  const BusStats stats = f.bus->stats();
  CHECK(stats.sent == 3);
  CHECK(stats.dropped == 3);
  CHECK(stats.delivered == 0);
}

TEST_CASE("with duplicate probability 1 every message arrives twice in a row") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.duplicate = 1.0});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  ep->send(make_message("a", "orders"), nullptr);
  ep->send(make_message("b", "orders"), nullptr);
  CHECK(f.bus->pending() == 4);
  CHECK(ep->poll(kNoWait) == 4);
  CHECK(inbox.ids() == std::vector<std::string>{"a", "a", "b", "b"});
  CHECK(f.bus->stats().duplicated == 2);
  CHECK(f.bus->stats().delivered == 4);
}

TEST_CASE("with reorder probability 1 each message jumps the queue") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.reorder = 1.0});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  for (const char* id : {"a", "b", "c"}) ep->send(make_message(id, "orders"), nullptr);
  CHECK(ep->poll(kNoWait) == 3);
  CHECK(inbox.ids() == std::vector<std::string>{"c", "b", "a"});
  CHECK(f.bus->stats().reordered == 3);
}

TEST_CASE("a delayed message waits for the clock to reach its due time") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.delay = 1.0, .max_delay = milliseconds(50)});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  ep->send(make_message("late", "orders"), nullptr);
  CHECK(f.bus->stats().delayed == 1);
  CHECK(f.bus->pending() == 1);
  CHECK(ep->poll(kNoWait) == 0);
  // A poll that waits real time does not make a ManualClock move.
  CHECK(ep->poll(milliseconds(20)) == 0);

  int waited_ms = 0;
  while (inbox.messages.empty() && waited_ms < 100) {
    f.clock->advance(milliseconds(1));
    ++waited_ms;
    ep->poll(kNoWait);
  }
  REQUIRE(inbox.messages.size() == 1);
  CHECK(inbox.messages[0].id == "late");
  CHECK(waited_ms >= 1);
  CHECK(waited_ms <= 50);
  CHECK(f.bus->pending() == 0);
}

TEST_CASE("a delayed message does not hold back later messages of its queue") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.delay = 1.0, .max_delay = milliseconds(10)});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  ep->send(make_message("late", "orders"), nullptr);
  f.bus->set_faults(FaultOptions{});
  ep->send(make_message("on-time", "orders"), nullptr);
  CHECK(ep->poll(kNoWait) == 1);
  CHECK(inbox.ids() == std::vector<std::string>{"on-time"});
  f.clock->advance(milliseconds(10));
  CHECK(ep->poll(kNoWait) == 1);
  CHECK(inbox.ids() == std::vector<std::string>{"on-time", "late"});
}

TEST_CASE("a poll waiting on a delayed message sees a clock advanced by another thread") {
  Fixture f;
  f.bus->set_faults(FaultOptions{.delay = 1.0, .max_delay = milliseconds(10)});
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  ep->send(make_message("late", "orders"), nullptr);
  REQUIRE(ep->poll(kNoWait) == 0);
  std::thread advancer([&] { f.clock->advance(milliseconds(10)); });
  const auto start = std::chrono::steady_clock::now();
  const size_t n = ep->poll(milliseconds(5000));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  advancer.join();
  CHECK(n == 1);
  CHECK(elapsed < milliseconds(4000));
}

// Runs a fixed workload with every fault at 0.3 and returns what was delivered.
struct FaultyRun {
  std::vector<std::string> delivered;
  BusStats stats;
};

FaultyRun run_with_faults(uint64_t seed) {
  auto clock = std::make_shared<ManualClock>();
  auto bus = MemoryBus::create(clock, seed);
  bus->set_faults(FaultOptions{
      .drop = 0.3, .duplicate = 0.3, .delay = 0.3, .max_delay = milliseconds(20), .reorder = 0.3});
  auto ep = bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  for (int i = 0; i < 200; ++i) {
    ep->send(make_message("m" + std::to_string(i), "orders"), nullptr);
    if (i % 10 == 9) {
      clock->advance(milliseconds(3));
      ep->poll(kNoWait);
    }
  }
  for (int i = 0; i < 100 && bus->pending() > 0; ++i) {
    clock->advance(milliseconds(5));
    ep->poll(kNoWait);
  }
  CHECK(bus->pending() == 0);
  inbox.ack_all();
  return FaultyRun{inbox.ids(), bus->stats()};
}

TEST_CASE("faults are reproducible from the seed") {
  const FaultyRun a = run_with_faults(42);
  const FaultyRun b = run_with_faults(42);
  const FaultyRun c = run_with_faults(43);
  CHECK(a.delivered == b.delivered);
  CHECK(a.stats.dropped == b.stats.dropped);
  CHECK(a.stats.duplicated == b.stats.duplicated);
  CHECK(a.stats.delayed == b.stats.delayed);
  CHECK(a.stats.reordered == b.stats.reordered);
  CHECK(a.delivered != c.delivered);

  // Every kind of fault actually happened, and the counters add up.
  CHECK(a.stats.sent == 200);
  CHECK(a.stats.dropped > 0);
  CHECK(a.stats.duplicated > 0);
  CHECK(a.stats.delayed > 0);
  CHECK(a.stats.reordered > 0);
  CHECK(a.delivered.size() == a.stats.delivered);
  // A duplicate of a dropped message is never made, so each survivor is delivered once or twice.
  CHECK(a.stats.delivered <= 2 * (a.stats.sent - a.stats.dropped));
}

TEST_CASE("unacked messages return to the front of their queue when the endpoint closes") {
  Fixture f;
  auto producer = f.bus->connect("producer");
  producer->send(make_message("m1", "orders"), nullptr);
  producer->send(make_message("m2", "orders"), nullptr);
  producer->send(make_message("m3", "orders"), nullptr);

  Transport::Ack ack_m2;
  {
    auto first = f.bus->connect("first");
    Inbox inbox;
    REQUIRE(first->subscribe("orders", inbox.handler()).ok());
    CHECK(first->poll(kNoWait) == 3);
    REQUIRE(inbox.ids() == std::vector<std::string>{"m1", "m2", "m3"});
    inbox.acks[1]();  // only m2's effect is durable
    ack_m2 = inbox.acks[1];
    // Sent while the first consumer holds m1 and m3: must come after them.
    producer->send(make_message("m4", "orders"), nullptr);
    CHECK(f.bus->pending() == 1);
  }
  CHECK(f.bus->pending() == 3);
  CHECK(f.bus->stats().redelivered == 2);

  // Acking after the endpoint is gone, or twice, changes nothing.
  ack_m2();
  ack_m2();

  auto second = f.bus->connect("second");
  Inbox inbox;
  REQUIRE(second->subscribe("orders", inbox.handler()).ok());
  CHECK(second->poll(kNoWait) == 3);
  CHECK(inbox.ids() == std::vector<std::string>{"m1", "m3", "m4"});
  inbox.ack_all();
  inbox.ack_all();
  second.reset();
  CHECK(f.bus->pending() == 0);
  CHECK(f.bus->stats().redelivered == 2);
}

TEST_CASE("an ack may outlive the bus itself") {
  Transport::Ack ack;
  {
    auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
    auto ep = bus->connect("ep");
    Inbox inbox;
    REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
    ep->send(make_message("m1", "orders"), nullptr);
    REQUIRE(ep->poll(kNoWait) == 1);
    ack = inbox.acks.at(0);
  }
  ack();
}

TEST_CASE("an unavailable bus refuses sends and delivers nothing until it recovers") {
  Fixture f;
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  SendLog log;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  CHECK(ep->health().ok());
  ep->send(make_message("before", "orders"), nullptr);

  f.bus->set_available(false);
  CHECK(ep->health().code() == StatusCode::kUnavailable);
  ep->send(make_message("during", "orders"), log.callback());
  CHECK(log.results.empty());
  CHECK(ep->poll(kNoWait) == 1);  // the refusal only
  REQUIRE(log.results.size() == 1);
  CHECK(log.results[0].code() == StatusCode::kUnavailable);
  CHECK(inbox.messages.empty());
  CHECK(f.bus->pending() == 1);
  CHECK(f.bus->stats().sent == 1);

  f.bus->set_available(true);
  CHECK(ep->health().ok());
  ep->send(make_message("after", "orders"), log.callback());
  CHECK(ep->poll(kNoWait) == 3);
  REQUIRE(log.results.size() == 2);
  CHECK(log.results[1].ok());
  CHECK(inbox.ids() == std::vector<std::string>{"before", "after"});
}

TEST_CASE("a poll with nothing to deliver returns zero after at most its wait") {
  Fixture f;
  auto ep = f.bus->connect("ep");
  Inbox inbox;
  REQUIRE(ep->subscribe("orders", inbox.handler()).ok());
  CHECK(ep->poll(kNoWait) == 0);
  const auto start = std::chrono::steady_clock::now();
  CHECK(ep->poll(milliseconds(20)) == 0);
  CHECK(std::chrono::steady_clock::now() - start >= milliseconds(20));
}

TEST_CASE("a poll blocked in another thread is woken by a send") {
  Fixture f;
  auto consumer = f.bus->connect("consumer");
  auto producer = f.bus->connect("producer");
  std::mutex mu;
  std::vector<std::string> received;
  REQUIRE(consumer
              ->subscribe("orders",
                          [&](Message m, Transport::Ack ack) {
                            std::lock_guard lock(mu);
                            received.push_back(m.id);
                            ack();
                          })
              .ok());

  std::atomic<size_t> polled{0};
  std::atomic<bool> started{false};
  std::chrono::steady_clock::duration elapsed{};
  std::thread poller([&] {
    started = true;
    const auto start = std::chrono::steady_clock::now();
    // Far longer than the test should take: returning early means the send woke it.
    polled = consumer->poll(milliseconds(5000));
    elapsed = std::chrono::steady_clock::now() - start;
  });
  while (!started) std::this_thread::yield();
  producer->send(make_message("wake-up", "orders"), nullptr);
  poller.join();
  CHECK(polled.load() == 1);
  CHECK(elapsed < milliseconds(4000));
  CHECK(received == std::vector<std::string>{"wake-up"});
}

TEST_CASE("producers and consumers on several threads lose nothing") {
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 7);
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 250;
  auto consumer = bus->connect("consumer");
  std::atomic<int> received{0};
  std::mutex mu;
  std::vector<std::vector<int>> seen(kProducers);
  REQUIRE(consumer
              ->subscribe("orders",
                          [&](Message m, Transport::Ack ack) {
                            const auto slash = m.id.find('/');
                            const int p = std::stoi(m.id.substr(0, slash));
                            const int i = std::stoi(m.id.substr(slash + 1));
                            {
                              std::lock_guard lock(mu);
                              seen[p].push_back(i);
                            }
                            ++received;
                            ack();
                          })
              .ok());

  std::atomic<int> confirmed{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      auto ep = bus->connect("producer-" + std::to_string(p));
      for (int i = 0; i < kPerProducer; ++i) {
        ep->send(make_message(std::to_string(p) + "/" + std::to_string(i), "orders"),
                 [&](Status s) {
                   if (s.ok()) ++confirmed;
                 });
      }
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      int mine = 0;
      while (mine < kPerProducer && std::chrono::steady_clock::now() < deadline) {
        mine += static_cast<int>(ep->poll(milliseconds(10)));
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (received < kProducers * kPerProducer && std::chrono::steady_clock::now() < deadline) {
    consumer->poll(milliseconds(10));
  }
  for (auto& t : producers) t.join();
  CHECK(received.load() == kProducers * kPerProducer);
  CHECK(confirmed.load() == kProducers * kPerProducer);
  // Per producer, send order is kept.
  for (int p = 0; p < kProducers; ++p) {
    CAPTURE(p);
    REQUIRE(seen[p].size() == kPerProducer);
    for (int i = 0; i < kPerProducer; ++i) CHECK(seen[p][i] == i);
  }
}

// ------------------------------------------------------------ changelogs

ShardChange change(std::string key, std::optional<std::string> value, uint8_t family = 0) {
  return ShardChange{family, std::move(key), std::move(value)};
}

// Commits `c` and returns what the callback got (the in-memory log answers at once).
StatusOr<uint64_t> commit_now(ShardLog& log, ShardCommit c) {
  std::optional<StatusOr<uint64_t>> got;
  log.commit(std::move(c), [&](StatusOr<uint64_t> end) { got = std::move(end); });
  REQUIRE(got.has_value());
  return *got;
}

std::vector<std::pair<uint64_t, std::string>> read_all(ShardLog& log, uint64_t from = 0) {
  std::vector<std::pair<uint64_t, std::string>> out;
  REQUIRE(log.read(from, [&](const ShardChange& c, uint64_t offset) {
                out.emplace_back(offset, c.key + "=" + c.value.value_or("<deleted>"));
              }).ok());
  return out;
}

TEST_CASE("a shard changelog appends commits in order and publishes their messages with them") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  auto owner = bus->connect("orchestrator");
  auto reader = bus->connect("inventory");
  Inbox inbox;
  REQUIRE(reader->subscribe("inventory", inbox.handler()).ok());

  auto log = owner->claim_shard("orch.changelog", 2, 4);
  REQUIRE(log.ok());
  auto end = commit_now(**log, {{change("a", "1"), change("b", "2")},
                                {make_message("c1", "inventory")}});
  REQUIRE(end.ok());
  CHECK(*end == 2);
  end = commit_now(**log, {{change("a", std::nullopt)}, {}});
  CHECK(*end == 3);
  CHECK(bus->log_end("orch.changelog", 2) == 3);
  CHECK(bus->log_end("orch.changelog", 1) == 0);  // other shards are other logs

  CHECK(read_all(**log) == std::vector<std::pair<uint64_t, std::string>>{
                               {0, "a=1"}, {1, "b=2"}, {2, "a=<deleted>"}});
  CHECK(read_all(**log, 2) == std::vector<std::pair<uint64_t, std::string>>{{2, "a=<deleted>"}});
  CHECK(read_all(**log, 3).empty());
  CHECK((*log)->read(4, [](const ShardChange&, uint64_t) {}).code() == StatusCode::kOutOfRange);

  reader->poll(kNoWait);
  CHECK(inbox.ids() == std::vector<std::string>{"c1"});
}

TEST_CASE("a later claim fences the earlier one: its commits fail and publish nothing") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  auto zombie = bus->connect("old");
  auto fresh = bus->connect("new");
  auto reader = bus->connect("inventory");
  Inbox inbox;
  REQUIRE(reader->subscribe("inventory", inbox.handler()).ok());

  auto old_claim = zombie->claim_shard("orch.changelog", 0, 1);
  REQUIRE(old_claim.ok());
  REQUIRE(commit_now(**old_claim, {{change("a", "1")}, {}}).ok());
  auto new_claim = fresh->claim_shard("orch.changelog", 0, 1);
  REQUIRE(new_claim.ok());

  auto fenced = commit_now(**old_claim, {{change("a", "zombie")}, {make_message("z", "inventory")}});
  CHECK(fenced.status().code() == StatusCode::kAborted);
  CHECK_MESSAGE(fenced.status().message().find("fenced") != std::string::npos,
                fenced.status().message());
  REQUIRE(commit_now(**new_claim, {{change("a", "2")}, {make_message("n", "inventory")}}).ok());

  CHECK(read_all(**new_claim) == std::vector<std::pair<uint64_t, std::string>>{{0, "a=1"}, {1, "a=2"}});
  reader->poll(kNoWait);
  CHECK(inbox.ids() == std::vector<std::string>{"n"});
}

TEST_CASE("a shard changelog keeps its shard count, and refuses commits while the bus is away") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  auto t = bus->connect("orchestrator");
  REQUIRE(t->claim_shard("log", 0, 4).ok());
  CHECK(t->claim_shard("log", 1, 8).status().code() == StatusCode::kFailedPrecondition);
  CHECK(t->claim_shard("log", 4, 4).status().code() == StatusCode::kInvalidArgument);
  CHECK(t->claim_shard("", 0, 4).status().code() == StatusCode::kInvalidArgument);

  auto log = t->claim_shard("log", 3, 4);
  REQUIRE(log.ok());
  bus->set_available(false);
  CHECK(commit_now(**log, {{change("a", "1")}, {}}).status().code() == StatusCode::kUnavailable);
  CHECK(bus->log_end("log", 3) == 0);
  bus->set_available(true);
  CHECK(*commit_now(**log, {{change("a", "1")}, {}}) == 1);
}

// ---- tables (subscribe_table) ----

TEST_CASE("a table gives every reader all its messages in order, from the first, without faults") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  auto writer = bus->connect("writer");
  writer->send(make_message("early", "owners"), nullptr);  // before anyone reads it
  Inbox a, b;
  auto ta = bus->connect("a"), tb = bus->connect("b");
  REQUIRE(ta->subscribe_table("owners", a.handler()).ok());
  CHECK(ta->subscribe_table("owners", a.handler()).code() == StatusCode::kAlreadyExists);
  CHECK(ta->subscribe_table("", a.handler()).code() == StatusCode::kInvalidArgument);

  FaultOptions lossy;
  lossy.drop = 1;
  lossy.duplicate = 1;
  lossy.reorder = 1;
  bus->set_faults(lossy);  // what a table never suffers
  writer->send(make_message("second", "owners"), nullptr);
  auto log = writer->claim_shard("log", 0, 1);
  REQUIRE(log.ok());
  REQUIRE(commit_now(**log, {{}, {make_message("in-commit", "owners")}}).ok());
  ta->poll(kNoWait);
  CHECK(a.ids() == std::vector<std::string>{"early", "second", "in-commit"});

  REQUIRE(tb->subscribe_table("owners", b.handler()).ok());  // a late reader starts at the first
  tb->poll(kNoWait);
  CHECK(b.ids() == std::vector<std::string>{"early", "second", "in-commit"});
  writer->send(make_message("third", "owners"), nullptr);
  ta->poll(kNoWait);
  tb->poll(kNoWait);
  CHECK(a.ids().back() == "third");
  CHECK(b.ids().back() == "third");
  CHECK(a.messages.size() == 4);
}

// ---- consumer groups (subscribe_partitioned) ----

constexpr uint32_t kPartitions = 4;
constexpr char kReplies[] = "orch.replies";

// A member of the kReplies group: what it owns, what it was told (in a log
// shared by the members of a test, so the order across members shows), and
// what it received.
struct Member {
  Member(MemoryBus& bus, std::string name, std::vector<std::string>& log)
      : name(std::move(name)), t(bus.connect(this->name)), log_(log) {}

  Status join() {
    PartitionedSubscription how;
    how.partitions = kPartitions;
    how.listener.assigned = [this](const std::vector<uint32_t>& ps) { note("assigned", ps, true); };
    how.listener.revoked = [this](const std::vector<uint32_t>& ps) { note("revoked", ps, false); };
    how.listener.lost = [this](const std::vector<uint32_t>& ps) { note("lost", ps, false); };
    return t->subscribe_partitioned(kReplies, inbox.handler(), std::move(how));
  }

  void note(const std::string& what, const std::vector<uint32_t>& ps, bool add) {
    std::string line = name + " " + what;
    for (uint32_t p : ps) {
      line += " " + std::to_string(p);
      if (add) {
        owned.insert(p);
      } else {
        owned.erase(p);
      }
    }
    log_.push_back(line);
  }

  std::string name;
  std::unique_ptr<Transport> t;
  std::set<uint32_t> owned;
  Inbox inbox;

 private:
  std::vector<std::string>& log_;
};

// A message to kReplies whose key falls in `partition`.
Message to_partition(uint32_t partition, const std::string& id) {
  Message m = make_message(id, kReplies);
  for (int i = 0;; ++i) {
    m.key = m.saga_id = "saga-" + std::to_string(i);
    if (shard_of(m.key, kPartitions) == partition) return m;
  }
}

TEST_CASE("a consumer group splits the partitions; each member gets only its partitions' messages") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  std::vector<std::string> log;
  Member a(*bus, "a", log), b(*bus, "b", log);
  auto sender = bus->connect("sender");
  // Sent before anyone subscribed: waits in its partition.
  sender->send(to_partition(3, "early"), nullptr);
  REQUIRE(a.join().ok());
  a.t->poll(kNoWait);
  CHECK(a.owned == std::set<uint32_t>{0, 1, 2, 3});
  CHECK(a.inbox.ids() == std::vector<std::string>{"early"});
  a.inbox.ack_all();

  REQUIRE(b.join().ok());
  b.t->poll(kNoWait);
  CHECK(b.owned.empty());  // nothing is handed over before a's revocation returned
  CHECK(bus->owners(kReplies) == std::vector<std::string>{"a", "a", "", ""});
  a.t->poll(kNoWait);
  b.t->poll(kNoWait);
  CHECK(log == std::vector<std::string>{"a assigned 0 1 2 3", "a revoked 2 3", "b assigned 2 3"});
  CHECK(a.owned == std::set<uint32_t>{0, 1});
  CHECK(b.owned == std::set<uint32_t>{2, 3});
  CHECK(bus->owners(kReplies) == std::vector<std::string>{"a", "a", "b", "b"});

  for (uint32_t p = 0; p < kPartitions; ++p) sender->send(to_partition(p, "m" + std::to_string(p)), nullptr);
  a.t->poll(kNoWait);
  b.t->poll(kNoWait);
  CHECK(a.inbox.ids() == std::vector<std::string>{"early", "m0", "m1"});
  CHECK(b.inbox.ids() == std::vector<std::string>{"m2", "m3"});
  CHECK(bus->stats().rebalances == 6);

  Member c(*bus, "c", log);
  PartitionedSubscription other;
  other.partitions = kPartitions + 1;
  other.listener = {[](const auto&) {}, [](const auto&) {}, [](const auto&) {}};
  CHECK(c.t->subscribe_partitioned(kReplies, c.inbox.handler(), other).code() ==
        StatusCode::kFailedPrecondition);
  CHECK(c.t->subscribe_partitioned(kReplies, c.inbox.handler(), {}).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("unacked messages of a revoked partition go to its next owner; late acks change nothing") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  std::vector<std::string> log;
  Member a(*bus, "a", log), b(*bus, "b", log);
  auto sender = bus->connect("sender");
  REQUIRE(a.join().ok());
  a.t->poll(kNoWait);
  sender->send(to_partition(0, "kept"), nullptr);
  sender->send(to_partition(3, "moves"), nullptr);
  a.t->poll(kNoWait);
  REQUIRE(a.inbox.ids() == std::vector<std::string>{"kept", "moves"});

  REQUIRE(b.join().ok());
  a.t->poll(kNoWait);  // revokes 2 and 3 from a
  a.inbox.ack_all();   // too late for "moves": its partition is gone
  b.t->poll(kNoWait);
  b.t->poll(kNoWait);
  CHECK(b.inbox.ids() == std::vector<std::string>{"moves"});
  CHECK(bus->stats().redelivered == 1);
  a.t->poll(kNoWait);
  CHECK(a.inbox.ids() == std::vector<std::string>{"kept", "moves"});  // nothing again for a
}

TEST_CASE("a member that closes hands its partitions and unacked messages to the others at once") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  std::vector<std::string> log;
  Member b(*bus, "b", log);
  auto sender = bus->connect("sender");
  {
    Member a(*bus, "a", log);
    REQUIRE(a.join().ok());
    REQUIRE(b.join().ok());
    a.t->poll(kNoWait);
    b.t->poll(kNoWait);
    REQUIRE(a.owned == std::set<uint32_t>{0, 1});
    sender->send(to_partition(1, "unacked"), nullptr);
    a.t->poll(kNoWait);
    REQUIRE(a.inbox.ids() == std::vector<std::string>{"unacked"});
  }  // a closes without acking
  b.t->poll(kNoWait);
  CHECK(b.owned == std::set<uint32_t>{0, 1, 2, 3});
  CHECK(b.inbox.ids() == std::vector<std::string>{"unacked"});
  CHECK(log.back() == "b assigned 0 1");
}

TEST_CASE("an expired member is told its partitions are lost and joins again; the others own them meanwhile") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  std::vector<std::string> log;
  Member a(*bus, "a", log), b(*bus, "b", log);
  auto sender = bus->connect("sender");
  REQUIRE(a.join().ok());
  REQUIRE(b.join().ok());
  a.t->poll(kNoWait);
  b.t->poll(kNoWait);
  sender->send(to_partition(0, "in-flight"), nullptr);
  a.t->poll(kNoWait);
  REQUIRE(a.inbox.ids() == std::vector<std::string>{"in-flight"});
  log.clear();

  bus->expire("a");  // a is paused past its session
  CHECK(bus->owners(kReplies) == std::vector<std::string>{"b", "b", "b", "b"});
  b.t->poll(kNoWait);
  CHECK(b.inbox.ids() == std::vector<std::string>{"in-flight"});  // redelivered to the new owner
  a.inbox.ack_all();  // the zombie's ack is ignored: b still holds its own copy unacked
  a.t->poll(kNoWait);  // resumes: lost, then joins again
  CHECK(a.owned.empty());
  b.t->poll(kNoWait);
  a.t->poll(kNoWait);
  CHECK(log == std::vector<std::string>{"b assigned 0 1", "a lost 0 1", "b revoked 2 3",
                                        "a assigned 2 3"});
  CHECK(bus->owners(kReplies) == std::vector<std::string>{"b", "b", "a", "a"});
}

}  // namespace
}  // namespace saga
