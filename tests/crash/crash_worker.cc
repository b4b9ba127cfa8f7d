// The process the crash test kills. It hosts the orchestrator and the
// inventory and payment participants (each with its own synced RocksDB) over
// the in-memory transport, and starts the sagas c-0 .. c-(N-1) that do not
// exist yet, at a steady pace, then waits for all of them to finish.
//
//   crash_worker run   DIR N   exits 0 once every saga is terminal
//   crash_worker check DIR N   finishes the sagas, checks the invariants, exits 0 if consistent
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"
#include "support/test_seed.h"

namespace {

using namespace saga;
constexpr int64_t kCapacity = 1'000'000;

[[noreturn]] void die(const std::string& what, const Status& s) {
  std::cerr << "crash_worker: " << what << ": " << s.to_string() << std::endl;
  std::exit(2);
}

std::string saga_id(int k) { return "c-" + std::to_string(k); }

bool all_terminal(const Orchestrator& o, int n, int* done_out) {
  int done = 0;
  for (int k = 0; k < n; ++k) {
    auto v = o.get(saga_id(k));
    if (v.ok() && is_terminal(v->state)) ++done;
  }
  if (done_out) *done_out = done;
  return done == n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: crash_worker run|check DIR N\n";
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  const int n = std::stoi(argv[3]);
  spdlog::set_level(spdlog::level::warn);

  auto clock = std::make_shared<SystemClock>();
  const uint64_t seed = testing::test_seed("crash_worker " + mode);
  auto bus = MemoryBus::create(clock, seed);
  testing::BookingFaults faults;
  faults.decline = 0.2;
  faults.confirm_failure = 0.1;
  auto rng = std::make_shared<std::mt19937_64>(seed ^ 0x5eed);
  auto chance = [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };

  // Short timeouts: messages in flight die with the process, and timeouts
  // are what re-sends them.
  Options o;
  o.data_dir = dir + "/orchestrator";
  o.clock = clock;
  o.breaker.enabled = false;
  auto orch = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                 {testing::booking_definition(Duration{300}, 20)});
  if (!orch.ok()) die("open orchestrator", orch.status());

  auto open_participant = [&](const std::string& name) {
    ParticipantOptions po;
    po.name = name;
    po.data_dir = dir + "/" + name;
    po.clock = clock;
    auto p = Participant::open(po, std::shared_ptr<Transport>(bus->connect(name)));
    if (!p.ok()) die("open " + name, p.status());
    return std::move(*p);
  };
  auto inventory = open_participant("inventory");
  auto payment = open_participant("payment");
  if (Status s = testing::register_inventory(*inventory, kCapacity, faults, chance); !s.ok())
    die("inventory", s);
  if (Status s = testing::register_payment(*payment, faults, chance); !s.ok()) die("payment", s);

  (*orch)->start_background();
  inventory->start_background();
  payment->start_background();

  if (mode == "run") {
    for (int k = 0; k < n; ++k) {
      StartOptions so;
      so.id = saga_id(k);
      auto r = (*orch)->start("booking", Json{{"qty", 1}, {"amount", 100 + k % 900}}, so);
      if (!r.ok() && r.status().code() != StatusCode::kAlreadyExists)
        die("start " + so.id, r.status());
      if (r.ok() && k % 5 == 0) {
        // A steady pace, so that kills land while sagas are being started,
        // executed and compensated.
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
      }
      if (k % 500 == 0) std::cout << "started " << k << std::endl;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  int done = 0;
  while (!all_terminal(**orch, n, &done)) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "crash_worker: only " << done << " of " << n << " sagas finished in time\n";
      return 3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling with a deadline
  }
  (*orch)->stop();
  inventory->stop();
  payment->stop();
  std::cout << "all " << n << " sagas terminal" << std::endl;
  if (mode != "check") return 0;

  std::map<std::string, SagaView> views;
  std::map<SagaState, int> outcomes;
  for (int k = 0; k < n; ++k) {
    auto v = (*orch)->get(saga_id(k));
    if (!v.ok()) die("get", v.status());
    ++outcomes[v->state];
    views.emplace(saga_id(k), std::move(*v));
  }
  const auto bad = testing::check_booking_invariants(views, *inventory, *payment, kCapacity);
  for (const std::string& b : bad) std::cout << "VIOLATION " << b << "\n";
  std::cout << "completed " << outcomes[SagaState::kCompleted] << " compensated "
            << outcomes[SagaState::kCompensated] << " violations " << bad.size() << std::endl;
  return bad.empty() && outcomes[SagaState::kCompleted] > 0 && outcomes[SagaState::kCompensated] > 0
             ? 0
             : 1;
}
