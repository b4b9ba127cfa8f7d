#include "saga/service/identity.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <utility>

#include "saga/service/config.h"

namespace saga::service {
namespace {

constexpr std::array<const char*, 3> kKnownRoles = {kRoleGuest, kRoleOwner, kRoleAdmin};

std::atomic<bool> g_identity_required{true};

// The identity of a request without identity headers when AUTH_REQUIRED=0.
const Identity& anonymous_admin() {
  static const Identity who{"anonymous", {kRoleAdmin}};
  return who;
}

// The caller of `req`, or nullopt when it must be refused.
std::optional<Identity> caller(const Request& req) {
  if (auto who = identity_of(req)) return who;
  // Headers present but malformed are refused even when identity is optional.
  if (!identity_required() && !req.header(kSubjectHeader)) return anonymous_admin();
  return std::nullopt;
}

Response missing_identity() {
  return unauthenticated(
      "authentication required: send Authorization: Bearer <JWT> through the gateway");
}

}  // namespace

bool Identity::has_role(std::string_view role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

std::string Identity::roles_text() const {
  std::string out;
  for (const std::string& r : roles) out += (out.empty() ? "" : ",") + r;
  return out;
}

Status check_subject(std::string_view subject) {
  if (subject.empty() || subject.size() > 128)
    return Status::invalid_argument("the subject must be 1..128 characters");
  for (char c : subject) {
    if (c < 0x21 || c > 0x7e || c == '/' || c == ',')
      return Status::invalid_argument(
          "the subject must be printable ASCII without blanks, '/' or ','");
  }
  return ok_status();
}

std::vector<std::string> known_roles(const std::vector<std::string>& roles) {
  std::vector<std::string> out;
  for (const char* known : kKnownRoles)
    if (std::find(roles.begin(), roles.end(), known) != roles.end()) out.emplace_back(known);
  return out;
}

Headers identity_headers(const Identity& who) {
  return {{kSubjectHeader, who.subject}, {kRolesHeader, who.roles_text()}};
}

std::optional<Identity> identity_of(const Request& req) {
  auto subject = req.header(kSubjectHeader);
  if (!subject || !check_subject(*subject).ok()) return std::nullopt;
  Identity who{std::string(*subject), {}};
  std::vector<std::string> roles;
  if (auto text = req.header(kRolesHeader)) {
    std::string_view rest = *text;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view role = rest.substr(0, comma);
      while (!role.empty() && role.front() == ' ') role.remove_prefix(1);
      while (!role.empty() && role.back() == ' ') role.remove_suffix(1);
      roles.emplace_back(role);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  who.roles = known_roles(roles);
  return who;
}

bool identity_required() { return g_identity_required.load(std::memory_order_relaxed); }
void set_identity_required(bool required) {
  g_identity_required.store(required, std::memory_order_relaxed);
}

Status identity_required_from_env() {
  SAGA_ASSIGN_OR_RETURN(bool required, env_bool("AUTH_REQUIRED", true));
  set_identity_required(required);
  return ok_status();
}

Response unauthenticated(std::string detail, bool invalid_token) {
  Response r = Response::problem(401, "Unauthorized", std::move(detail));
  r.set_header("WWW-Authenticate", invalid_token ? R"(Bearer realm="saga", error="invalid_token")"
                                                 : R"(Bearer realm="saga")");
  return r;
}

Response forbidden(std::string detail) {
  return Response::problem(403, "Forbidden", std::move(detail));
}

Handler authenticated(IdentityHandler handler) {
  return [handler = std::move(handler)](const Request& req) {
    auto who = caller(req);
    if (!who) return missing_identity();
    return handler(req, *who);
  };
}

Handler authenticated_json(IdentityJsonHandler handler) {
  return [handler = std::move(handler)](const Request& req) {
    auto who = caller(req);
    if (!who) return missing_identity();
    return with_json_body([&handler, &who](const Request& r, const nlohmann::json& body) {
      return handler(r, *who, body);
    })(req);
  };
}

Handler with_role(std::vector<std::string> roles, IdentityHandler handler) {
  return authenticated([roles = std::move(roles), handler = std::move(handler)](
                           const Request& req, const Identity& who) {
    bool allowed = who.is_admin();
    for (const std::string& r : roles) allowed = allowed || who.has_role(r);
    if (!allowed) {
      std::string need;
      for (const std::string& r : roles) need += (need.empty() ? "" : " or ") + r;
      return forbidden("this call needs the role " + need);
    }
    return handler(req, who);
  });
}

Handler with_role_json(std::vector<std::string> roles, IdentityJsonHandler handler) {
  return with_role(
      std::move(roles), [handler = std::move(handler)](const Request& req, const Identity& who) {
        return with_json_body([&handler, &who](const Request& r, const nlohmann::json& body) {
          return handler(r, who, body);
        })(req);
      });
}

}  // namespace saga::service
