#include "kafka/kafka_options.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>
#include <system_error>
#include <utility>

extern char** environ;  // POSIX; not declared by every libc header

namespace saga {
namespace internal::kafka {
namespace {

constexpr std::string_view kPropertyPrefix = "KAFKA_PROPERTY_";

// Properties the transport's guarantees rest on: offsets are stored only on
// ack (and then auto-committed), sends are idempotent, and the ids come from
// the options so that the defaults stay documented in one place.
// Shard changelogs add their transactional id and read only committed records.
constexpr std::array<std::string_view, 8> kReservedProperties = {
    "bootstrap.servers",        "group.id",           "client.id",
    "enable.auto.offset.store", "enable.auto.commit", "enable.idempotence",
    "transactional.id",         "isolation.level",
};

// A positive count, or -1 for "the broker's default".
Status check_count(const char* field, const char* env, int value) {
  if (value >= 1 || value == -1) return ok_status();
  return Status::invalid_argument(std::string("KafkaOptions::") + field +
                                  " must be >= 1 or -1 (broker default), got " +
                                  std::to_string(value) + " (environment: " + env + ")");
}

// Reads an int from the environment; unset keeps `fallback`, garbage gives 0
// (which the factory refuses, naming the variable).
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v) return fallback;
  const std::string_view text(v);
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) return 0;
  return value;
}

// Reads the SASL password from `path` into `password`. Errors name the file
// (and the variable that sets it), never its content.
Status read_password_file(const std::string& path, std::string& password) {
  const std::string where =
      "KafkaOptions::sasl_password_file \"" + path + "\" (environment: KAFKA_SASL_PASSWORD_FILE)";
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return Status::invalid_argument(
        where + ": cannot open: " + (err ? std::strerror(err) : "unknown error"));
  }
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::invalid_argument(where + ": cannot read");
  if (!content.empty() && content.back() == '\n') content.pop_back();
  if (!content.empty() && content.back() == '\r') content.pop_back();
  if (content.empty()) return Status::invalid_argument(where + ": is empty");
  if (content.find_first_of("\r\n") != std::string::npos ||
      content.find('\0') != std::string::npos) {
    return Status::invalid_argument(where + ": holds more than one line");
  }
  password = std::move(content);
  return ok_status();
}

}  // namespace

std::map<std::string, std::string> consumer_properties(const KafkaOptions& options) {
  return {
      {"bootstrap.servers", options.brokers},
      {"client.id", options.client_id},
      {"group.id", options.group_id},
      // Offsets are stored only when a message is acked (OffsetTracker) and
      // committed in the background, on revocation and on close.
      {"enable.auto.commit", "true"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      {"partition.assignment.strategy", "cooperative-sticky"},
      // Fetches and commits are written whole (as the producer's requests).
      {"socket.nagle.disable", "true"},
      // A member that stops heartbeating loses its partitions (its shards,
      // with replicas) after 6 s, the broker's smallest allowed session
      // (group.min.session.timeout.ms), instead of librdkafka's 45 s: the
      // bulk of a failover's time (docs/replicas.md, "Failover time").
      {"session.timeout.ms", "6000"},
      {"heartbeat.interval.ms", "1500"},
      // How long the broker may hold a fetch that has nothing to return
      // (librdkafka's default: 500 ms). librdkafka 2.0.2 sends a fetch for the
      // partitions ready at that moment; a partition that becomes ready later
      // (after an assignment, once its start offset is known) joins only the
      // next fetch, so a record sent to it waits until the fetch in flight
      // times out. That made each of the first hops after a consumer started
      // (or was assigned partitions) take up to 500 ms. The cost of a shorter
      // wait is an idle consumer's empty fetch every 50 ms.
      {"fetch.wait.max.ms", "50"},
      // How often the consumer asks for metadata (librdkafka's default: 5 min).
      // A consumer that subscribes again because its group formed without a
      // topic (fetch_watchdog.h) may be told "subscribed topic not available"
      // by a broker that still has not learnt of it, and learns otherwise only
      // at the next refresh: 300 s stuck in the three-broker crash test, 5 s
      // now. The cost: one small metadata request per consumer every 5 s.
      {"topic.metadata.refresh.interval.ms", "5000"},
      {"statistics.interval.ms", kStatsIntervalMs},
  };
}

StatusOr<KafkaOptions> resolve_options(const std::string& endpoint, KafkaOptions options) {
  if (endpoint.empty())
    return Status::invalid_argument("make_kafka_transport: empty endpoint name");
  if (options.brokers.empty()) {
    return Status::invalid_argument(
        "KafkaOptions::brokers is required (environment: KAFKA_BROKERS)");
  }
  SAGA_RETURN_IF_ERROR(check_count("partitions", "KAFKA_PARTITIONS", options.partitions));
  SAGA_RETURN_IF_ERROR(
      check_count("replication_factor", "KAFKA_REPLICATION_FACTOR", options.replication_factor));
  if (options.startup_timeout.count() <= 0) {
    return Status::invalid_argument("KafkaOptions::startup_timeout must be positive");
  }
  for (const auto& [key, value] : options.properties) {
    if (std::find(kReservedProperties.begin(), kReservedProperties.end(), key) !=
        kReservedProperties.end()) {
      return Status::invalid_argument("KafkaOptions::properties may not set \"" + key +
                                      "\": the Kafka transport manages it (see kafka_transport.h)");
    }
  }
  if (!options.sasl_password_file.empty()) {
    if (options.properties.count("sasl.password")) {
      return Status::invalid_argument(
          "KafkaOptions: set either sasl_password_file (environment: KAFKA_SASL_PASSWORD_FILE) "
          "or properties[\"sasl.password\"] (KAFKA_PROPERTY_SASL_PASSWORD), not both");
    }
    std::string password;
    SAGA_RETURN_IF_ERROR(read_password_file(options.sasl_password_file, password));
    options.properties["sasl.password"] = std::move(password);
  }
  if (options.client_id.empty()) options.client_id = endpoint;
  if (options.group_id.empty()) options.group_id = endpoint;
  if (options.logger.empty()) options.logger = "kafka";
  return options;
}

}  // namespace internal::kafka

KafkaOptions kafka_options_from_env(std::string endpoint) {
  KafkaOptions o;
  o.client_id = endpoint;
  o.group_id = std::move(endpoint);
  if (const char* v = std::getenv("KAFKA_BROKERS")) o.brokers = v;
  if (const char* v = std::getenv("KAFKA_CLIENT_ID")) o.client_id = v;
  if (const char* v = std::getenv("KAFKA_GROUP_ID")) o.group_id = v;
  if (const char* v = std::getenv("KAFKA_TOPIC_PREFIX")) o.topic_prefix = v;
  if (const char* v = std::getenv("KAFKA_SASL_PASSWORD_FILE")) o.sasl_password_file = v;
  o.partitions = internal::kafka::env_int("KAFKA_PARTITIONS", o.partitions);
  o.replication_factor = internal::kafka::env_int("KAFKA_REPLICATION_FACTOR", o.replication_factor);
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry(*e);
    if (entry.substr(0, internal::kafka::kPropertyPrefix.size()) !=
        internal::kafka::kPropertyPrefix)
      continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == internal::kafka::kPropertyPrefix.size()) continue;
    std::string name(entry.substr(internal::kafka::kPropertyPrefix.size(),
                                  eq - internal::kafka::kPropertyPrefix.size()));
    for (char& c : name)
      c = c == '_' ? '.' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    o.properties[name] = std::string(entry.substr(eq + 1));
  }
  return o;
}

}  // namespace saga
