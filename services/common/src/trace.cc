#include "saga/service/trace.h"

#include "saga/service/random.h"

namespace saga::service {
namespace {

constexpr std::string_view kHex = "0123456789abcdef";

// `bytes` random bytes from the CSPRNG as hex, never all zero (W3C Trace Context
// forbids all-zero ids). Trace and request ids come from the same generator as
// the services' object ids: a seeded mt19937 could be predicted from a few ids
// and repeats its sequence in a forked process.
std::string nonzero_random_hex(size_t bytes) {
  std::string out = random_hex(bytes);
  if (out.find_first_not_of('0') == std::string::npos) out.back() = '1';
  return out;
}

bool is_lower_hex(std::string_view s) noexcept {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(std::string_view s) noexcept { return s.find_first_not_of('0') == s.npos; }

int hex_value(char c) noexcept { return c <= '9' ? c - '0' : c - 'a' + 10; }

}  // namespace

std::optional<TraceContext> TraceContext::parse(std::string_view h) {
  // version(2) '-' trace-id(32) '-' parent-id(16) '-' flags(2) = 55 characters.
  constexpr size_t kLength = 55;
  if (h.size() < kLength) return std::nullopt;
  if (h[2] != '-' || h[35] != '-' || h[52] != '-') return std::nullopt;
  std::string_view version = h.substr(0, 2);
  std::string_view trace_id = h.substr(3, 32);
  std::string_view parent_id = h.substr(36, 16);
  std::string_view flags = h.substr(53, 2);
  if (!is_lower_hex(version) || !is_lower_hex(trace_id) || !is_lower_hex(parent_id) ||
      !is_lower_hex(flags)) {
    return std::nullopt;
  }
  if (version == "ff" || all_zero(trace_id) || all_zero(parent_id)) return std::nullopt;
  if (version == "00" && h.size() != kLength) return std::nullopt;
  if (h.size() > kLength && h[kLength] != '-') return std::nullopt;
  TraceContext ctx;
  ctx.trace_id = std::string(trace_id);
  ctx.parent_id = std::string(parent_id);
  ctx.flags = static_cast<uint8_t>(hex_value(flags[0]) * 16 + hex_value(flags[1]));
  return ctx;
}

TraceContext TraceContext::generate() {
  TraceContext ctx;
  ctx.trace_id = nonzero_random_hex(16);
  ctx.parent_id = nonzero_random_hex(8);
  ctx.flags = 0x01;
  return ctx;
}

TraceContext TraceContext::child() const {
  TraceContext ctx = *this;
  ctx.parent_id = nonzero_random_hex(8);
  return ctx;
}

std::string TraceContext::to_string() const {
  std::string out = "00-";
  out += trace_id;
  out += '-';
  out += parent_id;
  out += '-';
  out += kHex[flags >> 4];
  out += kHex[flags & 0xf];
  return out;
}

bool is_valid_request_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string generate_request_id() { return nonzero_random_hex(16); }

}  // namespace saga::service
