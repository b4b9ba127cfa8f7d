#include "kafka/envelope_headers.h"

#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace saga::internal::kafka {
namespace {

Status header_error(std::string_view name, std::string_view problem) {
  std::string msg = "kafka record header \"";
  msg += name;
  msg += "\" ";
  msg += problem;
  return Status::invalid_argument(std::move(msg));
}

// Strict decimal parse: the whole value, no sign unless T is signed, no spaces.
template <typename T>
Status parse_number(std::string_view name, const std::string& text, T& out) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return header_error(name, "is not a " +
                                  std::string(std::is_signed_v<T> ? "" : "non-negative ") +
                                  std::to_string(sizeof(T) * 8) + "-bit integer: \"" + text + "\"");
  }
  out = value;
  return ok_status();
}

}  // namespace

std::vector<Header> encode_headers(const Message& m) {
  return {
      {kHeaderMessageId, m.id},
      {kHeaderKind, std::string(to_string(m.kind))},
      {kHeaderType, m.type},
      {kHeaderSagaId, m.saga_id},
      {kHeaderReplyTo, m.reply_to},
      {kHeaderInReplyTo, m.in_reply_to},
      {kHeaderCompensates, m.compensates},
      {kHeaderAttempt, std::to_string(m.attempt)},
      {kHeaderOutcome, std::string(to_string(m.outcome))},
      {kHeaderTraceparent, m.traceparent},
      {kHeaderCreatedMs, std::to_string(m.created_ms)},
  };
}

StatusOr<Message> decode_headers(const std::vector<Header>& headers, std::string destination,
                                 std::string key, std::string payload) {
  // Last one wins; headers that are not ours (tracing baggage, ...) are ignored.
  std::map<std::string_view, const std::string*> last;
  for (const auto& [name, value] : headers) last[name] = &value;
  auto find = [&](std::string_view name) -> const std::string* {
    auto it = last.find(name);
    return it == last.end() ? nullptr : it->second;
  };
  auto copy = [&](std::string_view name, std::string& out) {
    if (const std::string* v = find(name)) out = *v;
  };

  Message m;
  const std::string* id = find(kHeaderMessageId);
  if (!id) return header_error(kHeaderMessageId, "is missing");
  m.id = *id;
  const std::string* kind = find(kHeaderKind);
  if (!kind) return header_error(kHeaderKind, "is missing");
  StatusOr<MessageKind> k = parse_message_kind(*kind);
  if (!k.ok())
    return k.status().with_context(std::string("kafka record header \"") + kHeaderKind + "\"");
  m.kind = *k;

  copy(kHeaderType, m.type);
  copy(kHeaderSagaId, m.saga_id);
  copy(kHeaderReplyTo, m.reply_to);
  copy(kHeaderInReplyTo, m.in_reply_to);
  copy(kHeaderCompensates, m.compensates);
  copy(kHeaderTraceparent, m.traceparent);
  if (const std::string* v = find(kHeaderAttempt)) {
    SAGA_RETURN_IF_ERROR(parse_number(kHeaderAttempt, *v, m.attempt));
  }
  if (const std::string* v = find(kHeaderOutcome)) {
    StatusOr<ReplyOutcome> o = parse_reply_outcome(*v);
    if (!o.ok())
      return o.status().with_context(std::string("kafka record header \"") + kHeaderOutcome + "\"");
    m.outcome = *o;
  }
  if (const std::string* v = find(kHeaderCreatedMs)) {
    SAGA_RETURN_IF_ERROR(parse_number(kHeaderCreatedMs, *v, m.created_ms));
  }
  m.destination = std::move(destination);
  m.key = std::move(key);
  m.payload = std::move(payload);
  return m;
}

}  // namespace saga::internal::kafka
