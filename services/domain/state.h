// Participant state as JSON objects, and domain events, shared by the
// reference participants (inventory, payment).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "saga/message.h"
#include "saga/participant.h"
#include "saga/status.h"

namespace saga::domain {

/// The JSON object stored at `key` in the transaction (nullopt when absent);
/// DataLoss when the stored value is not a JSON object.
StatusOr<std::optional<nlohmann::json>> load(StateTxn& txn, const std::string& key);
/// The same from the participant's committed state.
StatusOr<std::optional<nlohmann::json>> load(const Participant& p, const std::string& key);

/// A domain event for `destination` in the seed's shape: `payload` plus
/// "eventType" and "timestamp" (ms), keyed by `key` (the reservation id).
Message domain_event(const std::string& destination, const std::string& type,
                     const std::string& key, nlohmann::json payload, int64_t now_ms);

/// The booking (saga id) a command acts on: the payload's "bookingId" when
/// another saga acts on it (the cancellation saga), else the command's saga.
std::string booking_id_of(const CommandContext& ctx);

}  // namespace saga::domain
