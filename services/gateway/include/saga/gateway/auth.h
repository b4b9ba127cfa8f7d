// Bearer tokens at the gateway: verification of the JWTs clients send, the
// gateway's key configuration, and the development tokens of POST
// /auth/dev-token (docs/security.md, "Authentication").
//
// One algorithm is accepted, the one configured: HS256 with a shared secret,
// or RS256 / ES256 with public keys (a PEM file, or a JWKS file whose keys are
// picked by the token's `kid`). A token naming any other algorithm, `none`
// included, is refused before its signature is looked at, and the key's type
// must match the algorithm (an RSA key never verifies an HS256 token).
// Signatures are checked by cpp-jwt (Debian's libcpp-jwt-dev) on OpenSSL.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "saga/service/identity.h"
#include "saga/status.h"

namespace saga::gateway {

enum class JwtAlgorithm { kHS256, kRS256, kES256 };

/// "HS256", "RS256" or "ES256".
std::string_view to_string(JwtAlgorithm alg);

/// The keys and rules of token verification. A plain struct.
struct AuthConfig {
  /// The only algorithm accepted. Default HS256.
  JwtAlgorithm algorithm = JwtAlgorithm::kHS256;
  /// HS256: the shared secret, at least 32 bytes. Default empty.
  std::string secret;
  /// RS256 / ES256: PEM public keys by key id; the id "" is the key of tokens
  /// without `kid` (a single key also serves them). Default none.
  std::map<std::string, std::string> public_keys;
  /// Clock skew allowed on exp and nbf. Default 30 s.
  std::chrono::seconds leeway{30};
  /// Serve POST /auth/dev-token (AUTH_DEV_TOKENS=1; HS256 only). Default false.
  bool dev_tokens = false;
  /// Lifetime of a development token. Default 1 h.
  std::chrono::seconds dev_token_ttl{3600};
  /// Seconds since the Unix epoch. Default (empty): the system clock.
  std::function<int64_t()> now_s = {};
};

/// The configuration from the environment:
///   AUTH_HS256_SECRET or AUTH_HS256_SECRET_FILE  HS256 with this secret
///   AUTH_PUBLIC_KEY_FILE                         a PEM public key (RSA: RS256, P-256: ES256)
///   AUTH_JWKS_FILE                               a JWKS document (needs AUTH_ALG)
///   AUTH_ALG                                     RS256 or ES256 (default: from the PEM key)
///   AUTH_CLOCK_SKEW                              leeway on exp/nbf (default 30s, at most 5m)
///   AUTH_DEV_TOKENS                              1: serve POST /auth/dev-token (never in
///                                                production); without any key above, a
///                                                random HS256 secret is made for this process
/// Exactly one key source must be set (or none with AUTH_DEV_TOKENS=1).
/// InvalidArgument naming the variable for anything else.
StatusOr<AuthConfig> auth_config_from_env();

/// The signature keys of a JWKS document (RFC 7517) usable with `alg` (RSA
/// keys for RS256, EC P-256 keys for ES256; keys whose `use` is not "sig" or
/// whose `alg` differs are skipped), as PEM by `kid` ("" for a key without
/// one). InvalidArgument when the document is malformed or has no such key.
StatusOr<std::map<std::string, std::string>> jwks_to_pem(std::string_view jwks, JwtAlgorithm alg);

/// Verifies bearer tokens and issues development tokens. Immutable after
/// create(): thread-safe.
class TokenVerifier {
 public:
  /// Checks `config`: an HS256 secret of at least 32 bytes; for RS256 RSA
  /// keys of at least 2048 bits, for ES256 EC keys on P-256; dev tokens only
  /// with HS256. InvalidArgument saying what is wrong.
  static StatusOr<std::shared_ptr<const TokenVerifier>> create(AuthConfig config);

  /// The caller a token names when it is valid: a compact JWS with the
  /// configured `alg`, a good signature by a configured key, `exp` not passed
  /// and `nbf` reached (both give or take the leeway), a usable `sub` and, if
  /// present, `roles` as an array of strings (unknown roles dropped).
  /// InvalidArgument saying why not, for the 401's detail.
  StatusOr<service::Identity> verify(std::string_view token) const;

  /// A token for `who` expiring after config().dev_token_ttl.
  /// FailedPrecondition unless the algorithm is HS256.
  StatusOr<std::string> issue(const service::Identity& who) const;

  const AuthConfig& config() const { return config_; }

 private:
  explicit TokenVerifier(AuthConfig config) : config_(std::move(config)) {}
  int64_t now() const;

  AuthConfig config_;
};

}  // namespace saga::gateway
