// Random bytes for ids: the one CSPRNG helper of the reference services.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace saga::service {

/// `bytes` random bytes from a CSPRNG (OpenSSL RAND_bytes, seeded by the kernel
/// and reseeded after fork) as 2 * `bytes` lower-case hex digits. Thread-safe.
/// Throws std::runtime_error if the CSPRNG fails (never falls back to a weaker source).
std::string random_hex(size_t bytes);

/// `n` bytes at `data` as 2 * `n` lower-case hex digits.
std::string to_hex(const unsigned char* data, size_t n);

}  // namespace saga::service
