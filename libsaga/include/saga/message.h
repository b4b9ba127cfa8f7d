// The message envelope every transport carries: commands from the
// orchestrator to participants, replies back, and domain events.
// docs/envelope.md describes how each field travels on Kafka.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "saga/status.h"

namespace saga {

/// What a message is.
enum class MessageKind : uint8_t {
  kCommand = 1,  ///< orchestrator -> participant: do (or undo) one step
  kReply = 2,    ///< participant -> orchestrator: the outcome of a command
  kEvent = 3,    ///< a domain event for read models (no reply expected)
};

/// The outcome a participant reports for a command.
enum class ReplyOutcome : uint8_t {
  kSuccess = 1,  ///< applied; the reply payload is merged into the saga data
  kFailure = 2,  ///< definitively refused, nothing applied (e.g. no availability)
  kRetry = 3,    ///< transient trouble, nothing applied; send the command again later
};

/// One message. Plain value type.
struct Message {
  /// Unique id of this logical message. A command keeps its id across
  /// re-sends and retries ("<saga>/<step>/a" or "/c"), so a participant's inbox
  /// recognises a duplicate.
  std::string id;
  MessageKind kind = MessageKind::kCommand;
  /// Command name ("reserve"), event name ("ReservationPlaced"); "reply" for replies.
  std::string type;
  /// Logical address: a participant name for commands, the orchestrator's reply
  /// endpoint for replies, an event stream name for events.
  std::string destination;
  /// Partition key; defaults to the saga id. One saga's messages share a key.
  std::string key;
  std::string saga_id;
  /// Commands: the endpoint replies go to.
  std::string reply_to;
  /// Replies: the id of the command answered.
  std::string in_reply_to;
  /// Compensation commands: the id of the action command they undo.
  std::string compensates;
  /// Commands: 1 for the first send of a step, +1 for each retry. Replies echo it.
  uint32_t attempt = 0;
  /// Replies only.
  ReplyOutcome outcome = ReplyOutcome::kSuccess;
  /// W3C traceparent of the saga ("00-<trace>-<span>-01"); may be empty.
  std::string traceparent;
  /// Body: JSON text.
  std::string payload;
  /// Time the message was created, ms since the epoch (informational).
  int64_t created_ms = 0;

  friend bool operator==(const Message&, const Message&) = default;
};

std::string_view to_string(MessageKind k) noexcept;
std::string_view to_string(ReplyOutcome o) noexcept;
/// Parses "command" / "reply" / "event".
StatusOr<MessageKind> parse_message_kind(std::string_view s);
/// Parses "success" / "failure" / "retry".
StatusOr<ReplyOutcome> parse_reply_outcome(std::string_view s);

/// Encodes a message as one self-describing JSON document (used by stores
/// and the in-memory transport; Kafka carries the fields as headers).
std::string encode_message(const Message& m);
/// Decodes what encode_message produced; InvalidArgument on malformed input.
StatusOr<Message> decode_message(std::string_view bytes);

}  // namespace saga
