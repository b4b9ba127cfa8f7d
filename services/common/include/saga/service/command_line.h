// The command line every reference service shares. A service is configured by
// its environment (services/README.md); the only arguments are --version and
// --help.
#pragma once

#include <optional>
#include <string_view>

namespace saga::service {

/// Handles a service's arguments, before anything else in main():
///   no argument  -> nullopt: run the service;
///   --version    -> prints "<program> <libsaga version>" to stdout, returns 0;
///   --help / -h  -> prints a usage line to stdout, returns 0;
///   anything else -> prints an error to stderr, returns 2 (the exit code of a bad setting).
std::optional<int> handle_command_line(std::string_view program, int argc, const char* const* argv);

}  // namespace saga::service
