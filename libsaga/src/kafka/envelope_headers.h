// How a saga::Message maps onto a Kafka record's headers. Pure functions, no
// librdkafka types, so the mapping is testable without a broker. The header
// names are a wire contract between processes: never rename one.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "saga/message.h"
#include "saga/status.h"

namespace saga::internal::kafka {

inline constexpr const char* kHeaderMessageId = "saga-message-id";
inline constexpr const char* kHeaderKind = "saga-kind";
inline constexpr const char* kHeaderType = "saga-type";
inline constexpr const char* kHeaderSagaId = "saga-id";
inline constexpr const char* kHeaderReplyTo = "saga-reply-to";
inline constexpr const char* kHeaderInReplyTo = "saga-in-reply-to";
inline constexpr const char* kHeaderCompensates = "saga-compensates";
inline constexpr const char* kHeaderAttempt = "saga-attempt";
inline constexpr const char* kHeaderOutcome = "saga-outcome";
inline constexpr const char* kHeaderTraceparent = "traceparent";
inline constexpr const char* kHeaderCreatedMs = "saga-created-ms";

/// One record header; a null value (Kafka allows it) is read as empty.
using Header = std::pair<std::string, std::string>;

/// The headers carrying every field of `m` except destination (the topic),
/// key (the record key) and payload (the record value). Always all eleven.
std::vector<Header> encode_headers(const Message& m);

/// Rebuilds a Message from a record. When a header repeats, the last one
/// wins (Kafka's convention). saga-message-id and saga-kind are required;
/// any other missing header leaves the field's default. InvalidArgument,
/// naming the header, for a missing required header, an unknown kind or
/// outcome, or a number that does not parse or is out of range.
StatusOr<Message> decode_headers(const std::vector<Header>& headers, std::string destination,
                                 std::string key, std::string payload);

}  // namespace saga::internal::kafka
