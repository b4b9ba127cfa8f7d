// The transport interface: how the orchestrator and participants exchange
// messages. Kafka (librdkafka) in production, MemoryBus in tests/examples.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "saga/message.h"
#include "saga/status.h"

namespace saga {

/// One endpoint's connection to the message fabric. Guarantees required of
/// every implementation: at-least-once delivery of a message whose send was
/// confirmed; messages with the same key to the same destination arrive in
/// send order (unless a test asks for reordering).
///
/// Threading: send() is thread-safe. subscribe() is called before the first
/// poll(). Handlers and send callbacks run only inside poll(), on the thread
/// that calls it.
class Transport {
 public:
  /// Tells the transport that the effect of a received message is durable,
  /// so it need not be redelivered (Kafka: the offset may be committed).
  using Ack = std::function<void()>;
  /// Receives one message. Call `ack` once its effect is durable; a message
  /// never acked may be delivered again after a restart.
  using Handler = std::function<void(Message message, Ack ack)>;
  /// Called once with OK when the message is stored by the fabric (Kafka:
  /// delivery report of an acks=all produce), or with an error when it will
  /// not be delivered (the sender keeps it and tries again).
  using SendCallback = std::function<void(Status)>;

  virtual ~Transport() = default;

  /// Routes every message whose destination is `destination` to `handler`.
  virtual Status subscribe(std::string_view destination, Handler handler) = 0;

  /// Sends `message` to `message.destination`. Never blocks for long; the
  /// outcome arrives through `on_sent` during a later poll().
  virtual void send(Message message, SendCallback on_sent) = 0;

  /// Delivers received messages and send confirmations, waiting up to
  /// `max_wait` for the first one. Returns how many it delivered.
  virtual size_t poll(std::chrono::milliseconds max_wait) = 0;

  /// OK while the fabric is reachable (readiness).
  virtual Status health() const = 0;
};

}  // namespace saga
