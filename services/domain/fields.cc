#include "domain/fields.h"

#include "saga/service/random.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <openssl/sha.h>

#include <sstream>
#include <stdexcept>
#include <vector>

namespace saga::domain {
namespace {

std::string type_name(const nlohmann::json& v) { return v.type_name(); }

Status missing(std::string_view name) {
  return Status::invalid_argument("field '" + std::string(name) + "' is required");
}

}  // namespace

StatusOr<std::string> string_field(const nlohmann::json& obj, std::string_view name) {
  if (!obj.is_object()) return Status::invalid_argument("expected a JSON object");
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return missing(name);
  if (!it->is_string())
    return Status::invalid_argument("field '" + std::string(name) + "' must be a string, got " +
                                    type_name(*it));
  std::string s = it->get<std::string>();
  if (s.empty() || s.size() > 200)
    return Status::invalid_argument("field '" + std::string(name) +
                                    "' must be 1..200 characters long");
  return s;
}

Status check_id(std::string_view id, std::string_view name) {
  if (id.empty() || id.size() > 128)
    return Status::invalid_argument("'" + std::string(name) + "' must be 1..128 characters long");
  for (char c : id) {
    if (c <= ' ' || c > '~' || c == '/')
      return Status::invalid_argument("'" + std::string(name) +
                                      "' may only contain printable ASCII characters other than "
                                      "'/' and space");
  }
  return ok_status();
}

StatusOr<std::string> id_field(const nlohmann::json& obj, std::string_view name) {
  if (!obj.is_object()) return Status::invalid_argument("expected a JSON object");
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return missing(name);
  std::string id;
  if (it->is_string()) {
    id = it->get<std::string>();
  } else if (it->is_number_unsigned()) {
    id = std::to_string(it->get<uint64_t>());
  } else if (it->is_number_integer() && it->get<int64_t>() >= 0) {
    id = std::to_string(it->get<int64_t>());
  } else {
    return Status::invalid_argument("field '" + std::string(name) +
                                    "' must be a string or a non-negative integer, got " +
                                    type_name(*it));
  }
  SAGA_RETURN_IF_ERROR(check_id(id, name));
  return id;
}

StatusOr<int64_t> int_field(const nlohmann::json& obj, std::string_view name, int64_t min,
                            int64_t max) {
  if (!obj.is_object()) return Status::invalid_argument("expected a JSON object");
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return missing(name);
  auto range = [&] {
    return Status::invalid_argument("field '" + std::string(name) + "' must be an integer in " +
                                    std::to_string(min) + ".." + std::to_string(max) + ", got " +
                                    it->dump());
  };
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(max) || (min > 0 && v < static_cast<uint64_t>(min)))
      return range();
    return static_cast<int64_t>(v);
  }
  if (it->is_number_integer()) {
    const int64_t v = it->get<int64_t>();
    if (v < min || v > max) return range();
    return v;
  }
  return range();
}

StatusOr<int64_t> money_field(const nlohmann::json& obj, std::string_view name) {
  return int_field(obj, name, 0, kMaxMoney);
}

StatusOr<Money> price_field(const nlohmann::json& obj, std::string_view name) {
  const nlohmann::json* p = &obj;
  if (!name.empty()) {
    if (!obj.is_object()) return Status::invalid_argument("expected a JSON object");
    auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) return missing(name);
    p = &*it;
  }
  const std::string label = name.empty() ? "price" : std::string(name);
  if (!p->is_object())
    return Status::invalid_argument("field '" + label + "' must be an object {amount, currency}");
  Money m;
  SAGA_ASSIGN_OR_RETURN(m.amount, money_field(*p, "amount"));
  auto cur = p->find("currency");
  const std::string code = cur != p->end() && cur->is_string() ? cur->get<std::string>() : "";
  const bool ok = code.size() == 3 && std::all_of(code.begin(), code.end(), [](char c) {
                    return c >= 'A' && c <= 'Z';
                  });
  if (!ok)
    return Status::invalid_argument("field '" + label +
                                    ".currency' must be an ISO 4217 code (three capital letters)");
  m.currency = code;
  return m;
}

std::string new_id(std::string_view prefix) {
  return std::string(prefix) + service::random_hex(kIdRandomBytes);
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return service::to_hex(digest, sizeof digest);
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string participant_metrics_text(std::string_view name, const ParticipantStats& s) {
  std::ostringstream os;
  const std::string label = "{participant=\"" + std::string(name) + "\"}";
  auto counter = [&](const char* metric, const char* help, uint64_t v) {
    os << "# HELP " << metric << ' ' << help << "\n# TYPE " << metric << " counter\n"
       << metric << label << ' ' << v << '\n';
  };
  counter("saga_participant_applied_total", "Commands whose handler succeeded.", s.applied);
  counter("saga_participant_refused_total", "Commands the handler refused.", s.refused);
  counter("saga_participant_retried_total", "Commands answered retry.", s.retried);
  counter("saga_participant_duplicates_total", "Commands answered from the inbox.", s.duplicates);
  counter("saga_participant_voided_total", "Actions voided by an earlier compensation.", s.voided);
  counter("saga_participant_inbox_expired_total",
          "Inbox records removed past the de-duplication horizon.", s.expired);
  counter("saga_participant_state_expired_total", "State keys removed at their expiry.",
          s.state_expired);
  counter("saga_participant_writes_total", "RocksDB batches written.", s.writes);
  os << "# HELP saga_participant_outbox_depth Messages waiting in the outbox.\n"
     << "# TYPE saga_participant_outbox_depth gauge\n"
     << "saga_participant_outbox_depth" << label << ' ' << s.outbox_depth << '\n';
  os << "# HELP saga_participant_shards_owned Shards this process drives now.\n"
     << "# TYPE saga_participant_shards_owned gauge\n"
     << "saga_participant_shards_owned" << label << ' ' << s.shards_owned << '\n';
  os << "# HELP saga_participant_store_bytes The store's SST files and memtables (estimate).\n"
     << "# TYPE saga_participant_store_bytes gauge\n"
     << "saga_participant_store_bytes" << label << ' ' << s.store_bytes << '\n';
  os << "# HELP saga_participant_store_keys The store's live keys (estimate).\n"
     << "# TYPE saga_participant_store_keys gauge\n"
     << "saga_participant_store_keys" << label << ' ' << s.store_keys << '\n';
  return os.str();
}

nlohmann::json number_from_text(const nlohmann::json& v) {
  if (!v.is_string()) return v;
  const std::string& s = v.get_ref<const std::string&>();
  if (s.empty() || s.size() > 32) return v;
  if (!std::isdigit(static_cast<unsigned char>(s[0])) && s[0] != '-') return v;
  char* end = nullptr;
  if (s.find_first_of(".eE") == std::string::npos) {
    const long long n = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() + s.size()) return n;
    return v;
  }
  const double d = std::strtod(s.c_str(), &end);
  if (end == s.c_str() + s.size() && std::isfinite(d)) return d;
  return v;
}

}  // namespace saga::domain
