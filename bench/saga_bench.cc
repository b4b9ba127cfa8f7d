// saga-bench: throughput and latency of the booking saga (reserve -> pay ->
// confirm stock) on libsaga. Release builds only.
//
// Workloads (--workload):
//   engine   orchestrator + inventory + payment participants in this process
//            over the in-memory transport, each with its own RocksDB store,
//            all driven from one thread: measures the engine's own cost
//            (state machine + durability), no network.
//   kafka    the orchestrator in this process, inventory and payment as two
//            child processes (this binary with --participant), all over a
//            real Kafka broker: --brokers, or one started with scripts/kafka
//            for the run and stopped after it.
//
// Closed loop: --inflight K sagas are kept in flight until --sagas have
// finished. --sync on|off sets RocksDB WAL sync for every store.
// --fail-share F makes inventory refuse that share of confirmations, so those
// sagas compensate (refund, release). Writes one JSON document (--json FILE,
// default stdout). Every saga must end terminal and consistent, or the run
// reports failure instead of a number.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"
#include "support/process.h"

namespace {

using namespace saga;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct Args {
  std::string workload = "engine";
  std::string brokers;      // kafka: bootstrap servers ("" = start a broker)
  std::string participant;  // internal: run as this participant (kafka children)
  std::string prefix;       // internal: topic prefix of the run
  bool sync = true;
  std::vector<int> inflight = {1, 8, 32, 128, 512};
  int sagas = 20'000;
  double fail_share = 0.1;
  std::string json;
  std::string dir = (fs::temp_directory_path() / "saga-bench").string();
};

[[noreturn]] void usage(const std::string& err) {
  std::cerr
      << "saga-bench: " << err << "\n"
      << "usage: saga-bench [--workload engine|kafka] [--sync on|off] [--inflight 1,8,32,...]\n"
      << "                  [--sagas N] [--fail-share F] [--json FILE] [--dir DIR] [--brokers B]\n";
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(k + " needs a value");
      return argv[++i];
    };
    try {
      if (k == "--workload") {
        a.workload = value();
        if (a.workload != "engine" && a.workload != "kafka")
          usage("unknown workload '" + a.workload + "' (engine, kafka)");
      } else if (k == "--brokers") {
        a.brokers = value();
      } else if (k == "--participant") {
        a.participant = value();
        if (a.participant != "inventory" && a.participant != "payment")
          usage("--participant: inventory or payment");
      } else if (k == "--prefix") {
        a.prefix = value();
      } else if (k == "--sync") {
        const std::string v = value();
        if (v != "on" && v != "off") usage("--sync takes on or off");
        a.sync = v == "on";
      } else if (k == "--inflight") {
        a.inflight.clear();
        std::string v = value();
        for (size_t p = 0; p < v.size();) {
          const size_t c = v.find(',', p);
          a.inflight.push_back(std::stoi(v.substr(p, c - p)));
          p = c == std::string::npos ? v.size() : c + 1;
        }
      } else if (k == "--sagas") {
        a.sagas = std::stoi(value());
      } else if (k == "--fail-share") {
        a.fail_share = std::stod(value());
      } else if (k == "--json") {
        a.json = value();
      } else if (k == "--dir") {
        a.dir = value();
      } else {
        usage("unknown option " + k);
      }
    } catch (const std::logic_error&) {
      usage("bad value for " + k);
    }
  }
  if (a.sagas <= 0) usage("--sagas must be positive");
  for (int k : a.inflight) {
    if (k <= 0) usage("--inflight values must be positive");
  }
  if (a.fail_share < 0 || a.fail_share > 1) usage("--fail-share must be in [0, 1]");
  return a;
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

template <typename T>
T must(StatusOr<T> r, const std::string& what) {
  if (!r.ok()) {
    std::cerr << "saga-bench: " << what << ": " << r.status() << "\n";
    std::exit(1);
  }
  return std::move(r).value();
}

constexpr int64_t kCapacity = 1'000'000'000;

// Handlers of the booking participants, with `fail_share` of confirmations refused.
void register_handlers(const std::string& name, Participant& p, double fail_share) {
  testing::BookingFaults faults;
  faults.confirm_failure = fail_share;
  auto rng = std::make_shared<std::mt19937_64>(7);
  auto chance = [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
  const Status s = name == "inventory" ? testing::register_inventory(p, kCapacity, faults, chance)
                                       : testing::register_payment(p, faults, chance);
  if (!s.ok()) {
    std::cerr << "saga-bench: cannot register " << name << " handlers: " << s << "\n";
    std::exit(1);
  }
}

std::unique_ptr<Participant> open_participant(const std::string& name, const fs::path& dir,
                                              bool sync, std::shared_ptr<Transport> transport) {
  ParticipantOptions po;
  po.name = name;
  po.data_dir = (dir / name).string();
  po.sync = sync;
  return must(Participant::open(po, std::move(transport)), "open " + name);
}

// Latencies and outcomes of one point. on_settled runs on the engine thread
// while the driver may be waiting on another, hence the lock.
class Recorder {
 public:
  void started(const std::string& id) {
    std::lock_guard lock(mu_);
    started_at_.emplace(id, SteadyClock::now());
  }
  void settled(const SagaView& v) {
    {
      std::lock_guard lock(mu_);
      auto it = started_at_.find(v.id);
      if (it == started_at_.end()) return;
      latencies_ms_.push_back(
          std::chrono::duration<double, std::milli>(SteadyClock::now() - it->second).count());
      started_at_.erase(it);
      finished_.emplace(v.id, v);
    }
    cv_.notify_all();
  }
  size_t in_flight() {
    std::lock_guard lock(mu_);
    return started_at_.size();
  }
  size_t finished() {
    std::lock_guard lock(mu_);
    return finished_.size();
  }
  // Waits until fewer than `limit` are in flight or `deadline` passes.
  void wait_below(size_t limit, SteadyClock::time_point deadline) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return started_at_.size() < limit; });
  }
  std::vector<double>& latencies() { return latencies_ms_; }
  const std::map<std::string, SagaView>& outcomes() const { return finished_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, SteadyClock::time_point> started_at_;
  std::vector<double> latencies_ms_;
  std::map<std::string, SagaView> finished_;
};

Options orchestrator_options(const fs::path& dir, bool sync, Recorder& rec) {
  Options o;
  o.data_dir = (dir / "orchestrator").string();
  o.sync = sync;
  o.breaker.enabled = false;
  o.on_settled = [&rec](const SagaView& v) { rec.settled(v); };
  return o;
}

void start_one(Orchestrator& orch, Recorder& rec, int k) {
  const std::string id = "b" + std::to_string(k);
  rec.started(id);
  StartOptions so;
  so.id = id;
  orch.start_async("booking", Json{{"qty", 1}, {"amount", 100 + k % 900}}, so,
                   [id](StatusOr<std::string> r) {
                     if (!r.ok()) {
                       std::cerr << "saga-bench: start " << id << ": " << r.status() << "\n";
                       std::exit(1);
                     }
                   });
}

void progress(const char* workload, int inflight, size_t done, int total,
              SteadyClock::time_point& last) {
  const auto now = SteadyClock::now();
  if (now - last < std::chrono::seconds(2)) return;
  std::cerr << "  " << workload << " inflight " << inflight << ": " << done << "/" << total
            << " sagas\n";
  last = now;
}

uint64_t bytes_on_disk(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

// The figures of one point, in the JSON every workload shares.
Json point_json(const char* workload, const Args& args, int inflight, double secs, double cpu,
                const EngineStats& es, uint64_t participant_writes, uint64_t store_bytes,
                Recorder& rec, const std::vector<std::string>& bad) {
  int compensated = 0;
  for (const auto& [id, v] : rec.outcomes()) compensated += v.state == SagaState::kCompensated;
  std::vector<double>& lat = rec.latencies();
  const double n = static_cast<double>(args.sagas);
  return {{"workload", workload},
          {"loop", "closed"},
          {"inflight", inflight},
          {"sync", args.sync},
          {"sagas", args.sagas},
          {"seconds", secs},
          {"sagas_per_s", n / secs},
          {"transitions_per_s", static_cast<double>(es.transitions) / secs},
          {"orchestrator_writes", es.writes},
          {"transitions_per_write",
           es.writes ? static_cast<double>(es.transitions) / static_cast<double>(es.writes) : 0},
          {"participant_writes", participant_writes},
          {"orchestrator_bytes_per_saga", static_cast<double>(es.bytes_written) / n},
          {"store_bytes_on_disk", store_bytes},
          {"cpu_seconds_per_saga", cpu / n},
          {"compensated_share", compensated / n},
          {"latency_ms",
           {{"p50", percentile(lat, 0.50)},
            {"p90", percentile(lat, 0.90)},
            {"p99", percentile(lat, 0.99)},
            {"p999", percentile(lat, 0.999)},
            {"max", lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end())}}},
          {"consistent", bad.empty() && static_cast<int>(rec.outcomes().size()) == args.sagas},
          {"violations", bad}};
}

// engine: everything in this process over the in-memory transport, pumped by
// one thread, so the figures are the engine's own cost.
Json run_engine_point(const Args& args, int inflight) {
  const fs::path dir = fs::path(args.dir) / ("engine-" + std::to_string(inflight));
  fs::remove_all(dir);
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 42);
  Recorder rec;
  auto orch = must(Orchestrator::open(orchestrator_options(dir, args.sync, rec),
                                      std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                      {testing::booking_definition(Duration{5000}, 5)}),
                   "open orchestrator");
  auto inventory = open_participant("inventory", dir, args.sync,
                                    std::shared_ptr<Transport>(bus->connect("inventory")));
  auto payment = open_participant("payment", dir, args.sync,
                                  std::shared_ptr<Transport>(bus->connect("payment")));
  register_handlers("inventory", *inventory, args.fail_share);
  register_handlers("payment", *payment, args.fail_share);

  int next = 0;
  const double cpu0 = cpu_seconds();
  const auto t0 = SteadyClock::now();
  auto last = t0;
  while (static_cast<int>(rec.finished()) < args.sagas) {
    while (next < args.sagas && static_cast<int>(rec.in_flight()) < inflight)
      start_one(*orch, rec, next++);
    orch->run_once();
    inventory->run_once();
    payment->run_once();
    progress("engine", inflight, rec.finished(), args.sagas, last);
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  // A benchmark that loses sagas reports failure, not a number.
  const auto bad =
      testing::check_booking_invariants(rec.outcomes(), *inventory, *payment, kCapacity);
  Json point =
      point_json("engine", args, inflight, secs, cpu, orch->stats(),
                 inventory->stats().writes + payment->stats().writes, bytes_on_disk(dir), rec, bad);
  orch.reset();
  inventory.reset();
  payment.reset();
  fs::remove_all(dir);
  return point;
}

std::shared_ptr<Transport> kafka_transport(const std::string& endpoint, const std::string& brokers,
                                           const std::string& prefix) {
  KafkaOptions o;
  o.brokers = brokers;
  o.topic_prefix = prefix;
  o.group_id = prefix + endpoint;
  return std::shared_ptr<Transport>(
      must(make_kafka_transport(endpoint, o), "kafka transport for " + endpoint));
}

// kafka: this process is the orchestrator; inventory and payment run as
// child processes of this binary (--participant), all over the real broker.
Json run_kafka_point(const Args& args, int inflight, const std::string& self) {
  const fs::path dir = fs::path(args.dir) / ("kafka-" + std::to_string(inflight));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 rng(std::random_device{}());
  const std::string prefix = "bench" + std::to_string(rng() % 1'000'000'000) + ".";
  std::vector<std::unique_ptr<testing::Process>> children;
  for (const char* name : {"inventory", "payment"}) {
    const std::string log = (dir / (std::string(name) + ".log")).string();
    children.push_back(std::make_unique<testing::Process>(
        std::vector<std::string>{self, "--participant", name, "--dir", dir.string(), "--brokers",
                                 args.brokers, "--prefix", prefix, "--sync",
                                 args.sync ? "on" : "off", "--fail-share",
                                 std::to_string(args.fail_share)},
        log));
    if (!testing::wait_for_text(log, "ready", std::chrono::seconds(60))) {
      std::cerr << "saga-bench: participant " << name << " did not start; see " << log << "\n";
      std::exit(1);
    }
  }
  Recorder rec;
  auto orch = must(Orchestrator::open(orchestrator_options(dir, args.sync, rec),
                                      kafka_transport("orchestrator", args.brokers, prefix),
                                      {testing::booking_definition(Duration{5000}, 5)}),
                   "open orchestrator");
  orch->start_background();

  const double cpu0 = cpu_seconds();
  const auto t0 = SteadyClock::now();
  auto last = t0;
  const auto deadline = t0 + std::chrono::minutes(10);
  for (int next = 0; next < args.sagas;) {
    while (next < args.sagas && static_cast<int>(rec.in_flight()) < inflight)
      start_one(*orch, rec, next++);
    rec.wait_below(static_cast<size_t>(inflight),
                   std::min(deadline, SteadyClock::now() + std::chrono::seconds(1)));
    progress("kafka", inflight, rec.finished(), args.sagas, last);
    if (SteadyClock::now() > deadline) break;
  }
  while (static_cast<int>(rec.finished()) < args.sagas && SteadyClock::now() < deadline) {
    rec.wait_below(1, std::min(deadline, SteadyClock::now() + std::chrono::seconds(1)));
    progress("kafka", inflight, rec.finished(), args.sagas, last);
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;  // this process only: the orchestrator
  orch->stop();
  const EngineStats es = orch->stats();
  orch.reset();
  for (auto& c : children) c->terminate(std::chrono::seconds(30));

  // Participants are stopped: read their stores offline to check the run.
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 1);
  auto inventory = open_participant("inventory", dir, false,
                                    std::shared_ptr<Transport>(bus->connect("inventory")));
  auto payment =
      open_participant("payment", dir, false, std::shared_ptr<Transport>(bus->connect("payment")));
  const auto bad =
      testing::check_booking_invariants(rec.outcomes(), *inventory, *payment, kCapacity);
  Json point = point_json("kafka", args, inflight, secs, cpu, es, 0, bytes_on_disk(dir), rec, bad);
  point["cpu_note"] = "cpu_seconds_per_saga counts the orchestrator process only";
  inventory.reset();
  payment.reset();
  fs::remove_all(dir);
  return point;
}

// --participant: one booking participant over Kafka until SIGTERM.
int run_participant(const Args& args) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto p = open_participant(args.participant, args.dir, args.sync,
                            kafka_transport(args.participant, args.brokers, args.prefix));
  register_handlers(args.participant, *p, args.fail_share);
  p->start_background();
  std::cout << "ready" << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  p->stop();
  return 0;
}

std::string git_revision() {
  FILE* p = popen("git rev-parse --short HEAD 2>/dev/null", "r");
  if (!p) return "unknown";
  char buf[64] = {};
  const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
  pclose(p);
  std::string s = got ? buf : "unknown";
  s.erase(s.find_last_not_of("\n\r ") + 1);
  return s.empty() ? "unknown" : s;
}

}  // namespace

// Starts a broker for a kafka run; stops it (by PID, through scripts/kafka) when destroyed.
class OwnBroker {
 public:
  explicit OwnBroker(const fs::path& dir) : dir_(dir) {
    std::cerr << "saga-bench: starting a Kafka broker in " << dir_ << "\n";
    bootstrap_ = testing::run_command(std::string(SAGA_SOURCE_DIR) +
                                      "/scripts/kafka start --fresh --dir " + dir_.string());
  }
  ~OwnBroker() {
    try {
      testing::run_command(std::string(SAGA_SOURCE_DIR) + "/scripts/kafka stop --dir " +
                           dir_.string());
    } catch (const std::exception& e) {
      std::cerr << "saga-bench: stopping the broker: " << e.what() << "\n";
    }
  }
  const std::string& bootstrap() const { return bootstrap_; }

 private:
  fs::path dir_;
  std::string bootstrap_;
};

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!args.participant.empty()) return run_participant(args);
  std::unique_ptr<OwnBroker> broker;
  if (args.workload == "kafka" && args.brokers.empty()) {
    broker = std::make_unique<OwnBroker>(fs::path(args.dir) / "broker");
    args.brokers = broker->bootstrap();
  }
  const std::string self = fs::canonical("/proc/self/exe").string();
  utsname u{};
  uname(&u);
  Json out = {{"tool", "saga-bench"},
              {"libsaga_revision", git_revision()},
              {"date", std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count()},
              {"machine",
               {{"cores", std::thread::hardware_concurrency()},
                {"kernel", u.release},
                {"arch", u.machine}}},
              {"points", Json::array()}};
  bool ok = true;
  for (int k : args.inflight) {
    Json p = args.workload == "kafka" ? run_kafka_point(args, k, self) : run_engine_point(args, k);
    std::cerr << args.workload << " sync=" << (args.sync ? "on " : "off") << " inflight " << k
              << ": " << static_cast<long>(p["sagas_per_s"].get<double>()) << " sagas/s, "
              << static_cast<long>(p["transitions_per_s"].get<double>()) << " transitions/s, p50 "
              << p["latency_ms"]["p50"].get<double>() << " ms, p99 "
              << p["latency_ms"]["p99"].get<double>() << " ms"
              << (p["consistent"].get<bool>() ? "" : "  INCONSISTENT") << "\n";
    ok = ok && p["consistent"].get<bool>();
    out["points"].push_back(std::move(p));
  }
  const std::string text = out.dump(2);
  if (args.json.empty()) {
    std::cout << text << "\n";
  } else {
    std::ofstream(args.json) << text << "\n";
  }
  if (!ok) std::cerr << "saga-bench: FAILED: some sagas ended inconsistent\n";
  return ok ? 0 : 1;
}
