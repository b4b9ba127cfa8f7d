// Parsing JSON that may be hostile: every JSON text and MessagePack record
// libsaga and the reference services read goes through parse_json or
// parse_msgpack, which refuse deep nesting while parsing (docs/security.md).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string_view>

#include "saga/status.h"

namespace saga {

/// The deepest nesting of arrays and objects parse_json and parse_msgpack
/// accept: `[]` and `{}` are depth 1, `[[]]` is depth 2, a scalar is depth 0.
/// Deep enough for any document libsaga or the services exchange, shallow
/// enough that nlohmann's recursive dump, copy, compare and MessagePack code
/// stay far from the end of a thread's stack.
inline constexpr size_t kMaxJsonDepth = 64;

/// Parses `text` as exactly one JSON document (RFC 8259: no comments, nothing
/// but whitespace after it). InvalidArgument when it is malformed (the message
/// is nlohmann's, such as "parse error at line 1, column 3: ...") or nested
/// deeper than kMaxJsonDepth; the parse stops at the first container too deep,
/// so its cost is bounded by the input's size and its stack use by the limit.
/// Never throws. Thread-safe.
StatusOr<nlohmann::json> parse_json(std::string_view text);

/// parse_json for MessagePack bytes (how the store keeps saga data): one
/// value spanning all of `bytes`. InvalidArgument when malformed, truncated or
/// nested deeper than kMaxJsonDepth. Never throws. Thread-safe.
StatusOr<nlohmann::json> parse_msgpack(std::string_view bytes);

/// The nesting depth of `j` as kMaxJsonDepth counts it, found without
/// recursion (for documents built in code, such as saga data, before they
/// are stored). Thread-safe.
size_t json_depth(const nlohmann::json& j);

}  // namespace saga
