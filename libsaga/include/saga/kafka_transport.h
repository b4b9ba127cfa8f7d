// The Kafka transport: saga::Transport over Apache Kafka, built on librdkafka.
// No librdkafka type appears here; the implementation lives in src/kafka/.
//
// How a Message travels (a wire contract between processes: never change a name):
//   topic    topic_prefix + destination, or topic_overrides[destination];
//            the receiver maps the topic back to the destination it subscribed
//   key      Message::key, or Message::saga_id when the key is empty
//   value    Message::payload
//   headers  saga-message-id, saga-kind, saga-type, saga-id, saga-reply-to,
//            saga-in-reply-to, saga-compensates, saga-attempt, saga-outcome,
//            traceparent, saga-created-ms (always all eleven; numbers in
//            decimal, kind and outcome as message.h's to_string names)
//
// Topic creation (when KafkaOptions::create_topics is true):
//   - subscribe() creates the destination's topic if it is missing and waits
//     until the broker reports it, so a consumer never subscribes to a topic
//     that does not exist yet (librdkafka would only notice it minutes later);
//   - the first send() to a destination asks the broker to create its topic
//     without waiting; the message waits in librdkafka's queue until the topic
//     appears. So neither side's start order matters. A failed creation is
//     retried on the next send to that destination.
// With create_topics false, topics must exist (or the broker must create them).
// Whatever create_topics says, the first send() to a topic also starts the
// producer's metadata lookup of it (without waiting), so that its first record
// does not wait up to a second for librdkafka's periodic unknown-topic scan.
//
// Offsets: the consumer commits automatically (enable.auto.commit), but only
// offsets the transport stored, and it stores a partition's offset only up to
// its oldest delivered message that is not acked yet. So a message never acked
// is redelivered after a restart or a rebalance even when later messages of the
// same partition were acked, and an Ack is honoured in any order and from any
// thread. Stored offsets are committed synchronously when partitions are
// revoked and when the transport is destroyed.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "saga/status.h"
#include "saga/transport.h"

namespace saga {

/// Settings of a Kafka transport. Plain struct; every field has a default
/// except `brokers`.
struct KafkaOptions {
  /// Bootstrap brokers, "host:port[,host:port...]". Required; no default.
  std::string brokers;
  /// client.id of the producer and the consumer. Default "" = the endpoint name.
  std::string client_id;
  /// Consumer group of the consumer. Instances of one endpoint share a group and
  /// so split the partitions between them. Default "" = the endpoint name.
  std::string group_id;
  /// The topic of destination D is topic_prefix + D. Default "saga.".
  std::string topic_prefix = "saga.";
  /// Destination -> topic, taking precedence over topic_prefix (e.g. domain
  /// events to "reserveplace"). Two destinations must not share a topic on
  /// the receiving side. Default empty.
  std::map<std::string, std::string> topic_overrides;
  /// Partitions of the topics this transport creates; -1 = the broker's
  /// num.partitions. Default 6.
  int partitions = 6;
  /// Replication factor of the topics this transport creates; -1 = the broker's
  /// default.replication.factor. Default 1 (use 3 in production clusters).
  int replication_factor = 1;
  /// Create missing topics as described at the top of this file. Default true.
  bool create_topics = true;
  /// librdkafka properties for both the producer and the consumer (SASL, SSL,
  /// tuning), applied after the transport's own defaults, so they override them.
  /// Keys the transport's guarantees rest on are refused (InvalidArgument):
  /// bootstrap.servers, group.id, client.id (use the fields above),
  /// enable.auto.offset.store, enable.auto.commit, enable.idempotence.
  /// Default empty.
  std::map<std::string, std::string> properties;
  /// A file holding the SASL password (e.g. a mounted secret), read by
  /// make_kafka_transport and used as properties["sasl.password"] (one trailing
  /// newline is dropped). Setting both is InvalidArgument, as is a file that
  /// cannot be read or is empty; errors name the file, never its content.
  /// Default "" = none.
  std::string sasl_password_file;
  /// Consumer: read each partition this process is assigned from the topic's
  /// beginning the first time it gets it, whatever offset the group committed
  /// (later assignments resume from the commits). For a consumer whose state
  /// was lost (a read model on an empty disk); its handler must tolerate
  /// messages it saw before. Default false.
  bool from_beginning = false;
  /// How long make_kafka_transport waits for a broker to answer, and subscribe()
  /// for its topic to exist. Default 30 s.
  std::chrono::milliseconds startup_timeout{30'000};
  /// spdlog logger name for this transport and librdkafka's logs. Default "kafka".
  std::string logger = "kafka";
};

/// KafkaOptions for `endpoint` from the environment; variables that are unset
/// keep the defaults:
///   KAFKA_BROKERS              brokers
///   KAFKA_CLIENT_ID            client_id
///   KAFKA_GROUP_ID             group_id
///   KAFKA_TOPIC_PREFIX         topic_prefix (set and empty = no prefix)
///   KAFKA_PARTITIONS           partitions
///   KAFKA_REPLICATION_FACTOR   replication_factor
///   KAFKA_PROPERTY_<NAME>      properties[name], NAME lower-cased with '_' -> '.'
///                              (KAFKA_PROPERTY_SECURITY_PROTOCOL -> security.protocol)
///   KAFKA_SASL_PASSWORD_FILE   sasl_password_file
/// client_id and group_id are `endpoint` unless their variables are set. A
/// number that does not parse sets its field to 0, which make_kafka_transport
/// rejects with InvalidArgument naming the variable.
KafkaOptions kafka_options_from_env(std::string endpoint);

/// Connects `endpoint` to Kafka: one idempotent producer (acks=all) and one
/// consumer in group options.group_id. Returns once a broker answered.
///
/// Fails with InvalidArgument for bad options or a property librdkafka refuses,
/// with Unavailable when no broker answers within options.startup_timeout, and
/// with Internal, at once, when a broker refuses the SASL credentials
/// ("authentication failed") or the TLS handshake fails.
/// The caller owns the result.
///
/// The transport follows Transport's threading rules: send() and health() from
/// any thread; subscribe() and poll() from the thread that drives it (poll() is
/// not re-entrant: a handler must not call poll()). Acks may be called from any
/// thread, also after poll() returned or the transport was destroyed (then
/// they do nothing and the message will be redelivered). An exception thrown
/// by a handler or send callback propagates out of poll(): that message stays
/// unacked (holding back its partition's commits until the transport is
/// recreated); outcomes of other sends not yet reported come with the next
/// poll(). Send callbacks still pending when the transport is destroyed are
/// dropped without being called; the destructor closes the consumer
/// (committing acked offsets) and waits up to 5 s for queued sends to reach
/// the broker.
StatusOr<std::unique_ptr<Transport>> make_kafka_transport(std::string endpoint,
                                                          KafkaOptions options);

}  // namespace saga
