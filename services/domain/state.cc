#include "domain/state.h"

#include "saga/json.h"

namespace saga::domain {
namespace {

StatusOr<std::optional<nlohmann::json>> parse_object(StatusOr<std::optional<std::string>> v,
                                                     const std::string& key) {
  if (!v.ok()) return v.status();
  if (!*v) return std::optional<nlohmann::json>();
  StatusOr<nlohmann::json> j = parse_json(**v);
  if (!j.ok() || !j->is_object()) {
    return Status::data_loss("stored value at '" + key + "' is not a JSON object" +
                             (j.ok() ? "" : ": " + j.status().message()));
  }
  return std::optional<nlohmann::json>(std::move(*j));
}

}  // namespace

StatusOr<std::optional<nlohmann::json>> load(StateTxn& txn, const std::string& key) {
  return parse_object(txn.get(key), key);
}

StatusOr<std::optional<nlohmann::json>> load(const Participant& p, const std::string& key) {
  return parse_object(p.get(key), key);
}

Message domain_event(const std::string& destination, const std::string& type,
                     const std::string& key, nlohmann::json payload, int64_t now_ms) {
  payload["eventType"] = type;
  payload["timestamp"] = now_ms;
  Message m;
  m.destination = destination;
  m.type = type;
  m.key = key;
  m.payload = payload.dump();
  return m;
}

std::string booking_id_of(const CommandContext& ctx) {
  if (ctx.payload.is_object()) {
    auto it = ctx.payload.find("bookingId");
    if (it != ctx.payload.end() && it->is_string() && !it->get_ref<const std::string&>().empty())
      return it->get<std::string>();
  }
  return ctx.command.saga_id;
}

}  // namespace saga::domain
