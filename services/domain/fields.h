// Validation of JSON request/command fields, ids, timestamps and participant
// metrics, shared by the reference services. Errors are InvalidArgument with a
// message naming the field, so they map to 400 (HTTP) or a failure reply.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "saga/participant.h"
#include "saga/status.h"

namespace saga::domain {

/// A required string field (non-empty, at most 200 bytes).
StatusOr<std::string> string_field(const nlohmann::json& obj, std::string_view name);
/// A required id: a string or a non-negative integer (the seed sends numbers),
/// returned as text. Must be 1..128 printable ASCII characters without '/'.
StatusOr<std::string> id_field(const nlohmann::json& obj, std::string_view name);
/// A required integer field in [min, max] (floats, booleans and strings refused).
StatusOr<int64_t> int_field(const nlohmann::json& obj, std::string_view name, int64_t min,
                            int64_t max);
/// A required number field >= min (integers or floats; booleans refused).
StatusOr<double> number_field(const nlohmann::json& obj, std::string_view name, double min);

/// The seed's clients (httpie `qty=1`) send numbers as text: a JSON string
/// holding a plain decimal number becomes that number; any other value is
/// returned as is (and then refused by int_field/number_field if it must be one).
nlohmann::json number_from_text(const nlohmann::json& v);
/// OK when `id` is usable as a key segment (see id_field).
Status check_id(std::string_view id, std::string_view name);

/// `bytes` random bytes as lower-case hex.
std::string random_hex(size_t bytes);
/// Milliseconds since the Unix epoch (system clock).
int64_t now_ms();

/// Prometheus text of a participant's counters, labelled participant="<name>".
std::string participant_metrics_text(std::string_view name, const ParticipantStats& s);

}  // namespace saga::domain
