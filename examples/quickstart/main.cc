// The smallest program that links libsaga: prints the library version and
// shows errors as values.
#include <iostream>

#include "saga/status.h"
#include "saga/version.h"

namespace {

saga::StatusOr<int> parse_rooms(int rooms) {
  if (rooms <= 0) return saga::Status::invalid_argument("rooms must be positive");
  return rooms;
}

}  // namespace

int main() {
  std::cout << "libsaga " << saga::version() << "\n";
  auto bad = parse_rooms(0);
  std::cout << "parse_rooms(0): " << bad.status() << "\n";
  auto good = parse_rooms(3);
  if (!good.ok()) return 1;
  std::cout << "parse_rooms(3): " << *good << "\n";
  return 0;
}
