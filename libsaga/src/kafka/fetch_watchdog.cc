#include "kafka/fetch_watchdog.h"

#include <algorithm>
#include <iterator>
#include <set>

namespace saga::internal::kafka {

namespace {

// The node ids of the brokers the client is connected to ("state": "UP").
std::set<int64_t> brokers_up(const nlohmann::json& stats) {
  std::set<int64_t> up;
  auto brokers = stats.find("brokers");
  if (brokers == stats.end() || !brokers->is_object()) return up;
  for (const auto& [name, broker] : brokers->items()) {
    if (!broker.is_object() || broker.value("state", "") != "UP") continue;
    auto id = broker.find("nodeid");
    if (id != broker.end() && id->is_number_integer()) up.insert(id->get<int64_t>());
  }
  return up;
}

bool coordinator_up(const nlohmann::json& stats) {
  auto cgrp = stats.find("cgrp");
  return cgrp != stats.end() && cgrp->is_object() && cgrp->value("state", "") == "up";
}

}  // namespace

std::vector<FetchWatchdog::Partition> FetchWatchdog::observe(const nlohmann::json& stats,
                                                             Clock::time_point now) {
  std::map<Partition, Clock::time_point> still;
  std::vector<Partition> restart;
  auto topics = stats.find("topics");
  if (stats.is_object() && coordinator_up(stats) && topics != stats.end() && topics->is_object()) {
    const std::set<int64_t> up = brokers_up(stats);
    for (const auto& [topic, t] : topics->items()) {
      auto partitions = t.find("partitions");
      if (!t.is_object() || partitions == t.end() || !partitions->is_object()) continue;
      for (const auto& [key, p] : partitions->items()) {
        if (!p.is_object()) continue;
        const int64_t id = p.value("partition", int64_t{-1});
        const int64_t leader = p.value("leader", int64_t{-1});
        if (id < 0 || !p.value("desired", false) || p.value("fetch_state", "") != "none" ||
            up.count(leader) == 0) {
          continue;
        }
        Partition part{topic, static_cast<int32_t>(id)};
        auto seen = stalled_since_.find(part);
        const Clock::time_point since = seen == stalled_since_.end() ? now : seen->second;
        if (now - since >= limit_) {
          restart.push_back(part);
          still.emplace(std::move(part), now);
        } else {
          still.emplace(std::move(part), since);
        }
      }
    }
  }
  stalled_since_ = std::move(still);
  return restart;
}

std::vector<std::string> EmptyTopicWatch::observe(bool steady,
                                                  const std::map<std::string, int>& held,
                                                  Clock::time_point now) {
  std::vector<std::string> flagged;
  for (auto it = empty_.begin(); it != empty_.end();) {  // topics held again, or gone
    auto h = held.find(it->first);
    it = h == held.end() || h->second > 0 ? empty_.erase(it) : std::next(it);
  }
  for (const auto& [topic, count] : held) {
    if (count > 0) continue;
    auto [it, fresh] = empty_.try_emplace(topic, Watch{now, first_});
    Watch& w = it->second;
    if (!steady) {
      w.since = now;  // only a settled group's empty assignment counts
      continue;
    }
    if (now - w.since >= w.wait) {
      flagged.push_back(topic);
      w.since = now;
      w.wait = std::min(longest_, w.wait * 2);
    }
  }
  return flagged;
}

}  // namespace saga::internal::kafka
