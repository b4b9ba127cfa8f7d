#!/usr/bin/env bash
# bench/run_all.sh: the full set of runs behind bench/README.md's results, then the plots.
#
#   bench/run_all.sh [BENCH [OUTDIR]]
#
# BENCH defaults to build/release/bench/saga-bench, OUTDIR to bench/results. Takes about
# eleven minutes on 2 cores; the kafka runs start their own broker (scripts/kafka) unless
# BROKERS is set. Each run writes one JSON file; a run whose sagas end inconsistent
# exits non-zero and stops this script.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench=${1:-$here/../build/release/bench/saga-bench}
out=${2:-$here/results}
mkdir -p "$out"
dir=${TMPDIR:-/tmp}/saga-bench-$$  # stores, baseline DB and broker of these runs
trap 'rm -rf "$dir"' EXIT
brokers=()
[[ -n ${BROKERS:-} ]] && brokers=(--brokers "$BROKERS")
uptime >&2
"$bench" --workload engine --sync on --inflight 1,8,32,128,512 --sagas 3000 --dir "$dir" \
  --rate 500,1000,2000,4000 --seconds 5 --json "$out/engine-sync-on.json"
"$bench" --workload engine --sync off --inflight 1,32,512 --sagas 20000 --dir "$dir" \
  --rate 2000,4000,8000 --seconds 5 --json "$out/engine-sync-off.json"
# A saga alone over Kafka: its own run, so that its sample is large without the
# loaded points taking long.
"$bench" --workload kafka --inflight 1 --sagas 300 --baselines off --dir "$dir" "${brokers[@]}" \
  --json "$out/kafka-alone.json"
"$bench" --workload kafka --inflight 32,256 --sagas 5000 --rate 250,1000,2500,5000 --seconds 8 \
  --dir "$dir" "${brokers[@]}" --json "$out/kafka-sync-on.json"
# Failover: one of two payment replicas SIGKILLed mid-run, with a standby copy
# and 1 s sessions, and without either (the transport's 6 s sessions).
"$bench" --workload kafka --changelog on --failover on --standby on --session-ms 1000 \
  --rate 300 --seconds 20 --baselines off --dir "$dir" "${brokers[@]}" \
  --json "$out/kafka-failover-standby.json"
"$bench" --workload kafka --changelog on --failover on --rate 300 --seconds 20 --baselines off \
  --dir "$dir" "${brokers[@]}" --json "$out/kafka-failover.json"
uptime >&2
# Each speed target: met or not (a table for README.md on stdout, targets.json).
"$bench" --targets "$out"/engine-sync-on.json "$out"/kafka-alone.json "$out"/kafka-sync-on.json \
  --json "$out/targets.json"
"$here/plot.sh" -o "$out" "$out"/engine-sync-on.json "$out"/engine-sync-off.json \
  "$out"/kafka-alone.json "$out"/kafka-sync-on.json
