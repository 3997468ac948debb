#!/usr/bin/env bash
# The cost of reading the Delta commit log as it grows (docs/PERFORMANCE.md, "The Delta
# commit log"): one embedded run of the example into a scratch target, then versions added
# by `rollback --to 1`, timing `history --json` at 10, 100 and 300 versions.
#   scripts/bench-delta-log.sh [path/to/replayfleet]     (default: target/debug/replayfleet)
set -euo pipefail
cd "$(dirname "$0")/.."
RF=${1:-target/debug/replayfleet}
RF=$(realpath "$RF")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r examples/accounts/contracts examples/accounts/backfill.toml "$WORK/"
"$RF" generate --out "$WORK/data/events" --events 20000 --partitions 8 --streams 2000 --seed 7 \
  --all-edge-cases >/dev/null
cd "$WORK"
"$RF" run --config backfill.toml >/dev/null 2>&1
T=data/projections/account_balances
for n in 10 100 300; do
  while [ "$(ls $T/_delta_log | wc -l)" -le "$n" ]; do
    "$RF" rollback --target $T --to 1 --reason bench >/dev/null
  done
  s=$(date +%s.%N)
  "$RF" history --target $T --json >/dev/null
  e=$(date +%s.%N)
  echo "versions $n: history $(echo "$e - $s" | bc) s"
done
