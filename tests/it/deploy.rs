//! The Kubernetes deliverables, checked offline: the Helm chart (linted and rendered by
//! real Helm through helm-python-sdk, every manifest validated against Kubernetes 1.30),
//! the alerting rules and the Grafana dashboard. The checks are the Python scripts in
//! tests/deploy/ (packages from scripts/setup.sh); each test runs one scenario, so a
//! failure names it, and prints the script's output.

use std::{collections::BTreeMap, process::Command, time::Duration};

use crate::support::{bin, replayfleet, repo};

/// Runs `python3 tests/deploy/<script> args...` ($PYTHON if set) and asserts it passed.
#[track_caller]
fn script(script: &str, args: &[&str]) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let path = repo().join("tests/deploy").join(script);
    let out = Command::new(&python)
        .arg(&path)
        .args(args)
        .current_dir(repo())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {} failed ({}); scripts/setup.sh installs its packages\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        out.status
    );
    stdout.into_owned()
}

fn chart(scenario: &str) -> String {
    script("check_chart.py", &[scenario])
}

#[test]
fn deploy_chart_lints_strictly_for_kubernetes_1_30() {
    chart("lint");
}

#[test]
fn deploy_chart_default_values_render_valid_manifests() {
    chart("default");
}

#[test]
fn deploy_chart_with_keda_scales_workers_on_the_lease_lag() {
    chart("keda");
}

#[test]
fn deploy_chart_service_monitor_only_when_its_api_exists() {
    chart("servicemonitor");
}

#[test]
fn deploy_chart_mounts_an_existing_config_map() {
    chart("existing-configmap");
}

#[test]
fn deploy_chart_custom_resources_secrets_and_lease_ttl() {
    chart("custom-resources");
}

#[test]
fn deploy_chart_refuses_bad_values_with_their_message() {
    chart("refusals");
}

#[test]
fn deploy_chart_and_runbooks_use_the_binary_s_real_flags() {
    let bin = bin();
    script("check_chart.py", &["flags", "--bin", bin.to_str().unwrap()]);
}

#[test]
fn deploy_alerts_parse_and_use_recorded_metrics() {
    script("check_alerts.py", &["alerts"]);
}

#[test]
fn deploy_dashboard_parses_and_uses_recorded_metrics() {
    script("check_alerts.py", &["dashboard"]);
}

/// The files the chart mounts for the coordinator, with the environment it gives it, as
/// the config loader sees them.
fn rendered_config(values: &str) -> (tempfile::TempDir, replayfleet_config::Config) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    script(
        "check_chart.py",
        &["write-config", "--values", values, "--out", out],
    );
    let env: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("env.json")).unwrap())
            .unwrap();
    let config = replayfleet_config::Config::load_with_env(&dir.path().join("backfill.toml"), env)
        .unwrap_or_else(|e| {
            panic!(
                "the chart's backfill.toml does not load: {e}\n{}",
                std::fs::read_to_string(dir.path().join("backfill.toml")).unwrap()
            )
        });
    (dir, config)
}

#[test]
fn deploy_chart_default_config_loads_and_its_catalog_checks() {
    let (dir, config) = rendered_config("default");
    assert_eq!(config.name, "account-balances-v2");
    assert_eq!(
        config.target.url,
        "s3://replayfleet-projections/account_balances"
    );
    assert_eq!(config.projection.key, ["account_id"]);
    assert!(
        config.projection.sql.contains("GROUP BY stream_id"),
        "{}",
        config.projection.sql
    );
    assert_eq!(config.contracts_dir, dir.path().join("contracts"));
    assert_eq!(config.fleet.lease_ttl, Duration::from_secs(30));
    assert_eq!(
        config.fleet.nats_url.as_deref(),
        Some("nats://nats.nats.svc.cluster.local:4222")
    );
    assert_eq!(config.checks.max_quarantined_ratio, 0.01);
    assert!(!config.window.is_windowed());
    let contracts = dir.path().join("contracts");
    replayfleet(&["contracts", "check", "--dir", contracts.to_str().unwrap()]).expect_code(0);
    // The same catalog as the shipped example, byte for byte.
    for entry in std::fs::read_dir(repo().join("examples/accounts/contracts")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(contracts.join(entry.file_name())).unwrap(),
            "{}",
            entry.path().display()
        );
    }
}

#[test]
fn deploy_chart_renders_every_config_key_the_loader_accepts() {
    let (_dir, config) = rendered_config("full");
    assert_eq!(config.name, "full.config-1");
    assert_eq!(config.source.url, "s3://archive/events");
    assert!(config.source.contiguous_seq);
    assert_eq!(
        config.source.options.get("allow_http").map(String::as_str),
        Some("true")
    );
    // Mapping tables (docs/SOURCES.md) survive the chart's TOML rendering.
    let mapping = &config.source.mapping;
    assert_eq!(mapping.key_pattern.iter().count(), 1);
    assert_eq!(mapping.segments.as_str(), "*.parquet");
    assert_eq!(
        mapping.columns.event_id.describe(),
        "{ template = \"{topic}-{partition}-{seq}\" }"
    );
    assert_eq!(
        mapping
            .columns
            .event_type
            .map
            .get("com.acme.Deposited")
            .map(String::as_str),
        Some("Deposited")
    );
    assert_eq!(
        mapping.columns.occurred_at.unit,
        Some(replayfleet_config::EpochUnit::Ms)
    );
    assert_eq!(mapping.columns.payload.exclude, ["kafka_partition"]);
    assert_eq!(mapping.columns.seq.plain_column(), Some("offset"));
    assert_eq!(config.target.url, "gs://projections/balances");
    assert_eq!(config.projection.key, ["account_id", "currency"]);
    assert_eq!(config.shard_target_events, 1_000_000);
    assert_eq!(config.window.partitions, Some(vec![0, 4, 5]));
    assert_eq!(config.window.until_seq, Some(1_000_000));
    assert!(config.window.until_time.is_some());
    assert_eq!(config.checks.invariants.len(), 2);
    assert!(
        config.checks.invariants[0].contains("'x''y'"),
        "{:?}",
        config.checks.invariants
    );
    assert_eq!(config.checks.max_quarantined_ratio, 0.0);
    assert_eq!(config.checks.max_changed_ratio, 1.0);
    assert_eq!(config.pacing_events_per_second, 50_000);
    assert_eq!(config.fleet.lease_ttl, Duration::from_secs(90));
    assert_eq!(config.fleet.max_attempts, 5);
    assert_eq!(
        config.lineage_url.as_deref(),
        Some("http://marquez.lineage.svc:5000/api/v1/lineage")
    );
    assert_eq!(config.memory_limit_bytes, 512 << 20);
    assert!(config.base_dir.is_absolute());
}
