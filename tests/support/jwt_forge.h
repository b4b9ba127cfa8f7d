// Test support: JWTs made by hand with OpenSSL (not with the library the
// gateway verifies with), good and bad ones alike, and keys generated at test
// time. Header-only; link OpenSSL::Crypto.
//
//   auto rsa = generate_key("RSA");
//   std::string t = sign_token({{"alg", "RS256"}}, {{"sub", "u1"}, {"exp", now + 60}}, rsa);
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace saga::testing {

/// base64url without padding.
inline std::string b64url(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

/// Seconds since the epoch, system clock.
inline int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// A key pair generated now: "RSA" (2048 bits unless `rsa_bits`) or "EC" (P-256).
struct TestKey {
  std::shared_ptr<EVP_PKEY> key;
  std::string private_pem;
  std::string public_pem;
};

inline std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

inline TestKey generate_key(const std::string& type, size_t rsa_bits = 2048) {
  EVP_PKEY* raw = type == "RSA" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", rsa_bits)
                                : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (!raw) throw std::runtime_error("key generation failed");
  TestKey k;
  k.key = std::shared_ptr<EVP_PKEY>(raw, EVP_PKEY_free);
  std::unique_ptr<BIO, int (*)(BIO*)> priv(BIO_new(BIO_s_mem()), BIO_free);
  std::unique_ptr<BIO, int (*)(BIO*)> pub(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(priv.get(), raw, nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_PUBKEY(pub.get(), raw);
  k.private_pem = bio_text(priv.get());
  k.public_pem = bio_text(pub.get());
  return k;
}

/// "header.payload" of a token.
inline std::string signing_input(const nlohmann::json& header, const nlohmann::json& payload) {
  return b64url(header.dump()) + "." + b64url(payload.dump());
}

/// HMAC-SHA256 of `data` with `secret`.
inline std::string hmac_sha256(std::string_view secret, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

/// A token signed with HMAC-SHA256, whatever `header` says its alg is.
inline std::string sign_hs256(const nlohmann::json& header, const nlohmann::json& payload,
                              std::string_view secret) {
  const std::string input = signing_input(header, payload);
  return input + "." + b64url(hmac_sha256(secret, input));
}

/// A token signed with `key` and SHA-256 (RSA PKCS#1 v1.5, or ECDSA as the
/// raw r||s of JWS), whatever `header` says its alg is.
inline std::string sign_token(const nlohmann::json& header, const nlohmann::json& payload,
                              const TestKey& key) {
  const std::string input = signing_input(header, payload);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) != 1)
    throw std::runtime_error("signing failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("signing failed");
  sig.resize(len);
  if (EVP_PKEY_get_base_id(key.key.get()) == EVP_PKEY_EC) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    std::unique_ptr<ECDSA_SIG, void (*)(ECDSA_SIG*)> der(
        d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())), ECDSA_SIG_free);
    if (!der) throw std::runtime_error("bad ECDSA signature");
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(der.get()), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(der.get()), reinterpret_cast<unsigned char*>(raw.data()) + 32,
                 32);
    sig = raw;
  }
  return input + "." + b64url(sig);
}

/// The public half of `key` as a JWK (RFC 7517) with `kid`.
inline nlohmann::json to_jwk(const TestKey& key, const std::string& kid) {
  auto bn_bytes = [&](const char* param, int pad) {
    BIGNUM* bn = nullptr;
    if (EVP_PKEY_get_bn_param(key.key.get(), param, &bn) != 1)
      throw std::runtime_error("no key parameter");
    std::string out(pad > 0 ? static_cast<size_t>(pad) : static_cast<size_t>(BN_num_bytes(bn)),
                    '\0');
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
    BN_free(bn);
    return b64url(out);
  };
  if (EVP_PKEY_get_base_id(key.key.get()) == EVP_PKEY_RSA) {
    return {{"kty", "RSA"},
            {"kid", kid},
            {"use", "sig"},
            {"n", bn_bytes(OSSL_PKEY_PARAM_RSA_N, 0)},
            {"e", bn_bytes(OSSL_PKEY_PARAM_RSA_E, 0)}};
  }
  return {{"kty", "EC"},
          {"kid", kid},
          {"crv", "P-256"},
          {"x", bn_bytes(OSSL_PKEY_PARAM_EC_PUB_X, 32)},
          {"y", bn_bytes(OSSL_PKEY_PARAM_EC_PUB_Y, 32)}};
}

}  // namespace saga::testing
