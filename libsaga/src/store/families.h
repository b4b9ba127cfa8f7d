// The column families of the two kinds of store (docs/storage.md), in the
// order their engines open them: the orchestrator's, the participant's, and
// saga/reshard.h's copier all name them from here.
#pragma once

#include <string>
#include <vector>

namespace saga::internal {

/// Orchestrator: instances, outbox, timers (legacy), replies (legacy), index.
inline const std::vector<std::string> kOrchestratorFamilies = {"instances", "outbox", "timers",
                                                              "replies", "index"};
/// Participant: state, inbox, outbox.
inline const std::vector<std::string> kParticipantFamilies = {"state", "inbox", "outbox"};

}  // namespace saga::internal
