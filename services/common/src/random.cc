#include "saga/service/random.h"

#include <openssl/rand.h>

#include <stdexcept>
#include <vector>

namespace saga::service {

std::string to_hex(const unsigned char* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[data[i] >> 4];
    out += kHex[data[i] & 0xf];
  }
  return out;
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  // OpenSSL's CSPRNG (seeded from the kernel); failing it is not recoverable:
  // an id must never come from a weaker source.
  if (bytes > 0 && RAND_bytes(buf.data(), static_cast<int>(bytes)) != 1)
    throw std::runtime_error("RAND_bytes failed: no cryptographic randomness for an id");
  return to_hex(buf.data(), bytes);
}

}  // namespace saga::service
