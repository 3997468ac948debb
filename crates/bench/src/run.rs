//! `replayfleet-bench upcast` and `replayfleet-bench run`: throughput figures measured
//! side by side in one run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command as Process, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::Context;
use replayfleet_archive::{Location, SegmentRef, decode_segment, fetch_segment, list_segments};
use replayfleet_config::{Config, SourceMapping};
use replayfleet_coordinator::{EmbeddedOptions, run_embedded};
use replayfleet_finalizer::Finalized;
use replayfleet_generate::{EdgeCases, GenerateSpec, generate};
use serde::{Deserialize, Serialize};

use replayfleet_cli::{
    exit::{self, Coded},
    output::{Table, human_bytes, print_json, thousands},
};

use crate::{RunArgs, UpcastArgs};

/// Upcast + validate per core next to a bare serde_json parse (CPU-bound: runs on a
/// blocking thread so the runtime stays responsive).
pub async fn upcast(args: UpcastArgs) -> anyhow::Result<u8> {
    let (events, rounds) = (args.events, args.rounds);
    let report =
        tokio::task::spawn_blocking(move || replayfleet_contracts::bench_upcast(events, rounds))
            .await?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(exit::SUCCESS)
}

/// The example backfill (its SQL, key, checks and anomaly policies), run as it is with
/// only `source.url`, `target.url` and (when asked) `shards.target_events` overridden.
pub(crate) const BACKFILL: &str = include_str!("../../../examples/accounts/backfill.toml");

/// The example catalog, written into the bench's folder.
pub(crate) const CATALOG: [(&str, &str); 4] = [
    (
        "account_closed.yaml",
        include_str!("../../../examples/accounts/contracts/account_closed.yaml"),
    ),
    (
        "account_opened.yaml",
        include_str!("../../../examples/accounts/contracts/account_opened.yaml"),
    ),
    (
        "deposited.yaml",
        include_str!("../../../examples/accounts/contracts/deposited.yaml"),
    ),
    (
        "withdrawn.yaml",
        include_str!("../../../examples/accounts/contracts/withdrawn.yaml"),
    ),
];

/// Writes the example catalog (`dir/contracts`) and backfill (`dir/backfill.toml`) into
/// `dir`; returns the backfill's path.
pub(crate) fn write_example(dir: &Path) -> anyhow::Result<PathBuf> {
    let contracts = dir.join("contracts");
    std::fs::create_dir_all(&contracts)?;
    for (name, text) in CATALOG {
        std::fs::write(contracts.join(name), text)?;
    }
    let config_path = dir.join("backfill.toml");
    std::fs::write(&config_path, BACKFILL)?;
    Ok(config_path)
}

/// The relative target of `run` against DuckDB (events/s over events/s), now.
const TARGET_VS_DUCKDB: f64 = 1.0;
/// ... and where it should get to.
const GOAL_VS_DUCKDB: f64 = 1.5;

/// DuckDB doing the whole job of the example backfill from the same files: dedupe by
/// `event_id` keeping the lowest (partition, seq), upcast the old versions, drop what
/// fails the target schemas, fold per `stream_id` like the example SQL, COPY to Parquet.
/// Only the SQL is timed. Arguments: archive folder, output file, threads, and a JSON
/// list of replayfleet's projection segments to compare with (outside the timer).
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
import duckdb

src, out, threads, compare = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])

def q(s):
    return "'" + s.replace("'", "''") + "'"

def peak_rss():
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at fork.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None

con = duckdb.connect()
con.execute(f"SET threads={threads}")
files = f"read_parquet({q(src + '/**/*.parquet')}, hive_partitioning=false)"
rows_read = con.execute(f"SELECT count(*) FROM {files}").fetchone()[0]
sql = f"""
COPY (
  WITH firsts AS (
    SELECT stream_id, seq, event_type, schema_version, payload
    FROM (
      SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY partition, seq) AS rn
      FROM {files}
    )
    WHERE rn = 1
  ),
  upcast AS (
    SELECT stream_id, seq, event_type,
      CASE
        WHEN event_type = 'Deposited' AND schema_version = 1
             AND json_type(payload, '$.amount') IN ('BIGINT', 'UBIGINT', 'DOUBLE')
          THEN TRY_CAST(round(CAST(json_extract(payload, '$.amount') AS DOUBLE) * 100) AS BIGINT)
        WHEN event_type = 'Withdrawn' AND schema_version = 1
             AND json_type(payload, '$.amt') IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE')
          THEN TRY_CAST(round(TRY_CAST(json_extract_string(payload, '$.amt') AS DOUBLE) * 100) AS BIGINT)
        WHEN event_type IN ('Deposited', 'Withdrawn') AND schema_version = 2
             AND json_type(payload, '$.amount_cents') IN ('BIGINT', 'UBIGINT')
          THEN TRY_CAST(json_extract(payload, '$.amount_cents') AS BIGINT)
      END AS amount_cents,
      CASE
        WHEN schema_version = 1 AND coalesce(json_type(payload, '$.currency'), 'NULL') = 'NULL'
          THEN 'EUR'
        WHEN json_type(payload, '$.currency') = 'VARCHAR'
          THEN json_extract_string(payload, '$.currency')
      END AS currency,
      json_type(payload, '$.memo') AS memo_type
    FROM firsts
  ),
  events AS (
    SELECT * FROM upcast
    WHERE (event_type IN ('Deposited', 'Withdrawn') AND amount_cents >= 0
           AND length(currency) = 3 AND (memo_type IS NULL OR memo_type = 'VARCHAR'))
       OR event_type IN ('AccountOpened', 'AccountClosed')
  )
  SELECT stream_id AS account_id,
         CAST(sum(CASE WHEN event_type = 'Deposited' THEN amount_cents
                       WHEN event_type = 'Withdrawn' THEN -amount_cents ELSE 0 END) AS BIGINT)
           AS balance_cents,
         count(*) AS events,
         max(seq) AS last_seq
  FROM events
  GROUP BY stream_id
  ORDER BY account_id
) TO {q(out)} (FORMAT parquet)
"""
started = time.perf_counter()
con.execute(sql)
seconds = time.perf_counter() - started
rows_out = con.execute(f"SELECT count(*) FROM read_parquet({q(out)})").fetchone()[0]
result = {
    "version": duckdb.__version__,
    "rows_read": rows_read,
    "rows_out": rows_out,
    "seconds": seconds,
    "peak_rss_bytes": peak_rss(),
    "differing_keys": None,
}
if compare:
    theirs = "read_parquet([" + ", ".join(q(f) for f in compare) + "])"
    result["differing_keys"] = con.execute(f"""
      SELECT count(*) FROM read_parquet({q(out)}) d FULL OUTER JOIN {theirs} r USING (account_id)
      WHERE d.balance_cents IS DISTINCT FROM r.balance_cents OR d.events IS DISTINCT FROM r.events
         OR d.last_seq IS DISTINCT FROM r.last_seq""").fetchone()[0]
print(json.dumps(result))
"#;

/// One measured line of the table.
#[derive(Debug, Serialize)]
struct Measurement {
    name: String,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    /// The run's events/s over this line's events/s (absent on the run's own line).
    run_ratio: Option<f64>,
}

impl Measurement {
    fn new(name: String, events: u64, seconds: f64) -> Self {
        Self {
            name,
            events,
            seconds,
            events_per_second: events as f64 / seconds.max(1e-9),
            run_ratio: None,
        }
    }
}

/// What DuckDB's script prints.
#[derive(Debug, Serialize, Deserialize)]
struct DuckDbOutput {
    version: String,
    rows_read: u64,
    rows_out: u64,
    seconds: f64,
    peak_rss_bytes: Option<u64>,
    differing_keys: Option<u64>,
}

#[derive(Debug, Serialize)]
struct DuckDbStatus {
    /// `installed`, `not installed` or `failed`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<DuckDbOutput>,
}

#[derive(Debug, Serialize)]
struct RunFacts {
    outcome: String,
    /// Checks that failed (a refused run still did all the work being measured).
    failed_checks: Vec<String>,
    events_read: u64,
    duplicates_dropped: u64,
    events_projected: u64,
    quarantined: u64,
    projection_rows: u64,
    shards: usize,
    shard_target_events: u64,
    workers: usize,
}

#[derive(Debug, Serialize)]
struct Archive {
    path: String,
    generated: bool,
    segments: usize,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Target {
    run_vs_duckdb_at_least: f64,
    goal: f64,
    /// None when DuckDB could not be measured.
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct BenchRunReport {
    build: &'static str,
    cores: usize,
    archive: Archive,
    measurements: Vec<Measurement>,
    run: RunFacts,
    /// VmHWM of this process after the run (Linux only).
    peak_rss_bytes: Option<u64>,
    /// Whether the peak was reset just before the run (otherwise it includes generating
    /// the archive).
    peak_rss_reset_before_run: bool,
    /// `limits.memory` of the run's config.
    memory_limit_bytes: u64,
    duckdb: DuckDbStatus,
    target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept: Option<String>,
}

/// A temporary folder, removed on drop unless kept.
pub(crate) struct Scratch {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl Scratch {
    /// A fresh folder `replayfleet-<kind>-<pid>-<nanos>` in the OS temp folder.
    pub(crate) fn new(kind: &str, keep: bool) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let scratch = Scratch {
            path: std::env::temp_dir().join(format!(
                "replayfleet-{kind}-{}-{nanos:09}",
                std::process::id()
            )),
            keep,
        };
        std::fs::create_dir_all(&scratch.path)
            .with_context(|| format!("cannot create {}", scratch.path.display()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `replayfleet-bench run`: the embedded run, the bare decode floor and DuckDB on one
/// archive, side by side.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let workers = args.workers.max(1);
    let scratch = Scratch::new("bench", args.keep)?;
    let dir = scratch.path.canonicalize()?;

    // The archive: reused, or generated with every default edge case.
    let (source_dir, generated) = match &args.source {
        Some(source) => {
            let source = source
                .canonicalize()
                .map_err(|e| Coded::input(format!("--source {}: {e}", source.display())))?;
            (source, false)
        }
        None => {
            let source = dir.join("data/events");
            std::fs::create_dir_all(&source)?;
            let location = local(&source)?;
            eprintln!(
                "generating {} events over {} partitions into {} ...",
                thousands(args.events),
                args.partitions,
                source.display()
            );
            let streams = args.streams.unwrap_or(args.events / 100).max(1);
            let spec = GenerateSpec::new(args.events, args.partitions, streams, args.seed)
                .with_edge_cases(EdgeCases::all());
            generate(&location, &spec).await?;
            (source, true)
        }
    };
    let source = local(&source_dir)?;
    let segments = list_segments(&source).await?;
    if segments.is_empty() {
        return Err(Coded::input(format!(
            "no Parquet segment under {}",
            source_dir.display()
        )));
    }

    // The config: the example backfill over the example catalog, in the scratch folder.
    let config_path = write_example(&dir)?;
    let target_dir = dir.join("data/projections/account_balances");
    let mut overrides = vec![
        (
            "REPLAYFLEET_SOURCE__URL".to_owned(),
            source_dir.display().to_string(),
        ),
        (
            "REPLAYFLEET_TARGET__URL".to_owned(),
            target_dir.display().to_string(),
        ),
    ];
    let shard_events = if args.one_shard {
        Some(i64::MAX as u64)
    } else {
        args.shard_events
    };
    if let Some(n) = shard_events {
        overrides.push((
            "REPLAYFLEET_SHARDS__TARGET_EVENTS".to_owned(),
            n.to_string(),
        ));
    }
    let config = Config::parse(BACKFILL, &config_path, overrides.clone())?;

    // (1) The embedded run, with the process's peak RSS reset just before it.
    eprintln!("measuring the embedded run with {workers} workers ...");
    let peak_rss_reset_before_run = reset_peak_rss();
    let started = Instant::now();
    let result = run_embedded(
        &config,
        &EmbeddedOptions {
            workers,
            by: "replayfleet-bench run".into(),
        },
        &|_| {},
    )
    .await?;
    let run_seconds = started.elapsed().as_secs_f64();
    let peak_rss_bytes = peak_rss_bytes();
    let (outcome, report, projection_files) = match &result.finalized {
        Finalized::Committed { commit, report } => (
            "committed",
            report,
            commit
                .segments
                .iter()
                .map(|s| target_dir.join(&s.path).display().to_string())
                .collect::<Vec<_>>(),
        ),
        Finalized::Verified { report } => ("verified", report, written_parts(&target_dir)),
        Finalized::Refused { report } => ("refused", report, written_parts(&target_dir)),
        Finalized::AlreadyCommitted { .. } => {
            anyhow::bail!("the bench's run was committed already: a fresh target was expected")
        }
    };
    let totals = &report.totals;
    let run = RunFacts {
        outcome: outcome.to_owned(),
        failed_checks: report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect(),
        events_read: totals.events_read,
        duplicates_dropped: totals.duplicates_dropped,
        events_projected: totals.events_projected,
        quarantined: totals.quarantined,
        projection_rows: totals.rows,
        shards: result.plan.shards.len(),
        shard_target_events: config.shard_target_events,
        workers,
    };
    let mut measurements = vec![Measurement::new(
        format!("replayfleet run (embedded, {workers} workers)"),
        totals.events_read,
        run_seconds,
    )];

    // (2) The floor: fetch + decode of the same segments, as many threads as workers.
    eprintln!("measuring the Parquet decode floor with {workers} threads ...");
    let (rows, seconds) = decode_floor(&source, &segments, workers).await?;
    measurements.push(Measurement::new(
        format!("parquet decode floor ({workers} threads)"),
        rows,
        seconds,
    ));

    // (3) DuckDB doing the same job, when it is installed.
    let duckdb = if duckdb_installed() {
        eprintln!("measuring DuckDB with threads={workers} ...");
        let out = dir.join("duckdb/account_balances.parquet");
        std::fs::create_dir_all(dir.join("duckdb"))?;
        match run_duckdb(&source_dir, &out, workers, &projection_files) {
            Ok(output) => {
                measurements.push(Measurement::new(
                    format!("duckdb {} (threads={workers})", output.version),
                    output.rows_read,
                    output.seconds,
                ));
                DuckDbStatus {
                    status: "installed".into(),
                    error: None,
                    result: Some(output),
                }
            }
            Err(e) => DuckDbStatus {
                status: "failed".into(),
                error: Some(format!("{e:#}")),
                result: None,
            },
        }
    } else {
        DuckDbStatus {
            status: "not installed".into(),
            error: None,
            result: None,
        }
    };

    let run_rate = measurements[0].events_per_second;
    for m in measurements.iter_mut().skip(1) {
        m.run_ratio = Some(run_rate / m.events_per_second.max(1e-9));
    }
    let vs_duckdb = duckdb
        .result
        .as_ref()
        .and_then(|_| measurements.get(2))
        .and_then(|m| m.run_ratio);
    let report = BenchRunReport {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        archive: Archive {
            path: source_dir.display().to_string(),
            generated,
            segments: segments.len(),
            bytes: segments.iter().map(|s| s.size).sum(),
        },
        measurements,
        run,
        peak_rss_bytes,
        peak_rss_reset_before_run,
        memory_limit_bytes: config.memory_limit_bytes,
        duckdb,
        target: Target {
            run_vs_duckdb_at_least: TARGET_VS_DUCKDB,
            goal: GOAL_VS_DUCKDB,
            met: vs_duckdb.map(|r| r >= TARGET_VS_DUCKDB),
        },
        kept: args.keep.then(|| dir.display().to_string()),
    };
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    if args.keep {
        let env: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "kept {}; the same run again: {} replayfleet run --config {} --workers {workers}",
            dir.display(),
            env.join(" "),
            config_path.display()
        );
    }
    Ok(exit::SUCCESS)
}

pub(crate) fn local(path: &Path) -> anyhow::Result<Location> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(Location::parse(text, None, &BTreeMap::new())?)
}

/// Fetches and decodes every segment with `threads` threads pulling from one list;
/// returns (rows, seconds).
async fn decode_floor(
    source: &Location,
    segments: &[SegmentRef],
    threads: usize,
) -> anyhow::Result<(u64, f64)> {
    let handle = tokio::runtime::Handle::current();
    let source = source.clone();
    let segments = segments.to_vec();
    tokio::task::spawn_blocking(move || {
        let mapping = SourceMapping::canonical();
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let rows = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<u64> {
                        let mut rows = 0u64;
                        while let Some(segment) = segments.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            let bytes = handle.block_on(fetch_segment(&source, segment))?;
                            let batches = decode_segment(&segment.path, bytes, &mapping)?;
                            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                        }
                        Ok(rows)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .map_err(|_| anyhow::anyhow!("a decode thread panicked"))?
                })
                .sum::<anyhow::Result<u64>>()
        })?;
        Ok((rows, started.elapsed().as_secs_f64()))
    })
    .await?
}

/// The part files of an uncommitted run (the bench's target holds one run, and an
/// embedded run's shards have one attempt unless one failed): `runs/*/shards/*/*/part-*`.
fn written_parts(target: &Path) -> Vec<String> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut all = Vec::new();
    files(&target.join("runs"), &mut all);
    all.sort();
    all.into_iter()
        .filter(|path| {
            let relative = path
                .strip_prefix(target)
                .ok()
                .and_then(|p| p.to_str())
                .unwrap_or_default();
            matches!(
                replayfleet_replay::TargetPath::parse(relative),
                replayfleet_replay::TargetPath::AttemptFile { file, .. }
                    if file.starts_with("part-") && file.ends_with(".parquet")
            )
        })
        .map(|p| p.display().to_string())
        .collect()
}

fn duckdb_installed() -> bool {
    Process::new("python3")
        .args(["-c", "import duckdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_duckdb(
    source: &Path,
    out: &Path,
    threads: usize,
    compare: &[String],
) -> anyhow::Result<DuckDbOutput> {
    let output = Process::new("python3")
        .arg("-c")
        .arg(DUCKDB_SCRIPT)
        .arg(source)
        .arg(out)
        .arg(threads.to_string())
        .arg(serde_json::to_string(compare)?)
        .stdin(Stdio::null())
        .output()
        .context("cannot start python3")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim().lines().last().unwrap_or("no message");
        anyhow::bail!("the DuckDB script failed ({}): {last}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.trim().lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("unexpected DuckDB script output `{line}`"))
}

/// Resets the process's peak RSS (VmHWM) so that it measures what comes next.
#[cfg(target_os = "linux")]
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(not(target_os = "linux"))]
fn reset_peak_rss() -> bool {
    false
}

/// The process's peak RSS (VmHWM), Linux only.
#[cfg(target_os = "linux")]
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_os = "linux"))]
fn peak_rss_bytes() -> Option<u64> {
    None
}

fn render(r: &BenchRunReport) -> String {
    let mut out = format!(
        "bench run: {} segments ({}) from {}{}; {} build, {} cores; {} shard(s) of \
         shards.target_events {}\n",
        r.archive.segments,
        human_bytes(r.archive.bytes),
        r.archive.path,
        if r.archive.generated {
            " (generated, every default edge case)"
        } else {
            ""
        },
        r.build,
        r.cores,
        r.run.shards,
        thousands(r.run.shard_target_events),
    );
    let mut table = Table::new(&["measurement", "events", "seconds", "events/s", "run ÷ this"]);
    for m in &r.measurements {
        table.row(vec![
            m.name.clone(),
            thousands(m.events),
            format!("{:.3}", m.seconds),
            thousands(m.events_per_second as u64),
            m.run_ratio
                .map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
        ]);
    }
    out.push_str(&table.render());
    let run = &r.run;
    out.push_str(&format!(
        "run: {}{}; {} events read, {} duplicates dropped, {} projected, {} quarantined, {} \
         projection rows\n",
        run.outcome,
        if run.failed_checks.is_empty() {
            String::new()
        } else {
            format!(" ({})", run.failed_checks.join("; "))
        },
        thousands(run.events_read),
        thousands(run.duplicates_dropped),
        thousands(run.events_projected),
        thousands(run.quarantined),
        thousands(run.projection_rows),
    ));
    out.push_str(&format!(
        "peak RSS of this process during the run (VmHWM{}): {}; limits.memory: {} per worker\n",
        if r.peak_rss_reset_before_run {
            ""
        } else {
            ", including generation"
        },
        r.peak_rss_bytes.map_or_else(|| "-".into(), human_bytes),
        human_bytes(r.memory_limit_bytes),
    ));
    match (&r.duckdb.result, &r.duckdb.error) {
        (Some(d), _) => out.push_str(&format!(
            "duckdb: {} rows written, {}; python peak RSS {}\n",
            thousands(d.rows_out),
            d.differing_keys.map_or_else(
                || "not compared (no projection written)".into(),
                |n| format!("{n} keys differ from replayfleet's projection")
            ),
            d.peak_rss_bytes.map_or_else(|| "-".into(), human_bytes),
        )),
        (None, Some(e)) => out.push_str(&format!("duckdb: {e}\n")),
        (None, None) => out.push_str("duckdb not installed\n"),
    }
    let ratio = r
        .measurements
        .get(2)
        .and_then(|m| m.run_ratio)
        .filter(|_| r.duckdb.result.is_some());
    out.push_str(&match (r.target.met, ratio) {
        (Some(met), Some(x)) => format!(
            "target: run ≥ {:.1}x DuckDB: {} ({x:.2}x); goal ≥ {:.1}x\n",
            r.target.run_vs_duckdb_at_least,
            if met { "met" } else { "not met" },
            r.target.goal,
        ),
        _ => format!(
            "target: run ≥ {:.1}x DuckDB: not measured\n",
            r.target.run_vs_duckdb_at_least
        ),
    });
    out
}
