// One process of a multi-process booking run over real Kafka (tests/crash/
// kafka_crash_test.cc starts, kills and restarts these):
//
//   saga_node participant NAME DIR        NAME: inventory | payment | loyalty;
//                                         runs until SIGTERM or SIGINT, printing
//                                         "owned N at T" when its shard count changes
//   saga_node orchestrator DIR N PACE_MS  starts the sagas k-0 .. k-(N-1) that do
//                                         not exist yet (PACE_MS pause every 10),
//                                         prints "started K", exits 0 once all are terminal,
//                                         4 when another process claimed its shards
//   saga_node check DIR N                 offline: checks every saga terminal and
//                                         the invariants over DIR/<name> stores
//
// Kafka settings come from the environment (kafka_options_from_env:
// KAFKA_BROKERS, KAFKA_TOPIC_PREFIX, KAFKA_REPLICATION_FACTOR, ...); the
// consumer group is prefixed with the topic prefix so runs never share one.
// SAGA_CHANGELOG=1 turns every engine's changelog on (not in check mode, which
// only reads the local stores); SAGA_THREADS=T runs every engine on T engine
// threads (default one). SAGA_REPLICAS=1 runs participants as replicas (one
// consumer group per participant, shards owned as it assigns them; needs the
// changelog), and SAGA_REPLICA_SUFFIX=S names this replica: its store is
// DIR/<name>S and its endpoint <name>S. SAGA_ORCHESTRATOR_REPLICAS=1 runs the
// orchestrator so too (SAGA_REPLICA_SUFFIX names it the same way): each
// replica starts the sagas of the shards it owns (owner_of), and exits 0 only
// once it owns every shard, has started every saga not started yet and sees
// them all terminal (so, in a test, after the other replicas died).
// SAGA_STANDBY=1 gives every replica a standby copy of the shards it does not
// own; SAGA_SESSION_TIMEOUT_MS sets the consumer groups' session timeout
// (default 6000; the test brokers accept 1000 and up).
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "saga/kafka_transport.h"
#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"
#include "support/test_seed.h"

namespace {

using namespace saga;
constexpr int64_t kCapacity = 1'000'000;

[[noreturn]] void die(const std::string& what, const Status& s) {
  std::cerr << "saga_node: " << what << ": " << s.to_string() << std::endl;
  std::exit(2);
}

// `group`: the consumer group's name (default: the endpoint's).
std::shared_ptr<Transport> kafka(const std::string& endpoint, const std::string& group = "") {
  KafkaOptions o = kafka_options_from_env(endpoint);
  o.group_id = o.topic_prefix + (group.empty() ? endpoint : group);
  const char* session = std::getenv("SAGA_SESSION_TIMEOUT_MS");
  const int session_ms = session ? std::stoi(session) : 6000;
  o.properties.emplace("session.timeout.ms", std::to_string(session_ms));
  o.properties.emplace("heartbeat.interval.ms", std::to_string(std::min(500, session_ms / 3)));
  auto t = make_kafka_transport(endpoint, o);
  if (!t.ok()) die("kafka transport for " + endpoint, t.status());
  return std::shared_ptr<Transport>(std::move(*t));
}

bool standby_from_env() {
  const char* v = std::getenv("SAGA_STANDBY");
  return v && std::string(v) == "1";
}

uint32_t threads_from_env() {
  const char* v = std::getenv("SAGA_THREADS");
  return v ? static_cast<uint32_t>(std::stoul(v)) : 0;
}

std::unique_ptr<Participant> open_participant(const std::string& name, const std::string& dir,
                                              std::shared_ptr<Transport> transport,
                                              bool changelog = false,
                                              const std::string& suffix = "") {
  ParticipantOptions po;
  po.name = name;
  po.data_dir = dir + "/" + name + suffix;
  po.changelog = changelog;
  po.threads = threads_from_env();
  const char* replicas = std::getenv("SAGA_REPLICAS");
  po.replicas = replicas && std::string(replicas) == "1";
  po.standby = po.replicas && standby_from_env();
  auto p = Participant::open(po, std::move(transport));
  if (!p.ok()) die("open " + name, p.status());
  return std::move(*p);
}

Status register_handlers(const std::string& name, Participant& p) {
  testing::BookingFaults faults;
  faults.decline = 0.2;
  faults.confirm_failure = 0.1;
  auto rng = std::make_shared<std::mt19937_64>(testing::test_seed("saga_node " + name));
  auto chance = [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
  if (name == "inventory") return testing::register_inventory(p, kCapacity, faults, chance);
  if (name == "payment") return testing::register_payment(p, faults, chance);
  if (name == "loyalty") return testing::register_loyalty(p);
  return Status::invalid_argument("unknown participant '" + name + "'");
}

std::string saga_id(int k) { return "k-" + std::to_string(k); }

bool changelog_from_env() {
  const char* v = std::getenv("SAGA_CHANGELOG");
  return v && std::string(v) == "1";
}

bool orchestrator_replicas_from_env() {
  const char* v = std::getenv("SAGA_ORCHESTRATOR_REPLICAS");
  return v && std::string(v) == "1";
}

std::string replica_suffix_from_env() {
  const char* v = std::getenv("SAGA_REPLICA_SUFFIX");
  return v ? v : "";
}

// "owned N at T" (T in steady-clock ms, the clock the test shares) when the
// shards owned are not `*last` any more, so that a test can time a failover.
void report_owned(uint64_t now, uint64_t* last) {
  if (now == *last) return;
  *last = now;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
  std::cout << "owned " << now << " at " << ms << std::endl;
}

int run_participant(const std::string& name, const std::string& dir) {
  // Signals are taken synchronously by this thread; block them before any
  // other thread starts so that none of those gets them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string suffix = replica_suffix_from_env();
  auto p = open_participant(name, dir, kafka(name + suffix, name), changelog_from_env(), suffix);
  if (Status s = register_handlers(name, *p); !s.ok()) die("handlers", s);
  p->start_background();
  std::cout << "ready " << name << std::endl;
  // Until SIGTERM or SIGINT, reporting the shards this process owns.
  const timespec tick{0, 50'000'000};
  uint64_t owned = ~uint64_t{0};
  while (sigtimedwait(&signals, nullptr, &tick) < 0) report_owned(p->stats().shards_owned, &owned);
  p->stop();
  const ParticipantStats st = p->stats();
  std::cout << name << " stopping: applied " << st.applied << " duplicates " << st.duplicates
            << " shards owned " << st.shards_owned << std::endl;
  return 0;
}

std::unique_ptr<Orchestrator> open_orchestrator(const std::string& dir,
                                                std::shared_ptr<Transport> transport,
                                                bool changelog = false,
                                                const std::string& replica = "") {
  Options o;
  o.data_dir = dir + "/orchestrator" + replica;
  o.changelog = changelog;
  if (!replica.empty() || orchestrator_replicas_from_env()) {
    o.replicas = true;
    o.advertised_address = "orchestrator" + replica;
    o.standby = standby_from_env();
  }
  o.threads = threads_from_env();
  o.breaker.enabled = false;
  auto orch = Orchestrator::open(
      o, std::move(transport), {testing::booking_definition(Duration{2000}, 20, /*loyalty=*/true)});
  if (!orch.ok()) die("open orchestrator", orch.status());
  return std::move(*orch);
}

int count_terminal(const Orchestrator& o, int n) {
  int done = 0;
  for (int k = 0; k < n; ++k) {
    auto v = o.get(saga_id(k));
    if (v.ok() && is_terminal(v->state)) ++done;
  }
  return done;
}

// One of several orchestrator replicas (SAGA_ORCHESTRATOR_REPLICAS=1). On
// SIGTERM or SIGINT it closes cleanly (leaving the group: its shards move at
// once) and exits 0 ("stopped").
int run_orchestrator_replica(const std::string& dir, int n, int pace_ms) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any other thread starts
  // Waits `ms` for a stop signal; true when one came.
  auto stop_signalled = [&signals](long ms) {
    const timespec wait{ms / 1000, (ms % 1000) * 1'000'000};
    return sigtimedwait(&signals, nullptr, &wait) >= 0;
  };
  const std::string suffix = replica_suffix_from_env();
  auto orch = open_orchestrator(dir, kafka("orchestrator" + suffix, "orchestrator"),
                                /*changelog=*/true, suffix);
  orch->start_background();
  uint64_t owned = ~uint64_t{0};
  const uint64_t shards = kDefaultShards;
  bool stopping = false;
  // Starts saga k when this replica drives its shard; true once it is (or
  // was) started here, false when another replica drives it.
  auto start_if_here = [&](int k) {
    StartOptions so;
    so.id = saga_id(k);
    while (!stopping) {
      report_owned(orch->stats().shards_owned, &owned);
      const ShardOwner w = orch->owner_of(so.id);
      if (w.where == ShardOwner::Where::kElsewhere) return false;
      if (w.where == ShardOwner::Where::kHere) {
        auto r = orch->start("booking", Json{{"qty", 1}, {"amount", 100 + k % 900}}, so);
        if (r.ok() || r.status().code() == StatusCode::kAlreadyExists) return r.ok();
        if (r.status().code() != StatusCode::kUnavailable) die("start " + so.id, r.status());
      }
      stopping = stop_signalled(100);  // moving: ask again
    }
    return false;
  };
  auto stopped = [&] {
    orch->stop();
    orch.reset();  // leaves the group
    std::cout << "stopped" << std::endl;
    return 0;
  };
  for (int k = 0; k < n && !stopping; ++k) {
    if (start_if_here(k) && k % 10 == 9 && pace_ms > 0) stopping = stop_signalled(pace_ms);
    if (k % 100 == 99) std::cout << "started " << k + 1 << std::endl;
  }
  // The sagas of replicas that died before they started theirs: once every
  // shard is here, each is started (or found) here. A shard that moves away
  // meanwhile (a paused replica came back) may have skipped some: the pass
  // is made again once every shard is here again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  int late = 0;
  for (bool complete = false; !complete;) {
    while (!stopping && orch->stats().shards_owned < shards) {
      report_owned(orch->stats().shards_owned, &owned);
      if (std::chrono::steady_clock::now() > deadline) {
        std::cerr << "saga_node: never owned every shard" << std::endl;
        return 3;
      }
      stopping = stop_signalled(100);
    }
    if (stopping) return stopped();
    report_owned(orch->stats().shards_owned, &owned);
    const uint64_t claims = orch->stats().shard_claims;
    for (int k = 0; k < n; ++k) late += start_if_here(k) ? 1 : 0;
    complete = orch->stats().shard_claims == claims && orch->stats().shards_owned == shards;
  }
  std::cout << "all started; started late " << late << std::endl;
  int done = 0;
  while (!stopping && (done = count_terminal(*orch, n)) < n) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "saga_node: only " << done << " of " << n << " sagas finished in time"
                << std::endl;
      return 3;
    }
    stopping = stop_signalled(250);  // polling with a deadline
  }
  if (stopping) return stopped();
  orch->stop();
  std::cout << "all " << n << " sagas terminal; restored records " << orch->stats().restored_records
            << " standby records " << orch->stats().standby_records << std::endl;
  return 0;
}

int run_orchestrator(const std::string& dir, int n, int pace_ms) {
  if (orchestrator_replicas_from_env()) return run_orchestrator_replica(dir, n, pace_ms);
  auto orch = open_orchestrator(dir, kafka("orchestrator"), changelog_from_env());
  orch->start_background();
  int existed = 0;  // starts that found their saga (started by an earlier run)
  for (int k = 0; k < n; ++k) {
    StartOptions so;
    so.id = saga_id(k);
    auto r = orch->start("booking", Json{{"qty", 1}, {"amount", 100 + k % 900}}, so);
    if (!r.ok() && r.status().code() == StatusCode::kUnavailable) {
      // A shard resting after a failed changelog commit: as a client would, retry later.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      --k;
      continue;
    }
    if (!r.ok() && r.status().code() == StatusCode::kAborted) {
      // Another process claimed our shards (we were a zombie): stop at once.
      std::cout << "fenced: " << r.status().to_string() << std::endl;
      return 4;
    }
    if (!r.ok() && r.status().code() != StatusCode::kAlreadyExists)
      die("start " + so.id, r.status());
    if (!r.ok()) ++existed;
    if (r.ok() && k % 10 == 9 && pace_ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(pace_ms));
    if (k % 100 == 99) std::cout << "started " << k + 1 << std::endl;
  }
  std::cout << "all started; already existed " << existed << std::endl;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  int done = 0;
  while ((done = count_terminal(*orch, n)) < n) {
    if (const Status h = orch->health(); h.code() == StatusCode::kAborted) {
      std::cout << "fenced: " << h.to_string() << std::endl;
      return 4;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "saga_node: only " << done << " of " << n << " sagas finished in time"
                << std::endl;
      return 3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // polling with a deadline
  }
  orch->stop();
  std::cout << "all " << n << " sagas terminal" << std::endl;
  return 0;
}

int run_check(const std::string& dir, int n) {
  // Offline: nothing is sent, the stores are only read.
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 1);
  auto orch = open_orchestrator(dir, std::shared_ptr<Transport>(bus->connect("orchestrator")));
  auto inventory =
      open_participant("inventory", dir, std::shared_ptr<Transport>(bus->connect("inventory")));
  auto payment =
      open_participant("payment", dir, std::shared_ptr<Transport>(bus->connect("payment")));
  auto loyalty =
      open_participant("loyalty", dir, std::shared_ptr<Transport>(bus->connect("loyalty")));
  std::map<std::string, SagaView> views;
  std::map<SagaState, int> outcomes;
  std::vector<std::string> missing;  // sagas the orchestrator's store does not hold
  for (int k = 0; k < n; ++k) {
    auto v = orch->get(saga_id(k));
    if (!v.ok() && v.status().code() == StatusCode::kNotFound) {
      missing.push_back(saga_id(k));
      continue;
    }
    if (!v.ok()) die("get " + saga_id(k), v.status());
    ++outcomes[v->state];
    views.emplace(saga_id(k), std::move(*v));
  }
  if (!missing.empty()) {
    std::cout << "VIOLATION " << missing.size() << " sagas missing:";
    for (size_t i = 0; i < missing.size() && i < 50; ++i) std::cout << " " << missing[i];
    std::cout << std::endl;
    return 1;
  }
  auto bad = testing::check_booking_invariants(views, *inventory, *payment, kCapacity);
  for (std::string& b : testing::check_loyalty_invariants(views, *loyalty))
    bad.push_back(std::move(b));
  for (const std::string& b : bad) std::cout << "VIOLATION " << b << "\n";
  std::cout << "completed " << outcomes[SagaState::kCompleted] << " compensated "
            << outcomes[SagaState::kCompensated] << " violations " << bad.size() << std::endl;
  const bool both = outcomes[SagaState::kCompleted] > 0 && outcomes[SagaState::kCompensated] > 0;
  return bad.empty() && both ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // SAGA_LOG_LEVEL (info, debug, ...) shows more than warnings, to debug a run.
  const char* level = std::getenv("SAGA_LOG_LEVEL");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::warn);
  if (!level) {
    // The transports' own lines (connected, assigned, revoked, ...) are kept:
    // they tell where a stuck run stopped.
    auto kafka_log = spdlog::default_logger()->clone("kafka");
    kafka_log->set_level(spdlog::level::info);
    spdlog::register_logger(kafka_log);
  }
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "participant" && argc == 4) return run_participant(argv[2], argv[3]);
    if (mode == "orchestrator" && argc == 5)
      return run_orchestrator(argv[2], std::stoi(argv[3]), std::stoi(argv[4]));
    if (mode == "check" && argc == 4) return run_check(argv[2], std::stoi(argv[3]));
  } catch (const std::exception& e) {
    std::cerr << "saga_node: " << e.what() << std::endl;
    return 2;
  }
  std::cerr << "usage: saga_node participant NAME DIR | orchestrator DIR N PACE_MS | check DIR N\n";
  return 2;
}
