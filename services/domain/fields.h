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

/// Largest amount of money anywhere (minor units): prices and booking totals.
inline constexpr int64_t kMaxMoney = 1'000'000'000'000'000;  // 10^15

/// A price: an integer number of minor units (cents, won...) and an ISO 4217
/// currency code. Money is never a double.
struct Money {
  int64_t amount = 0;
  std::string currency;
  nlohmann::json to_json() const { return {{"amount", amount}, {"currency", currency}}; }
};

/// A required money field: an integer 0..kMaxMoney (floats, even 5.0, refused).
StatusOr<int64_t> money_field(const nlohmann::json& obj, std::string_view name);
/// A required price object {amount (integer minor units, 0..kMaxMoney),
/// currency (three upper-case letters)} at `name`; `name` empty: `obj` itself.
StatusOr<Money> price_field(const nlohmann::json& obj, std::string_view name);

/// The seed's clients (httpie `qty=1`) send numbers as text: a JSON string
/// holding a plain decimal number becomes that number; any other value is
/// returned as is (and then refused by int_field/money_field if it must be one).
nlohmann::json number_from_text(const nlohmann::json& v);
/// OK when `id` is usable as a key segment (see id_field).
Status check_id(std::string_view id, std::string_view name);

/// Random bytes in a new id: 16 (128 bits, 32 hex digits).
inline constexpr size_t kIdRandomBytes = 16;
/// A new unguessable id: `prefix` then 32 random hex digits ("r-" + 32 hex), from
/// the services' CSPRNG (saga::service::random_hex).
std::string new_id(std::string_view prefix);
/// SHA-256 of `text` as 64 lower-case hex digits.
std::string sha256_hex(std::string_view text);
/// Milliseconds since the Unix epoch (system clock).
int64_t now_ms();

/// Prometheus text of a participant's counters, labelled participant="<name>".
std::string participant_metrics_text(std::string_view name, const ParticipantStats& s);

}  // namespace saga::domain
