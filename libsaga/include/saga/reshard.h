// Moving a store to another shard count, offline (docs/sharding.md, section 6;
// the procedure is in docs/storage.md, "Changing the shard count"). The
// engine that owns the store must be stopped: these functions read the old
// store and write every record into the shard of a NEW store that the new
// count gives it. The old store's data is not changed (RocksDB still rewrites
// its own bookkeeping files when it opens it). Nothing else may use either
// folder meanwhile (RocksDB's lock refuses a running engine).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/status.h"

namespace saga {

/// Largest shard count a store can have (a shard's key prefix is be16).
inline constexpr uint32_t kMaxShards = 65535;

/// What to move where.
struct ReshardOptions {
  /// Folder of the stopped engine's store. Required; must hold a store.
  std::string from;
  /// Folder of the new store. Required; must not exist, or be an empty folder.
  /// The copy is written to `<to>.saga-reshard-partial` and renamed to `to`
  /// only when complete and synced: a failed or killed run leaves nothing at
  /// `to` (a failed one removes the partial folder; a killed one leaves it,
  /// and the next run asks for its removal).
  std::string to;
  /// Shard count of the new store: 1..kMaxShards. Required (default 0 is refused).
  uint32_t shards = 0;
  /// The source ran with the changelog (it has checkpoints): copy it all the
  /// same, without them. Only for a store whose engine was last stopped
  /// cleanly after a start that caught up with its changelog (so the store
  /// holds all the changelog does), and whose changelog topic is then deleted
  /// and recreated with the new count: the new store, having no checkpoint,
  /// writes its state to the empty changelog when it opens. Default false:
  /// such a source is refused.
  bool drop_changelog = false;
  /// spdlog logger name for progress (every 5 s) and the summary. Default "saga-reshard".
  std::string logger = "saga-reshard";
};

/// What a reshard wrote.
struct ReshardStats {
  /// The source store's shard count.
  uint32_t from_shards = 0;
  /// Records written into the new store, by column family name.
  std::map<std::string, uint64_t> records;
  /// Records of the source left out, by column family name (undecodable
  /// outbox records, which an engine skips on open too).
  std::map<std::string, uint64_t> skipped;
  /// Wall-clock time the copy took.
  double seconds = 0;
};

/// Copies the store of a stopped orchestrator into a new store of
/// `options.shards` shards: each saga's instance, index entries and outbox
/// records (kept in their order, renumbered per new shard) go to the shard of
/// its saga id, as do the legacy timer and reply keys. The new store is
/// synced before this returns; Orchestrator::open with the new count then
/// loads every live saga, its timer and its unsent commands.
/// Errors (nothing is left at `to`): InvalidArgument for an empty folder name
/// or a count outside 1..kMaxShards; NotFound when `from` holds no store;
/// FailedPrecondition when `from` is not an orchestrator store, is in use,
/// ran with the changelog (a checkpoint) unless `drop_changelog`, or `to`
/// exists and is not empty, or a partial folder of an interrupted run exists;
/// DataLoss for an undecodable key or store.
StatusOr<ReshardStats> reshard_orchestrator(const ReshardOptions& options);

/// Read access to the state of the participant store being moved, for a
/// ShardKeyFn. Valid only during the reshard call.
class ReshardSource {
 public:
  virtual ~ReshardSource() = default;
  /// The value of state key `key` in whichever old shard holds it, nullopt
  /// when absent.
  virtual StatusOr<std::optional<std::string>> get(std::string_view key) const = 0;
};

/// Where a participant's state key goes: the shard key (the command key,
/// Message::key, of the commands whose handlers write `key`; its shard is
/// shard_of(result, new count)), or an error for a key the application
/// cannot place, which fails the whole reshard with that message.
using ShardKeyFn = std::function<StatusOr<std::string>(
    std::string_view key, std::string_view value, const ReshardSource& source)>;

/// Copies the store of a stopped participant into a new store of
/// `options.shards` shards. State: each key into the shard of
/// `shard_key(key, value, source)`; a key present in several old shards must
/// be placed into distinct new shards (else FailedPrecondition: values
/// cannot be merged). Inbox: each record into EVERY new shard, since a
/// record does not say its command's key (a command is looked up only in
/// its own shard, so the copies cost space, N times the inbox, and nothing
/// else). Outbox: each record into the shard of its message key (the saga id
/// when empty), in order, renumbered per new shard.
/// Errors as reshard_orchestrator's, plus the callback's (its message is kept,
/// prefixed with the key).
StatusOr<ReshardStats> reshard_participant(const ReshardOptions& options,
                                           const ShardKeyFn& shard_key);

/// The command line of saga-reshard and of the services' `reshard`
/// subcommand: `--from DIR --to DIR2 --shards N [--kind orchestrator|participant]
/// [--drop-changelog]`.
struct ReshardCommand {
  ReshardOptions options;
  /// "orchestrator" (default) or "participant".
  std::string kind = "orchestrator";
  /// `--help` or `-h` was given (nothing else is checked then).
  bool help = false;
};

/// Parses `args` (without the program name). InvalidArgument naming the
/// flag for an unknown or repeated flag, a missing value or flag, a count
/// that is not a number in 1..kMaxShards, or an unknown kind.
StatusOr<ReshardCommand> parse_reshard_command(const std::vector<std::string>& args);

/// The usage text of that command line, `program` first.
std::string reshard_usage(std::string_view program);

}  // namespace saga
