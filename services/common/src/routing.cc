#include "saga/service/routing.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "saga/service/config.h"
#include "saga/service/http_client.h"
#include "saga/service/identity.h"

namespace saga::service {
namespace {

constexpr std::string_view kScheme = "http://";

// The request headers a replica passes on (the server sets Host and
// Content-Length again; the identity was checked by the gateway).
constexpr std::array<const char*, 7> kPassedOn = {
    "Content-Type", "Accept",        "Idempotency-Key", "tracestate",
    kSubjectHeader, kRolesHeader,    "X-Request-Id"};
// The response headers returned with the owner's answer.
constexpr std::array<const char*, 4> kReturned = {"Location", "Retry-After", "Allow",
                                                  "Next-Page-Token"};

std::atomic<int> g_max_forwards{4};
std::atomic<int> g_forwards{0};  // requests of this process waiting on another replica

Response moving(std::string detail) {
  Response r = Response::problem(503, "Service Unavailable", std::move(detail));
  r.set_header("Retry-After", "1");
  return r;
}

}  // namespace

void limit_forwarding(int n) { g_max_forwards = std::max(1, n); }

Status check_advertised_url(std::string_view variable, std::string_view url) {
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::invalid_argument(std::string(variable) + " must be http://host:port, got '" +
                                    std::string(url) + "'");
  }
  return parse_host_port(variable, url.substr(kScheme.size())).status();
}

Response at_owner(const Request& req, const ShardOwner& owner,
                  const std::function<Response()>& handler) {
  return owner.where == ShardOwner::Where::kHere ? handler() : send_to_owner(req, owner);
}

Response send_to_owner(const Request& req, const ShardOwner& owner) {
  const std::string shard = "shard " + std::to_string(owner.shard);
  if (req.header(kForwardedHeader)) {
    return moving(shard + " is not driven here any more (it moved while the request was sent "
                  "on); try again");
  }
  if (owner.where == ShardOwner::Where::kUnknown)
    return moving(shard + " is moving between replicas; try again");
  auto address = parse_host_port("the owner's address", std::string_view(owner.address)
                                                            .substr(std::min(kScheme.size(),
                                                                             owner.address.size())));
  if (!address.ok() || owner.address.substr(0, kScheme.size()) != kScheme)
    return moving(shard + " is driven by a replica with an unusable address '" + owner.address + "'");
  Headers headers;
  for (const char* name : kPassedOn)
    if (auto value = req.header(name)) headers.emplace_back(name, std::string(*value));
  headers.emplace_back(kForwardedHeader, "1");
  headers.emplace_back("traceparent", req.trace().child().to_string());
  if (g_forwards.fetch_add(1) >= g_max_forwards) {
    g_forwards.fetch_sub(1);
    return moving("this replica waits on others for as many requests as it may; try again");
  }
  HttpClient client(address->host, address->port);
  auto res = client.request(req.method(), req.target(), headers, req.body());
  g_forwards.fetch_sub(1);
  if (!res.ok()) {
    spdlog::warn("{} {}: sending on to {} (owner of {}) failed: {}", req.method(), req.target(),
                 owner.address, shard, res.status().to_string());
    // Unreachable: 503, nothing was applied there. Timed out: 504, as the
    // gateway says, it may or may not have been.
    return Response::from_status(
        res.status()
            .with_context("the replica driving " + shard + " (" + owner.address + ")")
            .with_retry_after(std::chrono::seconds(1)));
  }
  auto content_type = res->header("Content-Type");
  Response out = Response::text(
      res->status, std::move(res->body),
      content_type ? std::string(*content_type) : std::string("application/octet-stream"));
  for (const char* name : kReturned)
    if (auto value = res->header(name)) out.set_header(name, std::string(*value));
  return out;
}

}  // namespace saga::service
