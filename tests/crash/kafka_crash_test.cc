// Multi-process booking runs over real Apache Kafka brokers that each test
// starts and stops itself (scripts/kafka): an orchestrator process and three
// participant processes (inventory, payment, loyalty), each with its own
// synced RocksDB store. Brokers are stopped, participants killed, the
// orchestrator SIGKILLed; with changelogs in Kafka, every data directory is
// deleted mid-run, and a paused orchestrator is replaced by a fresh one and
// then resumed (a zombie). At the end every saga must be terminal, no step
// applied twice, compensated sagas net zero (saga_node check).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <string_view>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "support/eventually.h"
#include "support/kafka_brokers.h"
#include "support/process.h"
#include "support/test_seed.h"

namespace {

namespace fs = std::filesystem;
using saga::testing::child_seed;
using saga::testing::KafkaBrokers;
using saga::testing::kTestSeedVariable;
using saga::testing::Process;
using saga::testing::read_file;
using saga::testing::run_command;
using saga::testing::test_seed;
using saga::testing::wait_for_text;
using namespace std::chrono_literals;

const std::string kKafka = std::string(SAGA_SOURCE_DIR) + "/scripts/kafka";

// The last `lines` lines of `text`.
std::string tail(const std::string& text, int lines) {
  size_t at = text.size();
  for (int n = 0; n <= lines && at != std::string::npos && at > 0; ++n)
    at = text.rfind('\n', at - 1);
  return at == std::string::npos ? text : text.substr(at + 1);
}

// The processes of one run and the folder they share.
class Run {
 public:
  // `changelog`: every engine keeps its shards' changelog in Kafka, on two
  // engine threads.
  // `participant_replicas`: participants run as replicas (SAGA_REPLICAS=1).
  Run(const std::string& name, int brokers = 1, bool changelog = false,
      bool participant_replicas = false)
      : dir_(fs::temp_directory_path() /
             ("saga-kafka-" + name + "-" + std::to_string(::getpid()))),
        rng_(test_seed("crash.kafka " + name)) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    brokers_ = std::make_unique<KafkaBrokers>(kKafka, dir_, brokers);
    std::mt19937_64 rng(std::random_device{}());
    env_ = {{"KAFKA_BROKERS", brokers_->bootstrap()},
            {"KAFKA_TOPIC_PREFIX", "r" + std::to_string(rng() % 1'000'000'000) + "."},
            {"KAFKA_REPLICATION_FACTOR", std::to_string(brokers == 1 ? 1 : 3)}};
    if (changelog) {  // and every engine on two threads, committing their shards in parallel
      env_["SAGA_CHANGELOG"] = "1";
      env_["SAGA_THREADS"] = "2";
    }
    if (participant_replicas) env_["SAGA_REPLICAS"] = "1";
  }
  ~Run() {
    for (auto& [name, p] : participants_) p->terminate(10s);
    participants_.clear();
    orchestrator_.reset();
    orchestrator_replicas_.clear();
    zombie_.reset();
    brokers_.reset();
    if (passed_) fs::remove_all(dir_);
  }

  KafkaBrokers& brokers() { return *brokers_; }
  const fs::path& dir() const { return dir_; }
  std::string log(const std::string& name) const { return (dir_ / (name + ".log")).string(); }

  // Starts a participant process and waits until it consumes. `suffix`
  // names another replica of it (SAGA_REPLICA_SUFFIX): participant(name + suffix).
  void start_participant(const std::string& name, const std::string& suffix = "") {
    const std::string replica = name + suffix;
    const std::string log_file =
        (dir_ / (replica + "-" + std::to_string(++starts_[replica]) + ".log")).string();
    auto env = child_env();
    if (!suffix.empty()) env["SAGA_REPLICA_SUFFIX"] = suffix;
    participants_[replica] = std::make_unique<Process>(
        std::vector<std::string>{SAGA_NODE, "participant", name, dir_.string()}, log_file, env);
    REQUIRE_MESSAGE(wait_for_text(log_file, "ready " + name, 60s), name, " did not start; see ",
                    log_file);
  }
  void start_participants() {
    for (const char* name : {"inventory", "payment", "loyalty"}) start_participant(name);
  }
  Process& participant(const std::string& name) { return *participants_.at(name); }
  // SIGKILLs a participant process for good (not restarted, not checked).
  void kill_participant(const std::string& name) {
    participants_.at(name)->kill_now();
    participants_.erase(name);
  }

  Process& start_orchestrator(int sagas, int pace_ms) {
    orchestrator_ = orchestrator_process(dir_, "orchestrator", sagas, pace_ms);
    return *orchestrator_;
  }
  Process& orchestrator() { return *orchestrator_; }
  // Another replica of the orchestrator (SAGA_ORCHESTRATOR_REPLICAS=1 for
  // both), its store in DIR/orchestrator<suffix>, its output in log(orchestrator<suffix>).
  void start_orchestrator_replica(const std::string& suffix, int sagas, int pace_ms) {
    auto env = child_env();
    env["SAGA_REPLICA_SUFFIX"] = suffix;
    orchestrator_replicas_[suffix] = std::make_unique<Process>(
        std::vector<std::string>{SAGA_NODE, "orchestrator", dir_.string(), std::to_string(sagas),
                                 std::to_string(pace_ms)},
        log("orchestrator" + suffix), env);
  }
  Process& orchestrator_replica(const std::string& suffix) {
    return *orchestrator_replicas_.at(suffix);
  }
  // SIGKILLs that replica for good (not restarted, its store not checked).
  void kill_orchestrator_replica(const std::string& suffix) {
    orchestrator_replicas_.at(suffix)->kill_now();
    orchestrator_replicas_.erase(suffix);
  }
  // Stops that replica with SIGTERM (it leaves the group: scaling in).
  void stop_orchestrator_replica(const std::string& suffix) {
    CHECK(orchestrator_replicas_.at(suffix)->terminate(30s) == 0);
    orchestrator_replicas_.erase(suffix);
  }
  // Stops a participant replica with SIGTERM (scaling in).
  void stop_participant(const std::string& name) {
    CHECK(participants_.at(name)->terminate(30s) == 0);
    participants_.erase(name);
  }
  void set_env(const std::string& name, const std::string& value) { env_[name] = value; }

  // A second orchestrator process on the same topics, with its store in
  // DIR/zombie/orchestrator and its log in DIR/zombie.log.
  Process& start_zombie(int sagas, int pace_ms) {
    fs::create_directories(dir_ / "zombie");
    zombie_ = orchestrator_process(dir_ / "zombie", "zombie", sagas, pace_ms);
    return *zombie_;
  }
  // The run's random source (kill moments), seeded by SAGA_TEST_SEED.
  std::mt19937_64& rng() { return rng_; }

  // Waits for the orchestrator's progress line "started K".
  void wait_started(int k, std::chrono::seconds limit = 120s,
                    const std::string& who = "orchestrator") {
    REQUIRE_MESSAGE(wait_for_text(log(who), "started " + std::to_string(k) + "\n", limit), who,
                    " did not start ", k, " sagas; see ", log(who));
  }

  // Waits for the orchestrator to see every saga terminal, stops the
  // participants cleanly, and checks the invariants offline.
  // When the orchestrator does not finish, the stores are checked all the
  // same and the end of the report says where the sagas stopped.
  void finish_and_check(int sagas, std::chrono::seconds limit = 300s) {
    const int code = orchestrator_->wait(limit);
    for (auto& [name, p] : participants_) CHECK(p->terminate(30s) == 0);
    participants_.clear();
    Process check({SAGA_NODE, "check", dir_.string(), std::to_string(sagas)}, log("check"));
    const int checked = check.wait(120s);
    const std::string summary = read_file(log("check"));
    REQUIRE_MESSAGE(code == 0, "orchestrator exited ", code, "; see ", log("orchestrator"),
                    "; the check's last lines (all in ", log("check"), "):\n", tail(summary, 12));
    MESSAGE(summary);
    REQUIRE_MESSAGE(checked == 0, "invariants violated:\n", summary);
    passed_ = true;
  }

 private:
  // A saga_node orchestrator with its store under `root` and its output in log(`name`).
  std::unique_ptr<Process> orchestrator_process(const fs::path& root, const std::string& name,
                                                int sagas, int pace_ms) {
    return std::make_unique<Process>(
        std::vector<std::string>{SAGA_NODE, "orchestrator", root.string(), std::to_string(sagas),
                                 std::to_string(pace_ms)},
        log(name), child_env());
  }

  // The environment of a child process: the run's, with a seed of its own.
  std::map<std::string, std::string> child_env() {
    auto env = env_;
    env[kTestSeedVariable] = child_seed(rng_);
    return env;
  }

  fs::path dir_;
  std::mt19937_64 rng_;
  std::unique_ptr<KafkaBrokers> brokers_;
  std::map<std::string, std::string> env_;
  std::map<std::string, int> starts_;
  std::map<std::string, std::unique_ptr<Process>> participants_;
  std::unique_ptr<Process> orchestrator_;
  std::map<std::string, std::unique_ptr<Process>> orchestrator_replicas_;
  std::unique_ptr<Process> zombie_;
  bool passed_ = false;
};

// How many sagas the orchestrator had started, from its progress lines.
int started_so_far(const Run& run) {
  const std::string log = read_file(run.log("orchestrator"));
  const auto at = log.rfind("started ");
  return at == std::string::npos ? 0 : std::atoi(log.c_str() + at + 8);
}

TEST_CASE(
    "a saga runs end to end between an orchestrator process and three participant processes") {
  Run run("e2e");
  run.start_participants();
  run.start_orchestrator(300, 0);
  run.finish_and_check(300);
}

TEST_CASE("sagas finish after the broker is stopped for 20 s during 2000 sagas") {
  Run run("broker-outage");
  run.start_participants();
  Process& orchestrator = run.start_orchestrator(2000, 20);
  run.wait_started(300);
  run.brokers().stop();
  const int before = started_so_far(run);
  std::this_thread::sleep_for(20s);  // the outage being tested, not a wait for an event
  CHECK(orchestrator.running());
  CHECK_MESSAGE(started_so_far(run) > before, "no saga was accepted while the broker was down");
  run.brokers().restart();
  run.finish_and_check(2000);
}

TEST_CASE("sagas wait while a participant is down for 30 s and complete after it returns") {
  Run run("participant-down");
  run.start_participants();
  Process& orchestrator = run.start_orchestrator(1000, 20);
  run.wait_started(200);
  run.participant("payment").kill_now();
  const int before = started_so_far(run);
  std::this_thread::sleep_for(30s);  // the outage being tested, not a wait for an event
  CHECK(orchestrator.running());
  CHECK_MESSAGE(started_so_far(run) > before, "no saga was accepted while payment was down");
  run.start_participant("payment");
  run.finish_and_check(1000);
}

TEST_CASE("the orchestrator process survives ten SIGKILLs during 5000 sagas") {
  constexpr int kSagas = 5000;
  Run run("orchestrator-kills");
  run.start_participants();
  // Ten kills at most 3 s apart take at most 30 s. A restarted orchestrator
  // skips the sagas that exist and pauses 80 ms after each tenth new one, so
  // starting all 5000 takes at least 40 s over all its lives: it cannot
  // finish before the last kill, however fast the machine (at pace 5 a fast
  // run once did).
  std::uniform_int_distribution<int> delay_ms(1000, 3000);
  for (int kill = 1; kill <= 10; ++kill) {
    Process& orchestrator = run.start_orchestrator(kSagas, 80);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(run.rng())));  // a random kill moment
    REQUIRE_MESSAGE(orchestrator.running(), "the orchestrator finished before kill ", kill);
    orchestrator.kill_now();
  }
  run.start_orchestrator(kSagas, 0);
  run.finish_and_check(kSagas);
}

TEST_CASE("a participant process survives ten SIGKILLs during 5000 sagas") {
  constexpr int kSagas = 5000;
  Run run("participant-kills");
  run.start_participants();
  // Starting 5000 sagas with 100 ms after every tenth takes at least 50 s,
  // and the run cannot end before; ten kills at most 1.5 s apart, each
  // followed by a restart that waits until the participant is ready, take
  // far less. (At pace 5 with kills up to 3 s apart, a fast run once ended
  // before the fourth kill.) Should a restart ever be that slow, the kills
  // stop with the run, but at least five must have hit it mid-run.
  Process& orchestrator = run.start_orchestrator(kSagas, 100);
  std::uniform_int_distribution<int> delay_ms(500, 1500);
  int kills = 0;
  for (int kill = 1; kill <= 10; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(run.rng())));  // a random kill moment
    if (!orchestrator.running()) break;
    run.participant("inventory").kill_now();
    ++kills;
    run.start_participant("inventory");
  }
  CHECK_MESSAGE(kills >= 5, "only ", kills, " kills before the run ended");
  run.finish_and_check(kSagas);
}

TEST_CASE(
    "with changelogs every process SIGKILLed and every data directory deleted during 2000 sagas "
    "loses nothing") {
  constexpr int kSagas = 2000;
  Run run("lost-disks", 1, /*changelog=*/true);
  run.start_participants();
  Process& orchestrator = run.start_orchestrator(kSagas, 10);
  std::uniform_int_distribution<int> started(400, 1200);
  run.wait_started(started(run.rng()) / 100 * 100);
  orchestrator.kill_now();
  for (const char* name : {"inventory", "payment", "loyalty"}) run.participant(name).kill_now();
  for (const char* name : {"orchestrator", "inventory", "payment", "loyalty"})
    fs::remove_all(run.dir() / name);
  const int before = started_so_far(run);
  run.start_participants();
  run.start_orchestrator(kSagas, 0);
  // The sagas started before the loss came back from the changelog: their
  // starts now find them (without it they would start anew, and the check
  // below could not tell).
  REQUIRE_MESSAGE(wait_for_text(run.log("orchestrator"), "already existed", 300s),
                  "see ", run.log("orchestrator"));
  const std::string log = read_file(run.log("orchestrator"));
  const int existed = std::atoi(log.c_str() + log.rfind("already existed ") + 16);
  CHECK_MESSAGE(existed >= before, existed, " sagas restored, ", before, " started before");
  run.finish_and_check(kSagas);
}

TEST_CASE(
    "a paused orchestrator whose shards a fresh process took over stops when resumed and does "
    "nothing twice") {
  constexpr int kSagas = 2000;
  Run run("zombie", 1, /*changelog=*/true);
  run.start_participants();
  Process& zombie = run.start_zombie(kSagas, 20);
  run.wait_started(300, 120s, "zombie");
  zombie.pause();  // SIGSTOP: frozen mid-run, its transactions open, its group membership alive
  // A fresh process on an empty data directory claims every shard (fencing
  // the zombie's producers) and restores what the zombie committed.
  run.start_orchestrator(kSagas, 10);
  run.wait_started(600);
  zombie.resume();  // SIGCONT: its next commit is fenced; it must stop, emitting nothing
  const int code = zombie.wait(120s);
  CHECK_MESSAGE(code == 4, "the zombie exited ", code, "; see ", run.log("zombie"));
  CHECK(read_file(run.log("zombie")).find("fenced") != std::string::npos);
  run.finish_and_check(kSagas);
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The first time (steady ms) after `after` at which the process whose log is
// `path` reported owning `shards` shards ("owned N at T"), or any number but
// 0 when `shards` is 0; 0 if none yet.
int64_t first_time_owning(const std::string& path, int shards, int64_t after) {
  const std::string text = read_file(path);
  const std::string needle = "owned ";
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    char* end = nullptr;
    const long n = std::strtol(text.c_str() + at + needle.size(), &end, 10);
    if (std::string_view(end).substr(0, 4) != " at ") continue;
    const int64_t t = std::atoll(end + 4);
    if (t > after && (shards == 0 ? n > 0 : n == shards)) return t;
  }
  return 0;
}

TEST_CASE(
    "participant replicas: one replica of inventory and one of payment SIGKILLed for good during "
    "2000 sagas: the others take their shards over and nothing is lost or done twice") {
  constexpr int kSagas = 2000;
  Run run("replicas", 1, /*changelog=*/true, /*participant_replicas=*/true);
  run.start_participants();
  run.start_participant("inventory", "-b");
  run.start_participant("payment", "-b");
  run.start_orchestrator(kSagas, 10);
  std::uniform_int_distribution<int> at(300, 900);
  const int first_kill = at(run.rng()) / 100 * 100;
  run.wait_started(first_kill);
  const int64_t killed_ms = steady_ms();
  run.kill_participant("inventory-b");  // its shards move after the group's session timeout
  // Failover: from the SIGKILL to the survivor owning (claimed and restored)
  // every shard again. Reported, not asserted: speed lives in bench/.
  int64_t owned_all_ms = 0;
  REQUIRE(saga::testing::eventually(
      [&] { return (owned_all_ms = first_time_owning(run.log("inventory-1"), 12, killed_ms)) > 0; },
      120s, 100ms));
  MESSAGE("failover of inventory's shards after a SIGKILL: ", owned_all_ms - killed_ms,
          " ms (session.timeout.ms 6000)");
  run.wait_started(first_kill + 500);
  run.kill_participant("payment-b");
  // The survivors own every shard at the end (restored from the changelogs),
  // so their stores are what the offline check reads.
  run.finish_and_check(kSagas);
  // Every shard (saga_node's participants have libsaga's default 12) when they stopped.
  for (const char* survivor : {"inventory-1", "payment-1"}) {
    const std::string log = read_file(run.log(survivor));
    CHECK_MESSAGE(log.find("shards owned 12\n") !=
                      std::string::npos,
                  log);
  }
}

// Two orchestrator replicas (both with a standby copy of the other's shards
// or neither); one is SIGKILLed for good during 2000 sagas and the other
// takes its shards and sagas over. Reports the failover: from the SIGKILL to
// the survivor owning (claimed, restored, recovered) every shard again.
// Reported, not asserted: speed lives in bench/.
void orchestrator_failover(const std::string& name, bool standby, int session_ms) {
  constexpr int kSagas = 2000;
  Run run(name, 1, /*changelog=*/true);
  run.set_env("SAGA_ORCHESTRATOR_REPLICAS", "1");
  run.set_env("SAGA_STANDBY", standby ? "1" : "0");
  run.set_env("SAGA_SESSION_TIMEOUT_MS", std::to_string(session_ms));
  run.start_participants();
  run.start_orchestrator(kSagas, 10);
  run.start_orchestrator_replica("-b", kSagas, 10);
  // Both drive some shards before the kill.
  for (const char* who : {"orchestrator", "orchestrator-b"}) {
    REQUIRE_MESSAGE(wait_for_text(run.log(who), "started 100\n", 120s), who,
                    " started nothing; see ", run.log(who));
  }
  std::uniform_int_distribution<int> at(300, 1200);
  const int kill_at = at(run.rng()) / 100 * 100;
  run.wait_started(kill_at, 120s, "orchestrator-b");
  const int64_t killed_ms = steady_ms();
  run.kill_orchestrator_replica("-b");
  int64_t owned_all_ms = 0;
  REQUIRE(saga::testing::eventually(
      [&] {
        return (owned_all_ms = first_time_owning(run.log("orchestrator"), 12, killed_ms)) > 0;
      },
      120s, 100ms));
  MESSAGE("failover of the orchestrator's shards after a SIGKILL at saga ", kill_at, ": ",
          owned_all_ms - killed_ms, " ms (session.timeout.ms ", session_ms,
          std::string(standby ? ", standby copies)" : ", no standby)"));
  // The survivor exits 0 once it has every shard, started what the dead one
  // had not, and sees all terminal; its store (restored) is what is checked.
  run.finish_and_check(kSagas);
  const std::string log = read_file(run.log("orchestrator"));
  CHECK_MESSAGE(log.find("all started; started late ") != std::string::npos, log);
  if (standby) {  // the takeover replayed what the copy had not reached yet, at most
    const size_t at_restored = log.rfind("restored records ");
    REQUIRE_MESSAGE(at_restored != std::string::npos, log);
    const long restored = std::atol(log.c_str() + at_restored + 17);
    const size_t at_copied = log.rfind("standby records ");
    REQUIRE_MESSAGE(at_copied != std::string::npos, log);
    const long copied = std::atol(log.c_str() + at_copied + 16);
    MESSAGE("the survivor copied ", copied, " records as a standby and replayed ", restored,
            " when it took the shards over");
    CHECK(copied > 0);
    CHECK(restored < copied);
  }
}

TEST_CASE(
    "orchestrator replicas: one of two SIGKILLed for good during 2000 sagas: the other takes "
    "its shards and its sagas over and every saga ends once") {
  orchestrator_failover("orchestrator-replicas", /*standby=*/false, 6000);
}

TEST_CASE(
    "standby orchestrator replicas with 1.5 s sessions: one of two SIGKILLed for good during "
    "2000 sagas: the other takes over from its copy and every saga ends once") {
  orchestrator_failover("standby-replicas", /*standby=*/true, 1500);
}

TEST_CASE(
    "replicas paused past their session timeout and resumed: the others take their shards over "
    "and the paused ones rejoin and serve again; nothing is done twice") {
  constexpr int kSagas = 3000;
  Run run("paused-replicas", 1, /*changelog=*/true, /*participant_replicas=*/true);
  run.set_env("SAGA_ORCHESTRATOR_REPLICAS", "1");
  run.set_env("SAGA_STANDBY", std::getenv("X_STANDBY") ? std::getenv("X_STANDBY") : "1");
  run.set_env("SAGA_SESSION_TIMEOUT_MS", "1500");
  run.start_participants();
  run.start_participant("inventory", "-b");
  run.start_orchestrator(kSagas, 10);
  run.start_orchestrator_replica("-b", kSagas, 10);
  // Both replicas of each drive some shards (the sagas in them) before the pause.
  const std::string inventory_log = (run.dir() / "inventory-1.log").string();
  const std::string inventory_b_log = (run.dir() / "inventory-b-1.log").string();
  REQUIRE(saga::testing::eventually(
      [&] {
        return first_time_owning(run.log("orchestrator-b"), 0, 0) > 0 &&
               first_time_owning(inventory_b_log, 0, 0) > 0;
      },
      120s, 100ms));
  std::uniform_int_distribution<int> at(3, 12);
  const int pause_at = at(run.rng()) * 100;
  run.wait_started(pause_at);
  // SIGSTOP: frozen with transactions open, heartbeats stopped; after the
  // session timeout the group gives their shards to the others.
  run.orchestrator_replica("-b").pause();
  run.participant("inventory-b").pause();
  const int64_t paused_ms = steady_ms();
  REQUIRE(saga::testing::eventually(
      [&] {
        return first_time_owning(run.log("orchestrator"), 12, paused_ms) > 0 &&
               first_time_owning(inventory_log, 12, paused_ms) > 0;
      },
      120s, 100ms));
  MESSAGE("SIGSTOPped orchestrator-b and inventory-b at saga ", pause_at,
          "; the others owned every shard after ",
          first_time_owning(run.log("orchestrator"), 12, paused_ms) - paused_ms, " ms and ",
          first_time_owning(inventory_log, 12, paused_ms) - paused_ms, " ms");
  run.wait_started(pause_at + 300);  // work goes on without them
  // SIGCONT: their open transactions are fenced, they learn they left the
  // group, drop what they held, rejoin and are given shards again.
  run.orchestrator_replica("-b").resume();
  run.participant("inventory-b").resume();
  const int64_t resumed_ms = steady_ms();
  REQUIRE_MESSAGE(saga::testing::eventually(
                      [&] {
                        return first_time_owning(run.log("orchestrator-b"), 0, resumed_ms) > 0 &&
                               first_time_owning(inventory_b_log, 0, resumed_ms) > 0;
                      },
                      120s, 100ms),
                  "see ", run.log("orchestrator-b"), " and ", inventory_b_log);
  run.wait_started(std::min(kSagas, pause_at + 1200));  // they serve again
  // Scaling in to one of each (SIGTERM: a clean exit, so they ran on after
  // the fencing), so that the stores the offline check reads hold every shard.
  run.stop_orchestrator_replica("-b");
  run.stop_participant("inventory-b");
  run.finish_and_check(kSagas, 420s);
}

TEST_CASE(
    "three brokers and replicas (orchestrator x3 inventory x3 payment x2): one of each SIGKILLed "
    "for good during 5000 sagas: nothing is lost or done twice") {
  constexpr int kSagas = 5000;
  Run run("replicas-cluster", 3, /*changelog=*/true, /*participant_replicas=*/true);
  run.set_env("SAGA_ORCHESTRATOR_REPLICAS", "1");
  run.start_participants();
  for (const char* suffix : {"-b", "-c"}) run.start_participant("inventory", suffix);
  run.start_participant("payment", "-b");
  run.start_orchestrator(kSagas, 5);
  run.start_orchestrator_replica("-b", kSagas, 5);
  run.start_orchestrator_replica("-c", kSagas, 5);
  std::uniform_int_distribution<int> at(5, 25);
  const int kill_at = at(run.rng()) * 100;
  run.wait_started(kill_at, 180s, "orchestrator-b");
  // One of each, at once, not restarted: the others take their shards.
  run.kill_orchestrator_replica("-b");
  run.kill_participant("inventory-b");
  run.kill_participant("payment-b");
  MESSAGE("SIGKILLed orchestrator-b, inventory-b and payment-b at saga ", kill_at);
  run.wait_started(std::min(kSagas, kill_at + 1500), 180s, "orchestrator-c");
  // Scaling in to one of each (SIGTERM: they leave the group), so that the
  // survivors' stores, which the offline check reads, end up with every shard.
  run.stop_orchestrator_replica("-c");
  run.stop_participant("inventory-c");
  run.finish_and_check(kSagas, 420s);
}

TEST_CASE(
    "scaling the orchestrator 1 to 3 to 2 during 3000 sagas while a replica is SIGKILLed and "
    "comes back with its data directory deleted: nothing is lost or done twice") {
  constexpr int kSagas = 3000;
  Run run("scaling", 1, /*changelog=*/true, /*participant_replicas=*/true);
  run.set_env("SAGA_ORCHESTRATOR_REPLICAS", "1");
  run.start_participants();
  run.start_participant("inventory", "-b");
  run.start_orchestrator(kSagas, 10);
  run.wait_started(300);
  run.start_orchestrator_replica("-b", kSagas, 10);  // 1 -> 3
  run.start_orchestrator_replica("-c", kSagas, 10);
  run.wait_started(900, 180s, "orchestrator-c");
  // -c and inventory-b die, lose their disks, and come back on empty ones:
  // they restore what the group gives them from the changelogs.
  run.kill_orchestrator_replica("-c");
  run.kill_participant("inventory-b");
  fs::remove_all(run.dir() / "orchestrator-c");
  fs::remove_all(run.dir() / "inventory-b");
  run.start_participant("inventory", "-b");
  run.start_orchestrator_replica("-c", kSagas, 10);
  run.wait_started(1800);
  run.stop_orchestrator_replica("-b");  // 3 -> 2
  run.wait_started(2400);
  // The last scale-in leaves one of each, whose stores the check reads.
  run.stop_orchestrator_replica("-c");
  run.stop_participant("inventory-b");
  run.finish_and_check(kSagas, 420s);
}

TEST_CASE("no saga is lost when one broker of a three-node cluster is killed mid-run") {
  Run run("cluster", 3);
  run.start_participants();
  run.start_orchestrator(1000, 10);
  run.wait_started(300);
  run.brokers().kill_node(2);
  run.finish_and_check(1000);
}

}  // namespace
