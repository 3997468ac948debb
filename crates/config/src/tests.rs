use std::path::Path;

use crate::{AnomalyKind, Config, Policy};

const MINIMAL: &str = r#"
[run]
name = "balances"
[source]
url = "data/events"
[contracts]
dir = "contracts"
[projection]
name = "account_balances"
key = ["account_id"]
sql = "SELECT stream_id AS account_id FROM events GROUP BY stream_id"
[target]
url = "s3://bucket/projections/balances"
"#;

fn parse(text: &str) -> crate::Result<Config> {
    Config::parse(text, Path::new("/etc/rf/backfill.toml"), Vec::new())
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> crate::Result<Config> {
    Config::parse(
        text,
        Path::new("/etc/rf/backfill.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn minimal_file_gets_the_spec_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.source.url, "/etc/rf/data/events");
    assert_eq!(c.contracts_dir, Path::new("/etc/rf/contracts"));
    assert_eq!(c.target.url, "s3://bucket/projections/balances");
    assert_eq!(c.shard_target_events, 5_000_000);
    assert_eq!(c.fleet.lease_ttl.as_secs(), 30);
    assert_eq!(c.fleet.max_attempts, 3);
    assert_eq!(c.lineage_namespace, "replayfleet");
    assert_eq!(c.memory_limit_bytes, 2 << 30);
    assert_eq!(c.spill_dir, None);
    assert_eq!(c.projection_time, crate::DEFAULT_PROJECTION_TIME);
    assert_eq!(c.step_time, crate::DEFAULT_STEP_TIME);
    assert_eq!(c.spill_compression, crate::SpillCompression::None);
    assert_eq!(c.checks.max_quarantined_ratio, 0.0);
    assert_eq!(c.checks.max_changed_ratio, 1.0);
    for kind in AnomalyKind::ALL {
        assert_eq!(c.checks.policy(kind), Policy::Halt);
    }
    assert!(!c.window.is_windowed());
    assert!(c.fleet.nats_url.is_none());
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = parse(&format!("{MINIMAL}\n[shards]\ntarget_evnts = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("target_evnts"), "{err}");
    assert!(err.contains("backfill.toml"), "{err}");
    let err = parse(&format!("{MINIMAL}\n[bogus]\nx = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn env_overrides_use_section_and_key() {
    let c = parse_env(
        MINIMAL,
        &[
            ("REPLAYFLEET_FLEET__NATS_URL", "nats://127.0.0.1:4333"),
            ("REPLAYFLEET_SHARDS__TARGET_EVENTS", "1000"),
            ("REPLAYFLEET_CHECKS__ANOMALIES__UNKNOWN_TYPE", "quarantine"),
            ("REPLAYFLEET_SOURCE_SECRET_ACCESS_KEY", "s3cr3t"),
            ("REPLAYFLEET_LOG_FORMAT", "json"),
        ],
    )
    .unwrap();
    assert_eq!(c.fleet.nats_url.as_deref(), Some("nats://127.0.0.1:4333"));
    assert_eq!(c.shard_target_events, 1000);
    assert_eq!(
        c.checks.policy(AnomalyKind::UnknownType),
        Policy::Quarantine
    );
    assert_eq!(
        c.source
            .options
            .get("secret_access_key")
            .map(String::as_str),
        Some("s3cr3t")
    );
    let err = parse_env(MINIMAL, &[("REPLAYFLEET_SHARDS__NOPE", "1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("REPLAYFLEET_SHARDS__NOPE") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn secrets_in_the_file_are_refused() {
    let text = MINIMAL.replace(
        "[target]",
        "[source.options]\nsecret_access_key = \"x\"\n[target]",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("source.options.secret_access_key"), "{err}");
    assert!(
        err.contains("REPLAYFLEET_SOURCE_SECRET_ACCESS_KEY"),
        "{err}"
    );
}

#[test]
fn window_partitions_take_numbers_and_ranges() {
    let text = format!(
        "{MINIMAL}\n[window]\npartitions = [7, \"0-3\", \"5\"]\nuntil_seq = 99\nuntil_time = \"2024-01-01T00:00:00Z\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.window.partitions, Some(vec![0, 1, 2, 3, 5, 7]));
    assert_eq!(c.window.until_seq, Some(99));
    assert!(c.window.until_time.is_some());
    assert!(c.window.is_windowed());
    let err = parse(&format!("{MINIMAL}\n[window]\npartitions = [\"3-1\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("window.partitions"), "{err}");
    let c = parse(&format!(
        "{MINIMAL}\n[window]\nuntil_time = 2024-01-01T00:00:00Z\n"
    ))
    .unwrap();
    assert!(c.window.until_time.is_some());
}

#[test]
fn values_out_of_range_name_their_key() {
    for (extra, key) in [
        ("[fleet]\nlease_ttl = \"-3s\"", "fleet.lease_ttl"),
        ("[fleet]\nlease_ttl = \"10ms\"", "fleet.lease_ttl"),
        ("[fleet]\nmax_attempts = 0", "fleet.max_attempts"),
        (
            "[checks.anomalies]\nmax_quarantined_ratio = 1.5",
            "checks.anomalies.max_quarantined_ratio",
        ),
        (
            "[checks.baseline]\nmax_changed_ratio = -0.1",
            "checks.baseline.max_changed_ratio",
        ),
        ("[shards]\ntarget_events = 0", "shards.target_events"),
        ("[limits]\nmemory = \"2 parsecs\"", "limits.memory"),
        ("[limits]\nspill_dir = \" \"", "limits.spill_dir"),
        (
            "[limits]\nprojection_time = \"soon\"",
            "limits.projection_time",
        ),
        (
            "[limits]\nprojection_time = \"10ms\"",
            "limits.projection_time",
        ),
        ("[limits]\nstep_time = \"a while\"", "limits.step_time"),
        ("[limits]\nstep_time = \"500ms\"", "limits.step_time"),
        (
            "[limits]\nspill_compression = \"zip\"",
            "limits.spill_compression",
        ),
        (
            "[pacing]\nevents_per_second = -1",
            "pacing.events_per_second",
        ),
        ("[lineage]\nnamespace = \" \"", "lineage.namespace"),
    ] {
        let err = parse(&format!("{MINIMAL}\n{extra}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let err = parse(&format!(
        "{MINIMAL}\n[checks.anomalies]\ngap = \"explode\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("explode"), "{err}");
}

#[test]
fn the_spill_folder_is_resolved_against_the_config_file() {
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\nspill_dir = \"spill\"\nprojection_time = \"90s\"\nstep_time = \"5s\"\nspill_compression = \"lz4\"\n"
    ))
    .unwrap();
    assert_eq!(c.spill_dir.as_deref(), Some(Path::new("/etc/rf/spill")));
    assert_eq!(c.projection_time.as_secs(), 90);
    assert_eq!(c.step_time.as_secs(), 5);
    assert_eq!(c.spill_compression, crate::SpillCompression::Lz4);
}

#[test]
fn sql_and_sql_file_are_exclusive() {
    let both = MINIMAL.replace("key = [", "sql_file = \"x.sql\"\nkey = [");
    assert!(parse(&both).unwrap_err().to_string().contains("not both"));
    let none = MINIMAL.replace(
        "sql = \"SELECT stream_id AS account_id FROM events GROUP BY stream_id\"",
        "",
    );
    assert!(
        parse(&none)
            .unwrap_err()
            .to_string()
            .contains("projection.sql")
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(crate::parse_bytes("2GiB").unwrap(), 2 << 30);
    assert_eq!(crate::parse_bytes("512 MiB").unwrap(), 512 << 20);
    assert_eq!(crate::parse_bytes("1.5GB").unwrap(), 1_500_000_000);
    assert!(crate::parse_bytes("lots").is_err());
}

#[test]
fn the_shipped_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/accounts/backfill.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&text, &path, Vec::new()).unwrap();
    assert_eq!(c.name, "account-balances-v2");
    assert_eq!(
        c.checks.policy(AnomalyKind::UnknownType),
        Policy::Quarantine
    );
    assert_eq!(c.checks.invariants.len(), 1);
}

#[test]
fn source_mappings_load_with_their_key_pattern_and_name_their_key() {
    let with_source = |source: &str| {
        MINIMAL.replace(
            "url = \"data/events\"\n",
            &format!("url = \"data/events\"\n{source}\n"),
        )
    };
    let c = parse(&with_source(
        "key_pattern = \"{topic}-{partition:int}-{start:int}.parquet\"\nsegments = \"*.parquet\"\n[source.columns]\npartition = { key = \"partition\" }\nseq = { key = \"start\", plus_row = true }\nevent_id = { template = \"{topic}-{partition}-{seq}\" }",
    ))
    .unwrap();
    assert_eq!(
        c.source.mapping.captures("a/orders-3-10.parquet").unwrap(),
        vec![
            ("topic".to_owned(), "orders".to_owned()),
            ("partition".to_owned(), "3".to_owned()),
            ("start".to_owned(), "10".to_owned())
        ]
    );
    assert!(c.source.mapping.columns.seq.plus_row);

    let err = parse(&with_source(
        "[source.columns]\npartition = { key = \"partition\" }",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("backfill.toml"), "{err}");
    assert!(err.contains("source.columns.partition"), "{err}");
    assert!(err.contains("key_pattern"), "{err}");

    let err = parse(&with_source("key_pattern = \"{topic\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_pattern"), "{err}");
    assert!(err.contains("never closed"), "{err}");

    let err = parse(&with_source(
        "[source.columns]\nseq = { key = \"a\", column = \"b\" }",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("seq"), "{err}");
    assert!(err.contains("exactly one"), "{err}");

    // A plain column still comes from the environment as a string.
    let c = parse_env(MINIMAL, &[("REPLAYFLEET_SOURCE__COLUMNS__SEQ", "offset")]).unwrap();
    assert_eq!(c.source.mapping.columns.seq.plain_column(), Some("offset"));
}

#[test]
fn run_names_that_cannot_name_a_folder_are_refused_by_key() {
    let with_name =
        |name: &str| MINIMAL.replace("name = \"balances\"", &format!("name = \"{name}\""));
    let longest = "n".repeat(crate::MAX_NAME_BYTES);
    assert_eq!(parse(&with_name(&longest)).unwrap().name, longest);
    let err = parse(&with_name(&"n".repeat(300))).unwrap_err().to_string();
    assert!(err.contains("run.name"), "{err}");
    assert!(err.contains("backfill.toml"), "{err}");
    assert!(err.contains("300 bytes") && err.contains("128"), "{err}");
    assert!(
        err.len() < 400,
        "the message quotes a shortened name: {err}"
    );
    for bad in ["a/b", "..\\\\x", "a b", "é"] {
        let err = parse(&with_name(bad)).unwrap_err().to_string();
        assert!(err.contains("run.name"), "{bad}: {err}");
    }
    // A name only the environment makes too long is refused the same way.
    let long = "x".repeat(129);
    let err = parse_env(MINIMAL, &[("REPLAYFLEET_RUN__NAME", long.as_str())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("run.name"), "{err}");
}

#[test]
fn lineage_urls_are_checked_without_showing_their_credentials() {
    let with_lineage = |url: &str| format!("{MINIMAL}\n[lineage]\nurl = \"{url}\"\n");
    let c = parse(&with_lineage("http://user:pw@marquez:5000/")).unwrap();
    // The real URL is kept to connect with...
    assert_eq!(
        c.lineage_url.as_deref(),
        Some("http://user:pw@marquez:5000/")
    );
    // ...and never shown.
    let shown = format!("{c:?}");
    assert!(!shown.contains("pw@"), "{shown}");
    assert!(shown.contains("http://***@marquez:5000/"), "{shown}");
    for (url, needle) in [
        ("ftp://user:pw@marquez/", "ftp"),
        ("http//user:pw@marquez", "not a URL"),
        ("http://user:pw@", "not a URL"),
    ] {
        let err = parse(&with_lineage(url)).unwrap_err().to_string();
        assert!(err.contains("lineage.url"), "{url}: {err}");
        assert!(err.contains(needle), "{url}: {err}");
        assert!(!err.contains(":pw"), "{url}: {err}");
    }
}

#[test]
fn debug_output_hides_nats_credentials_and_secret_options() {
    let c = parse_env(
        &format!("{MINIMAL}\n[fleet]\nnats_url = \"nats://user:secret@127.0.0.1:4222\"\n"),
        &[("REPLAYFLEET_SOURCE_SECRET_ACCESS_KEY", "s3cr3t")],
    )
    .unwrap();
    assert_eq!(
        c.fleet.nats_url.as_deref(),
        Some("nats://user:secret@127.0.0.1:4222")
    );
    assert_eq!(c.source.options["secret_access_key"], "s3cr3t");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("secret@") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    let err = parse(&format!(
        "{MINIMAL}\n[fleet]\nnats_url = \"user:secret@host\"\n"
    ));
    if let Err(e) = err {
        assert!(!e.to_string().contains("secret"), "{e}");
    }
    let err = parse(&format!("{MINIMAL}\n[fleet]\nnats_url = \"secret@host\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fleet.nats_url") && !err.contains("secret"),
        "{err}"
    );
}
