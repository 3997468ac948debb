#!/usr/bin/env bash
# The fleet benchmark (docs/PERFORMANCE.md): starts a NATS server of its own on a free
# loopback port, builds the release binaries and runs `replayfleet-bench fleet` against
# it. Extra arguments go to the bench (e.g. --events 400000 --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin replayfleet --bin replayfleet-bench --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STORE=$(mktemp -d -t replayfleet-bench-nats-XXXXXX)
scripts/nats-server.sh "$PORT" "$STORE" 2>/dev/null &
NATS_PID=$!
trap 'kill $NATS_PID 2>/dev/null; wait $NATS_PID 2>/dev/null; rm -rf "$STORE"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
target/release/replayfleet-bench fleet --nats "nats://127.0.0.1:$PORT" "$@"
