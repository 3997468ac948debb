#!/usr/bin/env bash
# The small-files benchmark (docs/PERFORMANCE.md, "Small files"): the same events as one
# small file per event (what a Kafka Connect sink writes at a schema change per record)
# and as a few large files, each replayed by the example backfill (`replayfleet run`),
# on a local folder and on S3 (a moto server of its own on a free loopback port).
# Prints one line per case: files, events read, seconds (the run's own elapsed time,
# best of ROUNDS), events/s, and the small/large ratio.
# Environment: RF (the binary, default target/release/replayfleet, built if missing),
# EVENTS (default 20000), WORKERS (default 2), ROUNDS (default 3, the best is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
RF=${RF:-target/release/replayfleet}
EVENTS=${EVENTS:-20000}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-3}
[[ -x $RF ]] || cargo build --release --bin replayfleet --quiet

W=$(mktemp -d -t replayfleet-small-files-XXXXXX)
MOTO_PID=
cleanup() {
  [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$PORT" >"$W/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
export AWS_ACCESS_KEY_ID=replayfleet AWS_SECRET_ACCESS_KEY=replayfleet AWS_REGION=us-east-1
BUCKET=bench-small-files
curl -fs -X PUT "http://127.0.0.1:$PORT/$BUCKET" >/dev/null
S3OPTS=(--option "endpoint=http://127.0.0.1:$PORT" --option allow_http=true)
TOML_OPTS="options = { endpoint = \"http://127.0.0.1:$PORT\", allow_http = \"true\" }"

cp -r examples/accounts/contracts "$W/contracts"
gen() { # gen OUT [generate args...]
  "$RF" generate --out "$1" --events "$EVENTS" --partitions 4 --streams 200 --seed 7 \
    --all-edge-cases "${@:2}" >/dev/null
}
config() { # config NAME SOURCE TARGET [OPTIONS_LINE]
  python3 - "$W/$1.toml" "$2" "$3" "${4:-}" <<'EOF'
import sys
out, source, target, options = sys.argv[1:5]
text = open("examples/accounts/backfill.toml").read()
text = text.replace('url = "data/events"', f'url = "{source}"\n{options}', 1)
text = text.replace('url = "data/projections/account_balances"', f'url = "{target}"\n{options}', 1)
open(out, "w").write(text)
EOF
}
run() { # run NAME: the best of ROUNDS fresh runs (a new target each): "seconds events",
  # seconds being the run's own elapsed time (process start-up excluded)
  local r
  for r in $(seq "$ROUNDS"); do
    sed "s|/account_balances\"|/account_balances-$r\"|" "$W/$1.toml" >"$W/$1-$r.toml"
    "$RF" run --config "$W/$1-$r.toml" --workers "$WORKERS" --json >"$W/$1-$r.json"
  done
  python3 -c 'import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
assert all(r["outcome"] == "committed" for r in runs), [r["outcome"] for r in runs]
print(min(r["elapsed_seconds"] for r in runs), runs[0]["report"]["totals"]["events_read"])' \
    "$W/$1"-[0-9]*.json
}

echo "generating $EVENTS events: one file per event and a few large files, local and on S3 ..." >&2
gen "$W/small"; rm -rf "$W/small"; gen "$W/small" --segment-rows 1
gen "$W/large"
gen "s3://$BUCKET/small" --segment-rows 1 "${S3OPTS[@]}"
gen "s3://$BUCKET/large" "${S3OPTS[@]}"
config local-small "$W/small" "$W/target-small/account_balances"
config local-large "$W/large" "$W/target-large/account_balances"
config s3-small "s3://$BUCKET/small" "s3://$BUCKET/target-small/account_balances" "$TOML_OPTS"
config s3-large "s3://$BUCKET/large" "s3://$BUCKET/target-large/account_balances" "$TOML_OPTS"

files() { find "$W/$1" -name '*.parquet' | wc -l; }
printf '%-8s %-6s %7s %8s %9s %12s %8s\n' where files count events seconds events/s ratio
for where in local s3; do
  read -r ls le < <(run "$where-large")
  before=$(wc -l <"$W/moto.log")
  read -r ss se < <(run "$where-small")
  requests=$(($(wc -l <"$W/moto.log") - before))
  python3 - "$where" "$(files small)" "$(files large)" "$ss" "$se" "$ls" "$le" "$WORKERS" \
    "$requests" "$ROUNDS" <<'EOF'
import sys
where, nsmall, nlarge, ss, se, ls, le, workers, requests, rounds = sys.argv[1:11]
small, large = int(se) / float(ss), int(le) / float(ls)
print(f"{where:<8} {'large':<6} {nlarge:>7} {le:>8} {float(ls):>9.3f} {large:>12,.0f} {'':>8}")
print(f"{where:<8} {'small':<6} {nsmall:>7} {se:>8} {float(ss):>9.3f} {small:>12,.0f} {small / large:>7.2f}x")
per_file = (float(ss) - float(ls)) / int(nsmall) * 1e6
print(f"{where:<8} per small file: {per_file:,.0f} us of wall time with {workers} workers")
if where == "s3":
    print(f"{where:<8} requests to S3 per small file and run: {int(requests) / int(rounds) / int(nsmall):.2f}")
EOF
done
# The server's own ceiling, for scale: GETs of 5,000 small files by 32 curls in parallel.
find "$W/small" -name '*.parquet' | head -5000 |
  sed "s#^$W/small/#http://127.0.0.1:$PORT/$BUCKET/small/#" >"$W/urls"
start=$(date +%s.%N)
xargs -P 32 -n 50 curl -s -o /dev/null <"$W/urls"
end=$(date +%s.%N)
python3 -c 'import sys; n, t = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2])
print(f"s3       the S3 server alone: {n / t:,.0f} GETs/s (unsigned, 32 curls in parallel)")' \
  "$(wc -l <"$W/urls")" "$start" "$end"
