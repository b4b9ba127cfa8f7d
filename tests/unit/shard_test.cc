// The shard function: Kafka's murmur2, checked against the Java client's test
// vectors and against librdkafka's own murmur2 partitioner, so that shard k is
// partition k of a topic with as many partitions as shards.
#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "saga/shard.h"

namespace saga {
namespace {

TEST_CASE("murmur2 matches the Java client's test vectors") {
  const std::vector<std::pair<std::string, int32_t>> cases = {
      {"21", -973932308},
      {"foobar", -790332482},
      {"a-little-bit-long-string", -985981536},
      {"a-little-bit-longer-string", -1486304829},
      {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
      {"abc", 479470107},
  };
  for (const auto& [key, expected] : cases)
    CHECK_MESSAGE(static_cast<int32_t>(murmur2(key)) == expected, key);
}

TEST_CASE("shard_of picks the partition librdkafka's murmur2 partitioner picks") {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> length(0, 40);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 20'000; ++i) {
    std::string key(static_cast<size_t>(length(rng)), '\0');
    for (char& c : key) c = static_cast<char>(byte(rng));  // bytes above 0x7f too
    for (int32_t partitions : {1, 2, 3, 6, 12, 64}) {
      const int32_t expected = rd_kafka_msg_partitioner_murmur2(nullptr, key.data(), key.size(),
                                                                partitions, nullptr, nullptr);
      REQUIRE(static_cast<int32_t>(shard_of(key, static_cast<uint32_t>(partitions))) == expected);
    }
  }
}

TEST_CASE("saga ids spread evenly over twelve shards") {
  std::vector<int> counts(12, 0);
  for (int i = 0; i < 12'000; ++i) ++counts[shard_of("r-" + std::to_string(i), 12)];
  for (int c : counts) {
    CHECK(c > 800);
    CHECK(c < 1200);
  }
}

}  // namespace
}  // namespace saga
