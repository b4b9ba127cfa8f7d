#!/usr/bin/env bash
# The session behind bench/README.md "Changelog over Kafka": rounds 5-8 as run (rounds 1-4: the
# same without --broker-pid, round 1 with --baselines on). Broker: scripts/kafka start, PID 2935.
set -uo pipefail
cd /work/wt-bench
B=127.0.0.1:41795
bench=build/ci/bench/saga-bench
out=/tmp/wt-bench-results
run() { # name changelog baselines
  echo "== $1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "$bench" --workload kafka --brokers $B --changelog $2 --baselines $3 --inflight 1 --sagas 300 \
    --rate 250,2500 --seconds 8 --broker-pid 2935 --dir /tmp/wt-bench-run --json $out/$1.json 2> $out/$1.log
  echo "   rc $? $(date -u +%H:%M:%S)" >&2
  grep -v "settled," $out/$1.log | grep -v "^  kafka" >&2
}
run 5-off off off
run 6-on on off
run 7-off off off
run 8-on on off
echo "== end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
