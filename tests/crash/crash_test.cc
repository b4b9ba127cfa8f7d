// Kills the real crash_worker process with SIGKILL at random moments while it
// runs 2,000 booking sagas, restarts it each time, then checks that every
// saga ended terminal and that money and stock are consistent.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "support/process.h"
#include "support/test_seed.h"

namespace {

namespace fs = std::filesystem;
using saga::testing::Process;
using namespace std::chrono_literals;

TEST_CASE("sagas survive twenty SIGKILLs of the orchestrator process") {
  constexpr int kSagas = 2000;
  constexpr int kKills = 20;
  const fs::path dir = fs::temp_directory_path() / ("saga-crash-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string log = (dir / "worker.log").string();
  const std::vector<std::string> run = {SAGA_CRASH_WORKER, "run", dir.string(),
                                        std::to_string(kSagas)};
  std::mt19937_64 rng(saga::testing::test_seed("crash.orchestrator_sigkill"));
  std::uniform_int_distribution<int> delay_ms(150, 700);
  const auto seeded = [&rng] {
    return std::map<std::string, std::string>{
        {saga::testing::kTestSeedVariable, saga::testing::child_seed(rng)}};
  };

  for (int kill = 1; kill <= kKills; ++kill) {
    Process worker(run, log, seeded());
    std::this_thread::sleep_for(
        std::chrono::milliseconds(delay_ms(rng)));  // a random kill moment, not a wait
    REQUIRE_MESSAGE(worker.running(), "the worker exited before kill ", kill,
                    ", too early to prove anything; see ", log);
    CHECK(worker.kill_now() == 128 + SIGKILL);
  }
  MESSAGE("killed the worker ", kKills, " times");

  Process last(run, log, seeded());
  REQUIRE_MESSAGE(last.wait(240s) == 0, "final run failed; see ", log);
  const std::string check_log = (dir / "check.log").string();
  Process check({SAGA_CRASH_WORKER, "check", dir.string(), std::to_string(kSagas)}, check_log);
  const int code = check.wait(240s);
  const std::string summary = saga::testing::read_file(check_log);
  MESSAGE(summary);
  REQUIRE_MESSAGE(code == 0, "invariants violated or sagas unfinished:\n", summary);
  fs::remove_all(dir);
}

}  // namespace
