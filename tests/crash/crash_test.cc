// Kills the real crash_worker process with SIGKILL at random moments while it
// runs 2,000 booking sagas, restarts it each time, then checks that every
// saga ended terminal and that money and stock are consistent.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;

pid_t spawn(const std::string& mode, const std::string& dir, int n, const std::string& log) {
  std::fflush(nullptr);  // or the child would flush our buffered output too
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "a", stdout);
    (void)f;
    dup2(fileno(stdout), fileno(stderr));
    const std::string count = std::to_string(n);
    execl(SAGA_CRASH_WORKER, SAGA_CRASH_WORKER, mode.c_str(), dir.c_str(), count.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// Waits for `pid` up to `limit`; returns its exit code, or -1 on timeout (then kills it).
int wait_exit(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling with a deadline
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

TEST_CASE("sagas survive twenty SIGKILLs of the orchestrator process") {
  constexpr int kSagas = 2000;
  constexpr int kKills = 20;
  const fs::path dir = fs::temp_directory_path() / ("saga-crash-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string log = (dir / "worker.log").string();
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(150, 700);

  int kills = 0;
  while (kills < kKills) {
    const pid_t pid = spawn("run", dir.string(), kSagas, log);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // a random kill moment, not a wait
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      // It finished before the kill: the run is over too early to prove anything.
      FAIL("worker exited before kill ", kills + 1, " with status ", status, "; see ", log);
    }
    REQUIRE(kill(pid, SIGKILL) == 0);
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    ++kills;
  }
  MESSAGE("killed the worker ", kills, " times");

  const int finish = wait_exit(spawn("run", dir.string(), kSagas, log), std::chrono::seconds(240));
  REQUIRE_MESSAGE(finish == 0, "final run exited ", finish, "; see ", log);
  const std::string check_log = (dir / "check.log").string();
  const int check = wait_exit(spawn("check", dir.string(), kSagas, check_log), std::chrono::seconds(240));
  std::string summary;
  {
    std::ifstream in(check_log);
    std::string line;
    while (std::getline(in, line)) summary += line + "\n";
  }
  MESSAGE(summary);
  REQUIRE_MESSAGE(check == 0, "invariants violated or sagas unfinished:\n", summary);
  fs::remove_all(dir);
}

}  // namespace
