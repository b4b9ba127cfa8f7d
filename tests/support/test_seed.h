// Test support: the seed of a randomized test. Every random choice a test or
// a process it starts makes (kill moments, fault draws, which place a booking
// asks for) comes from a generator seeded here, and the seed is printed, so a
// failure can be replayed with SAGA_TEST_SEED=<seed>. Names that must be
// unique per run (topics, folders) are not drawn from it. Header-only.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

namespace saga::testing {

/// The environment variable that fixes the seed of a randomized test.
inline constexpr const char* kTestSeedVariable = "SAGA_TEST_SEED";

/// The seed for `what`: SAGA_TEST_SEED when set (decimal), else a fresh one
/// from the OS. Printed to stderr either way, with the line that replays it.
/// Throws std::invalid_argument when SAGA_TEST_SEED is not a number.
inline uint64_t test_seed(const std::string& what) {
  uint64_t seed = 0;
  const char* env = std::getenv(kTestSeedVariable);
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    seed = std::strtoull(env, &end, 10);
    if (*end != '\0')
      throw std::invalid_argument(std::string(kTestSeedVariable) + " is not a number: " + env);
  } else {
    std::random_device os;
    seed = (uint64_t{os()} << 32) ^ os();
  }
  std::fprintf(stderr, "%s: seed %llu (replay with %s=%llu)\n", what.c_str(),
               static_cast<unsigned long long>(seed), kTestSeedVariable,
               static_cast<unsigned long long>(seed));
  return seed;
}

/// The environment a child process gets so that its own test_seed() draws
/// from the parent's generator: a run replayed with the parent's seed hands
/// every child the same seed again.
inline std::string child_seed(std::mt19937_64& parent) { return std::to_string(parent()); }

}  // namespace saga::testing
