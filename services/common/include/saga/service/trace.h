// Request correlation: X-Request-Id values and W3C Trace Context (traceparent).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace saga::service {

/// A W3C Trace Context as carried by the `traceparent` header
/// (https://www.w3.org/TR/trace-context/): "00-<trace-id>-<parent-id>-<flags>".
/// Value type, thread-compatible.
struct TraceContext {
  std::string trace_id;   ///< 32 lowercase hex digits, not all zero
  std::string parent_id;  ///< 16 lowercase hex digits, not all zero (the caller's span)
  uint8_t flags = 0;      ///< bit 0: sampled

  /// Parses a traceparent header value. Returns nullopt when it is not valid:
  /// wrong length or separators, upper-case or non-hex digits, an all-zero
  /// trace or parent id, version "ff", or version 00 with trailing data.
  /// Later versions are accepted when their first 55 characters parse and any
  /// rest starts with '-' (as the specification asks).
  static std::optional<TraceContext> parse(std::string_view header);

  /// A new trace: random trace and parent ids, flags 01 (sampled).
  static TraceContext generate();

  /// The same trace with a new random parent id: the context to send on an
  /// outgoing call made while handling a request in this trace.
  TraceContext child() const;

  /// The header value, always version 00: "00-<trace_id>-<parent_id>-<flags>".
  std::string to_string() const;

  friend bool operator==(const TraceContext&, const TraceContext&) = default;
};

/// Whether a client-supplied X-Request-Id can be used as is: 1 to 128
/// printable ASCII characters (0x20..0x7E).
bool is_valid_request_id(std::string_view id) noexcept;

/// A new random request id: 32 lowercase hex digits.
std::string generate_request_id();

}  // namespace saga::service
