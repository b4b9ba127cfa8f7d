#include "instance.h"

#include <nlohmann/json.hpp>

namespace saga::internal {

std::string encode_instance(const Instance& inst) {
  const SagaView& v = inst.view;
  Json steps = Json::array();
  for (const StepView& s : v.steps) {
    steps.push_back({{"n", s.name},
                     {"s", static_cast<int>(s.status)},
                     {"a", s.attempts},
                     {"ca", s.compensation_attempts},
                     {"t0", s.started_ms},
                     {"t1", s.finished_ms},
                     {"t2", s.compensated_ms},
                     {"e", s.last_error},
                     {"r", s.round},
                     {"cr", s.compensation_round}});
  }
  Json j = {{"id", v.id},
            {"type", v.type},
            {"ver", v.version},
            {"st", static_cast<int>(v.state)},
            {"data", v.data},
            {"steps", std::move(steps)},
            {"cur", v.current_step},
            {"tp", v.traceparent},
            {"err", v.last_error},
            {"cx", v.cancel_requested},
            {"c", v.created_ms},
            {"u", v.updated_ms},
            {"f", v.finished_ms},
            {"aw", inst.awaiting},
            {"at", inst.attempt},
            {"tk", static_cast<int>(inst.timer)},
            {"td", inst.timer_due_ms},
            {"ab", inst.attempt_base},
            {"un", inst.uncertain}};
  std::vector<uint8_t> bytes = Json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

StatusOr<Instance> decode_instance(std::string_view bytes) {
  try {
    Json j = Json::from_msgpack(bytes.begin(), bytes.end());
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

}  // namespace saga::internal
