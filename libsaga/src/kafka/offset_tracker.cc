#include "kafka/offset_tracker.h"

#include <algorithm>

namespace saga::internal::kafka {

OffsetTracker::Partition& OffsetTracker::fresh_locked(const TopicPartitionId& tp) {
  Partition& p = partitions_[tp];
  p = Partition{};
  p.epoch = next_epoch_++;
  return p;
}

void OffsetTracker::assign(const std::vector<TopicPartitionId>& partitions) {
  std::lock_guard lock(mu_);
  for (const TopicPartitionId& tp : partitions) fresh_locked(tp);
}

void OffsetTracker::revoke(const std::vector<TopicPartitionId>& partitions) {
  std::lock_guard lock(mu_);
  for (const TopicPartitionId& tp : partitions) partitions_.erase(tp);
}

OffsetTracker::Token OffsetTracker::delivered(const std::string& topic, int32_t partition,
                                              int64_t offset) {
  std::lock_guard lock(mu_);
  TopicPartitionId tp(topic, partition);
  auto it = partitions_.find(tp);
  // A message from a partition we did not see assigned (should not happen with
  // a rebalance callback, but costs nothing to handle): track it from here on.
  Partition& p = it != partitions_.end() ? it->second : fresh_locked(tp);
  // The first record after an assignment is where the consumer resumed, so
  // that position is committed already (or there is nothing to commit yet).
  if (p.stored < 0) p.stored = offset;
  p.unacked.insert(offset);
  return Token{std::move(tp.first), partition, offset, p.epoch};
}

void OffsetTracker::ack(const Token& token) {
  std::lock_guard lock(mu_);
  if (detached_) return;
  auto it = partitions_.find(TopicPartitionId(token.topic, token.partition));
  if (it == partitions_.end() || it->second.epoch != token.epoch) return;
  Partition& p = it->second;
  if (p.unacked.erase(token.offset) == 0) return;
  p.acked_end = std::max(p.acked_end, token.offset + 1);
  const int64_t position = p.unacked.empty() ? p.acked_end : *p.unacked.begin();
  if (position <= p.stored) return;
  // A failed store (the partition was just revoked inside librdkafka) leaves
  // `stored` behind, so the next ack tries again; redelivery covers the rest.
  if (store_(token.topic, token.partition, position).ok()) p.stored = position;
}

void OffsetTracker::detach() {
  std::lock_guard lock(mu_);
  detached_ = true;
}

int64_t OffsetTracker::stored_for_test(const std::string& topic, int32_t partition) const {
  std::lock_guard lock(mu_);
  auto it = partitions_.find(TopicPartitionId(topic, partition));
  return it == partitions_.end() ? -1 : it->second.stored;
}

}  // namespace saga::internal::kafka
