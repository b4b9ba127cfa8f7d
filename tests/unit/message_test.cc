#include "saga/message.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace saga {
namespace {

using Json = nlohmann::json;

Message full_message() {
  Message m;
  m.id = "saga-7/reserve/a";
  m.kind = MessageKind::kReply;
  m.type = "reply";
  m.destination = "orchestrator.replies";
  m.key = "saga-7";
  m.saga_id = "saga-7";
  m.reply_to = "orchestrator.replies.2";
  m.in_reply_to = "saga-7/reserve/a#cmd";
  m.compensates = "saga-7/reserve/a#orig";
  m.attempt = 3;
  m.outcome = ReplyOutcome::kRetry;
  m.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  m.payload = R"({"seats":[1,2],"note":"quote \" and \\ and\nnewline","name":"Zoë 東京"})";
  m.created_ms = 1'700'000'123'456;
  return m;
}

// A valid encoded envelope as a JSON document tests can break one field of.
Json valid_doc() { return Json::parse(encode_message(full_message())); }

void check_invalid(std::string_view bytes, std::string_view mentions = {}) {
  CAPTURE(bytes);
  auto decoded = decode_message(bytes);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kInvalidArgument);
  CHECK_FALSE(decoded.status().message().empty());
  if (!mentions.empty()) {
    CAPTURE(decoded.status().message());
    CHECK(decoded.status().message().find(mentions) != std::string::npos);
  }
}

TEST_CASE("message kinds print as lower-case words and parse back") {
  CHECK(to_string(MessageKind::kCommand) == "command");
  CHECK(to_string(MessageKind::kReply) == "reply");
  CHECK(to_string(MessageKind::kEvent) == "event");
  for (MessageKind k : {MessageKind::kCommand, MessageKind::kReply, MessageKind::kEvent}) {
    auto parsed = parse_message_kind(to_string(k));
    REQUIRE(parsed.ok());
    CHECK(*parsed == k);
  }
}

TEST_CASE("reply outcomes print as lower-case words and parse back") {
  CHECK(to_string(ReplyOutcome::kSuccess) == "success");
  CHECK(to_string(ReplyOutcome::kFailure) == "failure");
  CHECK(to_string(ReplyOutcome::kRetry) == "retry");
  for (ReplyOutcome o : {ReplyOutcome::kSuccess, ReplyOutcome::kFailure, ReplyOutcome::kRetry}) {
    auto parsed = parse_reply_outcome(to_string(o));
    REQUIRE(parsed.ok());
    CHECK(*parsed == o);
  }
}

TEST_CASE("unknown kind and outcome names are invalid arguments") {
  for (std::string_view bad : {"", "Command", "COMMAND", "commands", "cmd", " reply"}) {
    CAPTURE(bad);
    auto parsed = parse_message_kind(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
  }
  for (std::string_view bad : {"", "Success", "ok", "fail", "retry "}) {
    CAPTURE(bad);
    auto parsed = parse_reply_outcome(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a message with every field set survives encode and decode") {
  const Message m = full_message();
  auto decoded = decode_message(encode_message(m));
  REQUIRE(decoded.ok());
  CHECK(decoded->id == m.id);
  CHECK(decoded->kind == m.kind);
  CHECK(decoded->type == m.type);
  CHECK(decoded->destination == m.destination);
  CHECK(decoded->key == m.key);
  CHECK(decoded->saga_id == m.saga_id);
  CHECK(decoded->reply_to == m.reply_to);
  CHECK(decoded->in_reply_to == m.in_reply_to);
  CHECK(decoded->compensates == m.compensates);
  CHECK(decoded->attempt == m.attempt);
  CHECK(decoded->outcome == m.outcome);
  CHECK(decoded->traceparent == m.traceparent);
  CHECK(decoded->payload == m.payload);
  CHECK(decoded->created_ms == m.created_ms);
  CHECK(*decoded == m);
}

TEST_CASE("every kind and outcome and the extreme numbers round-trip") {
  for (MessageKind k : {MessageKind::kCommand, MessageKind::kReply, MessageKind::kEvent}) {
    for (ReplyOutcome o : {ReplyOutcome::kSuccess, ReplyOutcome::kFailure, ReplyOutcome::kRetry}) {
      Message m = full_message();
      m.kind = k;
      m.outcome = o;
      auto decoded = decode_message(encode_message(m));
      REQUIRE(decoded.ok());
      CHECK(*decoded == m);
    }
  }
  SUBCASE("largest attempt and latest time") {
    Message m = full_message();
    m.attempt = std::numeric_limits<uint32_t>::max();
    m.created_ms = std::numeric_limits<int64_t>::max();
    auto decoded = decode_message(encode_message(m));
    REQUIRE(decoded.ok());
    CHECK(*decoded == m);
  }
  SUBCASE("a time before the epoch") {
    Message m = full_message();
    m.created_ms = -5;
    auto decoded = decode_message(encode_message(m));
    REQUIRE(decoded.ok());
    CHECK(*decoded == m);
  }
  SUBCASE("a default message") {
    Message m;
    auto decoded = decode_message(encode_message(m));
    REQUIRE(decoded.ok());
    CHECK(*decoded == m);
  }
}

TEST_CASE("the encoding is one JSON object with the documented field names") {
  const Json doc = Json::parse(encode_message(full_message()));
  REQUIRE(doc.is_object());
  const std::vector<std::string> fields = {"id",          "kind",      "type",     "destination",
                                           "key",         "saga_id",   "reply_to", "in_reply_to",
                                           "compensates", "attempt",   "outcome",  "traceparent",
                                           "payload",     "created_ms"};
  CHECK(doc.size() == fields.size());
  for (const auto& f : fields) {
    CAPTURE(f);
    CHECK(doc.contains(f));
  }
  CHECK(doc["kind"] == "reply");
  CHECK(doc["outcome"] == "retry");
  CHECK(doc["attempt"] == 3);
  CHECK(doc["created_ms"] == 1'700'000'123'456);
  // The payload travels as a string, not as nested JSON.
  CHECK(doc["payload"].is_string());
}

TEST_CASE("optional fields may be absent and unknown fields are ignored") {
  auto decoded = decode_message(R"({"id":"m1","kind":"event","future_field":[1,2,3]})");
  REQUIRE(decoded.ok());
  Message expected;
  expected.id = "m1";
  expected.kind = MessageKind::kEvent;
  CHECK(*decoded == expected);
}

TEST_CASE("malformed JSON is an invalid argument") {
  check_invalid("", "malformed JSON");
  check_invalid("not json", "malformed JSON");
  check_invalid(R"({"id":"m1","kind":"command")", "malformed JSON");
  check_invalid(R"({"id":"m1","kind":"command"} trailing)", "malformed JSON");
  check_invalid(R"({"id":"m1",,"kind":"command"})", "malformed JSON");
  check_invalid(std::string_view("{\"id\":\"m\0\",\"kind\":\"event\"}", 26), "malformed JSON");
}

TEST_CASE("a JSON value that is not an object is an invalid argument") {
  check_invalid("[]", "not a JSON object");
  check_invalid("42", "not a JSON object");
  check_invalid("null", "not a JSON object");
  check_invalid(R"("a string")", "not a JSON object");
}

TEST_CASE("a missing id or kind is an invalid argument") {
  SUBCASE("id") {
    Json doc = valid_doc();
    doc.erase("id");
    check_invalid(doc.dump(), "\"id\" is missing");
  }
  SUBCASE("kind") {
    Json doc = valid_doc();
    doc.erase("kind");
    check_invalid(doc.dump(), "\"kind\" is missing");
  }
  check_invalid("{}", "missing");
}

TEST_CASE("a field of the wrong type is an invalid argument naming the field") {
  struct Case {
    const char* field;
    Json value;
  };
  const std::vector<Case> cases = {
      {"id", 7},
      {"id", nullptr},
      {"kind", 1},
      {"kind", "query"},
      {"type", true},
      {"destination", Json::array()},
      {"key", 1.5},
      {"saga_id", Json::object()},
      {"reply_to", 0},
      {"in_reply_to", false},
      {"compensates", 9},
      {"attempt", "3"},
      {"attempt", -1},
      {"attempt", 1.5},
      {"attempt", uint64_t{1} << 32},
      {"outcome", "maybe"},
      {"outcome", 2},
      {"traceparent", 0},
      {"payload", Json::object({{"seats", 2}})},
      {"created_ms", "1700000000000"},
      {"created_ms", 1.5},
      {"created_ms", std::numeric_limits<uint64_t>::max()},
  };
  for (const auto& c : cases) {
    Json doc = valid_doc();
    doc[c.field] = c.value;
    CAPTURE(c.field);
    // Unknown kind/outcome names are reported by the parser, which names the
    // value rather than the field.
    const std::string field = c.field;
    const bool named_value = (field == "kind" || field == "outcome") && c.value.is_string();
    check_invalid(doc.dump(), named_value ? c.value.get<std::string>() : "\"" + field + "\"");
  }
}

TEST_CASE("encoding text that is not UTF-8 does not throw") {
  Message m = full_message();
  m.payload = std::string("\xff\xfe bad bytes", 12);
  std::string encoded;
  CHECK_NOTHROW(encoded = encode_message(m));
  auto decoded = decode_message(encoded);
  REQUIRE(decoded.ok());
  CHECK(decoded->id == m.id);
}

TEST_CASE("decoding never throws, even on hostile input") {
  const std::vector<std::string> inputs = {
      std::string(100'000, '['),
      std::string(100'000, '{'),
      R"({"id":"\ud800","kind":"event"})",
      "\xef\xbb\xbf{\"id\":\"x\",\"kind\":\"event\"}",
      std::string("{\"id\":\"\xff\",\"kind\":\"event\"}"),
  };
  for (const auto& in : inputs) {
    CHECK_NOTHROW((void)decode_message(in));
  }
}

TEST_CASE("an envelope nested deeper than kMaxJsonDepth is an invalid argument") {
  Json doc = valid_doc();
  Json deep = Json::array();
  for (int i = 1; i < 64; ++i) deep = Json::array({std::move(deep)});
  doc["extra"] = deep;  // 65 levels with the envelope itself
  check_invalid(doc.dump(), "nested deeper than 64");
  doc["extra"] = deep[0];
  CHECK(decode_message(doc.dump()).ok());  // unknown fields are ignored, 64 levels are fine
  check_invalid(std::string(100'000, '[') + std::string(100'000, ']'), "nested deeper than 64");
}

}  // namespace
}  // namespace saga
