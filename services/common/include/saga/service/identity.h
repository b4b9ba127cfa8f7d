// Who is calling: the identity the gateway verified (from the caller's JWT)
// and forwards to the services in two headers, and the checks the services
// make with it (docs/security.md, "Authentication" and "Authorization").
//
//   router.get("/reservations/{id}", authenticated([&](const Request& req, const Identity& who) {
//     auto b = load(req.param("id"));
//     if (!b.ok() || !who.may_act_as(b->user)) return not_found(...);   // 404, not 403
//     ...
//   }));
//
// The gateway strips these headers from what clients send and sets them from
// the verified token only; a service trusts them because it listens on
// 127.0.0.1 (HTTP_HOST) behind the gateway.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/service/http_message.h"
#include "saga/service/router.h"

namespace saga::service {

/// The header naming the caller (the token's `sub`).
inline constexpr char kSubjectHeader[] = "X-Saga-Subject";
/// The header with the caller's roles, comma-separated (the token's `roles`).
inline constexpr char kRolesHeader[] = "X-Saga-Roles";

/// The roles a token may carry; others are ignored.
inline constexpr char kRoleGuest[] = "guest";
inline constexpr char kRoleOwner[] = "owner";
inline constexpr char kRoleAdmin[] = "admin";

/// A verified caller. A value type.
struct Identity {
  /// The user id (the token's `sub`): 1..128 printable ASCII characters, no '/'.
  std::string subject;
  /// Known roles only (guest, owner, admin), each once, in that order.
  std::vector<std::string> roles;

  bool has_role(std::string_view role) const;
  bool is_admin() const { return has_role(kRoleAdmin); }
  /// True when the caller may act on `user`'s data: it is `user`, or an admin.
  bool may_act_as(std::string_view user) const { return is_admin() || subject == user; }
  /// The roles joined with ',' (the kRolesHeader value).
  std::string roles_text() const;
};

/// OK when `subject` can be a user id (see Identity::subject).
Status check_subject(std::string_view subject);

/// The known roles among `roles` (unknown ones dropped, duplicates removed),
/// in the order guest, owner, admin.
std::vector<std::string> known_roles(const std::vector<std::string>& roles);

/// The headers carrying `who` upstream (what the gateway sends; tests use it
/// to call a service directly as someone).
Headers identity_headers(const Identity& who);

/// The identity in `req`'s headers; nullopt when the subject header is absent
/// or malformed (such a request counts as unauthenticated).
std::optional<Identity> identity_of(const Request& req);

/// Whether requests without identity headers are refused (401). On by
/// default; AUTH_REQUIRED=0 turns it off for a service deployed without the
/// gateway in front, and then such requests act as the anonymous admin
/// "anonymous". Set once at start (set_identity_required), before serving.
bool identity_required();
void set_identity_required(bool required);
/// Reads AUTH_REQUIRED (boolean, default true) and applies it. InvalidArgument
/// for a value that is not a boolean.
Status identity_required_from_env();

/// 401 problem with `WWW-Authenticate: Bearer` (`error="invalid_token"` when
/// `invalid_token`).
Response unauthenticated(std::string detail, bool invalid_token = false);
/// 403 problem.
Response forbidden(std::string detail);

/// A handler that needs to know who calls.
using IdentityHandler = std::function<Response(const Request&, const Identity&)>;
using IdentityJsonHandler =
    std::function<Response(const Request&, const Identity&, const nlohmann::json& body)>;

/// Wraps `handler`: 401 when the request carries no identity (see
/// identity_required()), else runs it with the caller's identity.
Handler authenticated(IdentityHandler handler);
/// authenticated() for a JSON body: identity first (401), then with_json_body's
/// 415/400, then `handler`.
Handler authenticated_json(IdentityJsonHandler handler);

/// Wraps `handler`: as authenticated(), and 403 unless the caller has one of
/// `roles` (admin always passes).
Handler with_role(std::vector<std::string> roles, IdentityHandler handler);
/// with_role() for a JSON body: 401, then 403, then 415/400, then `handler`.
Handler with_role_json(std::vector<std::string> roles, IdentityJsonHandler handler);

}  // namespace saga::service
