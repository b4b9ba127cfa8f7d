#include "saga/service/command_line.h"

#include <iostream>
#include <string>

#include "saga/version.h"

namespace saga::service {

std::optional<int> handle_command_line(std::string_view program, int argc,
                                       const char* const* argv) {
  if (argc <= 1) return std::nullopt;
  const std::string_view arg = argv[1];
  if (argc == 2 && arg == "--version") {
    std::cout << program << ' ' << saga::version() << '\n';
    return 0;
  }
  if (argc == 2 && (arg == "--help" || arg == "-h")) {
    std::cout << "usage: " << program << " [--version | --help]\n"
              << "Configured by environment variables: see services/README.md.\n";
    return 0;
  }
  std::cerr << program << ": unknown argument '" << arg
            << "' (only --version and --help; configuration is in the environment)\n";
  return 2;
}

}  // namespace saga::service
