// saga::KafkaTransport against a broker of this test's own that listens with
// SASL_SSL (`scripts/kafka start --sasl-ssl`: TLS with a test CA, SASL
// mechanisms SCRAM-SHA-512 and PLAIN, user "saga"): a saga message goes and
// comes back with the right credentials; a wrong password, TLS without the
// test CA and a plaintext client on the SASL_SSL port all fail, clearly, the
// first two at once; no error or log line shows a password; and booking sagas
// (orchestrator, inventory and payment each on their own transport) run end
// to end over that listener.
//
// SCRAM-SHA-512 against Kafka 4 needs librdkafka 2.6.1 or later (older ones
// repeat their nonce in the client-final message, which Kafka 4 refuses:
// librdkafka PR #4895). Kafka 3.9 accepts it, so SCRAM is proven on a second
// broker of the release in scripts/broker/kafka-scram.version
// (SAGA_KAFKA_SCRAM_VERSION, 3.9.1): a round trip, and a wrong password that
// fails at once. On the Kafka 4 broker an older librdkafka (Debian 12's 2.0.2)
// must fail SCRAM as that authentication failure.
#include <doctest/doctest.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "saga/kafka_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "support/booking.h"
#include "support/booking_run.h"
#include "support/eventually.h"
#include "support/line_sink.h"

namespace saga {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

// librdkafka's first version whose SCRAM works against Kafka 4 brokers.
constexpr int kScramFixedVersion = 0x020601ff;

std::string read_first_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error("cannot read " + path.string());
  return line;
}

// A SASL_SSL broker of the test's own, started once for all cases and stopped
// at exit: of the pom's Kafka version (get) or of SAGA_KAFKA_SCRAM_VERSION (scram).
class SaslBroker {
 public:
  explicit SaslBroker(std::string kafka_version)
      : kafka_version_(std::move(kafka_version)),
        dir_(std::filesystem::temp_directory_path() /
             ("saga-kafka-sasl-" + std::to_string(::getpid()) +
              (kafka_version_.empty() ? "" : "-" + kafka_version_))) {
    std::filesystem::remove_all(dir_);
    if (run("start --sasl-ssl") != 0) {
      std::filesystem::remove_all(dir_);
      throw std::runtime_error("scripts/kafka start --sasl-ssl failed" +
                               (kafka_version_.empty() ? "" : " (Kafka " + kafka_version_ + ")"));
    }
    try {
      bootstrap_ = read_first_line(dir_ / "bootstrap.sasl_ssl");
      ca_file_ = (dir_ / "tls" / "ca.pem").string();
      password_file_ = (dir_ / "sasl" / "saga.password").string();
      password_ = read_first_line(password_file_);
    } catch (...) {
      stop();  // the destructor does not run for a constructor that throws
      throw;
    }
  }
  ~SaslBroker() { stop(); }
  SaslBroker(const SaslBroker&) = delete;
  SaslBroker& operator=(const SaslBroker&) = delete;

  // The Kafka 4 broker (scripts/broker/pom.xml's version).
  static SaslBroker& get() { return instance<0>(""); }
  // The Kafka SAGA_KAFKA_SCRAM_VERSION broker, whose SCRAM any librdkafka can use.
  static SaslBroker& scram() { return instance<1>(SAGA_KAFKA_SCRAM_VERSION); }

  const std::string& bootstrap() const { return bootstrap_; }
  const std::string& ca_file() const { return ca_file_; }
  const std::string& password_file() const { return password_file_; }
  const std::string& password() const { return password_; }

 private:
  // A broker, started on first use. A start that failed fails every later
  // case at once instead of trying (and waiting) again.
  template <int N>
  static SaslBroker& instance(const char* kafka_version) {
    static std::string failed;
    if (!failed.empty()) throw std::runtime_error(failed);
    try {
      static SaslBroker broker(kafka_version);
      return broker;
    } catch (const std::exception& e) {
      failed = e.what();
      throw;
    }
  }
  void stop() const {
    (void)run("stop");
    std::filesystem::remove_all(dir_);
  }
  int run(const std::string& verb) const {
    // An empty SAGA_KAFKA_VERSION is the pom's version (whatever the environment says).
    const std::string cmd = "SAGA_KAFKA_VERSION='" + kafka_version_ + "' '" + SAGA_SOURCE_DIR +
                            "/scripts/kafka' " + verb + " --dir '" + dir_.string() + "' >/dev/null";
    return std::system(cmd.c_str());
  }
  std::string kafka_version_;
  std::filesystem::path dir_;
  std::string bootstrap_, ca_file_, password_file_, password_;
};

std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "sasl" + std::to_string(rng() % 1'000'000'000) + ".";
}

// Options for `endpoint` on `broker`'s SASL_SSL listener as user "saga".
KafkaOptions sasl_options(const SaslBroker& broker, const std::string& prefix,
                          const std::string& endpoint, const std::string& mechanism,
                          const std::string& password) {
  KafkaOptions o;
  o.brokers = broker.bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + endpoint;
  o.partitions = 1;
  o.properties = {{"security.protocol", "SASL_SSL"},
                  {"sasl.mechanisms", mechanism},
                  {"sasl.username", "saga"},
                  {"sasl.password", password},
                  {"ssl.ca.location", broker.ca_file()},
                  {"session.timeout.ms", "6000"},
                  {"heartbeat.interval.ms", "500"}};
  return o;
}

using testing::LineSink;

// A logger that captures what the transport (and librdkafka through it) logs.
struct CapturedLog {
  std::shared_ptr<LineSink> sink = std::make_shared<LineSink>();
  std::string name;
  explicit CapturedLog(const std::string& n) : name(n) {
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(spdlog::level::debug);
    spdlog::register_logger(logger);
  }
  ~CapturedLog() { spdlog::drop(name); }
  bool mentions(const std::string& text) {
    for (const std::string& line : sink->lines()) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }
};

Message command(const std::string& id, const std::string& destination) {
  Message m;
  m.id = id;
  m.kind = MessageKind::kCommand;
  m.type = "reserve";
  m.destination = destination;
  m.saga_id = "saga-" + id;
  m.key = m.saga_id;
  m.reply_to = "orchestrator.replies";
  m.attempt = 1;
  m.payload = R"({"placeId":"p-1","qty":1})";
  m.created_ms = 1'700'000'000'000;
  return m;
}

// A sender and a receiver with `mechanism`: the command arrives intact and its
// send is confirmed.
void round_trip(const std::string& mechanism, KafkaOptions sender_options,
                KafkaOptions receiver_options) {
  auto sender = make_kafka_transport("sender", std::move(sender_options));
  REQUIRE_MESSAGE(sender.ok(), sender.status().to_string());
  auto receiver = make_kafka_transport("participant", std::move(receiver_options));
  REQUIRE_MESSAGE(receiver.ok(), receiver.status().to_string());
  CHECK((*sender)->health().ok());

  std::vector<Message> got;
  REQUIRE((*receiver)
              ->subscribe("participant",
                          [&](Message m, Transport::Ack ack) {
                            got.push_back(std::move(m));
                            ack();
                          })
              .ok());
  const Message sent = command("c-" + mechanism, "participant");
  std::vector<Status> results;
  (*sender)->send(sent, [&](Status s) { results.push_back(std::move(s)); });
  REQUIRE(testing::eventually(
      [&] {
        (*sender)->poll(10ms);
        (*receiver)->poll(10ms);
        return results.size() == 1 && got.size() == 1;
      },
      60s, 0ms));
  CHECK_MESSAGE(results[0].ok(), results[0].to_string());
  CHECK(got[0] == sent);
}

TEST_CASE("SASL_SSL with PLAIN: a saga message goes and comes back") {
  const SaslBroker& broker = SaslBroker::get();
  const std::string prefix = unique_prefix();
  round_trip("PLAIN", sasl_options(broker, prefix, "sender", "PLAIN", broker.password()),
             sasl_options(broker, prefix, "participant", "PLAIN", broker.password()));
}

TEST_CASE("SASL_SSL with PLAIN: booking sagas run end to end and finish consistent") {
  namespace fs = std::filesystem;
  constexpr int kSagas = 30;
  constexpr int64_t kCapacity = 25;  // below kSagas: some bookings find no room and compensate
  const SaslBroker& broker = SaslBroker::get();
  const std::string prefix = unique_prefix();
  const fs::path dir = fs::temp_directory_path() /
                       ("saga-kafka-sasl-bookings-" + std::to_string(::getpid()) + "-" + prefix);
  fs::remove_all(dir);
  auto connect = [&](const std::string& endpoint) {
    auto t = make_kafka_transport(
        endpoint, sasl_options(broker, prefix, endpoint, "PLAIN", broker.password()));
    REQUIRE_MESSAGE(t.ok(), t.status().to_string());
    return std::shared_ptr<Transport>(std::move(*t));
  };
  auto open_participant = [&](const std::string& name) {
    ParticipantOptions o;
    o.name = name;
    o.data_dir = (dir / name).string();
    o.sync = false;
    auto p = Participant::open(o, connect(name));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    return std::move(*p);
  };
  const testing::BookingFaults no_faults;
  const auto never = [] { return 1.0; };  // no injected faults
  std::unique_ptr<Participant> inventory = open_participant("inventory");
  REQUIRE(testing::register_inventory(*inventory, kCapacity, no_faults, never).ok());
  std::unique_ptr<Participant> payment = open_participant("payment");
  REQUIRE(testing::register_payment(*payment, no_faults, never).ok());

  std::atomic<int> settled{0};
  Options oo;
  oo.data_dir = (dir / "orchestrator").string();
  oo.sync = false;
  oo.breaker.enabled = false;
  oo.on_settled = [&](const SagaView&) { ++settled; };
  // A generous step timeout: consumers joining their groups take a moment at
  // the start, and a timeout there would only turn bookings into compensations.
  auto opened =
      Orchestrator::open(oo, connect("orchestrator"), {testing::booking_definition(10'000ms)});
  REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
  std::unique_ptr<Orchestrator> orch = std::move(*opened);

  inventory->start_background();
  payment->start_background();
  orch->start_background();

  const auto t0 = Steady::now();
  const std::vector<std::string> ids = testing::start_bookings(*orch, prefix, kSagas);
  REQUIRE_MESSAGE(testing::eventually([&] { return settled >= kSagas; }, 180s, 20ms), "only ",
                  settled.load(), " of ", kSagas, " sagas settled");
  const auto took = Steady::now() - t0;

  std::map<SagaState, int> outcomes;
  const std::map<std::string, SagaView> views = testing::terminal_views(*orch, ids, outcomes);
  MESSAGE(kSagas, " sagas over SASL_SSL settled in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), " ms: completed ",
          outcomes[SagaState::kCompleted], ", compensated ", outcomes[SagaState::kCompensated]);
  CHECK(outcomes[SagaState::kCompleted] > 0);
  CHECK(outcomes[SagaState::kCompensated] >= kSagas - kCapacity);  // no room for them
  for (const std::string& bad :
       testing::check_booking_invariants(views, *inventory, *payment, kCapacity)) {
    FAIL_CHECK(bad);
  }
  CHECK(orch->health().ok());
  CHECK(inventory->health().ok());
  CHECK(payment->health().ok());
  orch.reset();
  inventory.reset();
  payment.reset();
  fs::remove_all(dir);
}

TEST_CASE(
    "SASL_SSL with the password from KAFKA_SASL_PASSWORD_FILE, options from the environment") {
  const SaslBroker& broker = SaslBroker::get();
  const std::string prefix = unique_prefix();
  const std::map<std::string, std::string> env = {
      {"KAFKA_BROKERS", broker.bootstrap()},
      {"KAFKA_TOPIC_PREFIX", prefix},
      {"KAFKA_PARTITIONS", "1"},
      {"KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"},
      {"KAFKA_PROPERTY_SASL_MECHANISMS", "PLAIN"},
      {"KAFKA_PROPERTY_SASL_USERNAME", "saga"},
      {"KAFKA_PROPERTY_SSL_CA_LOCATION", broker.ca_file()},
      {"KAFKA_SASL_PASSWORD_FILE", broker.password_file()},
  };
  for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
  KafkaOptions sender = kafka_options_from_env("sender");
  KafkaOptions receiver = kafka_options_from_env("participant");
  for (const auto& [name, value] : env) ::unsetenv(name.c_str());
  CHECK(sender.properties.count("sasl.password") == 0);
  sender.group_id = prefix + "sender";
  receiver.group_id = prefix + "participant";
  round_trip("PLAIN-file", std::move(sender), std::move(receiver));
}

TEST_CASE("SASL_SSL with SCRAM-SHA-512 on Kafka " SAGA_KAFKA_SCRAM_VERSION
          ": a saga message goes and comes back") {
  const SaslBroker& broker = SaslBroker::scram();
  const std::string prefix = unique_prefix();
  MESSAGE("librdkafka ", RdKafka::version_str(), ", Kafka " SAGA_KAFKA_SCRAM_VERSION);
  round_trip("SCRAM", sasl_options(broker, prefix, "sender", "SCRAM-SHA-512", broker.password()),
             sasl_options(broker, prefix, "participant", "SCRAM-SHA-512", broker.password()));
}

TEST_CASE(
    "SASL_SSL with SCRAM-SHA-512 on Kafka 4: works with librdkafka 2.6.1+, else fails as "
    "authentication") {
  const SaslBroker& broker = SaslBroker::get();
  const std::string prefix = unique_prefix();
  MESSAGE("librdkafka ", RdKafka::version_str());
  if (RdKafka::version() >= kScramFixedVersion) {
    round_trip("SCRAM", sasl_options(broker, prefix, "sender", "SCRAM-SHA-512", broker.password()),
               sasl_options(broker, prefix, "participant", "SCRAM-SHA-512", broker.password()));
    return;
  }
  const auto start = Steady::now();
  auto t = make_kafka_transport(
      "sender", sasl_options(broker, prefix, "sender", "SCRAM-SHA-512", broker.password()));
  const auto took = Steady::now() - start;
  if (t.ok()) {
    // A librdkafka with the fix backported: then SCRAM must work all the way.
    t->reset();
    round_trip("SCRAM", sasl_options(broker, prefix, "sender", "SCRAM-SHA-512", broker.password()),
               sasl_options(broker, prefix, "participant", "SCRAM-SHA-512", broker.password()));
    return;
  }
  MESSAGE("librdkafka ", RdKafka::version_str(), " with SCRAM-SHA-512 on Kafka 4 (known, fixed",
          " in librdkafka 2.6.1): ", t.status().to_string());
  CHECK(t.status().message().find("authentication failed") != std::string::npos);
  CHECK(t.status().message().find("SCRAM-SHA-512") != std::string::npos);
  CHECK(t.status().message().find(broker.password()) == std::string::npos);
  CHECK(took < 10s);
}

TEST_CASE("a wrong password fails at once, says authentication failed, and shows no password") {
  // SCRAM on the broker where it works with any librdkafka: a real password check.
  std::string mechanism;
  const SaslBroker* chosen = nullptr;
  SUBCASE("PLAIN") {
    mechanism = "PLAIN";
    chosen = &SaslBroker::get();
  }
  SUBCASE("SCRAM-SHA-512 on Kafka " SAGA_KAFKA_SCRAM_VERSION) {
    mechanism = "SCRAM-SHA-512";
    chosen = &SaslBroker::scram();
  }
  REQUIRE(chosen != nullptr);
  const SaslBroker& broker = *chosen;
  const std::string prefix = unique_prefix();
  const std::string wrong = "Wr0ng-" + broker.password().substr(0, 6) + "-pw";
  CapturedLog log(prefix + "log");
  KafkaOptions o = sasl_options(broker, prefix, "sender", mechanism, wrong);
  o.logger = log.name;
  REQUIRE(o.startup_timeout == 30s);  // the default: failing fast must not rely on a short one
  const auto start = Steady::now();
  auto t = make_kafka_transport("sender", o);
  const auto took = Steady::now() - start;
  REQUIRE_FALSE(t.ok());
  MESSAGE(mechanism, ": failed after ",
          std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
          " ms: ", t.status().to_string());
  CHECK(t.status().message().find("authentication failed") != std::string::npos);
  CHECK(t.status().code() != StatusCode::kUnavailable);  // retrying would not help
  CHECK(took < 10s);
  for (const std::string& secret : {wrong, broker.password()}) {
    CHECK(t.status().message().find(secret) == std::string::npos);
    CHECK_FALSE(log.mentions(secret));
  }
  CHECK(log.mentions("authentication failed"));
}

TEST_CASE("TLS without the test CA fails at once as a TLS handshake failure") {
  const SaslBroker& broker = SaslBroker::get();
  KafkaOptions o = sasl_options(broker, unique_prefix(), "sender", "PLAIN", broker.password());
  o.properties.erase("ssl.ca.location");  // the system's CAs do not vouch for the test CA
  const auto start = Steady::now();
  auto t = make_kafka_transport("sender", o);
  const auto took = Steady::now() - start;
  REQUIRE_FALSE(t.ok());
  MESSAGE("failed after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
          " ms: ", t.status().to_string());
  CHECK(t.status().message().find("TLS handshake failed") != std::string::npos);
  CHECK(t.status().message().find(broker.password()) == std::string::npos);
  CHECK(took < 10s);
}

TEST_CASE("a plaintext client on the SASL_SSL port fails clearly") {
  const SaslBroker& broker = SaslBroker::get();
  KafkaOptions o;
  o.brokers = broker.bootstrap();
  o.startup_timeout = 5s;
  const auto start = Steady::now();
  auto t = make_kafka_transport("plain", o);
  const auto took = Steady::now() - start;
  REQUIRE_FALSE(t.ok());
  MESSAGE("failed after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
          " ms: ", t.status().to_string());
  CHECK(t.status().code() == StatusCode::kUnavailable);
  CHECK(t.status().message().find(broker.bootstrap()) != std::string::npos);
  // librdkafka's own hint: "might be caused by incorrect security.protocol configuration".
  CHECK(t.status().message().find("security.protocol") != std::string::npos);
  CHECK(took < 5s + 5s);
}

}  // namespace
}  // namespace saga
