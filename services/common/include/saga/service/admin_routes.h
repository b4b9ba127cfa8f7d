// The saga admin API of a service that hosts an orchestrator (docs/admin.md):
// operators list and read sagas and act on one, with the admin role.
//
//   GET  /admin/sagas?type=&state=&awaiting=&createdFrom=&createdTo=&limit=&pageToken=
//   GET  /admin/sagas/{id}               (with its timeline)
//   GET  /admin/saga-counts              (sagas in flight by state, step, participant)
//   POST /admin/sagas/{id}/retry         {"reason": "..."}
//   POST /admin/sagas/{id}/compensate    {"reason": "..."}
//   POST /admin/sagas/{id}/abort         {"reason": "..."}
//   POST /admin/sagas/{id}/skip          {"reason": "..."}
//
// With replicas, any replica answers: a list and the counts gather every
// replica's part, a saga's routes go to the replica that drives it.
#pragma once

#include <nlohmann/json.hpp>

#include "saga/orchestrator.h"
#include "saga/service/router.h"

namespace saga::service {

/// A saga as the admin API shows it: its fields in camelCase, states and
/// step statuses by name, times in ms since the epoch (0 = not yet); with
/// `with_timeline`, also "timeline" (every transition) and "timelineDropped".
nlohmann::json saga_json(const SagaView& view, bool with_timeline = false);

/// Registers the routes above on `router`; `orch` must outlive it.
void add_admin_routes(Router& router, Orchestrator& orch);

}  // namespace saga::service
