#!/usr/bin/env bash
# The finalizer against projection size (docs/PERFORMANCE.md, "The finalizer"): generates
# an archive of KEYS streams (two events each, 8 partitions), commits it once (the
# baseline), replays it again with an invariant that refuses, then times `replayfleet
# finalize --accept` of that run alone: every check (coverage, part files re-read and
# hashed, inputs, unique keys, the budget, the invariant, the diff against the KEYS-key
# baseline) and the commit, with its peak RSS, at `limits.memory = MEMORY`.
#
# With CHANGED=1 the second run counts one more event per key, so the diff finds every
# key changed (and --accept overrides its check too).
#
#   KEYS=1000000 MEMORY=512MiB scripts/bench-finalize.sh
#   KEYS=1000000 CHANGED=1 scripts/bench-finalize.sh
#   BIN=target/debug/replayfleet KEYS=100000 scripts/bench-finalize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
MEMORY=${MEMORY:-2GiB}
CHANGED=${CHANGED:-0}
BIN=${BIN:-target/release/replayfleet}
BIN=$(realpath "$BIN")
if [ ! -x "$BIN" ]; then
  cargo build --release --bin replayfleet --quiet
fi
DIR=$(mktemp -d -t replayfleet-bench-finalize-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cp -r examples/accounts/contracts "$DIR/"
"$BIN" generate --out "$DIR/events" --events $((KEYS * 2)) --partitions 8 --streams "$KEYS" \
  --seed 7 >/dev/null

config() { # name invariant [extra events per key]
  cat >"$DIR/$1.toml" <<EOF
[run]
name = "finalize-$1"
[source]
url = "events"
[contracts]
dir = "contracts"
[projection]
name = "account_balances"
key = ["account_id"]
sql = """
SELECT stream_id AS account_id,
       sum(CASE WHEN event_type = 'Deposited' THEN amount_cents
                WHEN event_type = 'Withdrawn' THEN -amount_cents ELSE 0 END) AS balance_cents,
       count(*) + ${3:-0} AS events,
       max(seq) AS last_seq
FROM events
GROUP BY stream_id
"""
[target]
url = "target"
[limits]
memory = "$MEMORY"
[checks]
invariants = ["$2"]
[checks.anomalies]
invalid_payload = "quarantine"
unknown_type = "quarantine"
upcast_failed = "quarantine"
conflicting_duplicate = "quarantine"
max_quarantined_ratio = 0.1
EOF
}
config baseline "SELECT * FROM projection WHERE events < 0"
config refused "SELECT * FROM projection WHERE events > 0 LIMIT 5" "$CHANGED"
"$BIN" run --config "$DIR/baseline.toml" --json >"$DIR/baseline.json" 2>"$DIR/baseline.err" || {
  echo "the baseline run failed:" >&2; tail -5 "$DIR/baseline.err" >&2; exit 1; }
set +e
"$BIN" run --config "$DIR/refused.toml" --json >"$DIR/refused.json" 2>"$DIR/refused.err"
RUN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$DIR/refused.json" 2>/dev/null)
set -e
if [ -z "$RUN" ]; then
  echo "the second run ended without a report:" >&2; tail -5 "$DIR/refused.err" >&2; exit 1
fi
/usr/bin/time -f "finalize: %e s wall, peak RSS %M KiB" "$BIN" finalize --target "$DIR/target" \
  --run "$RUN" --accept "bench" --json >"$DIR/finalized.json"
python3 - "$DIR/finalized.json" "$KEYS" "$MEMORY" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
report = r.get("report", r)
totals = report["totals"]
diff = report.get("diff") or {}
print(f"keys {sys.argv[2]} (rows {totals['rows']}, {totals['segments']} part files), "
      f"limits.memory {sys.argv[3]}, outcome {report['outcome']}, "
      f"diff union {diff.get('union')} changed {diff.get('changed')}")
EOF
