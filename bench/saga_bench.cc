// saga-bench: throughput and latency of the booking saga (reserve -> pay ->
// confirm stock) on libsaga. Release builds only.
//
// Workloads (--workload):
//   engine   orchestrator + inventory + payment participants in this process
//            over the in-memory transport, each with its own RocksDB store,
//            all driven from one thread: measures the engine's own cost
//            (state machine + durability), no network.
//
// Closed loop: --inflight K sagas are kept in flight until --sagas have
// finished. --sync on|off sets RocksDB WAL sync for every store.
// --fail-share F makes inventory refuse that share of confirmations, so those
// sagas compensate (refund, release). Writes one JSON document (--json FILE,
// default stdout). Every saga must end terminal and consistent, or the run
// reports failure instead of a number.
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"

namespace {

using namespace saga;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct Args {
  std::string workload = "engine";
  bool sync = true;
  std::vector<int> inflight = {1, 8, 32, 128, 512};
  int sagas = 20'000;
  double fail_share = 0.1;
  std::string json;
  std::string dir = (fs::temp_directory_path() / "saga-bench").string();
};

[[noreturn]] void usage(const std::string& err) {
  std::cerr << "saga-bench: " << err << "\n"
            << "usage: saga-bench [--workload engine] [--sync on|off] [--inflight 1,8,32,...]\n"
            << "                  [--sagas N] [--fail-share F] [--json FILE] [--dir DIR]\n";
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
        if (a.workload != "engine") usage("unknown workload '" + a.workload + "' (engine)");
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

// One measured point: a fresh set of stores, `inflight` sagas kept in flight.
Json run_engine_point(const Args& args, int inflight) {
  const fs::path dir = fs::path(args.dir) / ("engine-" + std::to_string(inflight));
  fs::remove_all(dir);
  auto clock = std::make_shared<SystemClock>();
  auto bus = MemoryBus::create(clock, 42);

  std::map<std::string, SteadyClock::time_point> started_at;
  std::vector<double> latencies_ms;
  std::map<std::string, SagaView> finished;
  latencies_ms.reserve(static_cast<size_t>(args.sagas));

  Options o;
  o.data_dir = (dir / "orchestrator").string();
  o.sync = args.sync;
  o.clock = clock;
  o.breaker.enabled = false;
  o.on_settled = [&](const SagaView& v) {
    auto it = started_at.find(v.id);
    if (it != started_at.end()) {
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(SteadyClock::now() - it->second).count());
      started_at.erase(it);
    }
    finished.emplace(v.id, v);
  };
  auto orch = must(Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                      {testing::booking_definition(Duration{5000}, 5)}),
                   "open orchestrator");
  auto open_participant = [&](const std::string& name) {
    ParticipantOptions po;
    po.name = name;
    po.data_dir = (dir / name).string();
    po.sync = args.sync;
    po.clock = clock;
    return must(Participant::open(po, std::shared_ptr<Transport>(bus->connect(name))), "open " + name);
  };
  auto inventory = open_participant("inventory");
  auto payment = open_participant("payment");
  testing::BookingFaults faults;
  faults.confirm_failure = args.fail_share;
  auto rng = std::make_shared<std::mt19937_64>(7);
  auto chance = [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
  constexpr int64_t kCapacity = 1'000'000'000;
  if (!testing::register_inventory(*inventory, kCapacity, faults, chance).ok() ||
      !testing::register_payment(*payment, faults, chance).ok()) {
    std::cerr << "saga-bench: cannot register handlers\n";
    std::exit(1);
  }

  int next = 0;
  const double cpu0 = cpu_seconds();
  const auto t0 = SteadyClock::now();
  auto last_progress = t0;
  while (static_cast<int>(finished.size()) < args.sagas) {
    while (next < args.sagas && static_cast<int>(started_at.size()) < inflight) {
      const std::string id = "b" + std::to_string(next);
      started_at.emplace(id, SteadyClock::now());
      StartOptions so;
      so.id = id;
      orch->start_async("booking", Json{{"qty", 1}, {"amount", 100 + next % 900}}, so,
                        [id](StatusOr<std::string> r) {
                          if (!r.ok()) {
                            std::cerr << "saga-bench: start " << id << ": " << r.status() << "\n";
                            std::exit(1);
                          }
                        });
      ++next;
    }
    orch->run_once();
    inventory->run_once();
    payment->run_once();
    const auto now = SteadyClock::now();
    if (now - last_progress > std::chrono::seconds(2)) {
      std::cerr << "  inflight " << inflight << ": " << finished.size() << "/" << args.sagas << " sagas\r" << std::flush;
      last_progress = now;
    }
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  const EngineStats es = orch->stats();
  const ParticipantStats is = inventory->stats(), ps = payment->stats();

  // A benchmark that loses sagas reports failure, not a number.
  const auto bad = testing::check_booking_invariants(finished, *inventory, *payment, kCapacity);
  int compensated = 0;
  for (const auto& [id, v] : finished) compensated += v.state == SagaState::kCompensated;
  uint64_t store_bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) store_bytes += e.file_size();
  }
  orch.reset();
  inventory.reset();
  payment.reset();
  fs::remove_all(dir);

  const double n = static_cast<double>(args.sagas);
  Json point = {{"workload", "engine"},
                {"loop", "closed"},
                {"inflight", inflight},
                {"sync", args.sync},
                {"sagas", args.sagas},
                {"seconds", secs},
                {"sagas_per_s", n / secs},
                {"transitions_per_s", static_cast<double>(es.transitions) / secs},
                {"orchestrator_writes", es.writes},
                {"transitions_per_write", es.writes ? static_cast<double>(es.transitions) / static_cast<double>(es.writes) : 0},
                {"participant_writes", is.writes + ps.writes},
                {"orchestrator_bytes_per_saga", static_cast<double>(es.bytes_written) / n},
                {"store_bytes_on_disk", store_bytes},
                {"cpu_seconds_per_saga", cpu / n},
                {"compensated_share", compensated / n},
                {"latency_ms",
                 {{"p50", percentile(latencies_ms, 0.50)},
                  {"p90", percentile(latencies_ms, 0.90)},
                  {"p99", percentile(latencies_ms, 0.99)},
                  {"p999", percentile(latencies_ms, 0.999)},
                  {"max", latencies_ms.empty() ? 0 : *std::max_element(latencies_ms.begin(), latencies_ms.end())}}},
                {"consistent", bad.empty()},
                {"violations", bad}};
  return point;
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

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  utsname u{};
  uname(&u);
  Json out = {{"tool", "saga-bench"},
              {"libsaga_revision", git_revision()},
              {"date", std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count()},
              {"machine", {{"cores", std::thread::hardware_concurrency()}, {"kernel", u.release}, {"arch", u.machine}}},
              {"points", Json::array()}};
  bool ok = true;
  for (int k : args.inflight) {
    Json p = run_engine_point(args, k);
    std::cerr << "engine sync=" << (args.sync ? "on " : "off") << " inflight " << k << ": "
              << static_cast<long>(p["sagas_per_s"].get<double>()) << " sagas/s, "
              << static_cast<long>(p["transitions_per_s"].get<double>()) << " transitions/s, p50 "
              << p["latency_ms"]["p50"].get<double>() << " ms, p99 " << p["latency_ms"]["p99"].get<double>()
              << " ms" << (p["consistent"].get<bool>() ? "" : "  INCONSISTENT") << "\n";
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
