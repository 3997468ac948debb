#!/usr/bin/env bash
# README command 1: set up and run the main job on the shipped example.
# Builds replayfleet, generates the example archive (examples/accounts/data/events),
# inventories it and runs the contract catalog's schema-upgrade matrix.
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
  --duplicates --out-of-order --long-strings --unknown-fields
echo
echo "== inventory"
"$RF" inventory --config "$EX/backfill.toml"
