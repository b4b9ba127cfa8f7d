// Fuzz target: the message envelope as it arrives from outside. The first byte
// picks the form: even, the JSON envelope (saga::decode_message; also older
// outbox records); odd, a Kafka record's headers, key and value
// (decode_headers, driven by FuzzedDataProvider). A message that decodes must
// encode and decode back to itself, and its payload goes through parse_json
// as the orchestrator and participants read it.
#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kafka/envelope_headers.h"
#include "saga/json.h"
#include "saga/message.h"

namespace {

namespace kafka = saga::internal::kafka;

constexpr std::array<const char*, 11> kHeaderNames = {
    kafka::kHeaderMessageId,   kafka::kHeaderKind,      kafka::kHeaderType,
    kafka::kHeaderSagaId,      kafka::kHeaderReplyTo,   kafka::kHeaderInReplyTo,
    kafka::kHeaderCompensates, kafka::kHeaderAttempt,   kafka::kHeaderOutcome,
    kafka::kHeaderTraceparent, kafka::kHeaderCreatedMs,
};

void json_envelope(std::string_view in) {
  auto m = saga::decode_message(in);
  if (!m.ok()) return;
  auto back = saga::decode_message(saga::encode_message(*m));
  if (!back.ok() || !(*back == *m)) std::abort();
  (void)saga::parse_json(m->payload);
}

void kafka_record(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<kafka::Header> headers;
  const size_t n = in.ConsumeIntegralInRange<size_t>(0, 16);
  for (size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
    const size_t pick = in.ConsumeIntegralInRange<size_t>(0, kHeaderNames.size());
    std::string name = pick < kHeaderNames.size() ? std::string(kHeaderNames[pick])
                                                  : in.ConsumeRandomLengthString(16);
    headers.emplace_back(std::move(name), in.ConsumeRandomLengthString(64));
  }
  std::string destination = in.ConsumeRandomLengthString(32);
  std::string key = in.ConsumeRandomLengthString(32);
  auto m = kafka::decode_headers(headers, destination, key, in.ConsumeRemainingBytesAsString());
  if (!m.ok()) return;
  auto back = kafka::decode_headers(kafka::encode_headers(*m), m->destination, m->key, m->payload);
  if (!back.ok() || !(*back == *m)) std::abort();
  (void)saga::parse_json(m->payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {
    json_envelope(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  } else {
    kafka_record(data + 1, size - 1);
  }
  return 0;
}
