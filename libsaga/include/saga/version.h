// Library version, for logs and compatibility checks.
#pragma once

#include <string_view>

namespace saga {

/// The version of the linked libsaga, "MAJOR.MINOR.PATCH".
std::string_view version() noexcept;

}  // namespace saga
