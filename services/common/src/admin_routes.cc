#include "saga/service/admin_routes.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <functional>
#include <set>
#include <string>
#include <variant>

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
  SAGA_ASSIGN_OR_RETURN(out, req.query_int(name, 0, std::numeric_limits<int64_t>::max(),
                                           "a time in ms since the epoch (an integer >= 0)"));
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
  if (auto awaiting = req.query("awaiting")) {
    if (awaiting->empty())
      return Status::invalid_argument("query parameter 'awaiting' must not be empty");
    q.awaiting = *awaiting;
  }
  SAGA_RETURN_IF_ERROR(time_param(req, "createdFrom", q.created_from_ms));
  SAGA_RETURN_IF_ERROR(time_param(req, "createdTo", q.created_to_ms));
  SAGA_ASSIGN_OR_RETURN(auto limit, req.query_int("limit", 1, kMaxLimit));
  if (limit) q.limit = static_cast<uint32_t>(*limit);
  if (auto token = req.query("pageToken")) {
    if (token->empty()) return Status::invalid_argument("query parameter 'pageToken' is empty");
    q.page_token = *token;  // the orchestrator checks it
  }
  q.owned_only = true;  // with replicas, each answers for its own shards
  return q;
}

// Every other replica's answer to `req` (sent on once, marked forwarded;
// none when this request was itself sent on), all 200; else the first answer
// that is not (503 while a shard has no known owner).
std::variant<std::vector<Response>, Response> gather(const Orchestrator& orch, const Request& req) {
  std::set<std::string> others;
  if (!req.header(kForwardedHeader)) {
    for (const ShardOwner& o : orch.owners()) {
      if (o.where == ShardOwner::Where::kUnknown) return send_to_owner(req, o);
      if (o.where == ShardOwner::Where::kElsewhere) others.insert(o.address);
    }
  }
  std::vector<Response> parts;
  for (const std::string& address : others) {
    Response r = send_to_owner(req, ShardOwner{ShardOwner::Where::kElsewhere, 0, address});
    if (r.status() != 200) return r;
    parts.push_back(std::move(r));
  }
  return parts;
}

Response bad_part(const std::string& what) {
  return Response::from_status(Status::internal("a replica sent " + what));
}

// GET /admin/sagas: this replica's page and each other replica's page for
// the same query, merged in the index's order (created, then id). Each part
// is its replica's first `limit` sagas after the token, so the first `limit`
// of the merge are the list's, and list_token() of the last one continues it
// on every replica.
Response list_sagas(const Orchestrator& orch, const Request& req) {
  auto q = list_query(req);
  if (!q.ok()) return Response::from_status(q.status());
  auto others = gather(orch, req);
  if (auto* refused = std::get_if<Response>(&others)) return std::move(*refused);
  auto page = orch.list(*q);
  if (!page.ok()) return Response::from_status(page.status());  // a bad token: 400
  Json items = Json::array();
  for (const SagaView& v : page->items) items.push_back(saga_json(v));
  bool more = !page->next_page_token.empty();
  for (const Response& r : std::get<std::vector<Response>>(others)) {
    auto part = Json::parse(r.body(), nullptr, /*allow_exceptions=*/false);
    if (!part.is_array()) return bad_part("a saga list that is not an array");
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

// Adds a replica's counts (as counts_json() wrote them) to `total`; false
// when `part` is not such a document.
bool add_counts(SagaCounts& total, const Json& part) {
  if (!part.is_object()) return false;
  const auto states = part.find("byState"), steps = part.find("bySteps"),
             participants = part.find("byParticipant");
  if (states == part.end() || !states->is_object() || steps == part.end() ||
      !steps->is_array() || participants == part.end() || !participants->is_array())
    return false;
  total.running += states->value("RUNNING", uint64_t{0});
  total.compensating += states->value("COMPENSATING", uint64_t{0});
  total.failed += states->value("FAILED", uint64_t{0});
  for (const Json& s : *steps) {
    if (!s.is_object()) return false;
    auto state = parse_saga_state(s.value("state", ""));
    if (!state.ok()) return false;
    SagaCounts::AtStep at{s.value("type", ""), s.value("step", ""), *state, 0};
    auto same = std::find_if(total.by_step.begin(), total.by_step.end(), [&](const auto& x) {
      return x.type == at.type && x.step == at.step && x.state == at.state;
    });
    if (same == total.by_step.end()) same = total.by_step.insert(total.by_step.end(), at);
    same->count += s.value("count", uint64_t{0});
  }
  for (const Json& p : *participants) {
    if (!p.is_object()) return false;
    const std::string name = p.value("participant", "");
    auto same = std::find_if(total.by_participant.begin(), total.by_participant.end(),
                             [&](const auto& x) { return x.first == name; });
    if (same == total.by_participant.end())
      same = total.by_participant.insert(total.by_participant.end(), {name, 0});
    same->second += p.value("count", uint64_t{0});
  }
  return true;
}

Json counts_json(const SagaCounts& c) {
  Json steps = Json::array();
  for (const SagaCounts::AtStep& s : c.by_step)
    steps.push_back(
        {{"type", s.type}, {"step", s.step}, {"state", to_string(s.state)}, {"count", s.count}});
  Json participants = Json::array();
  for (const auto& [name, count] : c.by_participant)
    participants.push_back({{"participant", name}, {"count", count}});
  return {{"byState",
           {{"RUNNING", c.running}, {"COMPENSATING", c.compensating}, {"FAILED", c.failed}}},
          {"bySteps", std::move(steps)},
          {"byParticipant", std::move(participants)}};
}

// GET /admin/saga-counts: the sagas in flight counted by every replica (each
// the shards it drives), summed.
Response saga_counts(const Orchestrator& orch, const Request& req) {
  auto others = gather(orch, req);
  if (auto* refused = std::get_if<Response>(&others)) return std::move(*refused);
  auto total = orch.counts();
  if (!total.ok()) return Response::from_status(total.status());
  for (const Response& r : std::get<std::vector<Response>>(others)) {
    if (!add_counts(*total, Json::parse(r.body(), nullptr, /*allow_exceptions=*/false)))
      return bad_part("saga counts that are not a counts document");
  }
  return Response::json(200, counts_json(*total));
}

// POST /admin/sagas/{id}/<action>: the operator's reason is required; it
// goes into the saga's timeline with who acted, and into the log. The answer
// is the saga after the action.
using Action = Status (Orchestrator::*)(std::string_view, OperatorNote);

Handler action_route(Orchestrator& orch, std::string action, Action act) {
  return with_role_json(
      {kRoleAdmin}, [&orch, action, act](const Request& req, const Identity& who, const Json& body) {
        const std::string id(req.param("id"));
        const auto field = body.is_object() ? body.find("reason") : body.end();
        const std::string* reason =
            field != body.end() && field->is_string() ? field->get_ptr<const std::string*>() : nullptr;
        if (!reason || reason->empty() || reason->size() > kMaxReason)
          return Response::from_status(Status::invalid_argument(
              "the body must be {\"reason\": \"...\"}: why the operator " + action +
              " the saga, 1.." + std::to_string(kMaxReason) + " characters"));
        return at_owner(req, orch.owner_of(id), [&] {
          if (Status s = (orch.*act)(id, OperatorNote{who.subject, *reason}); !s.ok())
            return Response::from_status(s);
          spdlog::warn("operator {} ({}): {} saga {}: {} (requestId {})", who.subject,
                       who.roles_text(), action, id, *reason, req.request_id());
          auto view = orch.get(id);
          if (!view.ok()) return Response::from_status(view.status());
          return Response::json(200, saga_json(*view, /*with_timeline=*/true));
        });
      });
}

}  // namespace

Json saga_json(const SagaView& v, bool with_timeline) {
  Json steps = Json::array();
  for (const StepView& s : v.steps) steps.push_back(step_json(s));
  Json j = {{"id", v.id},
            {"type", v.type},
            {"version", v.version},
            {"state", to_string(v.state)},
            {"currentStep", v.current_step},
            {"awaiting", v.awaiting},
            {"steps", std::move(steps)},
            {"data", v.data},
            {"lastError", v.last_error},
            {"cancelRequested", v.cancel_requested},
            {"traceparent", v.traceparent},
            {"createdMs", v.created_ms},
            {"updatedMs", v.updated_ms},
            {"finishedMs", v.finished_ms}};
  if (!with_timeline) return j;
  Json timeline = Json::array();
  for (const TimelineEntry& e : v.timeline) {
    timeline.push_back({{"atMs", e.at_ms},
                        {"event", to_string(e.event)},
                        {"state", to_string(e.state)},
                        {"step", e.step},
                        {"stepName", e.step < v.steps.size() ? v.steps[e.step].name : ""},
                        {"stepStatus", to_string(e.step_status)},
                        {"attempt", e.attempt},
                        {"commandId", e.command_id},
                        {"error", e.error},
                        {"actor", e.actor},
                        {"reason", e.reason}});
  }
  j["timeline"] = std::move(timeline);
  j["timelineDropped"] = v.timeline_dropped;
  return j;
}

void add_admin_routes(Router& router, Orchestrator& orch) {
  router.get("/admin/sagas", with_role({kRoleAdmin}, [&orch](const Request& req, const Identity&) {
               return list_sagas(orch, req);
             }));
  router.get("/admin/saga-counts",
             with_role({kRoleAdmin}, [&orch](const Request& req, const Identity&) {
               return saga_counts(orch, req);
             }));
  router.get("/admin/sagas/{id}",
             with_role({kRoleAdmin}, [&orch](const Request& req, const Identity&) {
               const std::string id(req.param("id"));
               return at_owner(req, orch.owner_of(id), [&] {
                 auto view = orch.get(id);
                 if (!view.ok()) return Response::from_status(view.status());
                 return Response::json(200, saga_json(*view, /*with_timeline=*/true));
               });
             }));
  router.post("/admin/sagas/{id}/retry", action_route(orch, "retried", &Orchestrator::retry));
  router.post("/admin/sagas/{id}/compensate",
              action_route(orch, "compensated", &Orchestrator::force_compensate));
  router.post("/admin/sagas/{id}/abort", action_route(orch, "aborted", &Orchestrator::abort));
  router.post("/admin/sagas/{id}/skip",
              action_route(orch, "skipped the failed compensation of", &Orchestrator::skip_compensation));
}

}  // namespace saga::service
