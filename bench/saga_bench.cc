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
// finished. Open loop: --rate R starts sagas on a fixed schedule (one every
// 1/R s for --seconds), and each saga's latency counts from its intended
// start, so a driver that falls behind cannot hide the queueing it causes
// (coordinated omission). --sync on|off sets RocksDB WAL sync for every store.
// --baselines on measures, in the same run, what the hardware and the
// libraries give without libsaga: synced RocksDB commits (one writer and
// group commit) and, for kafka, a raw librdkafka produce -> consume trip.
// --shards S sets the orchestrator's shard count (0 = its default, 12);
// --timeline N the entries each saga's timeline keeps (Options::timeline_limit,
// default 64; 0 = none);
// --threads T (engine workload) runs the orchestrator on T engine threads and
// each participant on threads of its own (--participant-threads P of them,
// ParticipantOptions::threads; 0 = one) instead of pumping all three from one
// thread (0, the default).
// --changelog on commits the shards to a changelog before each local write
// (Options::changelog): engine workload, the orchestrator's shards to the
// MemoryBus's in-memory changelog; kafka workload, the orchestrator's and both
// participants' shards to their Kafka changelog topics, one transaction per
// shard commit. Each point then also measures a restore: the orchestrator's
// data directory deleted, a new orchestrator restores it from the changelog.
// --fail-share F makes inventory refuse that share of confirmations, so those
// sagas compensate (refund, release). Writes one JSON document (--json FILE,
// default stdout). Every saga must end terminal and consistent, or the run
// reports failure instead of a number.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <pthread.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/version.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/shard.h"
#include "saga/participant.h"
#include "trace.h"
#include "support/booking.h"
#include "support/process.h"

namespace {

using namespace saga;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct Args {
  std::string workload = "engine";
  std::string brokers;      // kafka: bootstrap servers ("" = start a broker)
  long broker_pid = 0;      // kafka with --brokers: the broker's PID, read for its CPU only
  std::string participant;  // internal: run as this participant (kafka children)
  std::string prefix;       // internal: topic prefix of the run
  bool sync = true;
  int shards = 0;   // orchestrator shards; 0 = libsaga's default
  int timeline = 64;  // Options::timeline_limit
  int threads = 0;  // engine: 0 = one thread pumps everything; T = background threads
  int participant_threads = 0;  // engine, with --threads: each participant's threads
  bool changelog = false;  // engine: the orchestrator's; kafka: all three engines' (Kafka topics)
  int replicas = 0;  // kafka: N orchestrator replicas (Options::replicas) in this process; 0 = off
  bool failover = false;  // kafka: payment as two replica processes, one SIGKILLed mid-point
  bool standby = false;   // with failover: the payment replicas keep standby copies
  int session_ms = 0;     // with failover: the consumers' session timeout; 0 = the transport's
  std::string replica;    // internal: this participant child is the replica with this suffix
  std::vector<int> inflight = {1, 8, 32, 128, 512};
  bool inflight_given = false;
  std::vector<double> rates;  // open loop: sagas/s offered
  double seconds = 10;        // open loop: how long each rate is offered
  int sagas = 20'000;
  double fail_share = 0.1;
  bool baselines = true;
  double baseline_seconds = 3;
  int baseline_writers = 8;
  std::string json;
  std::string dir = (fs::temp_directory_path() / "saga-bench").string();
  // engine --soak M: one open-loop point of M minutes (--rate, default 5000)
  // with short retention, the stores' size sampled every --sample-seconds.
  double soak_minutes = 0;
  int retention_ms = 10'000;  // --soak: saga retention
  // --soak: the participants' dedup horizon. It must outlast any redelivery
  // (docs/storage.md, "Participant retention"): 5 attempts of 5 s plus
  // backoff, and compensations retried while the engine lags behind.
  int dedup_horizon_ms = 120'000;
  double sample_seconds = 10;
  bool trace = false;  // --trace on: each kafka point's latency breakdown
  // --kafka-property K=V: librdkafka settings of every transport of the run
  // (children too), over libsaga's own (KafkaOptions::properties).
  std::map<std::string, std::string> kafka_properties;
  // --targets FILE...: judge the issues' speed targets from these runs' JSON.
  std::vector<std::string> targets;
};

[[noreturn]] void usage(const std::string& err) {
  std::cerr << "saga-bench: " << err << "\n"
            << "usage: saga-bench [--workload engine|kafka] [--sync on|off]\n"
               "                  [--shards S] [--threads T] [--participant-threads P]\n"
               "                  [--timeline N]   (entries a saga's timeline keeps; 0 = none)\n"
               "                  [--changelog on|off] [--replicas N]   (kafka, changelog on)\n"
               "                  [--failover on|off] [--standby on|off] [--session-ms MS]\n"
               "                                                        (kafka, changelog on)\n"
               "                  [--inflight 1,8,32,...] [--sagas N]        closed loop\n"
               "                  [--rate 1000,2000,...] [--seconds S]      open loop\n"
               "                  [--baselines on|off] [--baseline-seconds S] [--baseline-writers "
               "N]\n"
               "                  [--soak MINUTES] [--retention-ms MS] [--dedup-horizon-ms MS]\n"
               "                  [--sample-seconds S]\n"
               "                                        (engine: store sizes over time)\n"
               "                  [--trace on|off]   (kafka: where each saga's time goes)\n"
               "                  [--kafka-property K=V]...   (kafka: librdkafka settings)\n"
               "       saga-bench --targets RUN.json... [--json FILE]\n"
               "                  (each speed target of bench/README.md: met or not)\n"
               "                  [--fail-share F] [--json FILE] [--dir DIR] [--brokers B]\n"
               "                  [--broker-pid PID]   (with --brokers: report its CPU)\n";
  std::exit(2);
}

template <typename T>
std::vector<T> parse_list(const std::string& v, T (*conv)(const std::string&, size_t*)) {
  std::vector<T> out;
  for (size_t p = 0; p < v.size();) {
    const size_t c = v.find(',', p);
    out.push_back(conv(v.substr(p, c - p), nullptr));
    p = c == std::string::npos ? v.size() : c + 1;
  }
  return out;
}

int to_int(const std::string& s, size_t* pos) { return std::stoi(s, pos); }
double to_double(const std::string& s, size_t* pos) { return std::stod(s, pos); }

bool on_off(const std::string& k, const std::string& v) {
  if (v != "on" && v != "off") usage(k + " takes on or off");
  return v == "on";
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
      } else if (k == "--broker-pid") {
        a.broker_pid = std::stol(value());
      } else if (k == "--kafka-property") {
        const std::string kv = value();
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) usage("--kafka-property takes KEY=VALUE");
        a.kafka_properties[kv.substr(0, eq)] = kv.substr(eq + 1);
      } else if (k == "--targets") {
        while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
          a.targets.push_back(argv[++i]);
        if (a.targets.empty()) usage("--targets needs result files");
      } else if (k == "--trace") {
        a.trace = on_off(k, value());
      } else if (k == "--participant") {
        a.participant = value();
        if (a.participant != "inventory" && a.participant != "payment")
          usage("--participant: inventory or payment");
      } else if (k == "--prefix") {
        a.prefix = value();
      } else if (k == "--sync") {
        a.sync = on_off(k, value());
      } else if (k == "--shards") {
        a.shards = std::stoi(value());
      } else if (k == "--timeline") {
        a.timeline = std::stoi(value());
      } else if (k == "--threads") {
        a.threads = std::stoi(value());
      } else if (k == "--participant-threads") {
        a.participant_threads = std::stoi(value());
      } else if (k == "--changelog") {
        a.changelog = on_off(k, value());
      } else if (k == "--replicas") {
        a.replicas = std::stoi(value());
      } else if (k == "--failover") {
        a.failover = on_off(k, value());
      } else if (k == "--standby") {
        a.standby = on_off(k, value());
      } else if (k == "--session-ms") {
        a.session_ms = std::stoi(value());
      } else if (k == "--replica") {
        a.replica = value();
      } else if (k == "--inflight") {
        a.inflight = parse_list<int>(value(), to_int);
        a.inflight_given = true;
      } else if (k == "--rate") {
        a.rates = parse_list<double>(value(), to_double);
      } else if (k == "--seconds") {
        a.seconds = std::stod(value());
      } else if (k == "--sagas") {
        a.sagas = std::stoi(value());
      } else if (k == "--fail-share") {
        a.fail_share = std::stod(value());
      } else if (k == "--baselines") {
        a.baselines = on_off(k, value());
      } else if (k == "--baseline-seconds") {
        a.baseline_seconds = std::stod(value());
      } else if (k == "--baseline-writers") {
        a.baseline_writers = std::stoi(value());
      } else if (k == "--json") {
        a.json = value();
      } else if (k == "--dir") {
        a.dir = value();
      } else if (k == "--soak") {
        a.soak_minutes = std::stod(value());
      } else if (k == "--retention-ms") {
        a.retention_ms = std::stoi(value());
      } else if (k == "--dedup-horizon-ms") {
        a.dedup_horizon_ms = std::stoi(value());
      } else if (k == "--sample-seconds") {
        a.sample_seconds = std::stod(value());
      } else {
        usage("unknown option " + k);
      }
    } catch (const std::logic_error&) {
      usage("bad value for " + k);
    }
  }
  if (a.sagas <= 0) usage("--sagas must be positive");
  if (a.replicas < 0 || a.replicas > 8) usage("--replicas must be in 0..8");
  if (a.replicas > 0 && (a.workload != "kafka" || !a.changelog))
    usage("--replicas needs --workload kafka and --changelog on (replicas need the changelog)");
  if (a.failover && a.participant.empty() &&
      (a.workload != "kafka" || !a.changelog || a.replicas > 0))
    usage("--failover needs --workload kafka and --changelog on, and not --replicas");
  if (a.standby && !a.failover) usage("--standby goes with --failover");
  if (a.session_ms < 0 || (a.session_ms > 0 && !a.failover))
    usage("--session-ms goes with --failover and must be positive");
  if (a.timeline < 0) usage("--timeline must not be negative");
  if (a.shards < 0 || a.threads < 0 || a.participant_threads < 0)
    usage("--shards, --threads and --participant-threads must not be negative");
  if (a.broker_pid < 0 || (a.broker_pid > 0 && a.brokers.empty()))
    usage("--broker-pid goes with --brokers (a broker saga-bench starts is measured anyway)");
  for (int k : a.inflight) {
    if (k <= 0) usage("--inflight values must be positive");
  }
  for (double r : a.rates) {
    if (!(r > 0)) usage("--rate values must be positive");
  }
  if (a.soak_minutes < 0 || a.retention_ms <= 0 || a.dedup_horizon_ms <= 0 ||
      !(a.sample_seconds > 0))
    usage("--soak, --retention-ms, --dedup-horizon-ms and --sample-seconds must be positive");
  if (a.soak_minutes > 0) {
    if (a.workload != "engine" || a.inflight_given || a.rates.size() > 1)
      usage("--soak runs the engine workload at one --rate (default 5000), without --inflight");
    if (a.rates.empty()) a.rates = {5000};
    a.seconds = a.soak_minutes * 60;
  }
  // --rate alone replaces the default closed-loop sweep; with --inflight too, both run.
  if (!a.rates.empty() && !a.inflight_given) a.inflight.clear();
  if (!(a.seconds > 0)) usage("--seconds must be positive");
  if (!(a.baseline_seconds > 0)) usage("--baseline-seconds must be positive");
  if (a.baseline_writers <= 0) usage("--baseline-writers must be positive");
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

// --trace on: where each saga's time went, from the trace points every
// process of the point wrote to "<prefix>.<pid>" (libsaga/src/trace.h). A
// saga's points, in time order and without the delivery reports (they are off
// its path), cut its latency into gaps named "from -> to"; per gap name: how
// often, its share of all sagas' time, p50 and p99 in microseconds. Apart:
// the producer's round trip (send to delivery report) of each message.
Json latency_breakdown(const fs::path& dir, const std::string& prefix) {
  struct PointAt {
    int64_t ns;
    std::string point, detail;
  };
  std::map<std::string, std::vector<PointAt>> by_saga;
  std::map<std::string, int64_t> sent_ns;  // message id -> its k.send
  std::vector<double> produce_us;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(prefix + ".", 0) != 0) continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> f;
      for (size_t p = 0;;) {
        const size_t t = line.find('\t', p);
        f.push_back(line.substr(p, t - p));
        if (t == std::string::npos) break;
        p = t + 1;
      }
      if (f.size() != 4 || f[2].empty()) continue;
      by_saga[f[2]].push_back(PointAt{std::stoll(f[0]), f[1], f[3]});
    }
  }
  struct Gap {
    std::vector<double> us;
    double total_us = 0;
  };
  std::map<std::string, Gap> gaps;
  double all_us = 0;
  // The slowest 1% of the sagas: their gaps apart, to see what makes the tail.
  std::vector<double> spans;
  for (auto& [id, points] : by_saga) {
    std::sort(points.begin(), points.end(),
              [](const PointAt& a, const PointAt& b) { return a.ns < b.ns; });
    spans.push_back(static_cast<double>(points.back().ns - points.front().ns));
  }
  std::vector<double> sorted_spans = spans;
  const double tail_from = percentile(sorted_spans, 0.99);
  std::map<std::string, double> tail_us;
  double tail_all_us = 0;
  size_t saga_index = 0;
  int64_t first_ns = std::numeric_limits<int64_t>::max();
  for (const auto& [id, points] : by_saga) first_ns = std::min(first_ns, points.front().ns);
  std::vector<double> tail_starts_ms;  // when the slowest sagas started, from the first
  for (auto& [id, points] : by_saga) {
    const bool in_tail = spans[saga_index++] >= tail_from;
    if (in_tail) tail_starts_ms.push_back(static_cast<double>(points.front().ns - first_ns) / 1e6);
    const PointAt* prev = nullptr;
    for (const PointAt& pt : points) {
      if (pt.point == "k.send") sent_ns[pt.detail] = pt.ns;
      if (pt.point == "k.acked") {
        if (auto it = sent_ns.find(pt.detail); it != sent_ns.end())
          produce_us.push_back(static_cast<double>(pt.ns - it->second) / 1e3);
        continue;
      }
      if (prev) {
        const double us = static_cast<double>(pt.ns - prev->ns) / 1e3;
        Gap& g = gaps[prev->point + " -> " + pt.point];
        g.us.push_back(us);
        g.total_us += us;
        all_us += us;
        if (in_tail) {
          tail_us[prev->point + " -> " + pt.point] += us;
          tail_all_us += us;
        }
      }
      prev = &pt;
    }
  }
  Json rows = Json::array();
  for (auto& [name, g] : gaps) {
    rows.push_back({{"gap", name},
                    {"count", g.us.size()},
                    {"share", all_us > 0 ? g.total_us / all_us : 0.0},
                    {"p50_us", percentile(g.us, 0.50)},
                    {"p99_us", percentile(g.us, 0.99)}});
  }
  std::sort(rows.begin(), rows.end(), [](const Json& a, const Json& b) {
    return a["share"].get<double>() > b["share"].get<double>();
  });
  Json tail = Json::object();
  for (const auto& [name, us] : tail_us) tail[name] = tail_all_us > 0 ? us / tail_all_us : 0.0;
  return {{"sagas", by_saga.size()},
          {"gaps", rows},
          {"slowest_1pct",
           {{"from_ms", tail_from / 1e6},
            {"share_by_gap", tail},
            {"started_ms_after_first", tail_starts_ms}}},
          {"produce_round_trip_us",
           {{"count", produce_us.size()},
            {"p50", percentile(produce_us, 0.50)},
            {"p99", percentile(produce_us, 0.99)}}},
          {"note",
           "trace points (libsaga/src/trace.h): o.* orchestrator, p.* participant, k.* Kafka "
           "transport (send = produce() called, recv = record handed to the engine); gaps "
           "between a saga's consecutive points, delivery reports apart"}};
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

// Handlers of the booking participants, with `fail_share` of confirmations
// refused; their per-saga keys expire after `ledger` (0: kept).
void register_handlers(const std::string& name, Participant& p, double fail_share,
                       Duration ledger = Duration{0}) {
  testing::BookingFaults faults;
  faults.confirm_failure = fail_share;
  faults.ledger_ttl = ledger;
  auto rng = std::make_shared<std::mt19937_64>(7);
  auto chance = [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
  const Status s = name == "inventory" ? testing::register_inventory(p, kCapacity, faults, chance)
                                       : testing::register_payment(p, faults, chance);
  if (!s.ok()) {
    std::cerr << "saga-bench: cannot register " << name << " handlers: " << s << "\n";
    std::exit(1);
  }
}

// `adjust`, when given, changes the options last (replicas).
std::unique_ptr<Participant> open_participant(
    const std::string& name, const fs::path& dir, bool sync, std::shared_ptr<Transport> transport,
    bool changelog = false, int threads = 0,
    const std::function<void(ParticipantOptions&)>& adjust = {}) {
  ParticipantOptions po;
  po.name = name;
  po.data_dir = (dir / name).string();
  po.sync = sync;
  po.changelog = changelog;
  po.threads = static_cast<uint32_t>(threads);
  if (adjust) adjust(po);
  return must(Participant::open(po, std::move(transport)), "open " + name);
}

// One point of a sweep: closed loop (`inflight` sagas kept in flight) or open
// loop (`rate` sagas/s on a fixed schedule); `total` sagas either way.
struct Point {
  bool open = false;
  int inflight = 0;
  double rate = 0;
  int total = 0;

  std::string name() const {
    std::ostringstream o;
    if (open) {
      o << "rate " << rate << "/s";
    } else {
      o << "inflight " << inflight;
    }
    return o.str();
  }
  std::string slug() const {
    return open ? "rate-" + std::to_string(static_cast<long>(rate))
                : "inflight-" + std::to_string(inflight);
  }
};

std::vector<Point> points_of(const Args& args) {
  std::vector<Point> out;
  for (int k : args.inflight) out.push_back({false, k, 0, args.sagas});
  for (double r : args.rates) {
    out.push_back({true, 0, r, std::max(1, static_cast<int>(std::llround(r * args.seconds)))});
  }
  return out;
}

// Latencies and outcomes of one point. A saga's latency runs from its
// intended start (the closed loop starts it at once; the open loop's
// schedule says when) to its terminal state being durable. on_settled runs
// on the engine thread while the driver may be waiting on another, hence
// the lock.
class Recorder {
 public:
  // Keeps of a settled saga only what the invariants read (a soak settles
  // millions): its id, state, times and amount, and its steps only when it
  // did not end Completed or Compensated.
  void slim() { slim_ = true; }
  void started(const std::string& id, SteadyClock::time_point intended) {
    std::lock_guard lock(mu_);
    started_at_.emplace(id, intended);
  }
  void settled(const SagaView& v) {
    {
      std::lock_guard lock(mu_);
      auto it = started_at_.find(v.id);
      if (it == started_at_.end()) return;
      const auto now = SteadyClock::now();
      latencies_ms_.push_back(std::chrono::duration<double, std::milli>(now - it->second).count());
      times_.emplace(v.id, std::make_pair(it->second, now));
      started_at_.erase(it);
      SagaView& kept = finished_.emplace(v.id, v).first->second;
      if (slim_) {
        kept.data = Json{{"amount", v.data.value("amount", Json(0))}};
        kept.traceparent.clear();
        if (v.state == SagaState::kCompleted || v.state == SagaState::kCompensated)
          kept.steps.clear();
      }
      last_settle_ = now;
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
  // Settled sagas: id -> (intended start, settled).
  const std::map<std::string, std::pair<SteadyClock::time_point, SteadyClock::time_point>>&
  times() const {
    return times_;
  }
  SteadyClock::time_point last_settle() const { return last_settle_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, SteadyClock::time_point> started_at_;
  std::vector<double> latencies_ms_;
  std::map<std::string, SagaView> finished_;
  std::map<std::string, std::pair<SteadyClock::time_point, SteadyClock::time_point>> times_;
  SteadyClock::time_point last_settle_{};
  bool slim_ = false;
};

// `replica`: with --replicas, which one (its own data directory and address).
Options orchestrator_options(const fs::path& dir, const Args& args, Recorder& rec,
                             int replica = 0) {
  Options o;
  o.data_dir = (dir / "orchestrator").string();
  if (args.replicas > 0) {
    o.data_dir += "-" + std::to_string(replica);
    o.replicas = true;
    o.advertised_address = "replica-" + std::to_string(replica);
  }
  o.sync = args.sync;
  o.shards = static_cast<uint32_t>(args.shards);
  o.threads = static_cast<uint32_t>(args.threads);
  o.timeline_limit = static_cast<uint32_t>(args.timeline);
  o.changelog = args.changelog;
  o.breaker.enabled = false;
  o.on_settled = [&rec](const SagaView& v) { rec.settled(v); };
  if (args.soak_minutes > 0) {
    o.dedup_horizon = Duration{args.dedup_horizon_ms};  // the participants'
    o.retention = Duration{args.retention_ms};
    o.retention_interval = std::min(Duration{args.retention_ms}, Duration{5'000});
  }
  return o;
}

// The orchestrator that starts saga `id`: the one, or with replicas the
// owner of its shard.
using Router = std::function<Orchestrator&(const std::string& id)>;

void start_one(const Router& route, Recorder& rec, int k, SteadyClock::time_point intended) {
  const std::string id = "b" + std::to_string(k);
  rec.started(id, intended);
  StartOptions so;
  so.id = id;
  route(id).start_async("booking", Json{{"qty", 1}, {"amount", 100 + k % 900}}, so,
                   [id](StatusOr<std::string> r) {
                     if (!r.ok()) {
                       std::cerr << "saga-bench: start " << id << ": " << r.status() << "\n";
                       std::exit(1);
                     }
                   });
}

// Starts the sagas of one point when they are due, samples the open loop's
// backlog, and keeps a progress line on stderr (about once a second).
class Driver {
 public:
  Driver(const Point& pt, std::string label, Router route, Recorder& rec)
      : pt_(pt), label_(std::move(label)), route_(std::move(route)), rec_(rec),
        tty_(isatty(2) != 0) {}

  void begin() {
    t0_ = SteadyClock::now();
    last_print_ = t0_;
  }
  SteadyClock::time_point t0() const { return t0_; }
  bool all_started() const { return next_ >= pt_.total; }
  int started() const { return next_; }
  bool done() { return static_cast<int>(rec_.finished()) >= pt_.total; }

  // When the open loop's next saga is due (t0 + i / rate).
  SteadyClock::time_point intended(int i) const {
    return t0_ + std::chrono::duration_cast<SteadyClock::duration>(
                     std::chrono::duration<double>(static_cast<double>(i) / pt_.rate));
  }
  SteadyClock::time_point next_due() const {
    return all_started() ? SteadyClock::time_point::max() : intended(next_);
  }

  void start_due() {
    if (pt_.open) {
      const auto now = SteadyClock::now();
      while (next_ < pt_.total && intended(next_) <= now) {
        start_one(route_, rec_, next_, intended(next_));
        ++next_;
      }
    } else {
      while (next_ < pt_.total && static_cast<int>(rec_.in_flight()) < pt_.inflight) {
        start_one(route_, rec_, next_, SteadyClock::now());
        ++next_;
      }
    }
  }

  void tick() {
    const auto now = SteadyClock::now();
    if (pt_.open) {
      // Backlog: sagas the schedule has made due that have not settled yet.
      const double t = std::chrono::duration<double>(now - t0_).count();
      const auto due = std::min<long>(pt_.total, static_cast<long>(t * pt_.rate) + 1);
      const long backlog = due - static_cast<long>(rec_.finished());
      const double schedule = pt_.total / pt_.rate;
      if (!backlog_mid_ && t >= schedule / 2) backlog_mid_ = backlog;
      if (!backlog_end_ && t >= schedule) backlog_end_ = backlog;
      // The settlement rate is read between 10% and 90% of the schedule,
      // once the pipeline is full and before it drains.
      if (!window_start_ && t >= 0.1 * schedule) window_start_ = {t, rec_.finished()};
      if (!window_end_ && t >= 0.9 * schedule) window_end_ = {t, rec_.finished()};
    }
    if (now - last_print_ < std::chrono::seconds(1)) return;
    const size_t done = rec_.finished();
    const double dt = std::chrono::duration<double>(now - last_print_).count();
    const double rate = static_cast<double>(done - last_done_) / dt;
    std::ostringstream o;
    o << "  " << label_ << " " << pt_.name() << ": " << done << "/" << pt_.total << " settled, "
      << static_cast<long>(rate) << " sagas/s now, " << rec_.in_flight() << " in flight, "
      << static_cast<long>(std::chrono::duration<double>(now - t0_).count()) << " s";
    std::cerr << (tty_ ? "\r\033[K" : "") << o.str() << (tty_ ? "" : "\n") << std::flush;
    printed_ = true;
    last_print_ = now;
    last_done_ = done;
  }

  // Clears the progress line before the point's summary.
  void end() {
    if (tty_ && printed_) std::cerr << "\r\033[K" << std::flush;
  }

  // Open-loop figures: offered and achieved rates, backlog, saturation.
  void add_open_loop(Json& point) {
    if (!pt_.open) return;
    tick();  // a short point may not have sampled its backlog yet
    // Settlements follow the schedule, shifted by the latency, while the
    // system keeps up; their rate in the middle of the schedule is the rate
    // it sustained. (Whole-point figures would mix in the ramp and the drain.)
    double achieved = 0;
    if (window_start_ && window_end_ && window_end_->first > window_start_->first) {
      achieved = static_cast<double>(window_end_->second - window_start_->second) /
                 (window_end_->first - window_start_->first);
    } else {
      const double span = std::chrono::duration<double>(rec_.last_settle() - t0_).count();
      achieved = span > 0 ? pt_.total / span : 0;
    }
    const long mid = backlog_mid_.value_or(0), end = backlog_end_.value_or(0);
    // A shortfall of 5% of the offered load over the second half of the
    // schedule is what a growing backlog means here.
    const double grow_limit = std::max(10.0, 0.05 * pt_.total / 2);
    const bool growing = static_cast<double>(end - mid) > grow_limit;
    point["offered_per_s"] = pt_.rate;
    point["achieved_per_s"] = achieved;
    point["sagas_per_s"] = achieved;
    // Over the whole point, ramp and drain included.
    point["overall_per_s"] = pt_.total / point["seconds"].get<double>();
    point["backlog_mid"] = mid;
    point["backlog_end"] = end;
    point["saturated"] = achieved < 0.95 * pt_.rate || growing;
    // The sagas due after the point's first second: its latency without the
    // start-up (every fresh partition's first requests), to read a tail apart.
    // latency_ms stays the figure of record.
    std::vector<double> later;
    for (const auto& [id, t] : rec_.times()) {
      if (t.first >= t0_ + std::chrono::seconds(1))
        later.push_back(std::chrono::duration<double, std::milli>(t.second - t.first).count());
    }
    point["latency_ms_after_first_second"] = {{"sagas", later.size()},
                                              {"p50", percentile(later, 0.50)},
                                              {"p99", percentile(later, 0.99)}};
  }

 private:
  const Point& pt_;
  std::string label_;
  Router route_;
  Recorder& rec_;
  bool tty_;
  bool printed_ = false;
  int next_ = 0;
  SteadyClock::time_point t0_{}, last_print_{};
  size_t last_done_ = 0;
  std::optional<long> backlog_mid_, backlog_end_;
  std::optional<std::pair<double, size_t>> window_start_, window_end_;  // (t, settled)
};

uint64_t bytes_on_disk(const fs::path& dir) {
  uint64_t total = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

// User + system CPU of another process, from /proc (0 when it is gone).
double process_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  const size_t r = line.rfind(')');
  if (r == std::string::npos) return 0;
  std::istringstream in(line.substr(r + 2));
  std::string skip;
  for (int field = 3; field < 14; ++field) in >> skip;  // state .. cmajflt
  long utime = 0, stime = 0;
  in >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// What one point measured besides the recorder's latencies and outcomes.
struct Measured {
  double secs = 0;
  double cpu = 0;  // every process of the run but the broker
  EngineStats es;
  uint64_t participant_writes = 0;  // RocksDB batches (engine only)
  uint64_t orchestrator_store_bytes = 0;
  uint64_t participant_store_bytes = 0;
};

// The figures of one point, in the JSON every workload shares.
Json point_json(const char* workload, const Args& args, const Point& pt, const Measured& m,
                Recorder& rec, const std::vector<std::string>& bad) {
  int compensated = 0;
  for (const auto& [id, v] : rec.outcomes()) compensated += v.state == SagaState::kCompensated;
  std::vector<double>& lat = rec.latencies();
  const double n = static_cast<double>(pt.total);
  const EngineStats& es = m.es;
  Json j = {
      {"workload", workload},
      {"loop", pt.open ? "open" : "closed"},
      {"sync", args.sync},
      {"changelog", args.changelog},
      {"sagas", pt.total},
      {"seconds", m.secs},
      {"sagas_per_s", n / m.secs},
      {"transitions_per_s", static_cast<double>(es.transitions) / m.secs},
      {"orchestrator_writes", es.writes},
      {"transitions_per_write",
       es.writes ? static_cast<double>(es.transitions) / static_cast<double>(es.writes) : 0},
      {"participant_writes", m.participant_writes},
      {"orchestrator_bytes_per_saga", static_cast<double>(es.bytes_written) / n},
      {"orchestrator_store_bytes_per_saga", static_cast<double>(m.orchestrator_store_bytes) / n},
      {"participant_store_bytes_per_saga", static_cast<double>(m.participant_store_bytes) / n},
      {"store_bytes_on_disk", m.orchestrator_store_bytes + m.participant_store_bytes},
      {"cpu_seconds_per_saga", m.cpu / n},
      {"compensated_share", compensated / n},
      {"latency_ms",
       {{"p50", percentile(lat, 0.50)},
        {"p90", percentile(lat, 0.90)},
        {"p99", percentile(lat, 0.99)},
        {"p999", percentile(lat, 0.999)},
        {"max", lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end())}}},
      {"consistent", bad.empty() && static_cast<int>(rec.outcomes().size()) == pt.total},
      {"violations", bad}};
  if (pt.open) {
    j["rate"] = pt.rate;
  } else {
    j["inflight"] = pt.inflight;
  }
  return j;
}

std::string run_label(const char* workload, const Args& args) {
  return std::string(workload) + " sync=" + (args.sync ? "on" : "off") +
         " shards=" + std::to_string(args.shards) + " threads=" + std::to_string(args.threads) +
         (args.changelog ? " changelog=on" : "") +
         (args.replicas > 0 ? " replicas=" + std::to_string(args.replicas) : "") +
         (args.failover ? std::string(" failover") + (args.standby ? " standby" : "") : "");
}

// With the changelog: the orchestrator's disk is lost after the run and a
// new one restores every shard from the in-memory changelog; the time of
// that open() is the restore figure. Every saga must come back as it ended.
Json measure_restore(const Args& args, const fs::path& dir, MemoryBus& bus,
                     std::unique_ptr<Orchestrator>& orch, Recorder& rec) {
  orch.reset();
  fs::remove_all(dir / "orchestrator");
  const uint32_t shards = args.shards > 0 ? static_cast<uint32_t>(args.shards) : kDefaultShards;
  uint64_t records = 0;
  for (uint32_t k = 0; k < shards; ++k) records += bus.log_end("orchestrator.changelog", k);
  const auto t0 = SteadyClock::now();
  auto restored = must(Orchestrator::open(orchestrator_options(dir, args, rec),
                                          std::shared_ptr<Transport>(bus.connect("restored")),
                                          {testing::booking_definition(Duration{5000}, 5)}),
                       "restore orchestrator");
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  size_t same = 0;
  for (const auto& [id, v] : rec.outcomes()) {
    auto back = restored->get(id);
    same += back.ok() && back->state == v.state;
  }
  std::cerr << "  restore: " << rec.outcomes().size() << " sagas, " << records
            << " changelog records in " << secs << " s" << (same == rec.outcomes().size() ? "" : " INCOMPLETE")
            << "\n";
  if (same != rec.outcomes().size()) {
    std::cerr << "saga-bench: restore brought back " << same << " of " << rec.outcomes().size()
              << " sagas\n";
    std::exit(1);
  }
  return {{"sagas", rec.outcomes().size()}, {"records", records}, {"seconds", secs}};
}

// engine: everything in this process over the in-memory transport, pumped by
// one thread, so the figures are the engine's own cost.
// A store plateaus when its largest size (keys, and bytes) over the last
// third of the samples is at most 10% above its largest over the middle third.
Json soak_json(const Args& args, const Json& samples) {
  Json plateau = Json::object();
  const size_t n = samples.size();
  for (const char* store : {"orchestrator", "inventory", "payment"}) {
    for (const char* what : {"keys", "bytes"}) {
      double middle = 0, last = 0;
      for (size_t i = n / 3; i < n; ++i) {
        const double v = samples[i][store][what].get<double>();
        (i < 2 * n / 3 ? middle : last) = std::max(i < 2 * n / 3 ? middle : last, v);
      }
      plateau[std::string(store) + "_" + what] = n >= 6 && last <= 1.1 * middle;
    }
  }
  return {{"minutes", args.soak_minutes},
          {"retention_ms", args.retention_ms},
          {"dedup_horizon_ms", args.dedup_horizon_ms},
          {"sample_seconds", args.sample_seconds},
          {"plateau", plateau},
          {"samples", samples}};
}

Json run_engine_point(const Args& args, const Point& pt) {
  const fs::path dir = fs::path(args.dir) / ("engine-" + pt.slug());
  fs::remove_all(dir);
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 42);
  Recorder rec;
  if (args.soak_minutes > 0) rec.slim();
  auto orch = must(Orchestrator::open(orchestrator_options(dir, args, rec),
                                      std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                      {testing::booking_definition(Duration{5000}, 5)}),
                   "open orchestrator");
  const auto horizon = [&](ParticipantOptions& po) {
    if (args.soak_minutes <= 0) return;
    po.dedup_horizon = Duration{args.dedup_horizon_ms};
    po.dedup_sweep_interval = std::min(Duration{args.dedup_horizon_ms}, Duration{5'000});
  };
  auto inventory = open_participant("inventory", dir, args.sync,
                                    std::shared_ptr<Transport>(bus->connect("inventory")), false,
                                    args.participant_threads, horizon);
  auto payment = open_participant("payment", dir, args.sync,
                                  std::shared_ptr<Transport>(bus->connect("payment")), false,
                                  args.participant_threads, horizon);
  // --soak: the participants keep their per-saga ledger for the
  // de-duplication horizon, as a business keeps its records for a retention.
  const Duration ledger{args.soak_minutes > 0 ? args.dedup_horizon_ms : 0};
  register_handlers("inventory", *inventory, args.fail_share, ledger);
  register_handlers("payment", *payment, args.fail_share, ledger);

  Driver driver(
      pt, run_label("engine", args), [&](const std::string&) -> Orchestrator& { return *orch; },
      rec);
  const double cpu0 = cpu_seconds();
  driver.begin();
  if (args.threads > 0) {
    orch->start_background();
    inventory->start_background();
    payment->start_background();
  }
  // --soak: what each store holds over time.
  Json samples = Json::array();
  auto next_sample = driver.t0();
  auto sample = [&] {
    if (args.soak_minutes <= 0 || SteadyClock::now() < next_sample) return;
    next_sample += std::chrono::duration_cast<SteadyClock::duration>(
        std::chrono::duration<double>(args.sample_seconds));
    const EngineStats o = orch->stats();
    const ParticipantStats i = inventory->stats(), p = payment->stats();
    samples.push_back(
        {{"t", std::chrono::duration<double>(SteadyClock::now() - driver.t0()).count()},
         {"settled", rec.finished()},
         {"in_flight", o.in_flight},
         {"orchestrator", {{"bytes", o.store_bytes}, {"keys", o.store_keys},
                           {"disk_bytes", bytes_on_disk(dir / "orchestrator")}}},
         {"inventory", {{"bytes", i.store_bytes}, {"keys", i.store_keys},
                        {"disk_bytes", bytes_on_disk(dir / "inventory")},
                        {"inbox_expired", i.expired},
                        {"state_expired", i.state_expired}}},
         {"payment", {{"bytes", p.store_bytes}, {"keys", p.store_keys},
                      {"disk_bytes", bytes_on_disk(dir / "payment")},
                      {"inbox_expired", p.expired},
                      {"state_expired", p.state_expired}}}});
  };
  while (!driver.done()) {
    sample();
    driver.start_due();
    if (args.threads > 0) {  // the engines run on their own threads: wait for room or time
      const auto soon = SteadyClock::now() + std::chrono::milliseconds(20);
      if (pt.open) {
        std::this_thread::sleep_until(std::min(driver.next_due(), soon));
      } else {
        rec.wait_below(static_cast<size_t>(pt.inflight), soon);
      }
      driver.tick();
      continue;
    }
    const size_t work = orch->run_once() + inventory->run_once() + payment->run_once();
    driver.tick();
    // Open loop with nothing in flight: idle until the next saga is due.
    if (work == 0 && pt.open && rec.in_flight() == 0) {
      std::this_thread::sleep_until(
          std::min(driver.next_due(), SteadyClock::now() + std::chrono::milliseconds(100)));
    }
  }
  orch->stop();
  inventory->stop();
  payment->stop();
  Measured m;
  m.secs = std::chrono::duration<double>(SteadyClock::now() - driver.t0()).count();
  m.cpu = cpu_seconds() - cpu0;
  driver.end();
  // A benchmark that loses sagas reports failure, not a number.
  // With an expiring ledger, sagas are checked against it while it is whole.
  const int64_t ledger_since =
      ledger.count() > 0 ? to_millis(SystemClock().now()) - ledger.count() + 1'000 : 0;
  const auto bad = testing::check_booking_invariants(rec.outcomes(), *inventory, *payment,
                                                     kCapacity, ledger_since);
  m.es = orch->stats();
  m.participant_writes = inventory->stats().writes + payment->stats().writes;
  m.orchestrator_store_bytes = 0;
  for (int i = 0; i < std::max(1, args.replicas); ++i) {
    m.orchestrator_store_bytes += bytes_on_disk(
        dir / (args.replicas > 0 ? "orchestrator-" + std::to_string(i) : "orchestrator"));
  }
  m.participant_store_bytes = bytes_on_disk(dir / "inventory") + bytes_on_disk(dir / "payment");
  Json point = point_json("engine", args, pt, m, rec, bad);
  driver.add_open_loop(point);
  if (args.soak_minutes > 0) point["soak"] = soak_json(args, samples);
  if (args.changelog) point["restore"] = measure_restore(args, dir, *bus, orch, rec);
  orch.reset();
  inventory.reset();
  payment.reset();
  fs::remove_all(dir);
  return point;
}

// `group`: the consumer group's name (default: the endpoint's).
// --failover: how long the shards of the SIGKILLed payment replica stood
// still. For each payment shard (the shard of the saga id, the key of payment
// commands), the first saga started at or after the kill that completed (so
// passed payment) says when that shard moved again; the shards the survivor
// owned all along show about one saga's latency, those it took over the
// failover time plus that latency.
Json failover_json(const Args& args, Recorder& rec, SteadyClock::time_point killed_at,
                   int after_sagas) {
  const uint32_t shards = kDefaultShards;  // the participants' (ParticipantOptions default)
  std::vector<double> first_ms(shards, -1);
  for (const auto& [id, t] : rec.times()) {
    if (t.first < killed_at || rec.outcomes().at(id).state != SagaState::kCompleted) continue;
    double& first = first_ms[shard_of(id, shards)];
    const double ms = std::chrono::duration<double, std::milli>(t.second - killed_at).count();
    if (first < 0 || ms < first) first = ms;
  }
  std::vector<double> seen;
  for (double ms : first_ms)
    if (ms >= 0) seen.push_back(ms);
  std::sort(seen.begin(), seen.end());
  return {{"killed", "payment-b"},
          {"after_sagas", after_sagas},
          {"standby", args.standby},
          {"session_ms", args.session_ms},
          {"shards_seen", seen.size()},
          {"first_completion_ms_by_shard", first_ms},
          {"failover_ms", seen.empty() ? -1.0 : seen.back()},
          {"fastest_shard_ms", seen.empty() ? -1.0 : seen.front()},
          {"note",
           "per payment shard: from the SIGKILL to the first saga started after it that "
           "completed; failover_ms is the worst shard, fastest_shard_ms the best (a shard the "
           "survivor owned all along: about one saga's latency)"}};
}

// `session_ms` > 0: the consumer group's session timeout (heartbeats at a third).
std::shared_ptr<Transport> kafka_transport(const std::string& endpoint, const std::string& brokers,
                                           const std::string& prefix,
                                           const std::string& group = "", int session_ms = 0,
                                           const std::map<std::string, std::string>& properties = {}) {
  KafkaOptions o;
  o.properties = properties;
  o.brokers = brokers;
  o.topic_prefix = prefix;
  o.group_id = prefix + (group.empty() ? endpoint : group);
  if (session_ms > 0) {
    o.properties["session.timeout.ms"] = std::to_string(session_ms);
    o.properties["heartbeat.interval.ms"] = std::to_string(std::max(100, session_ms / 3));
  }
  return std::shared_ptr<Transport>(
      must(make_kafka_transport(endpoint, o), "kafka transport for " + endpoint));
}

// The committed records of every partition of `topic` (read_committed, so
// aborted transactions and commit markers do not count): what a restore from
// offset 0 reads. A plain consumer on assign(): it joins no group and claims
// nothing, so it fences no shard.
uint64_t count_committed_records(const std::string& brokers, const std::string& topic) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  for (const auto& [k, v] : std::map<std::string, std::string>{
           {"bootstrap.servers", brokers},
           {"group.id", topic + ".bench-count"},
           {"enable.auto.commit", "false"},
           {"enable.auto.offset.store", "false"},
           {"isolation.level", "read_committed"},
           {"enable.partition.eof", "true"},
           {"auto.offset.reset", "earliest"},
           {"fetch.wait.max.ms", "10"}}) {
    if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
      std::cerr << "saga-bench: count " << topic << ": property " << k << ": " << err << "\n";
      std::exit(1);
    }
  }
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(RdKafka::KafkaConsumer::create(conf.get(), err));
  if (!consumer) {
    std::cerr << "saga-bench: count " << topic << ": " << err << "\n";
    std::exit(1);
  }
  std::string topic_err;
  std::unique_ptr<RdKafka::Topic> t(
      RdKafka::Topic::create(consumer.get(), topic, nullptr, topic_err));
  RdKafka::Metadata* raw = nullptr;
  if (!t || consumer->metadata(false, t.get(), &raw, 10'000) != RdKafka::ERR_NO_ERROR ||
      raw->topics()->empty() || raw->topics()->at(0)->err() != RdKafka::ERR_NO_ERROR) {
    delete raw;
    std::cerr << "saga-bench: count " << topic << ": no metadata\n";
    std::exit(1);
  }
  std::unique_ptr<RdKafka::Metadata> md(raw);
  std::vector<std::unique_ptr<RdKafka::TopicPartition>> owned;
  std::vector<RdKafka::TopicPartition*> assignment;
  for (const auto* p : *md->topics()->at(0)->partitions()) {
    owned.emplace_back(RdKafka::TopicPartition::create(topic, p->id(), 0));
    assignment.push_back(owned.back().get());
  }
  if (consumer->assign(assignment) != RdKafka::ERR_NO_ERROR) {
    std::cerr << "saga-bench: count " << topic << ": assign failed\n";
    std::exit(1);
  }
  uint64_t records = 0;
  std::set<int32_t> at_end;
  const auto deadline = SteadyClock::now() + std::chrono::minutes(2);
  while (at_end.size() < assignment.size()) {
    if (SteadyClock::now() > deadline) {
      std::cerr << "saga-bench: count " << topic << ": not at the end after 2 minutes\n";
      std::exit(1);
    }
    std::unique_ptr<RdKafka::Message> m(consumer->consume(100));
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      at_end.insert(m->partition());
    } else if (m->err() == RdKafka::ERR_NO_ERROR) {
      ++records;
    }
  }
  consumer->close();
  return records;
}

// With the changelog over Kafka: after the run, the orchestrator's data
// directory is deleted and a new orchestrator on the same topics restores
// every shard from its Kafka changelog; the time of that open() (claims:
// init_transactions per shard, then the reads) is the restore figure.
// Every saga must come back as it ended.
Json measure_kafka_restore(const Args& args, const fs::path& dir, const std::string& prefix,
                           Recorder& rec) {
  fs::remove_all(dir / "orchestrator");
  const std::string topic = prefix + "orchestrator.changelog";
  const uint64_t records = count_committed_records(args.brokers, topic);
  const auto t0 = SteadyClock::now();
  auto restored = must(Orchestrator::open(orchestrator_options(dir, args, rec),
                                          kafka_transport("orchestrator", args.brokers, prefix, "", 0,
                                                          args.kafka_properties),
                                          {testing::booking_definition(Duration{5000}, 5)}),
                       "restore orchestrator from Kafka");
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  size_t same = 0;
  for (const auto& [id, v] : rec.outcomes()) {
    auto back = restored->get(id);
    same += back.ok() && back->state == v.state;
  }
  restored.reset();
  std::cerr << "  restore: " << rec.outcomes().size() << " sagas, " << records
            << " changelog records (" << topic << ") in " << secs << " s"
            << (same == rec.outcomes().size() ? "" : " INCOMPLETE") << "\n";
  if (same != rec.outcomes().size()) {
    std::cerr << "saga-bench: restore brought back " << same << " of " << rec.outcomes().size()
              << " sagas\n";
    std::exit(1);
  }
  return {{"sagas", rec.outcomes().size()},
          {"records", records},
          {"seconds", secs},
          {"records_per_s", secs > 0 ? static_cast<double>(records) / secs : 0},
          {"note", "open() of a new orchestrator on an empty data directory: a claim "
                   "(init_transactions) and a read_committed read of each shard's partition"}};
}

// kafka: this process is the orchestrator; inventory and payment run as
// child processes of this binary (--participant), all over the real broker.
// `broker_pid` (0 = not ours) is only read for its CPU time.
Json run_kafka_point(const Args& args, const Point& pt, const std::string& self, pid_t broker_pid) {
  const fs::path dir = fs::path(args.dir) / ("kafka-" + pt.slug());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 rng(std::random_device{}());
  const std::string prefix = "bench" + std::to_string(rng() % 1'000'000'000) + ".";
  // The participants; with --failover, payment twice (payment, payment-b):
  // payment-b is SIGKILLed when half the point's sagas have started.
  std::vector<std::unique_ptr<testing::Process>> children;
  std::vector<std::pair<std::string, std::string>> instances = {{"inventory", ""},
                                                                {"payment", ""}};
  if (args.failover) instances.emplace_back("payment", "-b");
  if (args.trace) {  // the children inherit it; this process starts here
    const std::string trace_prefix = (dir / "trace").string();
    ::setenv("SAGA_LATENCY_TRACE", trace_prefix.c_str(), 1);
    internal::trace::start(trace_prefix);
  }
  for (const auto& [name, suffix] : instances) {
    const std::string log = (dir / (name + suffix + ".log")).string();
    std::vector<std::string> argv = {self,          "--participant",  name,
                                     "--dir",       dir.string(),     "--brokers",
                                     args.brokers,  "--prefix",       prefix,
                                     "--sync",      args.sync ? "on" : "off",
                                     "--changelog", args.changelog ? "on" : "off",
                                     "--fail-share", std::to_string(args.fail_share)};
    if (args.failover) {
      for (const std::string& a : {std::string("--failover"), std::string("on"),
                                   std::string("--standby"), std::string(args.standby ? "on" : "off"),
                                   std::string("--session-ms"), std::to_string(args.session_ms)})
        argv.push_back(a);
      if (!suffix.empty()) argv.insert(argv.end(), {"--replica", suffix});
    }
    for (const auto& [key, value] : args.kafka_properties)
      argv.insert(argv.end(), {"--kafka-property", key + "=" + value});
    children.push_back(std::make_unique<testing::Process>(argv, log));
    if (!testing::wait_for_text(log, "ready", std::chrono::seconds(60))) {
      std::cerr << "saga-bench: participant " << name << suffix << " did not start; see " << log
                << "\n";
      std::exit(1);
    }
  }
  testing::Process* victim = args.failover ? children.back().get() : nullptr;
  std::optional<SteadyClock::time_point> killed_at;
  double victim_cpu = 0;  // its CPU until the kill
  Recorder rec;
  // One orchestrator, or --replicas N of them sharing its consumer group,
  // each with its own transport and data directory; a saga is started on
  // the owner of its shard.
  std::vector<std::unique_ptr<Orchestrator>> orchs;
  for (int i = 0; i < std::max(1, args.replicas); ++i) {
    const std::string endpoint =
        args.replicas > 0 ? "orchestrator-" + std::to_string(i) : "orchestrator";
    orchs.push_back(must(Orchestrator::open(orchestrator_options(dir, args, rec, i),
                                            kafka_transport(endpoint, args.brokers, prefix,
                                                            "orchestrator", 0,
                                                            args.kafka_properties),
                                            {testing::booking_definition(Duration{5000}, 5)}),
                         "open orchestrator"));
    orchs.back()->start_background();
  }
  Router route = [&](const std::string& id) -> Orchestrator& {
    const ShardOwner w = orchs[0]->owner_of(id);
    if (w.where != ShardOwner::Where::kElsewhere) return *orchs[0];
    return *orchs.at(static_cast<size_t>(std::stoi(w.address.substr(w.address.find('-') + 1))));
  };
  if (args.replicas > 0) {  // every shard owned, every replica knowing by whom
    const auto ready_by = SteadyClock::now() + std::chrono::minutes(2);
    auto ready = [&] {
      uint64_t owned = 0;
      for (auto& o : orchs) {
        const uint64_t here = o->stats().shards_owned;
        if (!o->health().ok() || here == 0) return false;  // each has joined and has its share
        owned += here;
      }
      // And the owners table says so: a probe of every shard is routed to
      // the replica that drives it.
      std::set<uint32_t> seen;
      for (int n = 0; seen.size() < owned && n < 100'000; ++n) {
        const std::string probe = "probe-" + std::to_string(n);
        const uint32_t shard = orchs[0]->owner_of(probe).shard;
        if (seen.count(shard)) continue;
        if (route(probe).owner_of(probe).where != ShardOwner::Where::kHere) return false;
        seen.insert(shard);
      }
      return owned == static_cast<uint64_t>(args.shards > 0 ? args.shards : kDefaultShards);
    };
    while (!ready()) {
      if (SteadyClock::now() > ready_by) {
        std::cerr << "saga-bench: the replicas did not share the shards within 2 minutes\n";
        std::exit(1);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  auto children_cpu = [&] {
    double c = victim_cpu;
    for (auto& p : children)
      if (p->running()) c += process_cpu_seconds(p->pid());
    return c;
  };
  Driver driver(pt, run_label("kafka", args), route, rec);
  const double cpu0 = cpu_seconds(), children0 = children_cpu();
  const double broker0 = broker_pid ? process_cpu_seconds(broker_pid) : 0;
  driver.begin();
  const auto deadline = driver.t0() + std::chrono::minutes(10);
  while (!driver.all_started() && SteadyClock::now() < deadline) {
    if (victim && !killed_at && driver.started() >= pt.total / 2) {
      victim_cpu = process_cpu_seconds(victim->pid());
      victim->kill_now();
      killed_at = SteadyClock::now();
    }
    driver.start_due();
    if (pt.open) {
      std::this_thread::sleep_until(
          std::min(driver.next_due(), SteadyClock::now() + std::chrono::milliseconds(50)));
    } else {
      rec.wait_below(static_cast<size_t>(pt.inflight),
                     std::min(deadline, SteadyClock::now() + std::chrono::milliseconds(200)));
    }
    driver.tick();
  }
  while (!driver.done() && SteadyClock::now() < deadline) {
    rec.wait_below(1, std::min(deadline, SteadyClock::now() + std::chrono::milliseconds(200)));
    driver.tick();
  }
  Measured m;
  m.secs = std::chrono::duration<double>(SteadyClock::now() - driver.t0()).count();
  const double orch_cpu = cpu_seconds() - cpu0;
  const double part_cpu = children_cpu() - children0;
  const double broker_cpu = broker_pid ? process_cpu_seconds(broker_pid) - broker0 : 0;
  m.cpu = orch_cpu + part_cpu;
  driver.end();
  for (auto& o : orchs) o->stop();
  m.es = orchs[0]->stats();
  for (size_t i = 1; i < orchs.size(); ++i) {
    const EngineStats es = orchs[i]->stats();
    m.es.transitions += es.transitions;
    m.es.writes += es.writes;
    m.es.bytes_written += es.bytes_written;
    m.es.messages_sent += es.messages_sent;
  }
  orchs.clear();
  for (auto& c : children)
    if (c->running()) c->terminate(std::chrono::seconds(30));
  std::optional<Json> breakdown;
  if (args.trace) {  // every process of the point has written its points now
    internal::trace::stop();
    ::unsetenv("SAGA_LATENCY_TRACE");
    breakdown = latency_breakdown(dir, "trace");
  }

  // Participants are stopped: read their stores offline to check the run
  // (with --failover, payment's holds every shard: it took payment-b's over).
  m.orchestrator_store_bytes = bytes_on_disk(dir / "orchestrator");
  m.participant_store_bytes = bytes_on_disk(dir / "inventory") + bytes_on_disk(dir / "payment");
  auto bus = MemoryBus::create(std::make_shared<SystemClock>(), 1);
  auto inventory = open_participant("inventory", dir, false,
                                    std::shared_ptr<Transport>(bus->connect("inventory")));
  auto payment =
      open_participant("payment", dir, false, std::shared_ptr<Transport>(bus->connect("payment")));
  const auto bad =
      testing::check_booking_invariants(rec.outcomes(), *inventory, *payment, kCapacity);
  Json point = point_json("kafka", args, pt, m, rec, bad);
  driver.add_open_loop(point);
  if (args.changelog && args.replicas == 0)
    point["restore"] = measure_kafka_restore(args, dir, prefix, rec);
  point["replicas"] = args.replicas;
  if (breakdown) point["breakdown"] = std::move(*breakdown);
  if (killed_at) point["failover"] = failover_json(args, rec, *killed_at, pt.total / 2);
  const double n = static_cast<double>(pt.total);
  point["orchestrator_cpu_seconds_per_saga"] = orch_cpu / n;
  point["participants_cpu_seconds_per_saga"] = part_cpu / n;
  if (broker_pid) point["broker_cpu_seconds_per_saga"] = broker_cpu / n;
  point["cpu_note"] =
      "cpu_seconds_per_saga: orchestrator + both participant processes; the broker apart";
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
  // With --failover, one of several replicas (ParticipantOptions::replicas):
  // its own data directory, sharing the shards through the consumer group.
  const std::string instance = args.participant + args.replica;
  auto p = open_participant(
      args.participant, args.dir, args.sync,
      kafka_transport(args.participant, args.brokers, args.prefix, "", args.session_ms,
                      args.kafka_properties),
      args.changelog, 0, [&](ParticipantOptions& po) {
        if (!args.failover) return;
        po.data_dir = (fs::path(args.dir) / instance).string();
        po.replicas = true;
        po.standby = args.standby;
        po.advertised_address = instance;
      });
  register_handlers(args.participant, *p, args.fail_share);
  p->start_background();
  if (args.failover) {  // ready once the group has given it its share
    const auto deadline = SteadyClock::now() + std::chrono::minutes(1);
    while (p->stats().shards_owned == 0) {
      if (SteadyClock::now() > deadline) {
        std::cerr << "saga-bench: " << instance << " was given no shard within a minute\n";
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling with a deadline
    }
  }
  std::cout << "ready" << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  p->stop();
  return 0;
}

// ------------------------------------------------------------------ baselines

Json latency_summary(std::vector<double>& ms) {
  return {{"p50", percentile(ms, 0.50)},
          {"p90", percentile(ms, 0.90)},
          {"p99", percentile(ms, 0.99)},
          {"max", ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end())}};
}

double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

// `writers` threads doing one small put per write for `seconds` on a fresh
// RocksDB in `dir`, with the options libsaga's store uses that matter for
// writes. With sync, RocksDB's group commit lets concurrent writers share
// one fsync: what libsaga's batching competes with.
Json rocksdb_baseline(const fs::path& dir, bool sync, int writers, double seconds) {
  fs::remove_all(dir);
  fs::create_directories(dir.parent_path());
  rocksdb::Options o;
  o.create_if_missing = true;
  o.IncreaseParallelism(2);
  o.write_buffer_size = 32 << 20;
  o.max_total_wal_size = 256 << 20;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status st = rocksdb::DB::Open(o, dir.string(), &raw);
  if (!st.ok()) {
    std::cerr << "saga-bench: baseline rocksdb open: " << st.ToString() << "\n";
    std::exit(1);
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(static_cast<size_t>(writers));
  std::vector<std::thread> threads;
  const std::string value(100, 'v');
  const auto t0 = SteadyClock::now();
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      rocksdb::WriteOptions wo;
      wo.sync = sync;
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const std::string key = "w" + std::to_string(w) + ":" + std::to_string(i);
        const auto a = SteadyClock::now();
        const rocksdb::Status s = db->Put(wo, key, value);
        if (!s.ok()) {
          std::cerr << "saga-bench: baseline rocksdb put: " << s.ToString() << "\n";
          std::exit(1);
        }
        lat[static_cast<size_t>(w)].push_back(ms_since(a));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  const auto commits = all.size();
  db.reset();
  fs::remove_all(dir);
  return {{"writers", writers},
          {"sync", sync},
          {"value_bytes", value.size()},
          {"seconds", secs},
          {"commits", commits},
          {"commits_per_s", static_cast<double>(commits) / secs},
          {"commit_latency_ms", latency_summary(all)}};
}

std::unique_ptr<RdKafka::Conf> rd_conf(const std::map<std::string, std::string>& kv) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  for (const auto& [k, v] : kv) {
    if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
      std::cerr << "saga-bench: baseline kafka property " << k << ": " << err << "\n";
      std::exit(1);
    }
  }
  return conf;
}

[[noreturn]] void kafka_die(const std::string& what) {
  std::cerr << "saga-bench: baseline kafka: " << what << "\n";
  std::exit(1);
}

// A raw producer and consumer with the settings libsaga's transport gives
// its own (libsaga/src/kafka/kafka_transport.cc), on a fresh topic.
class RawKafka {
 public:
  RawKafka(const std::string& brokers, const std::string& topic, int partitions) : topic_(topic) {
    std::string err;
    auto pc = rd_conf({{"bootstrap.servers", brokers},
                       {"enable.idempotence", "true"},
                       {"acks", "all"},
                       {"linger.ms", "0"},
                       {"socket.nagle.disable", "true"},
                       {"message.timeout.ms", "30000"},
                       {"partitioner", "murmur2_random"}});
    producer_.reset(RdKafka::Producer::create(pc.get(), err));
    if (!producer_) kafka_die("producer: " + err);
    create_topic(partitions);
    auto cc = rd_conf({{"bootstrap.servers", brokers},
                       {"group.id", topic + ".group"},
                       {"enable.auto.commit", "true"},
                       {"enable.auto.offset.store", "false"},
                       {"auto.offset.reset", "earliest"},
                       {"partition.assignment.strategy", "cooperative-sticky"},
                       {"socket.nagle.disable", "true"},
                       {"fetch.wait.max.ms", "50"}});
    consumer_.reset(RdKafka::KafkaConsumer::create(cc.get(), err));
    if (!consumer_) kafka_die("consumer: " + err);
    if (consumer_->subscribe({topic_}) != RdKafka::ERR_NO_ERROR) kafka_die("subscribe");
    // The consumer's group join is not part of any figure.
    produce("warm-up");
    if (!consume_until("warm-up", SteadyClock::now() + std::chrono::seconds(60)))
      kafka_die("the warm-up message did not come back within 60 s");
  }
  ~RawKafka() {
    producer_->flush(10'000);
    consumer_->close();
  }

  // False when librdkafka's queue is full.
  bool produce(const std::string& payload) {
    const RdKafka::ErrorCode rc =
        producer_->produce(topic_, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                           const_cast<char*>(payload.data()), payload.size(), payload.data(),
                           std::min<size_t>(payload.size(), 16), 0, nullptr);
    producer_->poll(0);
    if (rc == RdKafka::ERR__QUEUE_FULL) return false;
    if (rc != RdKafka::ERR_NO_ERROR) kafka_die("produce: " + RdKafka::err2str(rc));
    return true;
  }
  // Consumes until a message whose payload is `payload` arrives.
  bool consume_until(const std::string& payload, SteadyClock::time_point deadline) {
    while (SteadyClock::now() < deadline) {
      std::unique_ptr<RdKafka::Message> m(consumer_->consume(50));
      producer_->poll(0);
      if (m->err() != RdKafka::ERR_NO_ERROR) continue;
      if (m->len() == payload.size() &&
          std::string_view(static_cast<const char*>(m->payload()), m->len()) == payload)
        return true;
    }
    return false;
  }
  // One message, or nullptr after `ms`.
  std::unique_ptr<RdKafka::Message> consume(int ms) {
    std::unique_ptr<RdKafka::Message> m(consumer_->consume(ms));
    if (m->err() != RdKafka::ERR_NO_ERROR) return nullptr;
    return m;
  }
  RdKafka::Producer& producer() { return *producer_; }

 private:
  void create_topic(int partitions) {
    rd_kafka_t* rk = producer_->c_ptr();
    char errstr[512];
    rd_kafka_NewTopic_t* nt =
        rd_kafka_NewTopic_new(topic_.c_str(), partitions, 1, errstr, sizeof errstr);
    if (!nt) kafka_die(std::string("new topic: ") + errstr);
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30'000);
    std::string problem;
    if (!ev) {
      problem = "no answer to CreateTopics within 30 s";
    } else if (rd_kafka_event_error(ev)) {
      problem = rd_kafka_event_error_string(ev);
    } else {
      size_t n = 0;
      const rd_kafka_topic_result_t** r =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      if (n == 1 && rd_kafka_topic_result_error(r[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_topic_result_error(r[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        problem = rd_kafka_topic_result_error_string(r[0]);
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    if (!problem.empty()) kafka_die("create topic " + topic_ + ": " + problem);
    // Wait until the metadata shows every partition with a leader.
    std::string err;
    std::unique_ptr<RdKafka::Topic> t(
        RdKafka::Topic::create(producer_.get(), topic_, nullptr, err));
    const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
    while (SteadyClock::now() < deadline) {
      RdKafka::Metadata* raw = nullptr;
      if (producer_->metadata(false, t.get(), &raw, 5000) == RdKafka::ERR_NO_ERROR) {
        std::unique_ptr<RdKafka::Metadata> md(raw);
        const auto* topics = md->topics();
        if (!topics->empty() && topics->at(0)->err() == RdKafka::ERR_NO_ERROR &&
            static_cast<int>(topics->at(0)->partitions()->size()) == partitions) {
          bool leaders = true;
          for (const auto* p : *topics->at(0)->partitions()) leaders = leaders && p->leader() >= 0;
          if (leaders) return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kafka_die("topic " + topic_ + " did not appear within 30 s");
  }

  std::string topic_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
};

// One message at a time: produce, then wait until the consumer has it.
// One hop of a saga (a command, or a reply) without libsaga.
Json kafka_round_trip_baseline(const std::string& brokers, const std::string& topic,
                               double seconds) {
  RawKafka k(brokers, topic, 6);
  std::vector<double> lat;
  const auto t0 = SteadyClock::now();
  const auto end = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                            std::chrono::duration<double>(seconds));
  const std::string pad(180, 'x');
  for (int i = 0; SteadyClock::now() < end; ++i) {
    const std::string payload = "ping-" + std::to_string(i) + "-" + pad;
    const auto a = SteadyClock::now();
    while (!k.produce(payload)) k.producer().poll(1);
    if (!k.consume_until(payload, a + std::chrono::seconds(30)))
      kafka_die("message " + std::to_string(i) + " did not come back within 30 s");
    lat.push_back(ms_since(a));
  }
  return {
      {"messages", lat.size()}, {"payload_bytes", 180 + 8}, {"latency_ms", latency_summary(lat)}};
}

// Pipelined: a producer thread sends as fast as librdkafka takes messages
// for `seconds` while this thread consumes them all.
Json kafka_pipelined_baseline(const std::string& brokers, const std::string& topic,
                              double seconds) {
  RawKafka k(brokers, topic, 6);
  std::atomic<long> produced{0};
  std::atomic<bool> producer_done{false};
  const std::string payload(188, 'p');
  const auto t0 = SteadyClock::now();
  std::thread producer([&] {
    const auto end = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                              std::chrono::duration<double>(seconds));
    while (SteadyClock::now() < end) {
      if (k.produce(payload)) {
        produced.fetch_add(1, std::memory_order_relaxed);
      } else {
        k.producer().poll(1);
      }
    }
    if (k.producer().flush(60'000) != RdKafka::ERR_NO_ERROR) kafka_die("flush timed out");
    producer_done = true;
  });
  long consumed = 0;
  auto last = t0;
  const auto deadline = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                                 std::chrono::duration<double>(seconds + 90));
  while (SteadyClock::now() < deadline && !(producer_done && consumed >= produced)) {
    if (auto m = k.consume(50)) {
      ++consumed;
      last = SteadyClock::now();
    }
  }
  producer.join();
  if (consumed < produced) kafka_die("pipelined: not every message came back");
  const double secs = std::chrono::duration<double>(last - t0).count();
  return {{"messages", consumed},
          {"payload_bytes", payload.size()},
          {"seconds", secs},
          {"messages_per_s", static_cast<double>(consumed) / secs}};
}

Json run_baselines(const Args& args) {
  const fs::path dir = fs::path(args.dir) / "baseline-rocksdb";
  const double s = args.baseline_seconds;
  std::cerr << "saga-bench: baselines (" << s << " s each)\n";
  Json b;
  b["rocksdb_synced_1_writer"] = rocksdb_baseline(dir, true, 1, s);
  b["rocksdb_synced_" + std::to_string(args.baseline_writers) + "_writers"] =
      rocksdb_baseline(dir, true, args.baseline_writers, s);
  b["rocksdb_unsynced_1_writer"] = rocksdb_baseline(dir, false, 1, std::min(s, 1.0));
  b["rocksdb_dir"] = args.dir;
  if (args.workload == "kafka") {
    std::mt19937_64 rng(std::random_device{}());
    const std::string tag = std::to_string(rng() % 1'000'000'000);
    b["kafka_round_trip"] = kafka_round_trip_baseline(args.brokers, "baseline-rt-" + tag, s);
    b["kafka_pipelined"] = kafka_pipelined_baseline(args.brokers, "baseline-pl-" + tag, s);
    b["kafka_settings"] =
        "acks=all, enable.idempotence=true, linger.ms=0, socket.nagle.disable=true, 6 partitions";
  }
  for (const auto& [name, v] : b.items()) {
    if (!v.is_object()) continue;
    std::cerr << "  " << name << ": ";
    if (v.contains("commits_per_s")) {
      std::cerr << static_cast<long>(v["commits_per_s"].get<double>()) << " commits/s, p50 "
                << v["commit_latency_ms"]["p50"].get<double>() << " ms";
    } else if (v.contains("messages_per_s")) {
      std::cerr << static_cast<long>(v["messages_per_s"].get<double>()) << " messages/s";
    } else {
      std::cerr << "p50 " << v["latency_ms"]["p50"].get<double>() << " ms, p99 "
                << v["latency_ms"]["p99"].get<double>() << " ms";
    }
    std::cerr << "\n";
  }
  return b;
}

// ------------------------------------------------------------------ run info

std::string shell_out(const std::string& command) {
  FILE* p = popen((command + " 2>/dev/null").c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  pclose(p);
  return out;
}

std::string trim(std::string s) {
  s.erase(s.find_last_not_of("\n\r\t ") + 1);
  s.erase(0, std::min(s.size(), s.find_first_not_of("\n\r\t ")));
  return s;
}

// The source tree's revision, "-dirty" when tracked files have changes
// (listed in `dirty_paths`; untracked files do not count). A binary built
// from an exported tree (git archive) has no repository to ask:
// SAGA_BENCH_REVISION then names the revision it was exported from.
Json git_info() {
  if (const char* r = std::getenv("SAGA_BENCH_REVISION"); r && *r) {
    return {{"revision", r}, {"source", "SAGA_BENCH_REVISION (exported tree)"}};
  }
  const std::string git = std::string("git -C '") + SAGA_SOURCE_DIR + "' ";
  std::string rev = trim(shell_out(git + "rev-parse --short HEAD"));
  if (rev.empty()) return {{"revision", "unknown"}};
  Json dirty = Json::array();
  std::istringstream st(shell_out(git + "status --porcelain --untracked-files=no"));
  for (std::string line; std::getline(st, line);) {
    if (line.size() > 3) dirty.push_back(line.substr(3));
  }
  if (!dirty.empty()) rev += "-dirty";
  return {{"revision", rev}, {"dirty_paths", dirty}};
}

// The value after "key:" on the first line of `file` that starts with `key`.
std::string proc_field(const std::string& file, const std::string& key) {
  std::ifstream f(file);
  for (std::string line; std::getline(f, line);) {
    if (line.rfind(key, 0) == 0) {
      const size_t c = line.find_first_of(":=");
      if (c != std::string::npos) return trim(line.substr(c + 1));
    }
  }
  return "";
}

Json load_average() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return nullptr;
  return {l[0], l[1], l[2]};
}

Json machine_info() {
  utsname u{};
  uname(&u);
  std::string os = proc_field("/etc/os-release", "PRETTY_NAME");
  os.erase(std::remove(os.begin(), os.end(), '"'), os.end());
  const std::string mem = proc_field("/proc/meminfo", "MemTotal");  // "16384 kB"
#ifdef __clang__
  const std::string compiler = "clang " __clang_version__;
#else
  const std::string compiler = "g++ " __VERSION__;
#endif
  return {{"nproc", sysconf(_SC_NPROCESSORS_ONLN)},
          {"cpu_model", proc_field("/proc/cpuinfo", "model name")},
          {"memory_bytes", mem.empty() ? 0 : std::stoull(mem) * 1024},
          {"os", os},
          {"kernel", u.release},
          {"arch", u.machine},
          {"compiler", compiler},
          {"build_type", SAGA_BUILD_TYPE},
#ifdef NDEBUG
          {"assertions", false},
#else
          {"assertions", true},
#endif
          {"rocksdb", std::to_string(ROCKSDB_MAJOR) + "." + std::to_string(ROCKSDB_MINOR) + "." +
                          std::to_string(ROCKSDB_PATCH)},
          // Debian's shared librocksdb (built with its assertions) or a
          // static one built from source with NDEBUG (scripts/rocksdb).
          {"rocksdb_library", SAGA_ROCKSDB_FROM_SOURCE ? "source, static, NDEBUG" : "Debian, shared"},
          {"librdkafka", RdKafka::version_str()},
          {"load_average_at_start", load_average()}};
}

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
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
  // The broker's PID (0 when unknown), read for its CPU time only.
  pid_t pid() const {
    std::ifstream f(dir_ / "broker.pid");
    long pid = 0;
    f >> pid;
    return static_cast<pid_t>(pid);
  }

 private:
  fs::path dir_;
  std::string bootstrap_;
};

// --targets: each speed target of the issues, judged from the points of the
// given runs (bench/run_all.sh's files). Only points without the changelog
// and replicas count. A target no point measures is "not measured".
int run_targets(const Args& args) {
  struct Found {
    std::optional<double> value;
    std::string file;
    bool saturated = false;  // an open-loop point's verdict
  };
  Found alone_p50, alone_p99, k32, p99_2500, unsat_5000, engine_best, engine_ratio;
  for (const std::string& path : args.targets) {
    std::ifstream in(path);
    Json run = Json::parse(in, nullptr, false);
    if (run.is_discarded() || !run.contains("points")) {
      std::cerr << "saga-bench: " << path << " is not a saga-bench result\n";
      return 2;
    }
    const std::string name = fs::path(path).filename().string();
    double baseline8 = 0;
    if (run.contains("baselines") && run["baselines"].contains("rocksdb_synced_8_writers"))
      baseline8 = run["baselines"]["rocksdb_synced_8_writers"].value("commits_per_s", 0.0);
    for (const Json& p : run["points"]) {
      if (p.value("changelog", false) || p.value("replicas", 0) > 0) continue;
      const std::string workload = p.value("workload", "");
      const bool closed = p.value("loop", "") == "closed";
      const double per_s = p.value("sagas_per_s", 0.0);
      const Json& lat = p["latency_ms"];
      if (workload == "kafka" && closed && p.value("inflight", 0) == 1) {
        alone_p50 = {lat.value("p50", 0.0), name};
        alone_p99 = {lat.value("p99", 0.0), name};
      } else if (workload == "kafka" && closed && p.value("inflight", 0) == 32) {
        k32 = {per_s, name};
      } else if (workload == "kafka" && !closed && p.value("offered_per_s", 0.0) == 2500) {
        p99_2500 = {lat.value("p99", 0.0), name};
      } else if (workload == "kafka" && !closed && p.value("offered_per_s", 0.0) == 5000) {
        unsat_5000 = {p.value("achieved_per_s", 0.0), name, p.value("saturated", true)};
      } else if (workload == "engine" && closed && p.value("sync", false)) {
        if (!engine_best.value || per_s > *engine_best.value) {
          engine_best = {per_s, name};
          if (baseline8 > 0) engine_ratio = {per_s / baseline8, name};
        }
      }
    }
  }
  struct Target {
    const char* what;
    const Found& found;
    std::function<bool(const Found&)> met;
    const char* unit;
  };
  const std::vector<Target> targets = {
      {"kafka, a saga alone: p50 <= 8 ms", alone_p50,
       [](const Found& f) { return *f.value <= 8; }, "ms"},
      {"kafka, a saga alone: p99 <= 20 ms", alone_p99,
       [](const Found& f) { return *f.value <= 20; }, "ms"},
      {"kafka, 32 sagas in flight: >= 1,500 sagas/s", k32,
       [](const Found& f) { return *f.value >= 1500; }, "sagas/s"},
      {"kafka, 2,500 sagas/s offered: p99 < 50 ms", p99_2500,
       [](const Found& f) { return *f.value < 50; }, "ms"},
      {"kafka, 5,000 sagas/s offered: not saturated", unsat_5000,
       [](const Found& f) { return !f.saturated; }, "sagas/s achieved"},
      {"engine, synced: >= 30,000 sagas/s", engine_best,
       [](const Found& f) { return *f.value >= 30000; }, "sagas/s"},
      {"engine, synced: >= 1.3x the run's 8-writer synced baseline", engine_ratio,
       [](const Found& f) { return *f.value >= 1.3; }, "x"},
  };
  Json out = Json::array();
  std::cout << "| target | measured | met? | run |\n|---|---|---|---|\n";
  for (const Target& t : targets) {
    Json j = {{"target", t.what}, {"unit", t.unit}, {"file", t.found.file}};
    if (t.found.value) {
      j["measured"] = *t.found.value;
      j["met"] = t.met(t.found);
    } else {
      j["measured"] = nullptr;
      j["met"] = nullptr;
    }
    char measured[64] = "not measured";
    if (t.found.value) {
      const double v = *t.found.value;
      std::snprintf(measured, sizeof measured, "%.*f %s", v >= 100 ? 0 : 2, v, t.unit);
    }
    std::cout << "| " << t.what << " | " << measured << " | "
              << (!t.found.value ? "—" : t.met(t.found) ? "**met**" : "not met") << " | "
              << t.found.file << " |\n";
    out.push_back(std::move(j));
  }
  if (!args.json.empty()) std::ofstream(args.json) << Json{{"targets", out}}.dump(2) << "\n";
  return 0;
}

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!args.participant.empty()) return run_participant(args);
  if (!args.targets.empty()) return run_targets(args);
  std::unique_ptr<OwnBroker> broker;
  if (args.workload == "kafka" && args.brokers.empty()) {
    broker = std::make_unique<OwnBroker>(fs::path(args.dir) / "broker");
    args.brokers = broker->bootstrap();
  }
  const std::string self = fs::canonical("/proc/self/exe").string();
  const auto started = std::chrono::system_clock::now();
  Json git = git_info();
  Json out = {
      {"tool", "saga-bench"},
      {"libsaga_revision", git["revision"]},
      {"git", git},
      {"date", utc_now()},
      {"date_epoch_s",
       std::chrono::duration_cast<std::chrono::seconds>(started.time_since_epoch()).count()},
      {"machine", machine_info()},
      {"settings",
       {{"workload", args.workload},
        {"sync", args.sync},
        {"shards", args.shards},
        {"timeline", args.timeline},
        {"threads", args.threads},
        {"participant_threads", args.participant_threads},
        {"changelog", args.changelog},
        {"replicas", args.replicas},
        {"failover", args.failover},
        {"standby", args.standby},
        {"session_ms", args.session_ms},
        {"fail_share", args.fail_share},
        {"open_loop_seconds", args.seconds},
        {"trace", args.trace},
        {"kafka_properties", args.kafka_properties},
        {"kafka_broker", args.workload != "kafka" ? "none"
                         : broker                 ? "started by saga-bench (scripts/kafka)"
                                                  : "given (--brokers)"}}},
      {"points", Json::array()}};
  if (args.baselines) out["baselines"] = run_baselines(args);
  const pid_t broker_pid = broker ? broker->pid() : static_cast<pid_t>(args.broker_pid);
  bool ok = true;
  for (const Point& pt : points_of(args)) {
    Json p = args.workload == "kafka" ? run_kafka_point(args, pt, self, broker_pid)
                                      : run_engine_point(args, pt);
    std::cerr << run_label(args.workload.c_str(), args) << " " << pt.name() << ": "
              << static_cast<long>(p["sagas_per_s"].get<double>()) << " sagas/s, "
              << static_cast<long>(p["transitions_per_s"].get<double>()) << " transitions/s, p50 "
              << p["latency_ms"]["p50"].get<double>() << " ms, p99 "
              << p["latency_ms"]["p99"].get<double>() << " ms"
              << (p.contains("failover")
                      ? ", failover " +
                            std::to_string(std::lround(p["failover"]["failover_ms"].get<double>())) +
                            " ms"
                      : "")
              << (p.value("saturated", false) ? "  SATURATED" : "")
              << (p["consistent"].get<bool>() ? "" : "  INCONSISTENT") << "\n";
    if (p.contains("breakdown")) {
      for (const Json& g : p["breakdown"]["gaps"]) {
        if (g["share"].get<double>() < 0.005) break;
        std::fprintf(stderr, "  %5.1f%%  p50 %8.0f us  p99 %8.0f us  %s\n",
                     100 * g["share"].get<double>(), g["p50_us"].get<double>(),
                     g["p99_us"].get<double>(), g["gap"].get<std::string>().c_str());
      }
    }
    ok = ok && p["consistent"].get<bool>();
    out["points"].push_back(std::move(p));
  }
  out["machine"]["load_average_at_end"] = load_average();
  const std::string text = out.dump(2);
  if (args.json.empty()) {
    std::cout << text << "\n";
  } else {
    std::ofstream(args.json) << text << "\n";
  }
  if (!ok) std::cerr << "saga-bench: FAILED: some sagas ended inconsistent\n";
  return ok ? 0 : 1;
}
