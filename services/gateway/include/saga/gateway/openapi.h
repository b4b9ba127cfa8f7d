// The gateway's OpenAPI 3.1 description: services/gateway/openapi.json,
// compiled into the gateway at build time (services/gateway/CMakeLists.txt),
// so that GET /openapi.json answers it from an installed binary too.
// docs/openapi.md says how it is checked against the code and the running stack.
#pragma once

#include <string_view>

namespace saga::gateway {

/// The document's JSON text, as the file holds it. Static storage: valid for
/// the life of the process. Thread-safe.
std::string_view openapi_json() noexcept;

}  // namespace saga::gateway
