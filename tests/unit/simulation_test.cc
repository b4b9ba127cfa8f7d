// Randomised, seeded runs of the booking saga over the in-memory transport
// while it drops, duplicates, delays and reorders messages, and while the
// orchestrator and participants restart. Every engine has two engine
// threads' shares of its shards (4 for the orchestrator, 12 for each
// participant), run in turn by run_once. Seeds 3, 7, 11, ... run two
// replicas of every engine, which the bus's consumer groups assign shards
// to as replicas restart, expire and come back. Odd seeds run every engine with its
// changelog, and their crashes may also lose the local store of one shard of
// one of them (restored from the changelog on reopen), and the fabric may go
// away for a while (commits fail: the engines roll back and try again), or
// lose its answer to a commit it made (the engines catch up with the log
// before they go on). Seeds 4, 9, 14, ... run the booking with a pivot
// (confirm) and a loyalty step after it, and stop the inventory now and then
// for longer than the pivot's retries last: sagas park as Failed at the
// pivot, and an operator retries them. Each seed must end with
// every saga terminal and money, stock and points consistent. A failing seed replays exactly:
//   SAGA_SIM_SEEDS=<seed> ./unit.simulation
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>

#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "saga/shard.h"
#include "store/store.h"
#include "support/booking.h"

namespace saga {
namespace {

namespace fs = std::filesystem;
using testing::BookingFaults;

constexpr int64_t kCapacity = 6;
constexpr int kSagas = 12;
constexpr uint32_t kShards = 4;
// Engine threads of every engine: run_once runs each thread's share of the
// shards in turn, each its own batch, write and changelog commits.
constexpr uint32_t kThreads = 2;

class World {
 public:
  explicit World(uint64_t seed)
      : seed_(seed),
        dir_(fs::temp_directory_path() /
             ("saga-sim-" + std::to_string(::getpid()) + "-" + std::to_string(seed))),
        clock_(std::make_shared<ManualClock>()),
        bus_(MemoryBus::create(clock_, seed)),
        rng_(seed * 7919 + 1),
        chance_rng_(std::make_shared<std::mt19937_64>(seed ^ 0x5eed)) {
    fs::remove_all(dir_);
    faults_.decline = 0.15;
    faults_.payment_retry = 0.15;
    faults_.confirm_failure = 0.1;
    orchs_.resize(static_cast<size_t>(replicas()));
    inventories_.resize(orchs_.size());
    payments_.resize(orchs_.size());
    if (pivot()) loyalties_.resize(orchs_.size());
    for (int i = 0; i < replicas(); ++i) {
      open_orchestrator(i);
      open_inventory(i);
      open_payment(i);
      if (pivot()) open_loyalty(i);
    }
  }
  ~World() {
    orchs_.clear();
    inventories_.clear();
    payments_.clear();
    loyalties_.clear();
    fs::remove_all(dir_);
  }

  bool changelog() const { return seed_ % 2 == 1; }
  // Seeds 3, 7, 11, ... run two replicas of every engine (docs/replicas.md),
  // whose shards the bus's consumer groups move as replicas restart, expire
  // and come back.
  int replicas() const { return seed_ % 4 == 3 ? 2 : 1; }
  // Seeds 4, 9, 14, ...: confirm is the pivot, loyalty's award follows it.
  bool pivot() const { return seed_ % 5 == 4; }

  // The bus endpoint (and data folder) of replica i of `engine`.
  static std::string endpoint(const std::string& engine, int i) {
    return i == 0 ? engine : engine + "-" + std::to_string(i + 1);
  }

  void open_orchestrator(int i) {
    orchs_.at(static_cast<size_t>(i)).reset();
    Options o;
    o.data_dir = (dir_ / endpoint("orchestrator", i)).string();
    o.sync = false;  // process restarts, not power loss, are simulated here
    o.shards = kShards;  // sagas spread over shards
    o.threads = kThreads;
    o.changelog = changelog();
    o.replicas = replicas() > 1;
    o.clock = clock_;
    o.random = std::make_shared<SeededRandom>(rng_());
    o.breaker.enabled = false;
    auto r = Orchestrator::open(
        o, std::shared_ptr<Transport>(bus_->connect(endpoint("orchestrator", i))),
        {testing::booking_definition(Duration{1000}, 5, pivot())});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    orchs_[static_cast<size_t>(i)] = std::move(*r);
  }

  // A process "crashes" and the disk under one of its shards is lost: every
  // key of the shard, its checkpoint included, is gone from its store.
  void lose_shard(const std::string& name, const std::vector<std::string>& families,
                  uint32_t shards, uint32_t shard) {
    auto store = internal::Store::open((dir_ / name).string(), families, false,
                                       {.wanted = shards, .for_new_store = shards});
    REQUIRE_MESSAGE(store.ok(), store.status().to_string());
    const internal::Keyspace ks(**store, shard);
    const std::string next = internal::Keyspace(**store, shard + 1).prefix();  // be16(shard + 1)
    internal::Batch b;
    for (size_t cf = 0; cf < families.size(); ++cf) b.del_range((*store)->cf(cf), ks.prefix(), next);
    ks.del(b, (*store)->meta(), "saga.changelog");
    REQUIRE((*store)->write(b).ok());
    ++lost_shards_;
  }
  void lose_a_shard() {
    const std::vector<std::string> participant_families = {"state", "inbox", "outbox"};
    const double which = roll();
    const int i = pick_replica();
    if (which < 0.5) {
      orchs_[static_cast<size_t>(i)].reset();
      lose_shard(endpoint("orchestrator", i), {"instances", "outbox", "timers", "replies", "index"},
                 kShards, static_cast<uint32_t>(roll() * kShards));
      open_orchestrator(i);
    } else if (which < 0.75) {
      inventories_[static_cast<size_t>(i)].reset();
      lose_shard(endpoint("inventory", i), participant_families, kDefaultShards,
                 shard_of(testing::kStockKey, kDefaultShards));  // the one that holds the stock
      open_inventory(i);
    } else {
      payments_[static_cast<size_t>(i)].reset();
      lose_shard(endpoint("payment", i), participant_families, kDefaultShards,
                 static_cast<uint32_t>(roll() * kDefaultShards));
      open_payment(i);
    }
  }

  int lost_shards() const { return lost_shards_; }
  int outages() const { return outages_; }
  int expiries() const { return expiries_; }

  std::unique_ptr<Participant> open_participant(const std::string& name, int i) {
    ParticipantOptions o;
    o.name = name;
    o.data_dir = (dir_ / endpoint(name, i)).string();
    o.sync = false;
    o.changelog = changelog();
    o.replicas = replicas() > 1;
    o.threads = kThreads;
    o.clock = clock_;
    auto r = Participant::open(o, std::shared_ptr<Transport>(bus_->connect(endpoint(name, i))));
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    return std::move(*r);
  }

  std::function<double()> chance() {
    auto rng = chance_rng_;
    return [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
  }

  void open_inventory(int i) {
    auto& p = inventories_.at(static_cast<size_t>(i));
    p.reset();
    p = open_participant("inventory", i);
    REQUIRE(testing::register_inventory(*p, kCapacity, faults_, chance()).ok());
  }

  void open_payment(int i) {
    auto& p = payments_.at(static_cast<size_t>(i));
    p.reset();
    p = open_participant("payment", i);
    REQUIRE(testing::register_payment(*p, faults_, chance()).ok());
  }

  void open_loyalty(int i) {
    auto& p = loyalties_.at(static_cast<size_t>(i));
    p.reset();
    p = open_participant("loyalty", i);
    REQUIRE(testing::register_loyalty(*p).ok());
  }

  double roll() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  // Which replica an event hits (no draw with one replica, so that those
  // seeds replay as before).
  int pick_replica() { return replicas() > 1 ? static_cast<int>(roll() * replicas()) : 0; }

  // Runs every engine once.
  // A stopped inventory (inventory_stopped_ > 0) handles nothing.
  void run_engines() {
    for (auto& o : orchs_) o->run_once();
    if (inventory_stopped_ == 0)
      for (auto& p : inventories_) p->run_once();
    for (auto& p : payments_) p->run_once();
    for (auto& p : loyalties_) p->run_once();
  }

  // An operator retries every saga parked as Failed (at the pivot, here: its
  // confirm ran out of retries while the inventory was stopped).
  void operate() {
    for (auto& o : orchs_) {
      ListQuery q;
      q.state = SagaState::kFailed;
      auto page = o->list(q);
      if (!page.ok()) continue;  // a shard resting after a failed commit
      for (const SagaView& v : page->items) {
        parked_.insert(v.id);
        (void)o->retry(v.id);
      }
    }
  }

  // Runs the scenario; returns the final views of every saga started.
  std::map<std::string, SagaView> run() {
    FaultOptions f;
    f.drop = 0.05;
    f.duplicate = 0.1;
    f.delay = 0.2;
    f.max_delay = Duration{300};
    f.reorder = 0.1;
    // A lost answer to a commit: the engines must not take it for a failure.
    if (changelog()) f.commit_in_doubt = 0.01;
    bus_->set_faults(f);

    std::vector<std::string> ids;
    int next = 0;
    int outage_ticks = 0;
    for (int tick = 0; tick < 20'000; ++tick) {
      if (next < kSagas && roll() < 0.2) {
        const std::string id = "s" + std::to_string(seed_) + "-" + std::to_string(next);
        Json data = {{"qty", 1 + static_cast<int>(roll() * 2)},
                     {"amount", 100 + static_cast<int>(roll() * 900)}};
        StartOptions so;
        so.id = id;
        // During an outage a start is refused, and the client tries again later
        // with the same id; when the refused start had been committed after all
        // (its answer was lost), the retry finds the saga there. With
        // replicas, only the owner of the saga's shard takes it.
        for (auto& o : orchs_) {
          auto r = o->start("booking", data, so);
          if (r.ok() || r.status().code() == StatusCode::kAlreadyExists) {
            ids.push_back(id);
            ++next;
            break;
          }
          REQUIRE_MESSAGE(r.status().code() == StatusCode::kUnavailable, "seed ", seed_, ": ",
                          r.status().to_string());
          REQUIRE(changelog());
        }
      }
      if (!ids.empty() && roll() < 0.01) {
        const std::string& id = ids[static_cast<size_t>(roll() * static_cast<double>(ids.size()))];
        for (auto& o : orchs_) (void)o->cancel(id);
      }
      run_engines();
      clock_->advance(Duration{static_cast<int64_t>(roll() * 40)});

      const double r = roll();
      if (r < 0.004) {
        open_orchestrator(pick_replica());
      } else if (r < 0.006) {
        open_inventory(pick_replica());
      } else if (r < 0.008) {
        open_payment(pick_replica());
      } else if (r < 0.012 && changelog()) {
        lose_a_shard();
      } else if (r < 0.015 && changelog() && outage_ticks == 0 && tick < 4'000) {
        bus_->set_available(false);  // commits fail: the engines roll back and rest
        outage_ticks = 5 + static_cast<int>(roll() * 50);
        ++outages_;
      } else if (r < 0.018 && replicas() > 1) {
        // A replica is presumed dead (paused past its session): its shards
        // go to the other at once; it is told they are lost and joins again.
        static const char* kEngines[] = {"orchestrator", "inventory", "payment"};
        bus_->expire(endpoint(kEngines[static_cast<int>(roll() * 3)], pick_replica()));
        ++expiries_;
      }
      if (outage_ticks > 0 && --outage_ticks == 0) bus_->set_available(true);
      if (pivot() && inventory_stopped_ == 0 && inventory_stops_ < 3 &&
          next >= kSagas / 3 * (inventory_stops_ + 1)) {
        // Longer than the pivot's five tries of 1 s with backoff (ticks
        // advance the clock by 20 ms on average).
        inventory_stopped_ = 500;
        ++inventory_stops_;
      }
      if (inventory_stopped_ > 0) --inventory_stopped_;
      if (pivot() && tick % 100 == 0) operate();
      if (tick == 4'000) {  // let the run drain
        bus_->set_faults(FaultOptions{});
        bus_->set_available(true);
        outage_ticks = 0;
      }
      if (next == kSagas && tick % 50 == 0 && all_terminal(ids)) break;
    }
    consolidate();
    std::map<std::string, SagaView> views;
    for (const std::string& id : ids) {
      auto v = orchs_[0]->get(id);
      REQUIRE_MESSAGE(v.ok(), "seed ", seed_, ": ", v.status().to_string());
      views.emplace(id, std::move(*v));
    }
    return views;
  }

  // With replicas: every replica but the first leaves, and the first takes
  // (and restores) every shard, so that its stores hold the whole truth.
  void consolidate() {
    inventory_stopped_ = 0;
    if (replicas() == 1) return;
    orchs_.resize(1);
    inventories_.resize(1);
    payments_.resize(1);
    if (pivot()) loyalties_.resize(1);
    for (int round = 0; round < 1'000; ++round) {
      run_engines();
      if (orchs_[0]->stats().shards_owned == kShards &&
          inventories_[0]->stats().shards_owned == kDefaultShards &&
          payments_[0]->stats().shards_owned == kDefaultShards &&
          (!pivot() || loyalties_[0]->stats().shards_owned == kDefaultShards))
        return;
    }
    FAIL("seed ", seed_, ": the last replicas never took every shard");
  }

  // Whether every saga is terminal in some replica's store (a store is a
  // prefix of its shard's changelog, so no store shows a terminal state
  // that is not final).
  bool all_terminal(const std::vector<std::string>& ids) const {
    for (const std::string& id : ids) {
      bool terminal = false;
      for (const auto& o : orchs_) {
        auto v = o->get(id);
        terminal = terminal || (v.ok() && is_terminal(v->state));
      }
      if (!terminal) return false;
    }
    return true;
  }

  const Participant& inventory() const { return *inventories_[0]; }
  const Participant& payment() const { return *payments_[0]; }
  const Participant* loyalty() const { return pivot() ? loyalties_[0].get() : nullptr; }
  int parked() const { return static_cast<int>(parked_.size()); }
  int inventory_stops() const { return inventory_stops_; }
  const MemoryBus& bus() const { return *bus_; }

 private:
  uint64_t seed_;
  fs::path dir_;
  std::shared_ptr<ManualClock> clock_;
  std::shared_ptr<MemoryBus> bus_;
  std::mt19937_64 rng_;
  std::shared_ptr<std::mt19937_64> chance_rng_;
  BookingFaults faults_;
  std::vector<std::unique_ptr<Orchestrator>> orchs_;
  std::vector<std::unique_ptr<Participant>> inventories_;
  std::vector<std::unique_ptr<Participant>> payments_;
  std::vector<std::unique_ptr<Participant>> loyalties_;  // pivot() seeds only
  int inventory_stopped_ = 0;  // ticks the inventory still stands still
  int inventory_stops_ = 0;
  std::set<std::string> parked_;  // sagas the operator found parked as Failed
  int lost_shards_ = 0;
  int outages_ = 0;
  int expiries_ = 0;
};

std::pair<uint64_t, uint64_t> seed_range() {
  const char* env = std::getenv("SAGA_SIM_SEEDS");
  std::string s = env ? env : "0-19";
  const auto dash = s.find('-');
  if (dash == std::string::npos) return {std::stoull(s), std::stoull(s)};
  return {std::stoull(s.substr(0, dash)), std::stoull(s.substr(dash + 1))};
}

TEST_CASE("every seeded faulty run ends with all sagas terminal and money and stock consistent") {
  const auto [first, last] = seed_range();
  std::map<SagaState, int> outcomes;
  BusStats faults_seen;
  int lost_shards = 0, outages = 0, expiries = 0, rebalances = 0;
  int pivot_seeds = 0, parked = 0, inventory_stops = 0, completed_past_pivot = 0;
  for (uint64_t seed = first; seed <= last; ++seed) {
    World world(seed);
    const auto views = world.run();
    lost_shards += world.lost_shards();
    outages += world.outages();
    expiries += world.expiries();
    rebalances += static_cast<int>(world.bus().stats().rebalances);
    REQUIRE(views.size() == static_cast<size_t>(kSagas));
    const auto bad =
        testing::check_booking_invariants(views, world.inventory(), world.payment(), kCapacity);
    for (const std::string& b : bad) FAIL_CHECK("seed ", seed, ": ", b);
    REQUIRE_MESSAGE(bad.empty(), "replay with SAGA_SIM_SEEDS=", seed);
    if (const Participant* loyalty = world.loyalty()) {
      const auto points = testing::check_loyalty_invariants(views, *loyalty);
      for (const std::string& b : points) FAIL_CHECK("seed ", seed, ": ", b);
      REQUIRE_MESSAGE(points.empty(), "replay with SAGA_SIM_SEEDS=", seed);
      ++pivot_seeds;
      parked += world.parked();
      inventory_stops += world.inventory_stops();
      for (const auto& [id, v] : views) completed_past_pivot += v.state == SagaState::kCompleted;
    }
    for (const auto& [id, v] : views) ++outcomes[v.state];
    const BusStats s = world.bus().stats();
    faults_seen.dropped += s.dropped;
    faults_seen.duplicated += s.duplicated;
    faults_seen.delayed += s.delayed;
    faults_seen.reordered += s.reordered;
    faults_seen.redelivered += s.redelivered;
    faults_seen.commits_in_doubt += s.commits_in_doubt;
  }
  MESSAGE("seeds ", first, "-", last, ": completed ", outcomes[SagaState::kCompleted],
          ", compensated ", outcomes[SagaState::kCompensated], "; dropped ", faults_seen.dropped,
          ", duplicated ", faults_seen.duplicated, ", delayed ", faults_seen.delayed,
          ", reordered ", faults_seen.reordered, ", redelivered ", faults_seen.redelivered,
          ", commits in doubt ", faults_seen.commits_in_doubt,
          "; shard stores lost ", lost_shards, ", fabric outages ", outages,
          "; replicas expired ", expiries, ", shards moved ", rebalances, "; pivot seeds ",
          pivot_seeds, ": completed past the pivot ", completed_past_pivot,
          ", inventory stopped ", inventory_stops, " times, parked as Failed at the pivot ", parked,
          " (retried by the operator)");
  // The run must have exercised both outcomes and every fault, or it proves little.
  CHECK(outcomes[SagaState::kCompleted] > 0);
  CHECK(outcomes[SagaState::kCompensated] > 0);
  CHECK(faults_seen.dropped > 0);
  CHECK(faults_seen.duplicated > 0);
  CHECK(faults_seen.delayed > 0);
  CHECK(faults_seen.reordered > 0);
  if (last - first >= 20) {
    CHECK(lost_shards > 0);
    CHECK(outages > 0);
    CHECK(faults_seen.commits_in_doubt > 0);
    CHECK(expiries > 0);
    CHECK(rebalances > 0);
  }
  if (pivot_seeds >= 3) {
    CHECK(completed_past_pivot > 0);
    CHECK(parked > 0);
  }
}

}  // namespace
}  // namespace saga
