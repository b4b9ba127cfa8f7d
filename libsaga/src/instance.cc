#include "instance.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "saga/json.h"
#include "store/codec.h"

namespace saga::internal {
namespace {

// First byte of a binary record. Format 3 is format 2 plus the definition's
// fingerprint at the end; format 4 is format 3 plus the timeline. Format-1
// records are MessagePack maps (0x80..0x8f, 0xde, 0xdf), so none collide.
constexpr uint8_t kFormat2 = 0x02;
constexpr uint8_t kFormat3 = 0x03;
constexpr uint8_t kFormat4 = 0x04;

// A timeline's command ids mostly start with "<saga id>/": stored without it.
void put_command_id(std::string& out, const std::string& saga_id, const std::string& command) {
  const bool own = command.size() > saga_id.size() && command.compare(0, saga_id.size(), saga_id) == 0 &&
                   command[saga_id.size()] == '/';
  out.push_back(own ? 1 : 0);
  put_bytes(out, own ? std::string_view(command).substr(saga_id.size() + 1) : command);
}

void put_timeline(std::string& out, const SagaView& v) {
  put_varint(out, v.timeline_dropped);
  put_varint(out, v.timeline.size());
  for (const TimelineEntry& e : v.timeline) {
    put_svarint(out, e.at_ms);
    out.push_back(static_cast<char>(e.event));
    out.push_back(static_cast<char>(e.state));
    put_varint(out, e.step);
    out.push_back(static_cast<char>(e.step_status));
    put_varint(out, e.attempt);
    put_command_id(out, v.id, e.command_id);
    put_bytes(out, e.error);
    put_bytes(out, e.actor);
    put_bytes(out, e.reason);
  }
}

void read_timeline(RecordReader& r, SagaView& v, size_t record_size) {
  v.timeline_dropped = r.u32();
  const uint64_t n = r.varint();
  if (!r.ok() || n > record_size) return;  // the caller sees !r.ok() or !r.done()
  v.timeline.reserve(n);
  for (uint64_t i = 0; i < n && r.ok(); ++i) {
    TimelineEntry& e = v.timeline.emplace_back();
    e.at_ms = r.svarint();
    e.event = static_cast<TimelineEvent>(r.byte());
    e.state = static_cast<SagaState>(r.byte());
    e.step = r.u32();
    e.step_status = static_cast<StepStatus>(r.byte());
    e.attempt = r.u32();
    const bool own = r.boolean();
    const std::string_view command = r.bytes();
    e.command_id = own ? v.id + "/" + std::string(command) : std::string(command);
    e.error = r.bytes();
    e.actor = r.bytes();
    e.reason = r.bytes();
  }
}

StatusOr<Instance> decode_binary(std::string_view bytes) {
  const uint8_t format = static_cast<uint8_t>(bytes[0]);
  RecordReader r(bytes.substr(1));
  Instance inst;
  SagaView& v = inst.view;
  v.id = r.bytes();
  v.type = r.bytes();
  v.version = r.u32();
  v.state = static_cast<SagaState>(r.byte());
  const std::string_view data = r.bytes();
  const uint64_t steps = r.varint();
  if (!r.ok() || steps > bytes.size()) return Status::data_loss("undecodable saga instance");
  v.steps.reserve(steps);
  for (uint64_t i = 0; i < steps && r.ok(); ++i) {
    StepView& s = v.steps.emplace_back();
    s.name = r.bytes();
    s.status = static_cast<StepStatus>(r.byte());
    s.attempts = r.u32();
    s.compensation_attempts = r.u32();
    s.started_ms = r.svarint();
    s.finished_ms = r.svarint();
    s.compensated_ms = r.svarint();
    s.last_error = r.bytes();
    s.round = r.u32();
    s.compensation_round = r.u32();
  }
  v.current_step = r.u32();
  v.traceparent = r.bytes();
  v.last_error = r.bytes();
  v.cancel_requested = r.boolean();
  v.created_ms = r.svarint();
  v.updated_ms = r.svarint();
  v.finished_ms = r.svarint();
  inst.awaiting = r.bytes();
  inst.attempt = r.u32();
  inst.timer = static_cast<TimerKind>(r.byte());
  inst.timer_due_ms = r.svarint();
  inst.attempt_base = r.u32();
  inst.uncertain = r.boolean();
  if (format >= kFormat3) inst.fingerprint = r.varint();
  if (format >= kFormat4) read_timeline(r, v, bytes.size());
  if (!r.ok() || !r.done()) {
    return Status::data_loss("undecodable saga instance (format " + std::to_string(format) + ")");
  }
  StatusOr<Json> parsed = parse_msgpack(data);
  if (!parsed.ok()) return Status::data_loss("undecodable saga data: " + parsed.status().message());
  v.data = std::move(*parsed);
  inst.data_bytes = data;
  return inst;
}

// Format 1: MessagePack of a JSON document (libsaga up to 0.x, before the
// binary record). Read only.
StatusOr<Instance> decode_format1(std::string_view bytes) {
  StatusOr<Json> parsed = parse_msgpack(bytes);
  if (!parsed.ok()) {
    return Status::data_loss("undecodable saga instance: " + parsed.status().message());
  }
  try {
    const Json& j = *parsed;
    Instance inst;
    SagaView& v = inst.view;
    v.id = j.at("id").get<std::string>();
    v.type = j.at("type").get<std::string>();
    v.version = j.at("ver").get<uint32_t>();
    v.state = static_cast<SagaState>(j.at("st").get<int>());
    v.data = j.at("data");
    for (const Json& s : j.at("steps")) {
      StepView sv;
      sv.name = s.at("n").get<std::string>();
      sv.status = static_cast<StepStatus>(s.at("s").get<int>());
      sv.attempts = s.at("a").get<uint32_t>();
      sv.compensation_attempts = s.at("ca").get<uint32_t>();
      sv.started_ms = s.at("t0").get<int64_t>();
      sv.finished_ms = s.at("t1").get<int64_t>();
      sv.compensated_ms = s.at("t2").get<int64_t>();
      sv.last_error = s.at("e").get<std::string>();
      sv.round = s.value("r", 0u);
      sv.compensation_round = s.value("cr", 0u);
      v.steps.push_back(std::move(sv));
    }
    v.current_step = j.at("cur").get<uint32_t>();
    v.traceparent = j.at("tp").get<std::string>();
    v.last_error = j.at("err").get<std::string>();
    v.cancel_requested = j.at("cx").get<bool>();
    v.created_ms = j.at("c").get<int64_t>();
    v.updated_ms = j.at("u").get<int64_t>();
    v.finished_ms = j.at("f").get<int64_t>();
    inst.awaiting = j.at("aw").get<std::string>();
    inst.attempt = j.at("at").get<uint32_t>();
    inst.timer = static_cast<TimerKind>(j.at("tk").get<int>());
    inst.timer_due_ms = j.at("td").get<int64_t>();
    inst.attempt_base = j.value("ab", 0u);
    inst.uncertain = j.value("un", false);
    return inst;
  } catch (const Json::exception& e) {
    return Status::data_loss(std::string("undecodable saga instance: ") + e.what());
  }
}

}  // namespace

void encode_instance(Instance& inst, std::string& out) {
  const SagaView& v = inst.view;
  if (inst.data_bytes.empty()) {
    Json::to_msgpack(v.data, nlohmann::detail::output_adapter<char>(inst.data_bytes));
  }
  out.clear();
  out.reserve(64 + v.id.size() + v.type.size() + inst.data_bytes.size() + v.traceparent.size() +
              v.last_error.size() + inst.awaiting.size() + v.steps.size() * 48);
  out.push_back(static_cast<char>(kFormat4));
  put_bytes(out, v.id);
  put_bytes(out, v.type);
  put_varint(out, v.version);
  out.push_back(static_cast<char>(v.state));
  put_bytes(out, inst.data_bytes);
  put_varint(out, v.steps.size());
  for (const StepView& s : v.steps) {
    put_bytes(out, s.name);
    out.push_back(static_cast<char>(s.status));
    put_varint(out, s.attempts);
    put_varint(out, s.compensation_attempts);
    put_svarint(out, s.started_ms);
    put_svarint(out, s.finished_ms);
    put_svarint(out, s.compensated_ms);
    put_bytes(out, s.last_error);
    put_varint(out, s.round);
    put_varint(out, s.compensation_round);
  }
  put_varint(out, v.current_step);
  put_bytes(out, v.traceparent);
  put_bytes(out, v.last_error);
  out.push_back(v.cancel_requested ? 1 : 0);
  put_svarint(out, v.created_ms);
  put_svarint(out, v.updated_ms);
  put_svarint(out, v.finished_ms);
  put_bytes(out, inst.awaiting);
  put_varint(out, inst.attempt);
  out.push_back(static_cast<char>(inst.timer));
  put_svarint(out, inst.timer_due_ms);
  put_varint(out, inst.attempt_base);
  out.push_back(inst.uncertain ? 1 : 0);
  put_varint(out, inst.fingerprint);
  put_timeline(out, v);
}

std::string encode_instance(Instance& inst) {
  std::string out;
  encode_instance(inst, out);
  return out;
}

StatusOr<Instance> decode_instance(std::string_view bytes) {
  if (bytes.empty()) return Status::data_loss("undecodable saga instance: empty record");
  const auto first = static_cast<uint8_t>(bytes[0]);
  if (first == kFormat2 || first == kFormat3 || first == kFormat4) return decode_binary(bytes);
  if ((first & 0xf0) == 0x80 || first == 0xde || first == 0xdf) return decode_format1(bytes);
  return Status::data_loss("undecodable saga instance: unknown record format " +
                           std::to_string(first) +
                           " (written by a newer libsaga? see docs/storage.md)");
}

}  // namespace saga::internal
