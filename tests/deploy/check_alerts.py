#!/usr/bin/env python3
"""Checks of deploy/prometheus/alerts.yaml and deploy/grafana/replayfleet.json.

    python3 tests/deploy/check_alerts.py alerts     # rule structure, metric names, runbook anchors, promtool
    python3 tests/deploy/check_alerts.py dashboard  # the dashboard parses and queries existing metrics

Every `replayfleet_*` metric an expression uses must be one the Rust sources record
(`metrics::counter!` / `gauge!` / `histogram!` under crates/), with labels they give it
or labels Prometheus adds when it scrapes; counters and histogram series only under
rate()/increase(), gauges never. Other metrics are allowed only from EXTERNAL below.
`promtool` (Debian's `prometheus` package has it; scripts/setup.sh installs it) also checks
the rules, runs their unit tests (deploy/prometheus/alerts.test.yaml) and parses every
dashboard query. Without it the checks fail: a check that can skip proves nothing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/prometheus/alerts.yaml"
ALERT_TESTS = REPO / "deploy/prometheus/alerts.test.yaml"
DASHBOARD = REPO / "deploy/grafana/replayfleet.json"
RUNBOOK = REPO / "docs/OPERATIONS.md"

# Metrics from outside replayfleet that the rules may use, with their labels.
EXTERNAL = {
    "kube_job_failed": ("kube-state-metrics", {"namespace", "job_name", "condition"}),
}
# Labels Prometheus's Kubernetes discovery (ServiceMonitor, pod annotations) puts on every target.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

FUNCTIONS_ON_COUNTERS = {"rate", "irate", "increase", "resets"}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
    "unless", "atan2", "inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group",
}


class CheckFailed(AssertionError):
    pass


def check(cond, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def say(message: str) -> None:
    print(f"  ok: {message}")


# --- what the Rust sources record ---------------------------------------------------


def rust_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (counter | gauge | histogram, labels) for every metric recorded under crates/."""
    found: dict[str, tuple[str, set[str]]] = {}
    pattern = re.compile(r'(?:metrics::)?(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"([^;]*?)\)\s*\.', re.S)
    for path in sorted((REPO / "crates").rglob("*.rs")):
        text = path.read_text()
        for kind, name, rest in pattern.findall(text):
            labels = set(re.findall(r'"([a-zA-Z_][a-zA-Z0-9_]*)"\s*=>', rest))
            old = found.get(name)
            if old:
                check(old[0] == kind, f"{name} is recorded both as a {old[0]} and a {kind}")
                labels |= old[1]
            found[name] = (kind, labels)
    check(found, "no metric found under crates/: has the recording code moved?")
    return found


# --- PromQL, enough of it --------------------------------------------------------------


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def selectors(expr: str) -> list[tuple[str, set[str], str]]:
    """(metric, label names in its matcher, enclosing function) for every vector selector."""
    out = []
    text = strip_strings(re.sub(r"#.*", "", expr))
    # Ranges, offsets and numbers are no selectors: blank them (same length, so positions hold).
    text = re.sub(r"\[[^\]]*\]|\boffset\s+[0-9a-z]+|\b[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\b",
                  lambda m: " " * len(m.group(0)), text)
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matcher = m.group(1), m.group(2) or ""
        after = text[m.end():].lstrip()
        before = text[:m.start()].rstrip()
        if after.startswith("("):
            continue  # a function or an aggregation
        if name.lower() in KEYWORDS or re.fullmatch(r"[0-9]", name[:1]):
            continue
        if before.endswith(("by (", "by(", "without (", "without(", "on (", "on(", "ignoring (", "ignoring(",
                            "group_left (", "group_left(", "group_right (", "group_right(")) or _in_label_list(text, m.start()):
            continue
        if re.fullmatch(r"[0-9]+(ms|s|m|h|d|w|y)", name) or before.endswith("["):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matcher))
        out.append((name, labels, _enclosing_function(text, m.start())))
    return out


def _opening_paren(text: str, pos: int) -> int:
    """The index of the unclosed "(" that encloses pos, or -1."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        c = text[i]
        if c == ")":
            depth += 1
        elif c == "(":
            if depth == 0:
                return i
            depth -= 1
    return -1


def _in_label_list(text: str, pos: int) -> bool:
    """Whether pos is inside the parentheses of by/without/on/ignoring/group_*."""
    i = _opening_paren(text, pos)
    if i < 0:
        return False
    head = text[:i].rstrip()
    return bool(re.search(r"\b(by|without|on|ignoring|group_left|group_right)$", head))


def _enclosing_function(text: str, pos: int) -> str:
    i = _opening_paren(text, pos)
    if i < 0:
        return ""
    m = re.search(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*$", text[:i])
    return m.group(1) if m else ""


def grouping_labels(expr: str) -> set[str]:
    text = strip_strings(expr)
    labels: set[str] = set()
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {l.strip() for l in m.group(2).split(",") if l.strip()}
    return labels


def check_expr(expr: str, where: str, metrics: dict[str, tuple[str, set[str]]], used: dict[str, set[str]]) -> None:
    sels = selectors(expr)
    check(sels, f"{where}: no metric in `{expr}`")
    available = set(TARGET_LABELS)
    for name, labels, function in sels:
        base, part = name, ""
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in metrics and metrics[name[: -len(suffix)]][0] == "histogram":
                base, part = name[: -len(suffix)], suffix
        if base.startswith("replayfleet_"):
            check(base in metrics, f"{where}: {name} is not a metric the Rust sources record "
                  f"(they record: {', '.join(sorted(metrics))})")
            kind, own = metrics[base]
            extra = {"le"} if part == "_bucket" else ({"quantile"} if kind == "histogram" and not part else set())
            unknown = labels - own - TARGET_LABELS - extra
            check(not unknown, f"{where}: {name} has no label {sorted(unknown)} (it has {sorted(own | TARGET_LABELS)})")
            available |= own | extra
            cumulative = kind == "counter" or part in ("_bucket", "_sum", "_count")
            if cumulative:
                check(function in FUNCTIONS_ON_COUNTERS or kind == "counter" and function in ("", "sum", "max"),
                      f"{where}: the counter {name} is used under {function or 'nothing'}(), not rate()/increase()")
            else:
                check(function not in FUNCTIONS_ON_COUNTERS, f"{where}: the {kind} {name} is under {function}()")
            used.setdefault(name, set()).add(where)
        else:
            check(name in EXTERNAL, f"{where}: {name} is neither a replayfleet metric nor an allowed external one ({sorted(EXTERNAL)})")
            unknown = labels - EXTERNAL[name][1]
            check(not unknown, f"{where}: {name} has no label {sorted(unknown)}")
            available |= EXTERNAL[name][1]
            used.setdefault(name, set()).add(where)
    missing = grouping_labels(expr) - available
    check(not missing, f"{where}: groups by labels no metric of it has: {sorted(missing)}")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


# --- scenarios ----------------------------------------------------------------------


def scenario_alerts(_: argparse.Namespace) -> None:
    metrics = rust_metrics()
    doc = yaml.safe_load(ALERTS.read_text())
    check(isinstance(doc, dict) and list(doc) == ["groups"], "alerts.yaml must hold `groups` only (a Prometheus rule file)")
    groups = doc["groups"]
    check(isinstance(groups, list) and groups, "no rule groups")
    names: set[str] = set()
    used: dict[str, set[str]] = {}
    runbook_anchors = anchors(RUNBOOK.read_text())
    for group in groups:
        check(set(group) <= {"name", "interval", "rules", "limit"} and group.get("name") and group.get("rules"),
              f"group {group.get('name')}: needs a name and rules, and nothing else")
        for rule in group["rules"]:
            check(set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"},
                  f"rule {rule.get('alert')}: unknown keys {sorted(set(rule) - {'alert', 'expr', 'for', 'labels', 'annotations'})}")
            alert = rule.get("alert")
            check(isinstance(alert, str) and re.fullmatch(r"Replayfleet[A-Z][A-Za-z]+", alert), f"alert name {alert!r}")
            check(alert not in names, f"{alert} is defined twice")
            names.add(alert)
            check(isinstance(rule.get("expr"), str) and rule["expr"].strip(), f"{alert}: no expr")
            check(DURATION.match(str(rule.get("for", ""))), f"{alert}: `for` must be a duration, got {rule.get('for')!r}")
            labels = rule.get("labels", {})
            check(labels.get("severity") in SEVERITIES, f"{alert}: severity must be one of {sorted(SEVERITIES)}")
            ann = rule.get("annotations", {})
            check({"summary", "description", "runbook"} <= set(ann), f"{alert}: annotations need summary, description, runbook")
            anchor = ann["runbook"].split("#", 1)
            check(anchor[0] == "docs/OPERATIONS.md" and len(anchor) == 2 and anchor[1] in runbook_anchors,
                  f"{alert}: runbook {ann['runbook']} is not a section of docs/OPERATIONS.md")
            check_expr(rule["expr"], alert, metrics, used)
    needed = {"ReplayfleetRunStalled", "ReplayfleetQuarantineOverBudget", "ReplayfleetLeaseRedeliveryStorm",
              "ReplayfleetRunHaltedOrRefused"}
    check(needed <= names, f"missing alerts: {sorted(needed - names)}")
    say(f"{len(names)} alerts: {', '.join(sorted(names))}; each with a severity, a summary, a description and a runbook section")
    ours = sorted(n for n in used if n.startswith("replayfleet_"))
    say(f"replayfleet metrics used, all recorded by crates/ with the labels used: {', '.join(ours)}")
    external = sorted(n for n in used if not n.startswith("replayfleet_"))
    if external:
        say("external metrics: " + ", ".join(f"{n} ({EXTERNAL[n][0]})" for n in external))
    promtool = need_promtool()
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
        check(out.returncode == 0, f"promtool {' '.join(args[:2])} failed:\n{out.stdout}\n{out.stderr}")
    say("promtool check rules and promtool test rules (alerts.test.yaml) pass")


def need_promtool() -> str:
    promtool = shutil.which("promtool")
    check(promtool is not None,
          "promtool is not on PATH: install Debian's `prometheus` package (scripts/setup.sh does)")
    return promtool


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p['title']!r} target {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            check(m, f"variable {v['name']}: not a label_values() query: {q}")
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def grafana_to_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def scenario_dashboard(_: argparse.Namespace) -> None:
    metrics = rust_metrics()
    dashboard = json.loads(DASHBOARD.read_text())
    check(dashboard.get("title") and dashboard.get("uid") == "replayfleet", "title and uid")
    panels = [p for p in dashboard["panels"]]
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), "panel ids are not unique")
    for p in panels:
        g = p.get("gridPos", {})
        check({"x", "y", "w", "h"} <= set(g) and 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p.get('title')}: gridPos {g}")
        if p["type"] != "row":
            check(p.get("targets"), f"panel {p['title']}: no query")
            check(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']}: not on the $datasource variable")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    check({"datasource", "namespace", "run"} <= variables, f"variables {sorted(variables)}")
    used: dict[str, set[str]] = {}
    exprs = dashboard_exprs(dashboard)
    for where, expr in exprs:
        check_expr(grafana_to_promql(expr), where, metrics, used)
        for var in re.findall(r"\$\{?(\w+)\}?", expr):
            check(var in variables or var.startswith("__"), f"{where}: unknown variable ${var}")
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("progress", "events/s", "backlog", "anomalies by kind", "redeliveries", "shard duration"):
        check(topic in titles, f"no panel about {topic}")
    say(f"{len(panels)} panels, {len(exprs)} queries over {', '.join(sorted(used))}: all recorded by crates/")
    promtool = need_promtool()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(rules, f)
    out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True, timeout=120)
    pathlib.Path(f.name).unlink()
    check(out.returncode == 0, f"promtool cannot parse the dashboard's queries:\n{out.stdout}\n{out.stderr}")
    say("promtool parses every dashboard query")


SCENARIOS = {"alerts": scenario_alerts, "dashboard": scenario_dashboard}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    try:
        for name in names:
            print(f"scenario {name}")
            SCENARIOS[name](args)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"passed: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
