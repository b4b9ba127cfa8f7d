#include "owners.h"

#include <random>
#include <utility>

#include "saga/json.h"

namespace saga::internal {
namespace {

std::string random_instance() {
  std::random_device device;
  std::mt19937_64 gen((uint64_t{device()} << 32) ^ device());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint64_t v = gen(), i = 0; i < 16; ++i, v >>= 4) out.push_back(kHex[v & 15]);
  return out;
}

}  // namespace

OwnerTable::OwnerTable(std::string engine, uint32_t shards, std::string address)
    : destination_(std::move(engine) + ".owners"),
      address_(std::move(address)),
      instance_(random_instance()),
      entries_(shards) {}

Status OwnerTable::subscribe(Transport& transport) {
  return transport.subscribe_table(destination_, [this](Message m, Transport::Ack) {
    (void)apply(m);  // a foreign record changes nothing
  });
}

Message OwnerTable::claim_record(uint32_t shard, int64_t now_ms) const {
  Message m;
  m.kind = MessageKind::kEvent;
  m.type = "ShardOwner";
  m.destination = destination_;
  m.key = "shard-" + std::to_string(shard);
  m.id = destination_ + "/" + std::to_string(shard) + "/" + instance_ + "/" +
         std::to_string(now_ms);
  m.created_ms = now_ms;
  m.payload = nlohmann::json{{"shard", shard}, {"instance", instance_}, {"address", address_},
                   {"claimedMs", now_ms}}
                  .dump();
  return m;
}

Status OwnerTable::apply(const Message& record) {
  auto parsed = parse_json(record.payload);
  if (!parsed.ok()) return parsed.status().with_context(destination_ + ": record " + record.id);
  const nlohmann::json& j = *parsed;
  if (!j.is_object() || !j.contains("shard") || !j["shard"].is_number_unsigned() ||
      !j.contains("instance") || !j["instance"].is_string() || !j.contains("address") ||
      !j["address"].is_string()) {
    return Status::invalid_argument(destination_ + ": malformed record " + record.id);
  }
  const uint64_t shard = j["shard"].get<uint64_t>();
  std::lock_guard lock(mu_);
  if (shard >= entries_.size())
    return Status::invalid_argument(destination_ + ": record for shard " + std::to_string(shard) +
                                    " of " + std::to_string(entries_.size()));
  entries_[shard] = Entry{j["instance"].get<std::string>(), j["address"].get<std::string>()};
  return ok_status();
}

uint32_t OwnerTable::unknown() const {
  std::lock_guard lock(mu_);
  uint32_t n = 0;
  for (const Entry& e : entries_) n += e.instance.empty() ? 1 : 0;
  return n;
}

Status OwnerTable::readiness(std::string_view engine) const {
  const uint32_t n = unknown();
  if (n == 0) return ok_status();
  return Status::unavailable(std::string(engine) + ": the owners of " + std::to_string(n) +
                             " shard(s) are not known yet (the replicas are starting)");
}

ShardOwner OwnerTable::lookup(uint32_t shard, bool owned_here) const {
  ShardOwner out;
  out.shard = shard;
  if (owned_here) {
    out.where = ShardOwner::Where::kHere;
    return out;
  }
  std::lock_guard lock(mu_);
  const Entry& e = entries_.at(shard);
  // This process's own record of a shard it no longer drives says nothing
  // about where it went; neither does a record without an address.
  if (e.instance.empty() || e.instance == instance_ || e.address.empty()) return out;
  out.where = ShardOwner::Where::kElsewhere;
  out.address = e.address;
  return out;
}

}  // namespace saga::internal
