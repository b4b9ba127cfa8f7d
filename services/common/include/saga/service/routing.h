// Routing between replicas of a service (docs/replicas.md, "Routing"): a
// request about a saga or a key whose shard another replica drives is sent
// on to that replica once, and its answer returned as this one's.
//
//   router.get("/payments/{id}", [&p](const Request& req) {
//     return service::at_owner(req, p.owner_of(key_of(req)), [&] { return answer(req); });
//   });
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "saga/service/http_message.h"
#include "saga/shard.h"
#include "saga/status.h"

namespace saga::service {

/// Header that marks a request one replica sent on to another; a replica
/// never sends such a request on again.
inline constexpr char kForwardedHeader[] = "X-Saga-Forwarded";

/// At most `n` (>= 1) requests of this process wait on another replica at
/// once; send_to_owner answers 503 at once beyond that. The handlers run on
/// the HTTP server's few threads: without a bound, two replicas whose threads
/// all wait on each other would answer nothing until the calls time out.
/// Give it fewer than the server's threads (the services: half). Default 4.
void limit_forwarding(int n);

/// Checks an advertised address (ADVERTISED_URL): "http://host:port", as
/// other replicas reach this one. InvalidArgument naming `variable` otherwise.
Status check_advertised_url(std::string_view variable, std::string_view url);

/// `req` sent on to the replica `owner` names (not here), marked with
/// kForwardedHeader, with its method, target, body, content headers, identity
/// headers, request id and trace; the owner's answer is returned as is. 503
/// with Retry-After: 1 when the owner is unknown (the shard is moving), when
/// `req` was sent on already (ownership moved meanwhile) or when the owner
/// cannot be reached, or when limit_forwarding() requests wait on other
/// replicas already; 504 when it did not answer in time.
Response send_to_owner(const Request& req, const ShardOwner& owner);

/// `handler()` when `owner` is here, else send_to_owner(req, owner).
Response at_owner(const Request& req, const ShardOwner& owner,
                  const std::function<Response()>& handler);

}  // namespace saga::service
