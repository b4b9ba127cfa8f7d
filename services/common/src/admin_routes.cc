#include "saga/service/admin_routes.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <set>
#include <string>

#include "saga/service/identity.h"
#include "saga/service/routing.h"

namespace saga::service {
namespace {

using Json = nlohmann::json;

constexpr uint32_t kMaxLimit = 1000;  // ListQuery's
constexpr size_t kMaxReason = 500;

Json step_json(const StepView& s) {
  return {{"name", s.name},
          {"status", to_string(s.status)},
          {"attempts", s.attempts},
          {"compensationAttempts", s.compensation_attempts},
          {"round", s.round},
          {"compensationRound", s.compensation_round},
          {"startedMs", s.started_ms},
          {"finishedMs", s.finished_ms},
          {"compensatedMs", s.compensated_ms},
          {"lastError", s.last_error}};
}

Status time_param(const Request& req, const char* name, std::optional<int64_t>& out) {
  const auto text = req.query(name);
  if (!text) return Status();
  int64_t v = 0;
  const char* end = text->data() + text->size();
  auto [p, ec] = std::from_chars(text->data(), end, v);
  if (text->empty() || ec != std::errc() || p != end || v < 0)
    return Status::invalid_argument(std::string("query parameter '") + name +
                                    "' must be a time in ms since the epoch (an integer >= 0)");
  out = v;
  return Status();
}

// The list query of GET /admin/sagas; InvalidArgument (400) says what is wrong.
StatusOr<ListQuery> list_query(const Request& req) {
  ListQuery q;
  if (auto type = req.query("type")) {
    if (type->empty()) return Status::invalid_argument("query parameter 'type' must not be empty");
    q.type = *type;
  }
  if (auto state = req.query("state")) {
    auto parsed = parse_saga_state(*state);
    if (!parsed.ok())
      return Status::invalid_argument("query parameter 'state': " + parsed.status().message());
    q.state = *parsed;
  }
  SAGA_RETURN_IF_ERROR(time_param(req, "createdFrom", q.created_from_ms));
  SAGA_RETURN_IF_ERROR(time_param(req, "createdTo", q.created_to_ms));
  if (auto text = req.query("limit")) {
    uint32_t v = 0;
    const char* end = text->data() + text->size();
    auto [p, ec] = std::from_chars(text->data(), end, v);
    if (text->empty() || ec != std::errc() || p != end || v < 1 || v > kMaxLimit)
      return Status::invalid_argument("query parameter 'limit' must be an integer in 1.." +
                                      std::to_string(kMaxLimit));
    q.limit = v;
  }
  if (auto token = req.query("pageToken")) {
    if (token->empty()) return Status::invalid_argument("query parameter 'pageToken' is empty");
    q.page_token = *token;  // the orchestrator checks it
  }
  q.owned_only = true;  // with replicas, each answers for its own shards
  return q;
}

// GET /admin/sagas: this replica's page and, unless this request was sent on
// by another replica, each other replica's page for the same query; merged
// in the index's order (created, then id). Each part is its replica's first
// `limit` sagas after the token, so the first `limit` of the merge are the
// list's, and list_token() of the last one continues it on every replica.
Response list_sagas(const Orchestrator& orch, const Request& req) {
  auto q = list_query(req);
  if (!q.ok()) return Response::from_status(q.status());
  std::set<std::string> others;
  if (!req.header(kForwardedHeader)) {
    for (const ShardOwner& o : orch.owners()) {
      if (o.where == ShardOwner::Where::kUnknown) return send_to_owner(req, o);  // 503: moving
      if (o.where == ShardOwner::Where::kElsewhere) others.insert(o.address);
    }
  }
  auto page = orch.list(*q);
  if (!page.ok()) return Response::from_status(page.status());  // a bad token: 400
  Json items = Json::array();
  for (const SagaView& v : page->items) items.push_back(saga_json(v));
  bool more = !page->next_page_token.empty();
  for (const std::string& address : others) {
    Response r = send_to_owner(req, ShardOwner{ShardOwner::Where::kElsewhere, 0, address});
    if (r.status() != 200) return r;
    auto part = Json::parse(r.body(), nullptr, /*allow_exceptions=*/false);
    if (!part.is_array())
      return Response::from_status(
          Status::internal("the replica at " + address + " sent a saga list that is not an array"));
    for (Json& v : part) items.push_back(std::move(v));
    more = more || r.header(kNextPageTokenHeader).has_value();
  }
  std::sort(items.begin(), items.end(), [](const Json& a, const Json& b) {
    const int64_t ca = a.value("createdMs", int64_t{0}), cb = b.value("createdMs", int64_t{0});
    if (ca != cb) return ca < cb;
    return a.value("id", "") < b.value("id", "");
  });
  if (items.size() > q->limit) {
    items.erase(items.begin() + q->limit, items.end());
    more = true;
  }
  Response r = Response::json(200, items);
  if (more && !items.empty()) {
    const Json& last = items.back();
    r.set_header(kNextPageTokenHeader,
                 list_token(*q, last.value("createdMs", int64_t{0}), last.value("id", "")));
  }
  return r;
}

// POST /admin/sagas/{id}/<action>: the operator's reason is required and
// logged with who acted; the answer is the saga after the action.
Handler action_route(Orchestrator& orch, std::string action,
                     std::function<Status(Orchestrator&, std::string_view)> act) {
  return with_role_json(
      {kRoleAdmin}, [&orch, action, act](const Request& req, const Identity& who, const Json& body) {
        const std::string id(req.param("id"));
        const auto reason = body.is_object() ? body.find("reason") : body.end();
        if (reason == body.end() || !reason->is_string() || reason->get<std::string>().empty() ||
            reason->get<std::string>().size() > kMaxReason)
          return Response::from_status(Status::invalid_argument(
              "the body must be {\"reason\": \"...\"}: why the operator " + action +
              " the saga, 1.." + std::to_string(kMaxReason) + " characters"));
        return at_owner(req, orch.owner_of(id), [&] {
          if (Status s = act(orch, id); !s.ok()) return Response::from_status(s);
          spdlog::warn("operator {} ({}): {} saga {}: {} (requestId {})", who.subject,
                       who.roles_text(), action, id, reason->get<std::string>(), req.request_id());
          auto view = orch.get(id);
          if (!view.ok()) return Response::from_status(view.status());
          return Response::json(200, saga_json(*view));
        });
      });
}

}  // namespace

Json saga_json(const SagaView& v) {
  Json steps = Json::array();
  for (const StepView& s : v.steps) steps.push_back(step_json(s));
  return {{"id", v.id},
          {"type", v.type},
          {"version", v.version},
          {"state", to_string(v.state)},
          {"currentStep", v.current_step},
          {"steps", std::move(steps)},
          {"data", v.data},
          {"lastError", v.last_error},
          {"cancelRequested", v.cancel_requested},
          {"traceparent", v.traceparent},
          {"createdMs", v.created_ms},
          {"updatedMs", v.updated_ms},
          {"finishedMs", v.finished_ms}};
}

void add_admin_routes(Router& router, Orchestrator& orch) {
  router.get("/admin/sagas", with_role({kRoleAdmin}, [&orch](const Request& req, const Identity&) {
               return list_sagas(orch, req);
             }));
  router.get("/admin/sagas/{id}",
             with_role({kRoleAdmin}, [&orch](const Request& req, const Identity&) {
               const std::string id(req.param("id"));
               return at_owner(req, orch.owner_of(id), [&] {
                 auto view = orch.get(id);
                 if (!view.ok()) return Response::from_status(view.status());
                 return Response::json(200, saga_json(*view));
               });
             }));
  router.post("/admin/sagas/{id}/retry",
              action_route(orch, "retried", [](Orchestrator& o, std::string_view id) {
                return o.retry(id);
              }));
  router.post("/admin/sagas/{id}/compensate",
              action_route(orch, "compensated", [](Orchestrator& o, std::string_view id) {
                return o.force_compensate(id);
              }));
  router.post("/admin/sagas/{id}/abort",
              action_route(orch, "aborted", [](Orchestrator& o, std::string_view id) {
                return o.abort(id);
              }));
}

}  // namespace saga::service
