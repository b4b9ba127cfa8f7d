// Test support: callers, and clients that call a service directly as one of
// them (the identity headers the gateway would send; saga/service/identity.h).
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "saga/service/http_client.h"
#include "saga/service/identity.h"

namespace saga::testing {

/// An admin: may act on anyone's data.
inline service::Identity admin_identity(std::string sub = "test-admin") {
  return {std::move(sub), {service::kRoleAdmin}};
}
inline service::Identity guest_identity(std::string sub) {
  return {std::move(sub), {service::kRoleGuest}};
}
inline service::Identity owner_identity(std::string sub) {
  return {std::move(sub), {service::kRoleOwner}};
}

/// `o` with default headers that make each request come from `who`.
inline service::ClientOptions acting_as(const service::Identity& who,
                                        service::ClientOptions o = {}) {
  o.default_headers = service::identity_headers(who);
  return o;
}

/// A client of 127.0.0.1:`port` whose requests come from `who`.
inline std::unique_ptr<service::HttpClient> client_as(uint16_t port, const service::Identity& who) {
  return std::make_unique<service::HttpClient>("127.0.0.1", port, acting_as(who));
}

}  // namespace saga::testing
