#include "saga/message.h"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "saga/json.h"

namespace saga {
namespace {

using Json = nlohmann::json;

// Field names of the JSON envelope. They are stored (stores, dead-letter
// dumps), so they never change; docs/envelope.md lists them.
constexpr const char* kId = "id";
constexpr const char* kKind = "kind";
constexpr const char* kType = "type";
constexpr const char* kDestination = "destination";
constexpr const char* kKey = "key";
constexpr const char* kSagaId = "saga_id";
constexpr const char* kReplyTo = "reply_to";
constexpr const char* kInReplyTo = "in_reply_to";
constexpr const char* kCompensates = "compensates";
constexpr const char* kAttempt = "attempt";
constexpr const char* kOutcome = "outcome";
constexpr const char* kTraceparent = "traceparent";
constexpr const char* kPayload = "payload";
constexpr const char* kCreatedMs = "created_ms";

Status field_error(const char* field, std::string_view problem) {
  std::string msg = "message envelope: field \"";
  msg += field;
  msg += "\" ";
  msg += problem;
  return Status::invalid_argument(std::move(msg));
}

// Reads an optional string field into `out`; absent leaves the default.
Status read_string(const Json& doc, const char* field, std::string& out) {
  auto it = doc.find(field);
  if (it == doc.end()) return ok_status();
  if (!it->is_string()) return field_error(field, "must be a string");
  out = it->get<std::string>();
  return ok_status();
}

Status read_required_string(const Json& doc, const char* field, std::string& out) {
  if (!doc.contains(field)) return field_error(field, "is missing");
  return read_string(doc, field, out);
}

Status read_attempt(const Json& doc, uint32_t& out) {
  auto it = doc.find(kAttempt);
  if (it == doc.end()) return ok_status();
  // nlohmann stores every non-negative integer literal as unsigned, so a
  // negative or fractional attempt fails this check.
  if (!it->is_number_unsigned()) return field_error(kAttempt, "must be a non-negative integer");
  const auto value = it->get<uint64_t>();
  if (value > std::numeric_limits<uint32_t>::max()) {
    return field_error(kAttempt, "is out of range for a 32-bit unsigned integer");
  }
  out = static_cast<uint32_t>(value);
  return ok_status();
}

Status read_created_ms(const Json& doc, int64_t& out) {
  auto it = doc.find(kCreatedMs);
  if (it == doc.end()) return ok_status();
  if (it->is_number_unsigned()) {
    const auto value = it->get<uint64_t>();
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return field_error(kCreatedMs, "is out of range for a 64-bit signed integer");
    }
    out = static_cast<int64_t>(value);
    return ok_status();
  }
  if (!it->is_number_integer()) return field_error(kCreatedMs, "must be an integer");
  out = it->get<int64_t>();
  return ok_status();
}

StatusOr<Message> decode_object(const Json& doc) {
  if (!doc.is_object()) return Status::invalid_argument("message envelope: not a JSON object");
  Message m;
  SAGA_RETURN_IF_ERROR(read_required_string(doc, kId, m.id));

  std::string kind;
  SAGA_RETURN_IF_ERROR(read_required_string(doc, kKind, kind));
  SAGA_ASSIGN_OR_RETURN(m.kind, parse_message_kind(kind));

  SAGA_RETURN_IF_ERROR(read_string(doc, kType, m.type));
  SAGA_RETURN_IF_ERROR(read_string(doc, kDestination, m.destination));
  SAGA_RETURN_IF_ERROR(read_string(doc, kKey, m.key));
  SAGA_RETURN_IF_ERROR(read_string(doc, kSagaId, m.saga_id));
  SAGA_RETURN_IF_ERROR(read_string(doc, kReplyTo, m.reply_to));
  SAGA_RETURN_IF_ERROR(read_string(doc, kInReplyTo, m.in_reply_to));
  SAGA_RETURN_IF_ERROR(read_string(doc, kCompensates, m.compensates));
  SAGA_RETURN_IF_ERROR(read_attempt(doc, m.attempt));

  // Absent outcome keeps the default so commands and events need not carry one.
  if (doc.contains(kOutcome)) {
    std::string outcome;
    SAGA_RETURN_IF_ERROR(read_string(doc, kOutcome, outcome));
    SAGA_ASSIGN_OR_RETURN(m.outcome, parse_reply_outcome(outcome));
  }

  SAGA_RETURN_IF_ERROR(read_string(doc, kTraceparent, m.traceparent));
  SAGA_RETURN_IF_ERROR(read_string(doc, kPayload, m.payload));
  SAGA_RETURN_IF_ERROR(read_created_ms(doc, m.created_ms));
  return m;
}

}  // namespace

std::string_view to_string(MessageKind k) noexcept {
  switch (k) {
    case MessageKind::kCommand:
      return "command";
    case MessageKind::kReply:
      return "reply";
    case MessageKind::kEvent:
      return "event";
  }
  return "unknown";
}

std::string_view to_string(ReplyOutcome o) noexcept {
  switch (o) {
    case ReplyOutcome::kSuccess:
      return "success";
    case ReplyOutcome::kFailure:
      return "failure";
    case ReplyOutcome::kRetry:
      return "retry";
  }
  return "unknown";
}

StatusOr<MessageKind> parse_message_kind(std::string_view s) {
  for (MessageKind k : {MessageKind::kCommand, MessageKind::kReply, MessageKind::kEvent}) {
    if (s == to_string(k)) return k;
  }
  return Status::invalid_argument("unknown message kind \"" + std::string(s) +
                                  "\" (expected command, reply or event)");
}

StatusOr<ReplyOutcome> parse_reply_outcome(std::string_view s) {
  for (ReplyOutcome o : {ReplyOutcome::kSuccess, ReplyOutcome::kFailure, ReplyOutcome::kRetry}) {
    if (s == to_string(o)) return o;
  }
  return Status::invalid_argument("unknown reply outcome \"" + std::string(s) +
                                  "\" (expected success, failure or retry)");
}

std::string encode_message(const Message& m) {
  Json doc = Json::object();
  doc[kId] = m.id;
  doc[kKind] = to_string(m.kind);
  doc[kType] = m.type;
  doc[kDestination] = m.destination;
  doc[kKey] = m.key;
  doc[kSagaId] = m.saga_id;
  doc[kReplyTo] = m.reply_to;
  doc[kInReplyTo] = m.in_reply_to;
  doc[kCompensates] = m.compensates;
  doc[kAttempt] = m.attempt;
  doc[kOutcome] = to_string(m.outcome);
  doc[kTraceparent] = m.traceparent;
  doc[kPayload] = m.payload;
  doc[kCreatedMs] = m.created_ms;
  // The signature has no way to report an error, and the default handler
  // throws on invalid UTF-8; replacing bad bytes with U+FFFD keeps the
  // exception inside this file. Valid UTF-8 (all JSON payloads) round-trips.
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

StatusOr<Message> decode_message(std::string_view bytes) {
  StatusOr<Json> doc = parse_json(bytes);
  if (!doc.ok()) {
    return Status::invalid_argument("message envelope: malformed JSON: " + doc.status().message());
  }
  try {
    return decode_object(*doc);
  } catch (const Json::exception& e) {
    // Type and range checks above should make this unreachable; it is here so
    // no nlohmann exception can cross the library boundary.
    return Status::invalid_argument(std::string("message envelope: ") + e.what());
  }
}

}  // namespace saga
