// Test support: real Kafka brokers owned by one test, started with
// scripts/kafka in a folder of the test's and stopped when the object goes: a
// single node, or a KRaft cluster of three (replication factor 3, min ISR 2).
// Header-only, tests only.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

#include "support/process.h"

namespace saga::testing {

class KafkaBrokers {
 public:
  /// Starts `nodes` (1 or 3) brokers with the scripts/kafka at `script`, their
  /// data and logs under `dir`/kafka. Throws when they do not come up.
  KafkaBrokers(const std::string& script, const std::filesystem::path& dir, int nodes)
      : script_(script), dir_(dir / "kafka"), nodes_(nodes) {
    bootstrap_ = run_command(script_ + (nodes == 1 ? " start" : " start-cluster") + " --dir " +
                             dir_.string());
    if (bootstrap_.empty()) throw std::runtime_error(script_ + " printed no bootstrap address");
  }
  ~KafkaBrokers() {
    try {
      run_command(script_ + " stop --dir " + dir_.string() + " 2>/dev/null");
    } catch (const std::exception&) {
      // Nothing else to do in a destructor; the next start uses a new folder.
    }
  }
  KafkaBrokers(const KafkaBrokers&) = delete;
  KafkaBrokers& operator=(const KafkaBrokers&) = delete;

  /// host:port,... of every node.
  const std::string& bootstrap() const { return bootstrap_; }
  /// How many nodes: the replication factor topics of this test should have.
  int nodes() const { return nodes_; }
  /// Stops every node (SIGTERM, waiting for each).
  void stop() { run_command(script_ + " stop --dir " + dir_.string()); }
  /// Starts them again on the same ports and data.
  void restart() { run_command(script_ + " start --dir " + dir_.string()); }
  /// SIGKILLs node `node` (1-based) of a cluster.
  void kill_node(int node) {
    run_command(script_ + " kill-node --dir " + dir_.string() + " --node " +
                std::to_string(node));
  }

 private:
  std::string script_;
  std::filesystem::path dir_;
  int nodes_;
  std::string bootstrap_;
};

}  // namespace saga::testing
