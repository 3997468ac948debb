#!/usr/bin/env bash
# README command 2: the whole test suite. Installs what the tests need, then runs
# every test with nextest; tests start their own real servers (moto S3 on a free
# loopback port, a random bucket per test) and stop them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The CLI tests run the real binaries (the product and the bench): nextest builds test
# targets only, so build the binaries of the same profile first.
cargo build --bin replayfleet --bin replayfleet-bench --quiet
cargo nextest run --workspace --no-fail-fast "$@"
