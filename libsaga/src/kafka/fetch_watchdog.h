// Two stalls of librdkafka 2.0.2's group consumer that the Kafka transport
// repairs (no librdkafka types here: the transport feeds what it sees and
// acts on what these return).
//
// FetchWatchdog finds assigned partitions whose fetch never started, from the
// consumer's statistics. librdkafka 2.0.2 leaves a newly assigned partition without a
// fetcher for good when the OffsetFetch for its committed offset is answered
// with a request-level NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE (the
// group coordinator moved, e.g. a broker died): the partition stays in the
// assignment's "queried" list, no retry is scheduled, and its messages are
// never consumed (librdkafka issue #5586). The transport assigns them again.
//
// EmptyTopicWatch finds subscribed topics of which the group gave this
// member no partition at all. The group leader computes the assignment from
// a metadata request to the group coordinator; a coordinator that has not
// learnt of a topic just created yet answers without it, and the leader
// assigns none of its partitions to anyone. librdkafka rejoins only when a
// later metadata answer differs from what it recorded when it joined, which
// here it never does: the topic stays unconsumed until some member joins or
// leaves. Seen with a participant started on a fresh three-broker cluster.
// The transport then subscribes again (leaving and rejoining the group).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace saga::internal::kafka {

/// Not thread-safe: fed by whichever thread serves the consumer's events.
class FetchWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  using Partition = std::pair<std::string, int32_t>;

  /// A partition is stalled once it has looked stalled for `limit`.
  explicit FetchWatchdog(std::chrono::milliseconds limit) : limit_(limit) {}

  /// Reads one statistics document of a group consumer taken at `now`.
  /// Returns the partitions to restart: assigned ("desired"), fetch state
  /// "none" (no fetcher), while the group coordinator is up and the
  /// partition's leader is up, in every document for `limit`. A partition
  /// returned is watched afresh (returned again only after another `limit`).
  std::vector<Partition> observe(const nlohmann::json& stats, Clock::time_point now);

 private:
  std::chrono::milliseconds limit_;
  std::map<Partition, Clock::time_point> stalled_since_;
};

/// Not thread-safe: fed by whichever thread serves the consumer's events.
class EmptyTopicWatch {
 public:
  using Clock = std::chrono::steady_clock;

  /// A topic is flagged after `first` without a partition here; while it
  /// stays so, again after twice the previous wait, up to `longest`.
  EmptyTopicWatch(std::chrono::milliseconds first, std::chrono::milliseconds longest)
      : first_(first), longest_(longest) {}

  /// One look at `now`: `steady` when the member is in its group with a
  /// settled assignment; `held` maps each subscribed topic known to have
  /// partitions to how many of them this member holds. Returns the topics
  /// held at zero, in steady looks only, for the current wait.
  std::vector<std::string> observe(bool steady, const std::map<std::string, int>& held,
                                   Clock::time_point now);

 private:
  struct Watch {
    Clock::time_point since;
    std::chrono::milliseconds wait;
  };
  std::chrono::milliseconds first_;
  std::chrono::milliseconds longest_;
  std::map<std::string, Watch> empty_;  // topics held at zero, since when
};

}  // namespace saga::internal::kafka
