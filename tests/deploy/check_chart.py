#!/usr/bin/env python3
"""Offline checks of the Helm chart helm/replayfleet, one scenario per subcommand.

Real Helm (the PyPI package helm-python-sdk, Helm v4 compiled as a library) lints the
chart strictly and renders it; every rendered manifest is validated against Kubernetes
1.30's schemas (kubernetes-validate, strict: unknown fields are errors), and the CRD kinds
it has no schemas for (ServiceMonitor, ScaledObject) against the schemas in
tests/deploy/schemas/, written from the CRDs' documentation for the fields the chart uses.

    python3 tests/deploy/check_chart.py lint
    python3 tests/deploy/check_chart.py default | keda | servicemonitor | existing-configmap | custom-resources
    python3 tests/deploy/check_chart.py refusals
    python3 tests/deploy/check_chart.py flags --bin target/debug/replayfleet
    python3 tests/deploy/check_chart.py write-config --out DIR

Each prints what it checked and exits 0, or prints the failure and exits 1. The Rust
integration tests (tests/it/deploy.rs) run every scenario; scripts/setup.sh installs the
packages (helm-python-sdk, kubernetes-validate, pyyaml).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tomllib
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import yaml

import helm_python as helm
from helm_python import _native

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "replayfleet"
SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"
KUBE_VERSION = "1.30.0"
RELEASE = "bf"
NAMESPACE = "backfills"
MONITORING_APIS = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"]
METRICS_PORT = 9464
UID = 10001

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.keda.sh-v1alpha1.json",
}

# Every key backfill.toml takes (crates/config/src/raw.rs), as dotted paths of tables.
CONFIG_KEYS = {
    "run": {"name"},
    "source": {"url", "columns", "options", "contiguous_seq", "key_pattern", "segments"},
    "contracts": {"dir"},
    "projection": {"name", "key", "sql", "sql_file"},
    "target": {"url", "options"},
    "shards": {"target_events"},
    "window": {"partitions", "until_seq", "until_time"},
    "checks": {"invariants", "anomalies", "baseline"},
    "checks.anomalies": {"no_upcast_path", "unknown_type", "unknown_version", "invalid_payload",
                         "upcast_failed", "conflicting_duplicate", "gap", "undecodable",
                         "max_quarantined_ratio"},
    "checks.baseline": {"max_changed_ratio"},
    "pacing": {"events_per_second"},
    "fleet": {"nats_url", "nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key", "lease_ttl", "max_attempts"},
    "lineage": {"url"},
    "limits": {"memory"},
}


class CheckFailed(AssertionError):
    pass


def check(cond: Any, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def say(message: str) -> None:
    print(f"  ok: {message}")


# --- Helm ---------------------------------------------------------------------------


def render(values: dict | None = None, *, api_versions: list[str] | None = None) -> dict[str, str]:
    """Renders the chart offline as `helm template` would for a Kubernetes 1.30 cluster.

    helm-python's Chart.render does not expose the API versions and the Kubernetes
    version of the (simulated) cluster, so this calls the native helm_render with them
    in its options JSON, as the wrapper itself does for the options it knows.
    """
    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{KUBE_VERSION}"}
    if api_versions:
        opts["api_versions"] = api_versions
    with helm.Chart.load(CHART) as chart:
        out = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)
        )
    return json.loads(out)


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(template, manifest) for every non-empty manifest, NOTES.txt left out."""
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


def notes(rendered: dict[str, str]) -> str:
    return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))


def by_kind(docs: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind]


def one(docs: list[tuple[str, dict]], kind: str) -> dict:
    found = by_kind(docs, kind)
    check(len(found) == 1, f"expected one {kind}, rendered {len(found)}")
    return found[0]


# --- validation ---------------------------------------------------------------------


def validate(docs: list[tuple[str, dict]]) -> None:
    """Every manifest against Kubernetes 1.30 (strict), CRD kinds against our schemas."""
    for template, doc in docs:
        what = f"{template}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            check(not errors, f"{what} does not match {CRD_SCHEMAS[key]}: "
                  + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
        else:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.absolute_path)
                raise CheckFailed(f"{what} is not valid Kubernetes {KUBE_VERSION}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                raise CheckFailed(f"{what}: {e.message}")
    say(f"{len(docs)} manifests valid against Kubernetes {KUBE_VERSION} (strict) and the CRD schemas")


def pod_specs(docs: list[tuple[str, dict]]) -> dict[str, dict]:
    """The pod templates of the Job and the Deployment, by kind."""
    return {d["kind"]: d["spec"]["template"] for _, d in docs if d["kind"] in ("Job", "Deployment")}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def common_checks(docs: list[tuple[str, dict]], values: dict) -> None:
    """What must hold for every value set."""
    merged = merged_values(values)
    ttl = merged["backfill"]["fleet"]["lease_ttl_seconds"]
    for _, doc in docs:
        meta = doc["metadata"]
        check(meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']} has no namespace {NAMESPACE}")
        labels = meta.get("labels", {})
        check(labels.get("app.kubernetes.io/instance") == RELEASE and labels.get("app.kubernetes.io/managed-by") == "Helm",
              f"{doc['kind']} {meta['name']} lacks the standard labels: {labels}")
        check(len(meta["name"]) <= 63, f"{doc['kind']} name longer than 63: {meta['name']}")
    pods = pod_specs(docs)
    check(set(pods) == {"Job", "Deployment"}, f"expected a Job and a Deployment, got {sorted(pods)}")
    for kind, template in pods.items():
        spec = template["spec"]
        psc = spec["securityContext"]
        check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID
              and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"{kind}: pod securityContext {psc}")
        check(spec.get("automountServiceAccountToken") is False, f"{kind}: the service account token is mounted")
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        check(tmp and "emptyDir" in tmp[0], f"{kind}: no emptyDir volume `tmp`")
        for c in spec["containers"]:
            sc = c["securityContext"]
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsNonRoot") is True
                  and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                  f"{kind}/{c['name']}: container securityContext {sc}")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            check(mounts.get("/tmp") == "tmp", f"{kind}/{c['name']}: /tmp is not the emptyDir")
            env = env_of(c)
            check(env.get("TMPDIR", {}).get("value") == "/tmp", f"{kind}/{c['name']}: TMPDIR is not /tmp")
            for e in c.get("env", []):
                if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|_KEY_ID", e["name"]):
                    check("value" not in e and "secretKeyRef" in e.get("valueFrom", {}),
                          f"{kind}/{c['name']}: {e['name']} must come from a Secret (secretKeyRef), not a literal")
            for source in c.get("envFrom", []):
                check(set(source) == {"secretRef"}, f"{kind}/{c['name']}: envFrom other than a Secret: {source}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            check(ports.get("metrics") == merged["metrics"]["port"], f"{kind}/{c['name']}: no metrics port")
            live = c.get("livenessProbe", {}).get("httpGet", {})
            check(live.get("path") == "/healthz" and live.get("port") == "metrics",
                  f"{kind}/{c['name']}: liveness probe is not GET /healthz on the metrics port: {live}")
    say("pod and container security contexts (non-root 10001, read-only root, no escalation, drop ALL, RuntimeDefault), /tmp emptyDir, secrets only by reference, /healthz liveness")

    # the coordinator Job
    job = one(docs, "Job")
    jspec = job["spec"]
    jpod = jspec["template"]["spec"]
    check(jpod["restartPolicy"] == "Never", "coordinator pods must not restart in place")
    check(jspec["backoffLimit"] == merged["coordinator"]["backoffLimit"], "backoffLimit")
    coord = jpod["containers"][0]
    args = coord["args"]
    check(args[:5] == ["coordinator", "--config", "/etc/replayfleet/backfill.toml", "--metrics-addr",
                       f"0.0.0.0:{merged['metrics']['port']}"], f"coordinator args {args}")
    cenv = env_of(coord)
    check(cenv["REPLAYFLEET_FLEET__NATS_URL"].get("value") == "$(NATS_URL)"
          and list(cenv).index("NATS_URL") < list(cenv).index("REPLAYFLEET_FLEET__NATS_URL"),
          "coordinator: REPLAYFLEET_FLEET__NATS_URL must expand NATS_URL, defined before it")
    check(cenv["REPLAYFLEET_METRICS_LINGER"].get("value") == f"{merged['coordinator']['metricsLingerSeconds']}s",
          "coordinator: REPLAYFLEET_METRICS_LINGER must be coordinator.metricsLingerSeconds")
    check(cenv["REPLAYFLEET_FLEET__LEASE_TTL"].get("value") == f"{ttl}s", "coordinator: the lease TTL override")
    rules = jspec.get("podFailurePolicy", {}).get("rules", [])
    check(any(r["action"] == "FailJob" and set(r["onExitCodes"]["values"]) == {2, 3} for r in rules),
          "exit codes 2 and 3 must fail the Job without retries")
    say(f"coordinator Job: `{' '.join(args)}`, NATS from REPLAYFLEET_FLEET__NATS_URL, exits 2 and 3 fail the Job")

    # the workers
    dep = one(docs, "Deployment")
    wpod = dep["spec"]["template"]["spec"]
    worker = wpod["containers"][0]
    wargs = worker["args"]
    check(wargs[:4] == ["worker", "--nats", "$(NATS_URL)", "--lease-ttl"] and wargs[4] == f"{ttl}s",
          f"worker args {wargs}")
    drain = merged["workers"].get("drainTimeoutSeconds") or ttl
    check(wargs[5:] == ["--workers", str(merged["workers"]["tasks"]), "--drain-timeout", f"{drain}s",
                        "--metrics-addr", f"0.0.0.0:{merged['metrics']['port']}"], f"worker args {wargs}")
    check("NATS_URL" in env_of(worker), "worker: NATS_URL is not defined for $(NATS_URL)")
    ready = worker.get("readinessProbe", {}).get("httpGet", {})
    check(ready.get("path") == "/readyz" and ready.get("port") == "metrics", f"worker readiness probe {ready}")
    grace = wpod["terminationGracePeriodSeconds"]
    check(grace > ttl and grace > drain,
          f"terminationGracePeriodSeconds {grace} is not above the lease TTL {ttl} and the drain timeout {drain}")
    check("config" not in {v["name"] for v in wpod["volumes"]}, "workers must not depend on the run's config")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(pod_labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items()),
          "the Deployment's selector does not select its pods")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
              "the PodDisruptionBudget does not select the workers")
    say(f"worker Deployment: `{' '.join(wargs)}`, /readyz readiness, grace {grace}s > lease TTL {ttl}s and drain {drain}s, selector and PDB match")

    # the metrics Service selects both roles; a ServiceMonitor selects the Service
    for svc in by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        for kind, template in pods.items():
            labels = template["metadata"]["labels"]
            check(all(labels.get(k) == v for k, v in sel.items()), f"the metrics Service does not select the {kind}'s pods")
        check([p["name"] for p in svc["spec"]["ports"]] == ["metrics"], "the Service's port is not `metrics`")
        for sm in by_kind(docs, "ServiceMonitor"):
            check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
                  "the ServiceMonitor does not select the metrics Service")
            check(sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics",
                  "the ServiceMonitor does not scrape /metrics on the metrics port")
    sa = by_kind(docs, "ServiceAccount")
    if merged["serviceAccount"]["create"]:
        check(len(sa) == 1 and jpod["serviceAccountName"] == wpod["serviceAccountName"] == sa[0]["metadata"]["name"],
              "both roles run as the chart's ServiceAccount")

    # the run's files
    volume = next(v for v in jpod["volumes"] if v["name"] == "config")["configMap"]
    items = {i["key"]: i["path"] for i in volume["items"]}
    check(items.get(merged["config"]["backfillKey"] if merged["config"]["existingConfigMap"] else "backfill.toml") == "backfill.toml",
          "backfill.toml is not mounted")
    contract_paths = [p for p in items.values() if p.startswith("contracts/")]
    check(contract_paths and all(re.fullmatch(r"contracts/[-._a-zA-Z0-9]+\.ya?ml", p) for p in contract_paths),
          f"contracts are not projected under contracts/: {items}")
    mount = next(m for m in coord["volumeMounts"] if m["name"] == "config")
    check(mount["mountPath"] == "/etc/replayfleet" and mount.get("readOnly") is True, "config mount")
    configmaps = by_kind(docs, "ConfigMap")
    if not merged["config"]["existingConfigMap"]:
        check(len(configmaps) == 1 and volume["name"] == configmaps[0]["metadata"]["name"],
              "the Job does not mount the chart's ConfigMap")
        data = configmaps[0]["data"]
        missing = [k for k in items if k not in data]
        check(not missing, f"items name keys the ConfigMap lacks: {missing}")
        config = parse_config(data["backfill.toml"])
        check(config["fleet"]["lease_ttl"] == f"{ttl}s", "fleet.lease_ttl in backfill.toml")
        check(config["contracts"]["dir"] == "contracts" and config["projection"]["sql_file"] == "projection.sql",
              "contracts.dir and projection.sql_file must name the mounted files")
        check(data["projection.sql"] == merged["backfill"]["projection"]["sql"].rstrip("\n") + "\n", "projection.sql")
        for name, text in merged["contracts"].items():
            check(data[f"contracts.{name}"] == text, f"contract {name} changed on its way into the ConfigMap")
        say(f"ConfigMap: backfill.toml parses with only known keys, {len(contract_paths)} contracts projected under contracts/ byte for byte")
    else:
        check(not configmaps, "a ConfigMap was rendered although config.existingConfigMap is set")
        check(volume["name"] == merged["config"]["existingConfigMap"], "the Job does not mount the existing ConfigMap")


def parse_config(text: str) -> dict:
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CheckFailed(f"backfill.toml is not TOML: {e}\n{text}")

    def walk(table: dict, prefix: str) -> None:
        known = CONFIG_KEYS.get(prefix)
        check(known is not None, f"backfill.toml has an unknown table [{prefix}]")
        for k, v in table.items():
            path = f"{prefix}.{k}"
            if prefix in ("source", "target") and k == "options":
                check(isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), f"{path} must be a table of strings")
                continue
            if prefix == "source" and k == "columns":
                # An entry is a column name or an inline table naming its origin (docs/SOURCES.md).
                check(isinstance(v, dict) and all(isinstance(x, (str, dict)) for x in v.values()),
                      f"{path} must be a table of column names and entry tables")
                continue
            check(k in known, f"backfill.toml has an unknown key {path}")
            if isinstance(v, dict):
                walk(v, path)

    for section, table in config.items():
        walk(table, section)
    return config


def merged_values(values: dict | None) -> dict:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values or {})


def run_scenario(name: str, values: dict, *, api_versions: list[str] | None = None,
                 extra: Callable[[list[tuple[str, dict]], dict[str, str]], None] | None = None) -> None:
    print(f"scenario {name}: values {json.dumps(values, sort_keys=True)}")
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    say("values.schema.json accepts the values")
    rendered = render(values, api_versions=api_versions)
    docs = documents(rendered)
    validate(docs)
    common_checks(docs, values)
    if extra:
        extra(docs, rendered)


# --- scenarios ----------------------------------------------------------------------


def scenario_lint(_: argparse.Namespace) -> None:
    """helm lint --strict for Kubernetes 1.30, with the defaults and every scenario's values."""
    for name, values in [("default", {})] + [(n, v) for n, v in VALUE_SETS.items()]:
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        check(not report["errors"] and not bad,
              f"helm lint --strict ({name}): {report['errors']} {bad}")
        infos = [m["error"] for m in report["messages"]]
        say(f"helm lint --strict with the {name} values: no warning or error" + (f" (info: {'; '.join(infos)})" if infos else ""))
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
        check(meta["apiVersion"] == "v2" and meta.get("appVersion"), "Chart.yaml: apiVersion v2 with an appVersion")
        check(chart.schema is not None, "the chart ships no values.schema.json")
        cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
        check(meta["appVersion"] == cargo["workspace"]["package"]["version"],
              f"appVersion {meta['appVersion']} is not the workspace version {cargo['workspace']['package']['version']}")
    say("Chart.yaml: apiVersion v2, appVersion = the workspace's version, values.schema.json present")


def scenario_default(_: argparse.Namespace) -> None:
    def extra(docs, rendered):
        kinds = sorted(d["kind"] for _, d in docs)
        check(kinds == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service", "ServiceAccount"],
              f"default render: {kinds}")
        dep = one(docs, "Deployment")
        check(dep["spec"]["replicas"] == 2, "two workers by default")
        # The wrapper's own render (no cluster capabilities) gives the same manifests.
        with helm.Chart.load(CHART) as chart:
            plain = chart.render({}, name=RELEASE, namespace=NAMESPACE)
        check({k: v for k, v in plain.items() if not k.endswith("NOTES.txt")}
              == {k: v for k, v in rendered.items() if not k.endswith("NOTES.txt")},
              "Chart.render and helm_render with kube_version disagree")
        # The defaults are the shipped example (examples/accounts), source and target aside.
        data = one(docs, "ConfigMap")["data"]
        example = tomllib.loads((REPO / "examples/accounts/backfill.toml").read_text())
        config = tomllib.loads(data["backfill.toml"])
        for key in ("run", "checks"):
            check(config[key] == example[key], f"[{key}] differs from examples/accounts/backfill.toml")
        check(config["projection"]["name"] == example["projection"]["name"]
              and config["projection"]["key"] == example["projection"]["key"]
              and data["projection.sql"].strip() == example["projection"]["sql"].strip(),
              "the projection differs from examples/accounts/backfill.toml")
        for path in sorted((REPO / "examples/accounts/contracts").glob("*.yaml")):
            check(data.get(f"contracts.{path.name}") == path.read_text(), f"contract {path.name} differs from the example's")
        say("defaults: the shipped example's run, checks, projection and contracts; 2 workers; no KEDA, no ServiceMonitor")
        text = notes(rendered)
        for command in ("replayfleet status --target s3://replayfleet-projections/account_balances --nats nats://", "--watch",
                        "replayfleet pause", "replayfleet resume", "replayfleet halt", "replayfleet rollback --target",
                        "replayfleet finalize --target", "--accept", "report.json"):
            check(command in text, f"NOTES.txt does not say `{command}`")
        say("NOTES.txt: watch, pause, resume, halt, finalize --accept, history and rollback with the release's target and NATS")

    run_scenario("default", {}, extra=extra)


def scenario_keda(_: argparse.Namespace) -> None:
    values = {"keda": {"enabled": True, "maxReplicaCount": 12, "lagThreshold": 3},
              "nats": {"nkey": {"secretName": "nats-nkey", "key": "worker.nk"}}}

    def extra(docs, rendered):
        so = one(docs, "ScaledObject")
        dep = one(docs, "Deployment")
        check("replicas" not in dep["spec"], "with KEDA the Deployment must leave replicas to the HPA")
        check(so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]},
              f"scaleTargetRef {so['spec']['scaleTargetRef']}")
        check(so["spec"]["maxReplicaCount"] == 12, "maxReplicaCount")
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        check(trigger["type"] == "nats-jetstream", "trigger type")
        check(meta["account"] == "$G" and meta["lagThreshold"] == "3"
              and meta["natsServerMonitoringEndpoint"] == "nats.nats.svc.cluster.local:8222", f"trigger metadata {meta}")
        # The stream and consumer are the ones the NATS lease queue creates.
        queue = (REPO / "crates/queue/src/nats/queue.rs").read_text()
        for name in (meta["stream"], meta["consumer"]):
            check(f'"{name}"' in queue, f"{name} is not a name crates/queue/src/nats/queue.rs uses")
        say(f"ScaledObject: nats-jetstream on stream {meta['stream']}, consumer {meta['consumer']} (the queue's own names), lag {meta['lagThreshold']}; the Deployment has no replicas")
        check("scaled by KEDA" in notes(rendered), "NOTES.txt does not say KEDA scales the workers")
        job = one(docs, "Job")
        wenv = env_of(dep["spec"]["template"]["spec"]["containers"][0])
        cenv = env_of(job["spec"]["template"]["spec"]["containers"][0])
        check(wenv["REPLAYFLEET_NATS_NKEY"]["value"] == cenv["REPLAYFLEET_FLEET__NATS_NKEY"]["value"]
              == "/var/run/secrets/replayfleet/nats-nkey/worker.nk", "the nkey seed file for both roles")
        say("NATS nkey seed from its Secret, for the worker flag and the coordinator's fleet.nats_nkey")

    run_scenario("keda", values, extra=extra)


def scenario_servicemonitor(_: argparse.Namespace) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}}}}
    print("scenario servicemonitor: without the monitoring.coreos.com/v1 API")
    rendered = render(values)
    docs = documents(rendered)
    check(not by_kind(docs, "ServiceMonitor"), "a ServiceMonitor was rendered for a cluster without its API")
    check("no ServiceMonitor was created" in notes(rendered), "NOTES.txt does not say the ServiceMonitor was skipped")
    say("no ServiceMonitor without the API, and NOTES.txt says so")

    def extra(docs, rendered):
        sm = one(docs, "ServiceMonitor")
        check(sm["spec"]["endpoints"][0]["interval"] == "15s", "interval")
        check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "extra labels for the Prometheus selector")
        say("ServiceMonitor rendered with the API present (api_versions), valid, selecting the metrics Service")

    run_scenario("servicemonitor (with the API)", values, api_versions=MONITORING_APIS, extra=extra)
    disabled = documents(render({}, api_versions=MONITORING_APIS))
    check(not by_kind(disabled, "ServiceMonitor"), "a ServiceMonitor was rendered although it is disabled")
    say("no ServiceMonitor when disabled, even with the API present")


EXISTING_CONTRACTS = ["account_closed.yaml", "account_opened.yaml", "deposited.yaml", "withdrawn.yaml"]


def scenario_existing_configmap(_: argparse.Namespace) -> None:
    values = {"config": {"existingConfigMap": "balances-v3", "backfillKey": "balances.toml",
                         "files": ["fold.sql"], "contractKeys": EXISTING_CONTRACTS}}

    def extra(docs, rendered):
        job = one(docs, "Job")
        volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")["configMap"]
        check(volume["name"] == "balances-v3", "the existing ConfigMap is not mounted")
        check(volume["items"] == [{"key": "balances.toml", "path": "backfill.toml"}, {"key": "fold.sql", "path": "fold.sql"}]
              + [{"key": k, "path": f"contracts/{k}"} for k in EXISTING_CONTRACTS], f"items {volume['items']}")
        annotations = job["spec"]["template"]["metadata"].get("annotations", {})
        check("checksum/config" not in annotations, "a checksum of values that are not used")
        check("<target.url of your backfill.toml>" in notes(rendered), "NOTES.txt names a target the chart does not know")
        say("existing ConfigMap: no ConfigMap rendered; backfill.toml, fold.sql and contracts/<key> projected from it")

    run_scenario("existing-configmap", values, extra=extra)


CUSTOM = {
    "workers": {
        "replicas": 6,
        "tasks": 2,
        "drainTimeoutSeconds": 100,
        "resources": {"requests": {"cpu": "3", "memory": "10Gi"}, "limits": {"cpu": "4", "memory": "12Gi"}},
        "tmpSizeLimit": "100Gi",
        "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
        "nodeSelector": {"node.kubernetes.io/instance-type": "m7i.2xlarge"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "coordinator": {
        "resources": {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
        "backoffLimit": 5,
        "resumeRun": "account-balances-v2-01JD3M0V7Q2T9X4YB6ZC8N1K5E",
        "activeDeadlineSeconds": 86400,
    },
    "backfill": {"fleet": {"lease_ttl_seconds": 120, "max_attempts": 5}, "limits": {"memory": "8GiB"},
                 "shards": {"target_events": 20000000},
                 "window": {"partitions": [0, "4-5"], "until_time": "2024-06-30T23:59:59Z"},
                 "pacing": {"events_per_second": 250000}},
    "nats": {"url": "", "urlFromSecret": {"name": "nats-url", "key": "url"},
             "credentials": {"secretName": "nats-creds", "key": "replayfleet.creds"},
             "tls": {"caSecretName": "nats-ca", "clientSecretName": "nats-client"}},
    "storage": {"existingSecret": "s3-keys", "sessionTokenKey": "AWS_SESSION_TOKEN",
                "sourceEnvFromSecret": "archive-reader", "extraEnvFromSecrets": ["more-env"]},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/replayfleet"}},
    "log": {"level": "replayfleet=debug,info", "format": "text"},
}


def scenario_custom_resources(_: argparse.Namespace) -> None:
    def extra(docs, rendered):
        dep, job = one(docs, "Deployment"), one(docs, "Job")
        worker = dep["spec"]["template"]["spec"]["containers"][0]
        coord = job["spec"]["template"]["spec"]["containers"][0]
        check(dep["spec"]["replicas"] == 6, "replicas")
        check(worker["resources"] == CUSTOM["workers"]["resources"], f"worker resources {worker['resources']}")
        check(coord["resources"] == CUSTOM["coordinator"]["resources"], f"coordinator resources {coord['resources']}")
        check(dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 150, "grace = TTL 120 + margin 30")
        check("--lease-ttl" in worker["args"] and worker["args"][worker["args"].index("--lease-ttl") + 1] == "120s", "--lease-ttl 120s")
        check(worker["args"][worker["args"].index("--workers") + 1] == "2", "--workers 2")
        check(worker["args"][worker["args"].index("--drain-timeout") + 1] == "100s", "--drain-timeout 100s")
        check(coord["args"][-2:] == ["--run", CUSTOM["coordinator"]["resumeRun"]], "coordinator --run")
        check(job["spec"]["backoffLimit"] == 5 and job["spec"]["activeDeadlineSeconds"] == 86400, "Job limits")
        tmp = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
        check(tmp["emptyDir"]["sizeLimit"] == "100Gi", "tmp size")
        pdb = one(docs, "PodDisruptionBudget")
        check(pdb["spec"] == {"minAvailable": "50%", "selector": pdb["spec"]["selector"]}, f"PDB {pdb['spec']}")
        wenv, cenv = env_of(worker), env_of(coord)
        for env in (wenv, cenv):
            check(env["NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nats-url", "key": "url"}, "NATS URL from its Secret")
            check(env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-keys"
                  and env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SESSION_TOKEN", "S3 keys from their Secret")
            check(env["REPLAYFLEET_LOG"]["value"] == "replayfleet=debug,info" and env["REPLAYFLEET_LOG_FORMAT"]["value"] == "text", "log settings")
        check(wenv["REPLAYFLEET_NATS_CREDS"]["value"] == "/var/run/secrets/replayfleet/nats/replayfleet.creds"
              and cenv["REPLAYFLEET_FLEET__NATS_CREDS"]["value"] == "/var/run/secrets/replayfleet/nats/replayfleet.creds",
              "the creds file path, for the worker flag and the coordinator's fleet.nats_creds")
        check(wenv["REPLAYFLEET_NATS_TLS_CA"]["value"] == cenv["REPLAYFLEET_FLEET__NATS_TLS_CA"]["value"] == "/var/run/secrets/replayfleet/nats-ca/ca.crt"
              and wenv["REPLAYFLEET_NATS_TLS_KEY"]["value"] == cenv["REPLAYFLEET_FLEET__NATS_TLS_KEY"]["value"], "NATS TLS files")
        for container, pod in ((worker, dep), (coord, job)):
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
            check(mounts["nats-creds"] == "/var/run/secrets/replayfleet/nats"
                  and volumes["nats-creds"]["secret"]["secretName"] == "nats-creds", "creds Secret volume")
            check(volumes["nats-client-tls"]["secret"]["secretName"] == "nats-client", "client TLS Secret volume")
            check([s["secretRef"]["name"] for s in container["envFrom"]] == ["archive-reader", "more-env"], "envFrom Secrets")
        config = parse_config(one(docs, "ConfigMap")["data"]["backfill.toml"])
        check(config["fleet"] == {"lease_ttl": "120s", "max_attempts": 5}, f"[fleet] {config['fleet']}")
        check(config["window"] == {"partitions": [0, "4-5"], "until_time": "2024-06-30T23:59:59Z"}, f"[window] {config['window']}")
        check(config["limits"]["memory"] == "8GiB" and config["shards"]["target_events"] == 20000000
              and config["pacing"]["events_per_second"] == 250000, "limits, shards, pacing")
        check("never commits" in notes(rendered), "NOTES.txt does not warn that a window run never commits")
        say("custom resources, replicas, tasks, TTL 120s (grace 150s, drain 100s), window, PDB minAvailable, NATS URL/creds/TLS and S3 keys from Secrets")

    run_scenario("custom-resources", CUSTOM, extra=extra)


# Values each refused, with words its message must contain.
REFUSALS: list[tuple[str, dict, list[str]]] = [
    ("KEDA with a fixed replica count", {"keda": {"enabled": True}, "workers": {"replicas": 3}},
     ["workers.replicas and keda.enabled are mutually exclusive"]),
    ("a target URL without a bucket", {"backfill": {"target": {"url": "s3:///account_balances"}}},
     ["/backfill/target/url", "does not match pattern"]),
    ("a source URL without a bucket", {"backfill": {"source": {"url": "s3://"}}},
     ["/backfill/source/url", "does not match pattern"]),
    ("a local path as the target", {"backfill": {"target": {"url": "data/projections"}}},
     ["/backfill/target/url", "does not match pattern"]),
    ("no target", {"backfill": {"target": None}}, ["/backfill", "missing property 'target'"]),
    ("a target without a URL", {"backfill": {"target": {"url": None}}}, ["/backfill/target", "missing property 'url'"]),
    ("a negative lease TTL", {"backfill": {"fleet": {"lease_ttl_seconds": -30}}},
     ["/backfill/fleet/lease_ttl_seconds", "minimum"]),
    ("a zero lease TTL", {"backfill": {"fleet": {"lease_ttl_seconds": 0}}}, ["/backfill/fleet/lease_ttl_seconds", "minimum"]),
    ("a grace period not above the lease TTL", {"workers": {"terminationGracePeriodSeconds": 30}},
     ["workers.terminationGracePeriodSeconds (30) must be above the lease TTL"]),
    ("a drain timeout not below the grace period", {"workers": {"drainTimeoutSeconds": 60}},
     ["terminationGracePeriodSeconds (60) must be above workers.drainTimeoutSeconds (60)"]),
    ("NATS credentials and an nkey together",
     {"nats": {"credentials": {"secretName": "a"}, "nkey": {"secretName": "b"}}},
     ["either nats.credentials.secretName or nats.nkey.secretName"]),
    ("KEDA without the NATS monitoring endpoint", {"keda": {"enabled": True}, "nats": {"monitoringEndpoint": ""}},
     ["keda.enabled needs nats.monitoringEndpoint"]),
    ("no NATS server", {"nats": {"url": ""}}, ["no NATS server"]),
    ("an existing ConfigMap without its contract keys", {"config": {"existingConfigMap": "mine"}},
     ["config.contractKeys must list the contract files of ConfigMap mine"]),
    ("a secret in the store options", {"backfill": {"target": {"options": {"secret_access_key": "x"}}}},
     ["backfill.target.options.secret_access_key", "existing Secret"]),
    ("an unknown key (typo)", {"workers": {"replica": 3}}, ["additional properties 'replica' not allowed"]),
    ("root", {"securityContext": {"runAsNonRoot": False}}, ["/securityContext/runAsNonRoot"]),
    ("an unknown anomaly policy", {"backfill": {"checks": {"anomalies": {"gap": "ignore"}}}},
     ["/backfill/checks/anomalies/gap"]),
]


def scenario_refusals(_: argparse.Namespace) -> None:
    for what, values, needles in REFUSALS:
        try:
            render(values)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            message = str(e)
            missing = [n for n in needles if n not in message]
            check(not missing, f"{what}: refused, but the message lacks {missing}:\n{message}")
            first = next((l.strip() for l in message.splitlines() if any(n in l for n in needles)), message)
            say(f"refused {what}: {first}")
        else:
            raise CheckFailed(f"{what}: the chart rendered values it must refuse: {values}")


def help_of(binary: str, *command: str) -> str:
    out = subprocess.run([binary, *command, "--help"], capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, f"`replayfleet {' '.join(command)} --help` exited {out.returncode}: {out.stderr}")
    return out.stdout


def command_lines(text: str, markdown: bool = False) -> list[list[str]]:
    """`replayfleet ...` command lines: in NOTES.txt the lines that start with one, in a
    Markdown runbook those of its fenced code blocks."""
    if markdown:
        text = "\n".join(re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", text, re.M | re.S))
    found = []
    for line in text.splitlines():
        if not markdown and not line.startswith("  "):
            continue  # NOTES.txt indents its commands
        line = re.sub(r"^\$\s+", "", line.strip())
        if line.startswith("replayfleet "):
            found.append(line.split())
    return found


def subcommands(help_text: str) -> set[str]:
    """The subcommands a clap `--help` lists under `Commands:`."""
    section = re.search(r"^Commands:\n(.*?)(?:\n\S|\Z)", help_text, re.M | re.S)
    return set(re.findall(r"^  ([a-z][a-z-]*)\b", section.group(1), re.M)) if section else set()


def scenario_flags(args: argparse.Namespace) -> None:
    """The flags and environment variables the chart and the runbooks use exist in the binary."""
    binary = args.bin
    check(binary and pathlib.Path(binary).exists(), f"no replayfleet binary at {binary!r} (give --bin)")
    top = help_of(binary)
    commands = subcommands(top)
    helps: dict[tuple[str, ...], str] = {}

    def flags_ok(words: list[str], where: str) -> tuple[str, ...]:
        sub = words[1]
        if sub not in commands:
            raise CheckFailed(f"{where}: `replayfleet {sub}` is not a command of the binary ({sorted(commands)})")
        path: tuple[str, ...] = (sub,)
        rest = words[2:]
        while True:
            text = helps.setdefault(path, help_of(binary, *path))
            if rest and not rest[0].startswith("-") and rest[0] in subcommands(text):
                path, rest = path + (rest[0],), rest[1:]
            else:
                break
        for w in rest:
            flag = w.split("=")[0]
            if re.fullmatch(r"--[a-z][a-z-]*", flag):
                check(re.search(rf"(^|\s){re.escape(flag)}[\s,=<]", text, re.M) is not None,
                      f"{where}: `replayfleet {' '.join(path)}` has no flag {flag}")
        return path

    for values in ({}, CUSTOM):
        docs = documents(render(values))
        for kind, template in pod_specs(docs).items():
            container = template["spec"]["containers"][0]
            words = ["replayfleet", *container["args"]]
            sub_help = helps[flags_ok(words, f"the {kind}'s container args")]
            for e in container.get("env", []):
                name = e["name"]
                if name.startswith("REPLAYFLEET_") and "__" not in name and not re.match(r"REPLAYFLEET_(SOURCE|TARGET)_", name):
                    check(f"[env: {name}=" in sub_help,
                          f"the {kind} sets {name}, which `replayfleet {words[1]}` does not read")
    say("the Job's and the Deployment's args and REPLAYFLEET_* variables are flags and variables of `replayfleet coordinator` / `worker`")

    texts = {"NOTES.txt": notes(render({})) + notes(render(CUSTOM)),
             "docs/OPERATIONS.md": (REPO / "docs/OPERATIONS.md").read_text()}
    for where, text in texts.items():
        lines = command_lines(text, markdown=where.endswith(".md"))
        check(lines, f"{where} has no replayfleet command")
        for words in lines:
            flags_ok(words, where)
        say(f"{where}: {len(lines)} replayfleet command lines use existing commands and flags")


# Every backfill.toml key the chart renders, for the real config loader (tests/it/deploy.rs).
FULL_CONFIG = {
    "backfill": {
        "run": {"name": "full.config-1"},
        "source": {"url": "s3://archive/events", "contiguous_seq": True,
                   "options": {"region": "eu-west-1", "endpoint": "http://minio.minio.svc:9000", "allow_http": True},
                   "key_pattern": "{topic}/partition={partition:int}/*+*+{start_offset:int}.{codec}.parquet",
                   "segments": "*.parquet",
                   "columns": {"event_id": {"template": "{topic}-{partition}-{seq}"}, "seq": "offset",
                               "partition": {"key": "partition"},
                               "event_type": {"footer": "parquet.avro.schema", "pointer": "/name",
                                              "map": {"com.acme.Deposited": "Deposited"}},
                               "schema_version": {"footer": "parquet.avro.schema", "pointer": "/connect.version"},
                               "occurred_at": {"column": "ts", "unit": "ms"},
                               "payload": {"remaining": True, "exclude": ["kafka_partition"]}}},
        "target": {"url": "gs://projections/balances", "options": {}},
        "projection": {"name": "balances", "key": ["account_id", "currency"],
                       "sql": "SELECT stream_id AS account_id, 'EUR' AS currency, count(*) AS n\nFROM events\nGROUP BY stream_id\n"},
        "shards": {"target_events": 1000000},
        "window": {"partitions": [0, "4-5"], "until_seq": 1000000, "until_time": "2024-06-30T23:59:59Z"},
        "checks": {"invariants": ["SELECT * FROM projection WHERE account_id = 'x''y'", "SELECT * FROM projection WHERE n < 0"],
                   "anomalies": {"gap": "allow", "unknown_version": "quarantine", "max_quarantined_ratio": 0},
                   "baseline": {"max_changed_ratio": 1}},
        "pacing": {"events_per_second": 50000},
        "fleet": {"lease_ttl_seconds": 90, "max_attempts": 5},
        "lineage": {"url": "http://marquez.lineage.svc:5000/api/v1/lineage"},
        "limits": {"memory": 536870912},
    },
}


def scenario_write_config(args: argparse.Namespace) -> None:
    """Writes the run files as the coordinator sees them (/etc/replayfleet), and its plain
    environment as env.json, for the default values or FULL_CONFIG (--values full)."""
    out = pathlib.Path(args.out)
    values = FULL_CONFIG if args.values == "full" else {}
    docs = documents(render(values))
    validate(docs)
    data = one(docs, "ConfigMap")["data"]
    job = one(docs, "Job")
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")["configMap"]
    for item in volume["items"]:
        path = out / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]])
    env: dict[str, str] = {}
    for e in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
    (out / "env.json").write_text(json.dumps(env, indent=2))
    say(f"wrote {len(volume['items'])} files and env.json ({len(env)} variables) under {out}")


VALUE_SETS = {
    "keda": {"keda": {"enabled": True}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "existing-configmap": {"config": {"existingConfigMap": "balances-v3", "contractKeys": EXISTING_CONTRACTS}},
    "custom-resources": CUSTOM,
}

SCENARIOS = {
    "lint": scenario_lint,
    "default": scenario_default,
    "keda": scenario_keda,
    "servicemonitor": scenario_servicemonitor,
    "existing-configmap": scenario_existing_configmap,
    "custom-resources": scenario_custom_resources,
    "refusals": scenario_refusals,
    "flags": scenario_flags,
    "write-config": scenario_write_config,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--bin", help="the replayfleet binary (flags)")
    parser.add_argument("--out", help="output folder (write-config)")
    parser.add_argument("--values", choices=["default", "full"], default="default", help="value set (write-config)")
    args = parser.parse_args()
    names = [n for n in SCENARIOS if n not in ("flags", "write-config")] if args.scenario == "all" else [args.scenario]
    try:
        for name in names:
            SCENARIOS[name](args)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"passed: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
