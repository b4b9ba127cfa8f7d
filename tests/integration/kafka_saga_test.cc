// The booking saga end to end over the fixture's real Kafka broker: the
// orchestrator and the inventory and payment participants each on their own
// KafkaTransport and engine thread. Every saga must finish with money and
// stock consistent; then copies of commands already processed are produced
// again, and the participants' inboxes must answer them without applying
// anything twice.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"
#include "support/booking_run.h"
#include "support/eventually.h"
#include "support/kafka_test_env.h"

namespace saga {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

constexpr int kSagas = 200;
constexpr int64_t kCapacity = 180;  // below kSagas: some reservations find no room

std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "s" + std::to_string(rng() % 1'000'000'000) + ".";
}

std::shared_ptr<Transport> connect(const std::string& prefix, const std::string& endpoint) {
  KafkaOptions o;
  o.brokers = testing::kafka_bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + endpoint;
  o.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::shared_ptr<Transport>(std::move(*t));
}

// A uniform [0, 1) source for one participant; each participant's handlers run
// on its own engine thread, so each gets its own generator.
std::function<double()> chance(uint64_t seed) {
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
}

// Counts settled sagas (on_settled runs on the orchestrator's engine thread).
struct Settled {
  std::mutex mu;
  std::condition_variable cv;
  size_t count = 0;

  void add() {
    {
      std::lock_guard lock(mu);
      ++count;
    }
    cv.notify_all();
  }
  bool wait_for(size_t n, std::chrono::seconds limit) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return count >= n; });
  }
};

// Waits, with a deadline, until `done` holds; checks every 20 ms.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 60s) {
  return testing::eventually(done, limit, 20ms);
}

// The command a step sent (its action, or its compensation), rebuilt from the
// saga's final view: the same id, so a participant must see a duplicate.
Message replay_of(const SagaView& v, int step, bool compensation) {
  static const char* kType[] = {"reserve", "charge", "confirm"};
  static const char* kUndo[] = {"release", "refund", ""};
  static const char* kTo[] = {"inventory", "payment", "inventory"};
  Message m;
  const std::string base = v.id + "/" + std::to_string(step);
  m.id = base + (compensation ? "/c" : "/a");
  m.kind = MessageKind::kCommand;
  m.type = compensation ? kUndo[step] : kType[step];
  m.destination = kTo[step];
  m.key = kTo[step] == std::string("inventory") ? testing::kStockKey : v.id;  // as the saga does
  m.saga_id = v.id;
  m.reply_to = "orchestrator.replies";
  m.compensates = compensation ? base + "/a" : "";
  m.attempt = 1;
  m.traceparent = v.traceparent;
  m.payload = v.data.dump();
  return m;
}

// Runs kSagas bookings, replays commands, and checks the invariants. With
// `changelog`, every engine keeps its shards' changelog in Kafka, and at the
// end all three data directories are deleted and the engines reopened on
// empty ones: the state restored from the changelogs must be the same.
void run_bookings(bool changelog) {
  const std::string prefix = unique_prefix();
  const fs::path dir =
      fs::temp_directory_path() / ("saga-kafka-" + std::to_string(::getpid()) + "-" + prefix);
  fs::remove_all(dir);

  auto open_participant = [&](const std::string& name) {
    ParticipantOptions o;
    o.name = name;
    o.data_dir = (dir / name).string();
    o.sync = false;  // process crashes are the crash test's business, not this one's
    o.changelog = changelog;
    auto p = Participant::open(o, connect(prefix, name));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    return std::move(*p);
  };
  testing::BookingFaults faults;
  faults.confirm_failure = 0.1;
  std::unique_ptr<Participant> inventory = open_participant("inventory");
  REQUIRE(testing::register_inventory(*inventory, kCapacity, faults, chance(1)).ok());
  std::unique_ptr<Participant> payment = open_participant("payment");
  REQUIRE(testing::register_payment(*payment, faults, chance(2)).ok());

  Settled settled;
  auto open_orchestrator = [&] {
    Options oo;
    oo.data_dir = (dir / "orchestrator").string();
    oo.sync = false;
    oo.changelog = changelog;
    oo.breaker.enabled = false;  // confirm failures must not turn into rejected starts
    oo.on_settled = [&](const SagaView&) { settled.add(); };
    // A generous step timeout: consumers joining their groups take a moment at
    // the start, and a timeout there would only turn bookings into compensations.
    auto opened = Orchestrator::open(oo, connect(prefix, "orchestrator"),
                                     {testing::booking_definition(10'000ms)});
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    return std::move(*opened);
  };
  std::unique_ptr<Orchestrator> orch = open_orchestrator();

  inventory->start_background();
  payment->start_background();
  orch->start_background();

  const auto t0 = Steady::now();
  const std::vector<std::string> ids = testing::start_bookings(*orch, prefix, kSagas);
  REQUIRE_MESSAGE(settled.wait_for(kSagas, 240s), "only ", settled.count, " of ", kSagas,
                  " sagas settled");
  const auto took = Steady::now() - t0;

  std::map<SagaState, int> outcomes;
  const std::map<std::string, SagaView> views = testing::terminal_views(*orch, ids, outcomes);
  MESSAGE(kSagas, " sagas settled in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), " ms: completed ",
          outcomes[SagaState::kCompleted], ", compensated ", outcomes[SagaState::kCompensated]);
  CHECK(outcomes[SagaState::kCompleted] > 0);
  CHECK(outcomes[SagaState::kCompensated] > 0);  // confirm failures and full stock
  for (const std::string& bad :
       testing::check_booking_invariants(views, *inventory, *payment, kCapacity)) {
    FAIL_CHECK(bad);
  }
  CHECK(orch->health().ok());
  CHECK(inventory->health().ok());
  CHECK(payment->health().ok());

  // ---- duplicate delivery: produce again what was already processed.
  const uint64_t dup_before = inventory->stats().duplicates + payment->stats().duplicates;
  const uint64_t stale_before = orch->stats().stale_replies;
  std::vector<Message> replays;
  int n = 0;
  for (const auto& [id, v] : views) {
    if (n++ % 3 != 0) continue;  // a third of the sagas is plenty
    for (int step = 0; step < 3; ++step) {
      const StepView& s = v.steps[static_cast<size_t>(step)];
      // Only what a participant has seen: a command never sent is not a
      // duplicate but a new request, and would rightly be applied.
      if (s.status == StepStatus::kPending) continue;
      replays.push_back(replay_of(v, step, false));
      if (s.compensated_ms > 0) replays.push_back(replay_of(v, step, true));
    }
  }
  REQUIRE(!replays.empty());
  {
    std::shared_ptr<Transport> replayer = connect(prefix, "replayer");
    std::atomic<size_t> confirmed{0}, failed{0};
    for (const Message& m : replays) {
      replayer->send(m, [&](Status s) { ++(s.ok() ? confirmed : failed); });
    }
    const auto deadline = Steady::now() + 60s;
    while (confirmed + failed < replays.size() && Steady::now() < deadline) replayer->poll(100ms);
    REQUIRE(confirmed == replays.size());
  }
  const uint64_t expected = dup_before + replays.size();
  CHECK_MESSAGE(
      eventually(
          [&] { return inventory->stats().duplicates + payment->stats().duplicates >= expected; }),
      "duplicates seen: ", inventory->stats().duplicates + payment->stats().duplicates - dup_before,
      " of ", replays.size());
  // Their answers reach the orchestrator, which must ignore them.
  CHECK(eventually([&] { return orch->stats().stale_replies >= stale_before + replays.size(); }));
  MESSAGE("replayed ", replays.size(), " commands; participants answered ",
          inventory->stats().duplicates + payment->stats().duplicates - dup_before,
          " from their inboxes; orchestrator ignored ", orch->stats().stale_replies - stale_before,
          " replies");

  for (const std::string& id : ids) {
    auto v = orch->get(id);
    REQUIRE(v.ok());
    CHECK(v->state == views.at(id).state);
  }
  for (const std::string& bad :
       testing::check_booking_invariants(views, *inventory, *payment, kCapacity)) {
    FAIL_CHECK("after replay: ", bad);
  }

  orch.reset();
  inventory.reset();
  payment.reset();
  if (changelog) {
    // Every disk lost: the changelogs alone bring every saga, the stock,
    // the charges and the inboxes back.
    fs::remove_all(dir);
    orch = open_orchestrator();
    inventory = open_participant("inventory");
    REQUIRE(testing::register_inventory(*inventory, kCapacity, faults, chance(1)).ok());
    payment = open_participant("payment");
    REQUIRE(testing::register_payment(*payment, faults, chance(2)).ok());
    for (const std::string& id : ids) {
      auto v = orch->get(id);
      REQUIRE_MESSAGE(v.ok(), id, ": ", v.status().to_string());
      CHECK(v->state == views.at(id).state);
    }
    for (const std::string& bad :
         testing::check_booking_invariants(views, *inventory, *payment, kCapacity)) {
      FAIL_CHECK("after the restore: ", bad);
    }
    orch.reset();
    inventory.reset();
    payment.reset();
  }
  fs::remove_all(dir);
}

TEST_CASE(
    "booking sagas over real Kafka all finish consistent, and replayed commands are not applied "
    "twice") {
  run_bookings(false);
}

TEST_CASE(
    "with changelogs in Kafka, the same holds, and every engine restored from its changelog alone "
    "after its data directory is deleted finds the same state") {
  run_bookings(true);
}

}  // namespace
}  // namespace saga
