#!/usr/bin/env bash
# README command 1: set up and run the main job on the shipped example.
# Builds replayfleet, checks the contract catalog, generates the example archive
# (examples/accounts/data/events) with every edge case, runs the example backfill
# embedded to a committed projection (examples/accounts/data/projections/...), and shows
# its history and a few of its rows.
set -euo pipefail
cd "$(dirname "$0")/.."
EX=examples/accounts
EVENTS=${EVENTS:-200000}

cargo build --release --quiet --bin replayfleet
RF=target/release/replayfleet

echo "== contracts check"
"$RF" contracts check --dir "$EX/contracts"
echo
echo "== contracts test (schema-upgrade matrix)"
"$RF" contracts test --dir "$EX/contracts"
echo
echo "== generate $EVENTS events into $EX/data/events"
rm -rf "$EX/data/events"
"$RF" generate --out "$EX/data/events" --events "$EVENTS" --partitions 8 --streams 2000 --seed 7 \
  --all-edge-cases
echo
echo "== plan"
"$RF" plan --config "$EX/backfill.toml"
echo
TARGET="$EX/data/projections/account_balances"
if [ -d "$TARGET/_commits" ] && [ ! -d "$TARGET/_delta_log" ]; then
  echo "== migrate (a target written before the Delta log)"
  "$RF" migrate --target "$TARGET"
  echo
fi
echo "== run (embedded: plan, replay, verify, commit)"
"$RF" run --config "$EX/backfill.toml"
echo
echo "== history"
"$RF" history --target "$EX/data/projections/account_balances"
echo
echo "== a few rows of the current version"
"$RF" show --target "$EX/data/projections/account_balances" --limit 5
