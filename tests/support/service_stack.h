// Test support for end-to-end tests: the reference services as real processes
// (ServiceStack) over the test broker, and a reader of their domain events
// (EventTap). Header-only; POSIX only; link saga::service_common.
//
//   ServiceStack stack;                    // binaries from SAGA_E2E_BIN_<NAME>
//   stack.start();                         // all, each ready (GET /readyz 200)
//   EventTap tap(stack);                   // the stack's events topic, from the start
//   auto gw = stack.gateway_as("u1", {"guest"});   // a dev token from the gateway
//   auto admin = stack.admin_gateway();            // reads everyone's data (checks)
//   ...
//   stack.restart("reservation");          // same port, same data
//
// Each stack has a unique Kafka topic prefix, events topic and consumer groups,
// so stacks sharing one broker never see each other's messages.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/service/http_client.h"
#include "support/kafka_test_env.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace saga::testing {

/// The five reference services in start order (the gateway last).
inline const std::vector<std::string>& all_services() {
  static const std::vector<std::string> names = {"inventory", "payment", "reservation", "mypage",
                                                 "gateway"};
  return names;
}

/// Service name -> executable, from the SAGA_E2E_BIN_<NAME> compile definitions
/// (tests/e2e/CMakeLists.txt sets them with $<TARGET_FILE:saga-<name>>).
inline std::map<std::string, std::string> default_service_binaries() {
  std::map<std::string, std::string> b;
#ifdef SAGA_E2E_BIN_INVENTORY
  b["inventory"] = SAGA_E2E_BIN_INVENTORY;
#endif
#ifdef SAGA_E2E_BIN_PAYMENT
  b["payment"] = SAGA_E2E_BIN_PAYMENT;
#endif
#ifdef SAGA_E2E_BIN_RESERVATION
  b["reservation"] = SAGA_E2E_BIN_RESERVATION;
#endif
#ifdef SAGA_E2E_BIN_MYPAGE
  b["mypage"] = SAGA_E2E_BIN_MYPAGE;
#endif
#ifdef SAGA_E2E_BIN_GATEWAY
  b["gateway"] = SAGA_E2E_BIN_GATEWAY;
#endif
  return b;
}

/// `n` distinct TCP ports free on 127.0.0.1 right now: each bound to port 0,
/// read back, and closed once all are known.
inline std::vector<uint16_t> pick_free_ports(size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (size_t i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      break;
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  if (ports.size() != n) throw std::runtime_error("could not pick free ports on 127.0.0.1");
  return ports;
}

/// A prefix unique to this process and call, e.g. "e2e-123456789-4.".
inline std::string unique_stack_prefix() {
  static std::atomic<int> counter{0};
  static const uint64_t seed = std::random_device{}() ^ (uint64_t(::getpid()) << 20);
  return "e2e-" + std::to_string(seed % 1'000'000'000) + "-" + std::to_string(++counter) + ".";
}

/// The last `lines` lines of a file.
inline std::string tail_of(const std::string& path, size_t lines = 40) {
  const std::string all = read_file(path);
  size_t pos = all.size();
  if (pos > 0 && all[pos - 1] == '\n') --pos;  // the last line's own newline
  for (size_t n = 0; pos > 0; --pos) {
    if (all[pos - 1] == '\n' && ++n == lines) break;
  }
  return all.substr(pos);
}

/// The reference services as child processes against the test broker. The
/// gateway runs with AUTH_DEV_TOKENS=1 and an HS256 secret of its own per
/// stack (so tokens survive its restarts); token() gets one from POST
/// /auth/dev-token. Not thread-safe.
class ServiceStack {
 public:
  struct Options {
    /// Services to run, in start order. Default all five.
    std::vector<std::string> services = all_services();
    /// Name -> executable. Default default_service_binaries().
    std::map<std::string, std::string> binaries = default_service_binaries();
    /// Kafka bootstrap. Default "" = kafka_bootstrap() (the CTest fixture's broker).
    std::string brokers;
    /// How long start() and restart() wait for each GET /readyz 200.
    std::chrono::milliseconds ready_timeout{60'000};
    /// LOG_LEVEL of the services.
    std::string log_level = "info";
    /// Processes per service (default 1). With more, the instances of service
    /// S are S, S-1, S-2, ... (each its own port, data directory and log);
    /// those of reservation, inventory and payment share the service's shards
    /// (SAGA_REPLICAS, SAGA_CHANGELOG, ADVERTISED_URL), each of mypage reads
    /// every event in a group of its own, and the gateway lists them all.
    std::map<std::string, int> replicas;
    /// Instances start() leaves out; the test starts them with start(name)
    /// (scaling out while work flows). The gateway lists them from the start.
    std::set<std::string> later;
    /// Environment every service gets (e.g. KAFKA_REPLICATION_FACTOR); the
    /// stack's own variables win.
    std::map<std::string, std::string> env;
  };

  ServiceStack() : ServiceStack(Options{}) {}
  explicit ServiceStack(Options options)
      : options_(std::move(options)), prefix_(unique_stack_prefix()) {
    if (options_.brokers.empty()) options_.brokers = kafka_bootstrap();
    for (const std::string& name : options_.services) {
      if (!options_.binaries.count(name) || options_.binaries[name].empty())
        throw std::runtime_error("ServiceStack: no binary for service '" + name + "'");
      const int n = std::max(1, options_.replicas.count(name) ? options_.replicas.at(name) : 1);
      for (int i = 0; i < n; ++i) {
        const std::string instance = i == 0 ? name : name + "-" + std::to_string(i);
        order_.push_back(instance);
        services_[instance].base = name;
        services_[instance].replicated = n > 1;
        std::filesystem::create_directories(dir_.path() / "data" / instance);
      }
    }
    const std::vector<uint16_t> ports = pick_free_ports(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) services_[order_[i]].port = ports[i];
    std::filesystem::create_directories(dir_.path() / "logs");
  }
  ~ServiceStack() {
    // The gateway first, then the others in reverse start order.
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      Service& s = services_[*it];
      if (s.process && s.process->running()) s.process->terminate(std::chrono::seconds(15));
    }
  }
  ServiceStack(const ServiceStack&) = delete;
  ServiceStack& operator=(const ServiceStack&) = delete;

  /// Starts every service (every instance but Options::later) in order, each
  /// one ready before the next starts. Throws (with the log tail) when one exits or is not
  /// ready in time.
  /// With replicas, start() also waits until each replicated engine's group
  /// has settled: every replica owns shards and together they own all of
  /// them (a replica is ready as soon as it knows every shard's owner, while
  /// the group may still be moving shards to it).
  void start() {
    for (const std::string& name : order_)
      if (!options_.later.count(name)) start(name);
    for (const char* engine : {"reservation", "inventory", "payment"}) {
      std::vector<std::string> running;
      for (const std::string& i : instances(engine))
        if (!options_.later.count(i)) running.push_back(i);
      if (running.size() > 1) wait_settled(engine, running);
    }
  }

  /// The instances of service `name`: `name` itself, then name-1, name-2, ...
  std::vector<std::string> instances(const std::string& name) const {
    std::vector<std::string> out;
    for (const std::string& i : order_)
      if (services_.at(i).base == name) out.push_back(i);
    return out;
  }

  /// Starts one service instance (not running) and waits until it is ready.
  void start(const std::string& name) {
    Service& s = at(name);
    if (s.process && s.process->running())
      throw std::logic_error("ServiceStack: " + name + " is already running");
    std::map<std::string, std::string> env = base_env(name);
    for (const auto& [k, v] : s.extra_env) env[k] = v;
    {
      std::ofstream(log_path(name), std::ios::app)
          << "=== ServiceStack: starting " << name << " on port " << s.port << "\n";
    }
    s.process = std::make_unique<Process>(std::vector<std::string>{options_.binaries.at(s.base)},
                                          log_path(name), env);
    wait_ready(name);
  }

  /// SIGKILL, and reap.
  void kill(const std::string& name) {
    Service& s = at(name);
    if (s.process) s.process->kill_now();
  }

  /// SIGTERM, then waits up to `limit` (SIGKILL after that). Returns the exit
  /// code (0 for a clean stop; -1 when it had to be killed).
  int stop(const std::string& name,
           std::chrono::milliseconds limit = std::chrono::milliseconds(15'000)) {
    Service& s = at(name);
    if (!s.process) return 0;
    return s.process->terminate(limit);
  }

  /// Stops `name` (SIGTERM) if it runs, then starts it again on the same port
  /// and data, with `env` merged into its extra environment; waits until ready.
  void restart(const std::string& name, const std::map<std::string, std::string>& env = {}) {
    stop(name);
    for (const auto& [k, v] : env) at(name).extra_env[k] = v;
    start(name);
  }

  /// Extra environment for `name` from its next start on (e.g. PAYMENT_LATENCY_MS).
  void set_env(const std::string& name, const std::string& key, const std::string& value) {
    at(name).extra_env[key] = value;
  }

  bool running(const std::string& name) {
    Service& s = at(name);
    return s.process && s.process->running();
  }
  pid_t pid(const std::string& name) {
    Service& s = at(name);
    return s.process ? s.process->pid() : -1;
  }
  uint16_t port(const std::string& name) { return at(name).port; }
  /// A fresh client for `name` on 127.0.0.1.
  std::unique_ptr<service::HttpClient> client(const std::string& name,
                                              service::ClientOptions o = {}) {
    return std::make_unique<service::HttpClient>("127.0.0.1", port(name), o);
  }
  std::string log_path(const std::string& name) const {
    return (dir_.path() / "logs" / (name + ".log")).string();
  }
  std::string log_tail(const std::string& name, size_t lines = 40) const {
    return tail_of(log_path(name), lines);
  }
  /// Every service's log tail, for a failure message.
  std::string all_log_tails(size_t lines = 20) const {
    std::string out;
    for (const std::string& name : order_)
      out += "---- " + log_path(name) + " ----\n" + log_tail(name, lines);
    return out;
  }
  /// A token for `sub` with `roles` from the gateway's POST /auth/dev-token.
  /// Throws when the gateway does not give one.
  std::string token(const std::string& sub, const std::vector<std::string>& roles) {
    auto http = client("gateway");
    auto r = http->post_json("/auth/dev-token", {{"sub", sub}, {"roles", roles}});
    if (!r.ok() || r->status != 200)
      throw std::runtime_error(
          "ServiceStack: no dev token for " + sub + ": " +
          (r.ok() ? std::to_string(r->status) + " " + r->body : r.status().to_string()));
    auto j = r->json();
    if (!j.ok() || !j->contains("token")) throw std::runtime_error("ServiceStack: " + r->body);
    return (*j)["token"].get<std::string>();
  }
  /// A client of the gateway sending `token` as its bearer token.
  std::unique_ptr<service::HttpClient> gateway_with(const std::string& token,
                                                    service::ClientOptions o = {}) {
    o.default_headers.emplace_back("Authorization", "Bearer " + token);
    return client("gateway", std::move(o));
  }
  /// A client of the gateway acting as `sub` with `roles`.
  std::unique_ptr<service::HttpClient> gateway_as(const std::string& sub,
                                                  const std::vector<std::string>& roles,
                                                  service::ClientOptions o = {}) {
    return gateway_with(token(sub, roles), std::move(o));
  }
  /// A client of the gateway acting as an admin (the checks read every user's data).
  std::unique_ptr<service::HttpClient> admin_gateway(service::ClientOptions o = {}) {
    return gateway_as("e2e-admin", {"admin"}, std::move(o));
  }

  /// The gateway's HS256 secret (to forge tokens in tests).
  const std::string& gateway_secret() const { return secret_; }
  const std::string& brokers() const { return options_.brokers; }
  /// The stack's KAFKA_TOPIC_PREFIX (also the prefix of its groups and topics).
  const std::string& prefix() const { return prefix_; }
  /// The stack's EVENTS_TOPIC (what the services call "reserveplace").
  std::string events_topic() const { return prefix_ + "reserveplace"; }
  std::filesystem::path data_dir(const std::string& name) const {
    return dir_.path() / "data" / name;
  }

 private:
  struct Service {
    std::string base;         // the service this is an instance of
    bool replicated = false;  // one of several instances
    uint16_t port = 0;
    std::map<std::string, std::string> extra_env;
    std::unique_ptr<Process> process;
  };

  Service& at(const std::string& name) {
    auto it = services_.find(name);
    if (it == services_.end())
      throw std::invalid_argument("ServiceStack: no service '" + name + "' in this stack");
    return it->second;
  }

  // The addresses of service `name`'s instances, comma-separated.
  std::string addr_of(const std::string& name) {
    std::string out;
    for (const std::string& i : instances(name))
      out += (out.empty() ? "" : ",") + std::string("127.0.0.1:") +
             std::to_string(services_.at(i).port);
    return out.empty() ? "127.0.0.1:1" : out;
  }

  std::map<std::string, std::string> base_env(const std::string& instance) {
    const Service& self = at(instance);
    const std::string& name = self.base;
    std::map<std::string, std::string> env = {
        {"PORT", std::to_string(self.port)},     {"HTTP_HOST", "127.0.0.1"},
        {"DATA_DIR", data_dir(instance).string()}, {"KAFKA_BROKERS", options_.brokers},
        {"KAFKA_TOPIC_PREFIX", prefix_},         {"KAFKA_GROUP_ID", prefix_ + name},
        {"KAFKA_CLIENT_ID", prefix_ + instance}, {"EVENTS_TOPIC", events_topic()},
        {"LOG_LEVEL", options_.log_level},
    };
    env.insert(options_.env.begin(), options_.env.end());  // what the stack set wins
    if (self.replicated && name == "mypage") env["KAFKA_GROUP_ID"] = prefix_ + instance;
    if (self.replicated && name != "mypage" && name != "gateway") {
      env["SAGA_REPLICAS"] = "1";
      env["SAGA_CHANGELOG"] = "1";
      env["ADVERTISED_URL"] = "http://127.0.0.1:" + std::to_string(self.port);
    }
    if (name == "reservation") env["INVENTORY_ADDR"] = addr_of("inventory");  // place checks
    if (name == "gateway") {
      env["AUTH_DEV_TOKENS"] = "1";
      env["AUTH_HS256_SECRET"] = secret_;
      env["RESERVATION_ADDR"] = addr_of("reservation");
      env["PAYMENT_ADDR"] = addr_of("payment");
      env["INVENTORY_ADDR"] = addr_of("inventory");
      env["MYPAGE_ADDR"] = addr_of("mypage");
      // Rate limits off: every client of a test comes from 127.0.0.1, and the
      // checks read fast as one admin. Tests of the limits turn them on
      // (set_env before start).
      env["RATE_LIMIT_IDENTITY_RPS"] = "0";
      env["RATE_LIMIT_ADDRESS_RPS"] = "0";
    }
    return env;
  }

  // Shards of every engine of the stack (the services' default: SAGA_SHARDS unset).
  static constexpr long kShards = 12;

  // Shards the engine of `name` drives now, from its /metrics; -1 when unknown.
  long shards_owned(const std::string& name) {
    service::ClientOptions co;
    co.connect_timeout = std::chrono::milliseconds(500);
    co.request_timeout = std::chrono::milliseconds(2'000);
    service::HttpClient http("127.0.0.1", at(name).port, co);
    auto r = http.get("/metrics");
    if (!r.ok() || r->status != 200) return -1;
    std::istringstream lines(r->body);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("saga_engine{gauge=\"shards_owned\"}") ||
          line.starts_with("saga_participant_shards_owned{"))
        return std::stol(line.substr(line.rfind(' ') + 1));
    }
    return -1;
  }

  void wait_settled(const std::string& engine, const std::vector<std::string>& replicas) {
    const auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
    std::string last;
    for (;;) {
      long total = 0;
      bool each = true;
      last.clear();
      for (const std::string& r : replicas) {
        const long n = shards_owned(r);
        last += (last.empty() ? "" : ", ") + r + " " + std::to_string(n);
        each = each && n > 0;
        total += std::max(0L, n);
      }
      if (each && total == kShards) return;
      if (std::chrono::steady_clock::now() >= deadline) {
        throw std::runtime_error("ServiceStack: the replicas of " + engine +
                                 " did not settle on the " + std::to_string(kShards) +
                                 " shards within " + std::to_string(options_.ready_timeout.count()) +
                                 " ms (shards owned: " + last + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling with a deadline
    }
  }

  void wait_ready(const std::string& name) {
    Service& s = at(name);
    service::ClientOptions co;
    co.connect_timeout = std::chrono::milliseconds(500);
    co.request_timeout = std::chrono::milliseconds(2'000);
    service::HttpClient http("127.0.0.1", s.port, co);
    const auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
    std::string last = "no answer";
    for (;;) {
      if (!s.process->running()) {
        const int code = s.process->wait(std::chrono::milliseconds(0));
        throw std::runtime_error("ServiceStack: " + name + " exited during startup (code " +
                                 std::to_string(code) + "); " + log_path(name) + ":\n" +
                                 log_tail(name));
      }
      auto r = http.get("/readyz");
      if (r.ok() && r->status == 200) return;
      last = r.ok() ? std::to_string(r->status) + " " + r->body : r.status().to_string();
      http.close();
      if (std::chrono::steady_clock::now() >= deadline) {
        throw std::runtime_error(
            "ServiceStack: " + name + " (port " + std::to_string(s.port) + ") not ready within " +
            std::to_string(options_.ready_timeout.count()) + " ms (last /readyz: " + last + "); " +
            log_path(name) + ":\n" + log_tail(name));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling with a deadline
    }
  }

  Options options_;
  std::string prefix_;
  // The gateway's HS256 secret: random per stack, kept across its restarts.
  std::string secret_ = [] {
    std::random_device rd;
    std::string s = "e2e-secret-";
    for (int i = 0; i < 32; ++i) s.push_back("0123456789abcdef"[rd() % 16]);
    return s;
  }();
  TempDir dir_{"saga-e2e"};
  std::vector<std::string> order_;  // every instance, in start order
  std::map<std::string, Service> services_;
};

/// Reads a stack's events topic from the beginning on its own Kafka endpoint
/// (a unique name and group) and collects every event in arrival order.
class EventTap {
 public:
  struct Event {
    std::string key;
    std::string type;  ///< the payload's eventType (else the message type)
    nlohmann::json payload;
  };

  explicit EventTap(const ServiceStack& stack)
      : EventTap(stack.brokers(), stack.events_topic(), stack.prefix()) {}

  /// Subscribes to `events_topic` on `brokers`; topics the endpoint would
  /// create itself get `prefix`. Returns once subscribed; throws on failure.
  EventTap(const std::string& brokers, const std::string& events_topic, const std::string& prefix) {
    static std::atomic<int> counter{0};
    const std::string name = prefix + "tap" + std::to_string(++counter);
    KafkaOptions o;
    o.brokers = brokers;
    o.group_id = name;
    o.client_id = name;
    o.topic_prefix = prefix;
    o.topic_overrides["reserveplace"] = events_topic;
    std::promise<Status> subscribed;
    std::future<Status> result = subscribed.get_future();
    // The transport is created, subscribed and polled on the one thread that drives it.
    thread_ = std::thread([this, name, o, p = std::move(subscribed)]() mutable {
      auto t = make_kafka_transport(name, o);
      if (!t.ok()) {
        p.set_value(t.status());
        return;
      }
      std::unique_ptr<Transport> transport = std::move(*t);
      Status s = transport->subscribe("reserveplace", [this](Message m, Transport::Ack ack) {
        add(m);
        ack();
      });
      const bool ok = s.ok();
      p.set_value(std::move(s));
      if (!ok) return;
      while (!stop_) transport->poll(std::chrono::milliseconds(100));
    });
    Status s = result.get();
    if (!s.ok()) {
      thread_.join();
      throw std::runtime_error("EventTap: cannot read " + events_topic + ": " + s.to_string());
    }
  }
  ~EventTap() {
    stop_ = true;
    thread_.join();
  }
  EventTap(const EventTap&) = delete;
  EventTap& operator=(const EventTap&) = delete;

  /// A copy of the events so far.
  std::vector<Event> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }

  /// Waits up to `limit` until `pred(events)` holds; false on timeout.
  bool wait_for(const std::function<bool(const std::vector<Event>&)>& pred,
                std::chrono::milliseconds limit) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (pred(events())) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling with a deadline
    }
  }

  /// The types of the events about `reservation_id` (its key, or a
  /// reservationId / orderId field), in arrival order.
  std::vector<std::string> types_for(const std::string& reservation_id) const {
    std::vector<std::string> out;
    for (const Event& e : events())
      if (about(e, reservation_id)) out.push_back(e.type);
    return out;
  }

  static bool about(const Event& e, const std::string& reservation_id) {
    if (e.key == reservation_id) return true;
    if (!e.payload.is_object()) return false;
    for (const char* field : {"reservationId", "orderId"}) {
      auto it = e.payload.find(field);
      if (it != e.payload.end() && it->is_string() && *it == reservation_id) return true;
    }
    return false;
  }

 private:
  void add(const Message& m) {
    Event e;
    e.key = m.key.empty() ? m.saga_id : m.key;
    e.payload = nlohmann::json::parse(m.payload, nullptr, false);
    e.type = m.type;
    if (e.payload.is_object()) {
      auto it = e.payload.find("eventType");
      if (it != e.payload.end() && it->is_string()) e.type = it->get<std::string>();
    }
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }

  mutable std::mutex mu_;
  std::vector<Event> events_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// "types" joined with ", ", for messages.
inline std::string join_types(const std::vector<std::string>& types) {
  std::string out;
  for (const std::string& t : types) out += (out.empty() ? "" : ", ") + t;
  return out;
}

}  // namespace saga::testing
