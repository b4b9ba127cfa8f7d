// scripts/run itself, as a user starts it (--no-build, on the binaries of this
// build, against the test broker): its supervisor restarts a service killed
// with SIGKILL, and --replicas 2 starts two of every backend behind one gateway
// that keeps answering while a replica is down. Each run has its own run
// directory, ports and topic prefix; it is stopped with SIGTERM, as Ctrl-C
// would, and the test checks that it stopped everything it started.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "e2e/e2e_support.h"

namespace saga::testing::e2e {
namespace {

const char* const kServices[] = {"inventory", "payment", "reservation", "mypage", "gateway"};

// Whether nothing listens on, or holds, 127.0.0.1:`port` now.
bool port_free(int port) {
  if (port < 1 || port > 65535) return false;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Whether a connection to 127.0.0.1:`port` is refused now.
bool refused(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool no =
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno == ECONNREFUSED;
  ::close(fd);
  return no;
}

bool pid_alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// One `scripts/run --no-build [args]` in the foreground, as a child process.
class RunScript {
 public:
  explicit RunScript(int replicas) : replicas_(replicas) {
    pick_ports();
    const std::string prefix = unique_stack_prefix();
    std::map<std::string, std::string> env = {
        {"SAGA_RUN_DIR", dir_.path().string()},
        {"SAGA_BUILD_DIR", SAGA_RUN_BUILD_DIR},
        {"KAFKA_BROKERS", kafka_bootstrap()},
        {"KAFKA_TOPIC_PREFIX", prefix},
        {"EVENTS_TOPIC", prefix + "reserveplace"},
        // A killed member leaves its group after 6 s, not the broker's 45 s.
        {"KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000"},
        {"KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "1000"},
        {"LOG_LEVEL", "info"},
    };
    for (const char* name : kServices) {
      std::string var = "SAGA_PORT_";
      for (const char* c = name; *c; ++c) var += static_cast<char>(std::toupper(*c));
      env[var] = std::to_string(base_.at(name));
    }
    std::vector<std::string> argv = {SAGA_RUN_SCRIPT, "--no-build"};
    if (replicas_ > 1) argv.insert(argv.end(), {"--replicas", std::to_string(replicas_)});
    process_ = std::make_unique<Process>(argv, log_path(), env);
  }
  ~RunScript() {
    stop();
    // Should the script have failed to stop a service, stop it here, by the
    // pid it recorded, so that no test leaves a process behind.
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_.path() / "pids", ec)) {
      const std::string text = read_file(entry.path().string());
      const pid_t pid = static_cast<pid_t>(std::atol(text.c_str()));
      if (pid_alive(pid)) ::kill(pid, SIGKILL);
    }
  }
  RunScript(const RunScript&) = delete;
  RunScript& operator=(const RunScript&) = delete;

  // Waits until the script says every service is ready; fails with its log
  // when it exits first or takes longer than `limit`.
  void wait_ready(std::chrono::milliseconds limit = 120s) {
    const bool ready = e2e::eventually(
        [&] { return !process_->running() || log().find("run: ready.") != std::string::npos; },
        limit);
    REQUIRE_MESSAGE(process_->running(), "scripts/run exited:\n" << tail_of(log_path(), 60));
    REQUIRE_MESSAGE(ready, "scripts/run not ready in time:\n" << tail_of(log_path(), 60));
  }

  // SIGTERM (as Ctrl-C), then waits; returns the script's exit code.
  int stop() { return process_->terminate(std::chrono::seconds(60)); }

  // The pid in the instance's pid file (0 when there is none).
  pid_t pid_of(const std::string& instance) const {
    return static_cast<pid_t>(std::atol(read_file(pid_file(instance)).c_str()));
  }
  std::string pid_file(const std::string& instance) const {
    return (dir_.path() / "pids" / (instance + ".pid")).string();
  }
  // The port of replica `i` of `service`.
  int port(const std::string& service, int i = 0) const { return base_.at(service) + 100 * i; }
  std::string log_path() const { return (dir_.path() / "run.log").string(); }
  std::string log() const { return read_file(log_path()); }
  std::string service_log(const std::string& instance) const {
    return read_file((dir_.path() / "logs" / (instance + ".log")).string());
  }

  // A client of the gateway acting as `sub` with `roles` (a development token).
  std::unique_ptr<HttpClient> gateway_as(const std::string& sub,
                                         const std::vector<std::string>& roles) {
    HttpClient anonymous("127.0.0.1", static_cast<uint16_t>(port("gateway")));
    auto r = anonymous.post_json("/auth/dev-token", {{"sub", sub}, {"roles", roles}});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    REQUIRE_MESSAGE(r->status == 200, r->status << " " << r->body);
    service::ClientOptions o;
    o.default_headers.emplace_back("Authorization",
                                   "Bearer " + body_of(*r)["token"].get<std::string>());
    return std::make_unique<HttpClient>("127.0.0.1", static_cast<uint16_t>(port("gateway")), o);
  }

 private:
  // Base ports such that every replica's port is free and none collide.
  void pick_ports() {
    for (int attempt = 0; attempt < 100; ++attempt) {
      const std::vector<uint16_t> ports = pick_free_ports(std::size(kServices));
      std::map<std::string, int> base;
      std::vector<int> all;
      bool ok = true;
      for (size_t s = 0; s < std::size(kServices) && ok; ++s) {
        base[kServices[s]] = ports[s];
        const int count = std::string(kServices[s]) == "gateway" ? 1 : replicas_;
        for (int i = 0; i < count && ok; ++i) {
          const int p = ports[s] + 100 * i;
          ok = (i == 0 || port_free(p)) && std::find(all.begin(), all.end(), p) == all.end();
          all.push_back(p);
        }
      }
      if (ok) {
        base_ = std::move(base);
        return;
      }
    }
    FAIL("no free ports for the replicas");
  }

  const int replicas_;
  TempDir dir_{"saga-e2e-run"};
  std::map<std::string, int> base_;
  std::unique_ptr<Process> process_;
};

// Whether `gw` answers GET `target` with 200.
bool answers(HttpClient& gw, const std::string& target) {
  auto r = gw.get(target);
  return r.ok() && r->status == 200;
}

}  // namespace

TEST_CASE("scripts/run restarts a service killed with SIGKILL, and the gateway serves it again") {
  RunScript run(1);
  run.wait_ready();
  auto owner = run.gateway_as("owner-1", {"owner"});
  set_stock(*owner, "1", 1);
  REQUIRE(answers(*owner, "/places/1"));

  const pid_t killed = run.pid_of("inventory");
  REQUIRE(pid_alive(killed));
  REQUIRE(::kill(killed, SIGKILL) == 0);

  // It comes back with a new pid in its pid file, and the gateway reaches it.
  pid_t restarted = 0;
  const bool back = e2e::eventually(
      [&] {
        restarted = run.pid_of("inventory");
        return restarted != 0 && restarted != killed && pid_alive(restarted) &&
               answers(*owner, "/places/1");
      },
      30s);
  REQUIRE_MESSAGE(back, "inventory did not come back:\n" << tail_of(run.log_path(), 40));
  CHECK(!pid_alive(killed));
  const std::string log = run.log();
  CHECK(log.find("run: inventory (pid " + std::to_string(killed) +
                 ") exited with code 137; restarting in 1 s (restart 1)") != std::string::npos);
  CHECK(log.find("run: restarted inventory (pid " + std::to_string(restarted)) !=
        std::string::npos);
  CHECK(wait_for_text(run.log_path(), "run: inventory ready again", 30s));
  // The place it had is still there (same data directory), and its log was appended to.
  CHECK(answers(*owner, "/places/1"));
  CHECK(run.service_log("inventory").find("restarting saga-inventory") != std::string::npos);

  // Ctrl-C (here SIGTERM) still stops everything, the gateway first.
  CHECK(run.stop() == 143);
  const std::string stopped = run.log();
  const size_t gateway_at = stopped.find("run: stopping gateway");
  const size_t inventory_at =
      stopped.find("run: stopping inventory (pid " + std::to_string(restarted) + ")");
  CHECK(gateway_at != std::string::npos);
  CHECK(inventory_at != std::string::npos);
  CHECK(gateway_at < inventory_at);
  CHECK(!pid_alive(restarted));
  CHECK(!std::filesystem::exists(run.pid_file("inventory")));
}

TEST_CASE("scripts/run --replicas 2: every replica ready, and mypage served while one is down") {
  RunScript run(2);
  run.wait_ready();
  std::vector<pid_t> pids;
  for (const char* service : kServices) {
    const int count = std::string(service) == "gateway" ? 1 : 2;
    for (int i = 0; i < count; ++i) {
      const std::string instance =
          i == 0 ? service : std::string(service) + "-" + std::to_string(i);
      CAPTURE(instance);
      const pid_t pid = run.pid_of(instance);
      CHECK(pid_alive(pid));
      pids.push_back(pid);
      CHECK(run.log().find("run: " + instance + " ready on port " +
                           std::to_string(run.port(service, i))) != std::string::npos);
      HttpClient direct("127.0.0.1", static_cast<uint16_t>(run.port(service, i)));
      CHECK(answers(direct, "/readyz"));
    }
  }

  auto guest = run.gateway_as("u-1", {"guest"});
  REQUIRE(answers(*guest, "/mypages"));
  // Each mypage replica in turn is killed; the gateway skips it and the other
  // answers every request, until the supervisor has it back.
  for (const std::string instance : {"mypage-1", "mypage"}) {
    CAPTURE(instance);
    const int port = run.port("mypage", instance == "mypage" ? 0 : 1);
    const pid_t killed = run.pid_of(instance);
    REQUIRE(::kill(killed, SIGKILL) == 0);
    REQUIRE(e2e::eventually([&] { return refused(port); }, 10s));
    for (int i = 0; i < 4; ++i) CHECK(answers(*guest, "/mypages"));
    CHECK(wait_for_text(
        run.log_path(),
        "run: " + instance + " (pid " + std::to_string(killed) + ") exited with code 137", 10s));
    CHECK(wait_for_text(run.log_path(), "run: " + instance + " ready again", 30s));
  }
  const std::string gateway_log = run.service_log("gateway");
  CHECK(gateway_log.find("upstream mypage: cannot connect to 127.0.0.1:" +
                         std::to_string(run.port("mypage", 1))) != std::string::npos);
  CHECK(gateway_log.find("upstream mypage: cannot connect to 127.0.0.1:" +
                         std::to_string(run.port("mypage", 0))) != std::string::npos);

  CHECK(run.stop() == 143);
  for (const char* service : kServices) {
    const int count = std::string(service) == "gateway" ? 1 : 2;
    for (int i = 0; i < count; ++i) {
      const std::string instance =
          i == 0 ? service : std::string(service) + "-" + std::to_string(i);
      CAPTURE(instance);
      CHECK(!pid_alive(run.pid_of(instance)));
      CHECK(!std::filesystem::exists(run.pid_file(instance)));
    }
  }
}

}  // namespace saga::testing::e2e
