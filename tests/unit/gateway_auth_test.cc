// The gateway's token verification (services/gateway/src/auth.cc): tokens
// forged by hand with OpenSSL (tests/support/jwt_forge.h), keys generated at
// test time, and the key configuration from the environment.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <fstream>
#include <string>

#include "saga/gateway/auth.h"
#include "support/jwt_forge.h"
#include "support/temp_dir.h"

using nlohmann::json;
using saga::StatusCode;
namespace gw = saga::gateway;
namespace t = saga::testing;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-test";

std::shared_ptr<const gw::TokenVerifier> verifier_of(gw::AuthConfig c) {
  auto v = gw::TokenVerifier::create(std::move(c));
  REQUIRE_MESSAGE(v.ok(), v.status().to_string());
  return *v;
}

std::shared_ptr<const gw::TokenVerifier> hs256() {
  gw::AuthConfig c;
  c.secret = kSecret;
  return verifier_of(c);
}

std::shared_ptr<const gw::TokenVerifier> keyed(gw::JwtAlgorithm alg, const std::string& pem) {
  gw::AuthConfig c;
  c.algorithm = alg;
  c.public_keys[""] = pem;
  return verifier_of(c);
}

json claims(const std::string& sub = "u1", int64_t exp_in = 600) {
  return {{"sub", sub}, {"roles", {"guest"}}, {"exp", t::unix_now() + exp_in}};
}

// The reason a token is refused ("" when it is accepted).
std::string refusal(const gw::TokenVerifier& v, const std::string& token) {
  auto who = v.verify(token);
  if (who.ok()) return "";
  CHECK(who.status().code() == StatusCode::kInvalidArgument);
  return who.status().message();
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("a valid HS256 token names its subject and known roles") {
  auto v = hs256();
  json c = claims("alice");
  c["roles"] = {"owner", "admin", "superuser", "owner"};
  auto who = v->verify(t::sign_hs256({{"alg", "HS256"}, {"typ", "JWT"}}, c, kSecret));
  REQUIRE_MESSAGE(who.ok(), who.status().to_string());
  CHECK(who->subject == "alice");
  CHECK(who->roles == std::vector<std::string>{"owner", "admin"});
  CHECK(who->is_admin());

  json no_roles = {{"sub", "bob"}, {"exp", t::unix_now() + 60}};
  auto bob = v->verify(t::sign_hs256({{"alg", "HS256"}}, no_roles, kSecret));
  REQUIRE(bob.ok());
  CHECK(bob->roles.empty());
}

TEST_CASE("valid RS256 and ES256 tokens, keys generated at test time") {
  SUBCASE("RS256") {
    const t::TestKey rsa = t::generate_key("RSA");
    auto v = keyed(gw::JwtAlgorithm::kRS256, rsa.public_pem);
    CHECK(refusal(*v, t::sign_token({{"alg", "RS256"}}, claims(), rsa)) == "");
    const t::TestKey other = t::generate_key("RSA");
    CHECK(has(refusal(*v, t::sign_token({{"alg", "RS256"}}, claims(), other)), "not valid"));
  }
  SUBCASE("ES256") {
    const t::TestKey ec = t::generate_key("EC");
    auto v = keyed(gw::JwtAlgorithm::kES256, ec.public_pem);
    CHECK(refusal(*v, t::sign_token({{"alg", "ES256"}}, claims(), ec)) == "");
    const t::TestKey other = t::generate_key("EC");
    CHECK(has(refusal(*v, t::sign_token({{"alg", "ES256"}}, claims(), other)), "not valid"));
  }
}

TEST_CASE("expired, not yet valid and exp-less tokens are refused") {
  auto v = hs256();
  CHECK(
      has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, claims("u1", -3600), kSecret)), "xpired"));
  json early = claims();
  early["nbf"] = t::unix_now() + 3600;
  CHECK(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, early, kSecret)) != "");
  json no_exp = {{"sub", "u1"}};
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, no_exp, kSecret)), "exp"));
  // Within the leeway (30 s by default) a just-expired token still passes.
  CHECK(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, claims("u1", -5), kSecret)) == "");

  SUBCASE("on the injected clock") {
    gw::AuthConfig c;
    c.secret = kSecret;
    c.leeway = std::chrono::seconds(0);
    c.now_s = [] { return t::unix_now() + 1'000; };  // this gateway's clock runs 1000 s ahead
    auto ahead = verifier_of(c);
    CHECK(has(refusal(*ahead, t::sign_hs256({{"alg", "HS256"}}, claims("u1", 600), kSecret)),
              "expired"));
  }
}

TEST_CASE("a wrong signature or a changed payload is refused") {
  auto v = hs256();
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, claims(),
                                      "another-secret-another-secret-another")),
            "not valid"));
  const std::string good = t::sign_hs256({{"alg", "HS256"}}, claims("alice"), kSecret);
  const std::string sig = good.substr(good.rfind('.'));
  const std::string forged = t::signing_input({{"alg", "HS256"}}, claims("mallory")) + sig;
  CHECK(refusal(*v, forged) != "");
}

TEST_CASE("alg none is refused, with or without a signature") {
  auto v = hs256();
  const std::string input = t::signing_input({{"alg", "none"}, {"typ", "JWT"}}, claims());
  CHECK(refusal(*v, input + ".") != "");
  CHECK(has(refusal(*v, input + "." + t::b64url("x")), "not accepted"));
  for (const char* spelling : {"None", "NONE", "nOnE"}) {
    CAPTURE(spelling);
    CHECK(
        has(refusal(*v, t::signing_input({{"alg", spelling}}, claims()) + ".eA"), "not accepted"));
  }
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "hs256"}}, claims(), kSecret)), "not accepted"));
  CHECK(has(refusal(*v, t::sign_hs256({{"typ", "JWT"}}, claims(), kSecret)), "alg"));
}

TEST_CASE("algorithm confusion: an HS256 token signed with the public key is refused") {
  const t::TestKey rsa = t::generate_key("RSA");
  auto v = keyed(gw::JwtAlgorithm::kRS256, rsa.public_pem);
  // The classic attack: HMAC keyed with the PEM text the verifier holds.
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, claims(), rsa.public_pem)),
            "not accepted"));
  // An ES256 gateway refuses RS256 tokens, and a valid RS256 signature does not help.
  const t::TestKey ec = t::generate_key("EC");
  auto es = keyed(gw::JwtAlgorithm::kES256, ec.public_pem);
  CHECK(has(refusal(*es, t::sign_token({{"alg", "RS256"}}, claims(), rsa)), "not accepted"));
  // An HS256 gateway refuses RS256 tokens.
  CHECK(has(refusal(*hs256(), t::sign_token({{"alg", "RS256"}}, claims(), rsa)), "not accepted"));
  // An ES256 token whose signature is really RSA is refused by the key type.
  CHECK(refusal(*es, t::sign_token({{"alg", "ES256"}}, claims(), rsa)) != "");
}

TEST_CASE("garbled tokens are refused with a reason") {
  auto v = hs256();
  const std::string good = t::sign_hs256({{"alg", "HS256"}}, claims(), kSecret);
  for (const std::string& bad :
       {std::string(), std::string("abc"), std::string("a.b"), good + ".x", std::string("..."),
        std::string("!!.??.**"), t::b64url("not json") + "." + t::b64url("{}") + ".eA",
        t::b64url("[1]") + "." + t::b64url("{}") + ".eA",
        t::b64url(R"({"alg":"HS256"})") + "." + t::b64url("nope") + ".eA",
        good.substr(0, good.rfind('.')) + "."}) {
    CAPTURE(bad);
    CHECK(refusal(*v, bad) != "");
  }
  json bad_sub = claims();
  bad_sub["sub"] = "a/b";
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, bad_sub, kSecret)), "sub"));
  json numeric_sub = claims();
  numeric_sub["sub"] = 42;
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, numeric_sub, kSecret)), "sub"));
  json bad_roles = claims();
  bad_roles["roles"] = "admin";
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}}, bad_roles, kSecret)), "roles"));
  CHECK(has(refusal(*v, t::sign_hs256({{"alg", "HS256"}, {"crit", {"exp"}}}, claims(), kSecret)),
            "crit"));
}

TEST_CASE("JWKS keys are picked by kid") {
  const t::TestKey a = t::generate_key("RSA");
  const t::TestKey b = t::generate_key("RSA");
  const t::TestKey ec = t::generate_key("EC");
  const json jwks = {{"keys", {t::to_jwk(a, "a"), t::to_jwk(b, "b"), t::to_jwk(ec, "e")}}};
  auto keys = gw::jwks_to_pem(jwks.dump(), gw::JwtAlgorithm::kRS256);
  REQUIRE_MESSAGE(keys.ok(), keys.status().to_string());
  CHECK(keys->size() == 2);  // the EC key is not for RS256
  gw::AuthConfig c;
  c.algorithm = gw::JwtAlgorithm::kRS256;
  c.public_keys = *keys;
  auto v = verifier_of(c);
  CHECK(refusal(*v, t::sign_token({{"alg", "RS256"}, {"kid", "a"}}, claims(), a)) == "");
  CHECK(refusal(*v, t::sign_token({{"alg", "RS256"}, {"kid", "b"}}, claims(), b)) == "");
  CHECK(refusal(*v, t::sign_token({{"alg", "RS256"}, {"kid", "a"}}, claims(), b)) != "");
  CHECK(has(refusal(*v, t::sign_token({{"alg", "RS256"}, {"kid", "zz"}}, claims(), a)), "kid"));
  CHECK(has(refusal(*v, t::sign_token({{"alg", "RS256"}}, claims(), a)), "kid"));

  auto es_keys = gw::jwks_to_pem(jwks.dump(), gw::JwtAlgorithm::kES256);
  REQUIRE_MESSAGE(es_keys.ok(), es_keys.status().to_string());
  c.algorithm = gw::JwtAlgorithm::kES256;
  c.public_keys = *es_keys;
  CHECK(refusal(*verifier_of(c), t::sign_token({{"alg", "ES256"}, {"kid", "e"}}, claims(), ec)) ==
        "");

  CHECK(!gw::jwks_to_pem("{}", gw::JwtAlgorithm::kRS256).ok());
  CHECK(!gw::jwks_to_pem(R"({"keys":[]})", gw::JwtAlgorithm::kRS256).ok());
  CHECK(
      !gw::jwks_to_pem(R"({"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]})", gw::JwtAlgorithm::kRS256)
           .ok());
}

TEST_CASE("keys that do not fit the algorithm are refused at start") {
  gw::AuthConfig short_secret;
  short_secret.secret = "too short";
  CHECK(!gw::TokenVerifier::create(short_secret).ok());

  const t::TestKey rsa = t::generate_key("RSA");
  const t::TestKey ec = t::generate_key("EC");
  gw::AuthConfig c;
  c.algorithm = gw::JwtAlgorithm::kES256;
  c.public_keys[""] = rsa.public_pem;
  CHECK(!gw::TokenVerifier::create(c).ok());
  c.algorithm = gw::JwtAlgorithm::kRS256;
  c.public_keys[""] = ec.public_pem;
  CHECK(!gw::TokenVerifier::create(c).ok());
  c.public_keys[""] = t::generate_key("RSA", 1024).public_pem;
  CHECK(!gw::TokenVerifier::create(c).ok());
  c.public_keys[""] = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n";
  CHECK(!gw::TokenVerifier::create(c).ok());
  c.public_keys[""] = rsa.public_pem;
  c.dev_tokens = true;  // development tokens are HS256 only
  CHECK(!gw::TokenVerifier::create(c).ok());
}

TEST_CASE("development tokens are HS256, expire, and verify") {
  gw::AuthConfig c;
  c.secret = kSecret;
  c.dev_tokens = true;
  c.dev_token_ttl = std::chrono::seconds(60);
  auto v = verifier_of(c);
  auto token = v->issue({"dev-user", {"guest", "owner"}});
  REQUIRE(token.ok());
  auto who = v->verify(*token);
  REQUIRE_MESSAGE(who.ok(), who.status().to_string());
  CHECK(who->subject == "dev-user");
  CHECK(who->roles == std::vector<std::string>{"guest", "owner"});
  c.now_s = [] { return t::unix_now() + 3600; };
  c.dev_tokens = false;
  CHECK(has(refusal(*verifier_of(c), *token), "xpired"));
}

TEST_CASE("the key configuration from the environment") {
  const char* vars[] = {
      "AUTH_HS256_SECRET", "AUTH_HS256_SECRET_FILE", "AUTH_PUBLIC_KEY_FILE", "AUTH_JWKS_FILE",
      "AUTH_ALG",          "AUTH_CLOCK_SKEW",        "AUTH_DEV_TOKENS"};
  for (const char* v : vars) ::unsetenv(v);
  auto none = gw::auth_config_from_env();
  REQUIRE(!none.ok());
  CHECK(has(none.status().message(), "AUTH_HS256_SECRET"));

  ::setenv("AUTH_DEV_TOKENS", "1", 1);
  auto dev = gw::auth_config_from_env();
  REQUIRE(dev.ok());
  CHECK(dev->dev_tokens);
  CHECK(dev->secret.size() == 32);  // random, for this process
  CHECK(gw::TokenVerifier::create(*dev).ok());
  ::unsetenv("AUTH_DEV_TOKENS");

  ::setenv("AUTH_HS256_SECRET", kSecret.c_str(), 1);
  auto secret = gw::auth_config_from_env();
  REQUIRE(secret.ok());
  CHECK(secret->algorithm == gw::JwtAlgorithm::kHS256);
  CHECK(!secret->dev_tokens);
  CHECK(secret->secret == kSecret);

  t::TempDir dir("saga-auth");
  const t::TestKey ec = t::generate_key("EC");
  const std::string pem_path = (dir.path() / "key.pem").string();
  std::ofstream(pem_path) << ec.public_pem;
  ::setenv("AUTH_PUBLIC_KEY_FILE", pem_path.c_str(), 1);
  CHECK(!gw::auth_config_from_env().ok());  // two key sources
  ::unsetenv("AUTH_HS256_SECRET");
  auto pem = gw::auth_config_from_env();
  REQUIRE_MESSAGE(pem.ok(), pem.status().to_string());
  CHECK(pem->algorithm == gw::JwtAlgorithm::kES256);  // from the key's type
  CHECK(gw::TokenVerifier::create(*pem).ok());
  ::setenv("AUTH_ALG", "RS256", 1);
  auto mismatch = gw::auth_config_from_env();
  REQUIRE(mismatch.ok());
  CHECK(!gw::TokenVerifier::create(*mismatch).ok());  // an EC key for RS256
  ::unsetenv("AUTH_PUBLIC_KEY_FILE");

  const std::string jwks_path = (dir.path() / "jwks.json").string();
  std::ofstream(jwks_path) << json{{"keys", {t::to_jwk(ec, "k1")}}}.dump();
  ::setenv("AUTH_JWKS_FILE", jwks_path.c_str(), 1);
  ::setenv("AUTH_ALG", "ES256", 1);
  auto jwks = gw::auth_config_from_env();
  REQUIRE_MESSAGE(jwks.ok(), jwks.status().to_string());
  CHECK(jwks->public_keys.count("k1") == 1);
  ::setenv("AUTH_CLOCK_SKEW", "1h", 1);
  CHECK(!gw::auth_config_from_env().ok());
  for (const char* v : vars) ::unsetenv(v);
}
