#include "saga/gateway/auth.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <array>
#include <fstream>
#include <jwt/jwt.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "saga/json.h"
#include "saga/service/config.h"

namespace saga::gateway {
namespace {

using nlohmann::json;

// One deleter per OpenSSL handle.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* n) const { BN_free(n); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

// Strict base64url without padding (RFC 7515, section 2): nullopt for any
// other character or an impossible length.
std::optional<std::string> base64url_decode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// A base64url part decoded and parsed as a JSON object (depth-limited).
StatusOr<json> json_part(std::string_view part, const char* what) {
  auto bytes = base64url_decode(part);
  if (!bytes)
    return Status::invalid_argument(std::string("the token's ") + what + " is not base64url");
  auto doc = parse_json(*bytes);
  if (!doc.ok() || !doc->is_object())
    return Status::invalid_argument(std::string("the token's ") + what + " is not a JSON object");
  return std::move(*doc);
}

PkeyPtr read_public_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
}

// OK when `pem` is a public key fit for `alg`.
Status check_public_key(const std::string& pem, JwtAlgorithm alg, const std::string& kid) {
  const std::string which = kid.empty() ? "the public key" : "public key '" + kid + "'";
  PkeyPtr key = read_public_pem(pem);
  if (!key) return Status::invalid_argument(which + " is not a PEM public key");
  if (alg == JwtAlgorithm::kRS256) {
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA)
      return Status::invalid_argument(which + " is not an RSA key, as RS256 needs");
    if (EVP_PKEY_get_bits(key.get()) < 2048)
      return Status::invalid_argument(which + " has fewer than 2048 bits");
  } else if (alg == JwtAlgorithm::kES256) {
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_EC)
      return Status::invalid_argument(which + " is not an EC key, as ES256 needs");
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &len) != 1 ||
        std::string_view(group, len) != "prime256v1")
      return Status::invalid_argument(which + " is not on the P-256 curve, as ES256 needs");
  } else {
    return Status::invalid_argument("HS256 takes a secret, not a public key");
  }
  return ok_status();
}

std::string pem_of(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return {};
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// A public key from OpenSSL parameters of key type `type` ("RSA", "EC").
PkeyPtr key_from_params(const char* type, OSSL_PARAM* params) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
    return nullptr;
  return PkeyPtr(key);
}

// The PEM of one JWK, or an error saying why it is unusable.
StatusOr<std::string> jwk_to_pem(const json& jwk, JwtAlgorithm alg) {
  auto member = [&](const char* name) -> std::optional<std::string> {
    auto it = jwk.find(name);
    if (it == jwk.end() || !it->is_string()) return std::nullopt;
    return base64url_decode(it->get<std::string>());
  };
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld) return Status::internal("out of memory");
  PkeyPtr key;
  if (alg == JwtAlgorithm::kRS256) {
    auto n = member("n");
    auto e = member("e");
    if (!n || !e || n->empty() || e->empty())
      return Status::invalid_argument("an RSA key needs base64url n and e");
    BnPtr bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                         static_cast<int>(n->size()), nullptr));
    BnPtr bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                         static_cast<int>(e->size()), nullptr));
    if (!bn_n || !bn_e || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()))
      return Status::internal("cannot build the RSA key");
    std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
    if (params) key = key_from_params("RSA", params.get());
  } else {
    auto x = member("x");
    auto y = member("y");
    if (jwk.value("crv", "") != "P-256" || !x || !y || x->size() != 32 || y->size() != 32)
      return Status::invalid_argument("an EC key needs crv P-256 and 32-byte x and y");
    std::string point = "\x04" + *x + *y;
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                          point.size()))
      return Status::internal("cannot build the EC key");
    std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
    if (params) key = key_from_params("EC", params.get());
  }
  if (!key) return Status::invalid_argument("OpenSSL refused the key");
  std::string pem = pem_of(key.get());
  if (pem.empty()) return Status::internal("cannot write the key as PEM");
  return pem;
}

StatusOr<std::string> read_whole_file(const std::string& variable, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::invalid_argument(variable + ": cannot read '" + path + "'");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

StatusOr<JwtAlgorithm> parse_alg(std::string_view text) {
  if (text == "HS256") return JwtAlgorithm::kHS256;
  if (text == "RS256") return JwtAlgorithm::kRS256;
  if (text == "ES256") return JwtAlgorithm::kES256;
  return Status::invalid_argument("AUTH_ALG must be RS256 or ES256, got '" + std::string(text) +
                                  "'");
}

}  // namespace

std::string_view to_string(JwtAlgorithm alg) {
  switch (alg) {
    case JwtAlgorithm::kHS256:
      return "HS256";
    case JwtAlgorithm::kRS256:
      return "RS256";
    case JwtAlgorithm::kES256:
      return "ES256";
  }
  return "?";
}

StatusOr<std::map<std::string, std::string>> jwks_to_pem(std::string_view jwks, JwtAlgorithm alg) {
  if (alg == JwtAlgorithm::kHS256)
    return Status::invalid_argument("a JWKS holds public keys: use RS256 or ES256");
  auto doc = parse_json(jwks);
  if (!doc.ok() || !doc->is_object() || !doc->contains("keys") || !(*doc)["keys"].is_array())
    return Status::invalid_argument("the JWKS must be a JSON object with a 'keys' array");
  const std::string kty = alg == JwtAlgorithm::kRS256 ? "RSA" : "EC";
  std::map<std::string, std::string> out;
  for (const json& jwk : (*doc)["keys"]) {
    if (!jwk.is_object() || jwk.value("kty", "") != kty) continue;
    if (jwk.contains("use") && jwk["use"] != "sig") continue;
    if (jwk.contains("alg") && jwk["alg"] != std::string(to_string(alg))) continue;
    const std::string kid =
        jwk.contains("kid") && jwk["kid"].is_string() ? jwk["kid"].get<std::string>() : "";
    auto pem = jwk_to_pem(jwk, alg);
    if (!pem.ok())
      return Status::invalid_argument("JWKS key '" + kid + "': " + pem.status().message());
    if (out.count(kid)) return Status::invalid_argument("JWKS: two keys with kid '" + kid + "'");
    out[kid] = std::move(*pem);
  }
  if (out.empty())
    return Status::invalid_argument("the JWKS has no " + kty + " signature key for " +
                                    std::string(to_string(alg)));
  return out;
}

StatusOr<AuthConfig> auth_config_from_env() {
  AuthConfig c;
  SAGA_ASSIGN_OR_RETURN(c.dev_tokens, service::env_bool("AUTH_DEV_TOKENS", false));
  SAGA_ASSIGN_OR_RETURN(
      auto skew, service::env_duration_ms("AUTH_CLOCK_SKEW", std::chrono::seconds(30),
                                          std::chrono::milliseconds(0), std::chrono::minutes(5)));
  c.leeway = std::chrono::duration_cast<std::chrono::seconds>(skew);
  const std::string secret = service::env_string("AUTH_HS256_SECRET", "");
  const std::string secret_file = service::env_string("AUTH_HS256_SECRET_FILE", "");
  const std::string pem_file = service::env_string("AUTH_PUBLIC_KEY_FILE", "");
  const std::string jwks_file = service::env_string("AUTH_JWKS_FILE", "");
  const std::string alg = service::env_string("AUTH_ALG", "");
  const int sources =
      !secret.empty() + !secret_file.empty() + !pem_file.empty() + !jwks_file.empty();
  if (sources > 1)
    return Status::invalid_argument(
        "set only one of AUTH_HS256_SECRET, AUTH_HS256_SECRET_FILE, AUTH_PUBLIC_KEY_FILE and "
        "AUTH_JWKS_FILE");
  if (sources == 0) {
    if (!c.dev_tokens)
      return Status::invalid_argument(
          "the gateway needs a token key: set AUTH_HS256_SECRET(_FILE), AUTH_PUBLIC_KEY_FILE or "
          "AUTH_JWKS_FILE (or AUTH_DEV_TOKENS=1 for local use)");
    std::array<unsigned char, 32> random{};
    if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1)
      return Status::internal("no random bytes for the development secret");
    c.secret.assign(reinterpret_cast<const char*>(random.data()), random.size());
    return c;
  }
  if (!secret.empty() || !secret_file.empty()) {
    if (!alg.empty() && alg != "HS256")
      return Status::invalid_argument("AUTH_ALG is " + alg + " but an HS256 secret is set");
    if (!secret.empty()) {
      c.secret = secret;
    } else {
      SAGA_ASSIGN_OR_RETURN(c.secret, read_whole_file("AUTH_HS256_SECRET_FILE", secret_file));
      while (!c.secret.empty() && (c.secret.back() == '\n' || c.secret.back() == '\r'))
        c.secret.pop_back();
    }
    return c;
  }
  if (!jwks_file.empty()) {
    if (alg.empty())
      return Status::invalid_argument("AUTH_JWKS_FILE needs AUTH_ALG (RS256 or ES256)");
    SAGA_ASSIGN_OR_RETURN(c.algorithm, parse_alg(alg));
    SAGA_ASSIGN_OR_RETURN(std::string text, read_whole_file("AUTH_JWKS_FILE", jwks_file));
    auto keys = jwks_to_pem(text, c.algorithm);
    if (!keys.ok()) return Status::invalid_argument("AUTH_JWKS_FILE: " + keys.status().message());
    c.public_keys = std::move(*keys);
    return c;
  }
  SAGA_ASSIGN_OR_RETURN(std::string pem, read_whole_file("AUTH_PUBLIC_KEY_FILE", pem_file));
  if (alg.empty()) {
    PkeyPtr key = read_public_pem(pem);
    if (!key) return Status::invalid_argument("AUTH_PUBLIC_KEY_FILE is not a PEM public key");
    c.algorithm = EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_EC ? JwtAlgorithm::kES256
                                                                 : JwtAlgorithm::kRS256;
  } else {
    SAGA_ASSIGN_OR_RETURN(c.algorithm, parse_alg(alg));
  }
  c.public_keys[""] = std::move(pem);
  return c;
}

StatusOr<std::shared_ptr<const TokenVerifier>> TokenVerifier::create(AuthConfig config) {
  if (config.algorithm == JwtAlgorithm::kHS256) {
    if (config.secret.size() < 32)
      return Status::invalid_argument("the HS256 secret must have at least 32 bytes");
    if (!config.public_keys.empty())
      return Status::invalid_argument("HS256 takes a secret, not public keys");
  } else {
    if (!config.secret.empty())
      return Status::invalid_argument(std::string(to_string(config.algorithm)) +
                                      " takes public keys, not a secret");
    if (config.public_keys.empty())
      return Status::invalid_argument(std::string(to_string(config.algorithm)) +
                                      " needs at least one public key");
    for (const auto& [kid, pem] : config.public_keys)
      SAGA_RETURN_IF_ERROR(check_public_key(pem, config.algorithm, kid));
    if (config.dev_tokens)
      return Status::invalid_argument(
          "development tokens (AUTH_DEV_TOKENS) need an HS256 secret, not public keys");
  }
  return std::shared_ptr<const TokenVerifier>(new TokenVerifier(std::move(config)));
}

int64_t TokenVerifier::now() const {
  if (config_.now_s) return config_.now_s();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

StatusOr<service::Identity> TokenVerifier::verify(std::string_view token) const {
  const std::string_view alg_name = to_string(config_.algorithm);
  if (token.empty()) return Status::invalid_argument("the bearer token is empty");
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
    return Status::invalid_argument("the token is not a compact JWS (header.payload.signature)");
  const std::string_view head_part = token.substr(0, dot1);
  const std::string_view body_part = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig_part = token.substr(dot2 + 1);
  if (sig_part.empty()) return Status::invalid_argument("the token is not signed");
  if (!base64url_decode(sig_part))
    return Status::invalid_argument("the token's signature is not base64url");

  // The algorithm is pinned before cpp-jwt sees the token: only the
  // configured one, spelled exactly; `none` and the other family never reach
  // signature checking.
  SAGA_ASSIGN_OR_RETURN(json header, json_part(head_part, "header"));
  SAGA_ASSIGN_OR_RETURN(json claims, json_part(body_part, "payload"));
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string())
    return Status::invalid_argument("the token's header has no alg");
  if (*alg != std::string(alg_name))
    return Status::invalid_argument("the token's algorithm " + alg->dump() +
                                    " is not accepted (this gateway takes " +
                                    std::string(alg_name) + ")");
  if (header.contains("crit"))
    return Status::invalid_argument("the token has critical header parameters (crit)");

  std::string key = config_.secret;
  if (config_.algorithm != JwtAlgorithm::kHS256) {
    std::string kid;
    if (auto k = header.find("kid"); k != header.end()) {
      if (!k->is_string()) return Status::invalid_argument("the token's kid is not a string");
      kid = k->get<std::string>();
    }
    auto it = config_.public_keys.find(kid);
    if (it == config_.public_keys.end() && kid.empty() && config_.public_keys.size() == 1)
      it = config_.public_keys.begin();
    if (it == config_.public_keys.end())
      return Status::invalid_argument("no key for the token's kid '" + kid + "'");
    key = it->second;
  }

  std::error_code ec;
  try {
    using namespace jwt::params;
    jwt::decode(token, algorithms({std::string(alg_name)}), ec, secret(key),
                jwt::params::verify(true), leeway(static_cast<uint32_t>(config_.leeway.count())));
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the token is malformed: ") + e.what());
  }
  if (ec) return Status::invalid_argument("the token is not valid: " + ec.message());

  // Claims, checked on this clock (cpp-jwt checked exp and nbf on the system
  // clock too; a missing exp it lets pass, this does not).
  const int64_t t = now();
  const int64_t leeway = config_.leeway.count();
  auto exp = claims.find("exp");
  if (exp == claims.end() || !exp->is_number())
    return Status::invalid_argument("the token has no exp");
  if (t > exp->get<double>() + static_cast<double>(leeway))
    return Status::invalid_argument("the token has expired");
  if (auto nbf = claims.find("nbf"); nbf != claims.end()) {
    if (!nbf->is_number()) return Status::invalid_argument("the token's nbf is not a number");
    if (static_cast<double>(t + leeway) < nbf->get<double>())
      return Status::invalid_argument("the token is not valid yet (nbf)");
  }
  auto sub = claims.find("sub");
  if (sub == claims.end() || !sub->is_string())
    return Status::invalid_argument("the token has no sub");
  service::Identity who{sub->get<std::string>(), {}};
  if (Status s = service::check_subject(who.subject); !s.ok())
    return Status::invalid_argument("the token's sub is unusable: " + s.message());
  if (auto roles = claims.find("roles"); roles != claims.end()) {
    if (!roles->is_array()) return Status::invalid_argument("the token's roles is not an array");
    std::vector<std::string> names;
    for (const json& r : *roles) {
      if (!r.is_string()) return Status::invalid_argument("the token's roles must be strings");
      names.push_back(r.get<std::string>());
    }
    who.roles = service::known_roles(names);
  }
  return who;
}

StatusOr<std::string> TokenVerifier::issue(const service::Identity& who) const {
  if (config_.algorithm != JwtAlgorithm::kHS256)
    return Status::failed_precondition("development tokens need an HS256 secret");
  const int64_t t = now();
  std::error_code ec;
  std::string token;
  try {
    using namespace jwt::params;
    jwt::jwt_object obj{algorithm("HS256"), secret(config_.secret)};
    obj.add_claim("sub", who.subject);
    obj.add_claim("roles", json(who.roles));
    obj.add_claim("iat", t);
    obj.add_claim("exp", t + config_.dev_token_ttl.count());
    token = obj.signature(ec);
  } catch (const std::exception& e) {
    return Status::internal(std::string("cannot sign the token: ") + e.what());
  }
  if (ec) return Status::internal("cannot sign the token: " + ec.message());
  return token;
}

}  // namespace saga::gateway
