//! Verify a run and commit it, or refuse.
//!
//! ```text
//!  plan.json ──▶ every planned shard has exactly one lineage manifest   (coverage)
//!            ──▶ every output re-read and re-hashed                     (output_checksums)
//!            ──▶ every input segment's size and etag as planned         (inputs_unchanged)
//!            ──▶ keys unique across the whole projection                (unique_keys)
//!            ──▶ quarantined / events read within the budget            (anomaly_budget)
//!            ──▶ each invariant selects no row                          (invariant[i])
//!            ──▶ diff against the current version N within the limit    (baseline_diff)
//!            ──▶ report.json
//!            ──▶ run state running → finalizing (compare-and-set)
//!            ──▶ PutMode::Create _delta_log/<N+1>.json  ── exists? ──▶ lost the race
//! ```
//!
//! Integrity checks (the first four) have no override. The discrepancy checks (budget,
//! invariants, diff) can be overridden by `--accept REASON`, recorded in the commit.

use std::{collections::BTreeMap, sync::Arc};

use arrow::{datatypes::SchemaRef, record_batch::RecordBatch};
use bytes::Bytes;
use chrono::Utc;
use datafusion::{datasource::MemTable, prelude::SessionContext};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use replayfleet_archive::Location;
use replayfleet_queue::{RunPhase, RunStore};
use replayfleet_replay::{
    Fingerprint, Lineage, Plan, ShardPlan, SpillDir, Split, Target, checks_session, columns,
    query_only, quote, sha256_hex, to_json_bytes,
};
use serde_json::Value;

use crate::{
    Acceptance, COMMIT_FORMAT_VERSION, CheckResult, Commit, CommitSegment, CommitTotals, Diff,
    Error, REPORT_FORMAT_VERSION, Report, Result, commits,
};

/// Rows shown per failing check.
const SAMPLES: usize = 20;
/// Keys shown per diff category.
const DIFF_SAMPLES: usize = 10;

/// How to finalize.
#[derive(Debug, Clone, Default)]
pub struct FinalizeOptions {
    /// Override failed discrepancy checks with this reason.
    pub accept: Option<String>,
    /// Who is finalizing (recorded in the commit).
    pub by: String,
}

/// How a finalize ended.
#[derive(Debug, Clone)]
pub enum Finalized {
    /// A new version was committed.
    Committed {
        /// The commit.
        commit: Box<Commit>,
        /// The report.
        report: Box<Report>,
    },
    /// The run was committed before; nothing was done.
    AlreadyCommitted {
        /// Its version.
        version: u64,
    },
    /// A window run: verified and reported, never committed.
    Verified {
        /// The report.
        report: Box<Report>,
    },
    /// A check failed: nothing committed.
    Refused {
        /// The report, naming every failed check.
        report: Box<Report>,
    },
}

/// Verifies run `run_id` in `target` (reading the source named in its plan through
/// `source`) and commits it, or refuses. With a run-state `store`, committing first moves
/// the run from running to finalizing by compare-and-set, so a halt that got there first
/// wins.
pub async fn finalize(
    target: &Target,
    source: &Location,
    run_id: &str,
    options: &FinalizeOptions,
    store: Option<&dyn RunStore>,
) -> Result<Finalized> {
    let plan_path = Target::plan_path(run_id);
    let plan_bytes = target.get(&plan_path).await?.ok_or_else(|| Error::NoRun {
        run_id: run_id.to_owned(),
        target: target.location().url().to_string(),
    })?;
    let plan = Plan::from_json(&plan_path, &plan_bytes)?;
    // The log is read (and checked) once: the baseline, and what the commit builds on.
    let log = commits::read_log(target).await?;
    log.refuse_legacy(target)?;
    log.refuse_other_projection(&plan.projection.name)?;
    let history = log.commits();
    if let Some(done) = history
        .iter()
        .find(|c| c.run_id == run_id && c.kind == "replay")
    {
        // A finalizer killed between its commit and recording it leaves the run-state
        // store behind the commit log: the log is the truth, the store catches up.
        set_phase(store, run_id, RunPhase::Committed, None, Some(done.version)).await?;
        return Ok(Finalized::AlreadyCommitted {
            version: done.version,
        });
    }
    let baseline = history.last().cloned();
    let mut verified = verify(target, source, &plan, baseline.as_ref()).await?;

    let (accepted, refused) = verdict(&verified.checks, options);
    let windowed = plan.window.is_windowed();
    let base_version = baseline.as_ref().map(|c| c.version);
    let version = base_version.unwrap_or(0) + 1;
    let outcome = if refused {
        "refused"
    } else if windowed {
        "verified"
    } else {
        "committed"
    };
    let report = Report {
        format_version: REPORT_FORMAT_VERSION,
        run_id: run_id.to_owned(),
        created_at: Utc::now(),
        outcome: outcome.into(),
        version: (outcome == "committed").then_some(version),
        baseline: base_version,
        windowed,
        checks: verified.checks,
        diff: verified.diff,
        totals: verified.totals.clone(),
        fingerprint: Some(verified.fingerprint.clone()),
        accepted: accepted.clone(),
    };
    let report_path = Target::report_path(run_id);
    target.put(&report_path, to_json_bytes(&report)).await?;
    if refused || windowed {
        let reason = if refused {
            summary(&report)
        } else {
            "window run: verified, not committed".into()
        };
        set_phase(store, run_id, RunPhase::Refused, Some(reason), None).await?;
        let report = Box::new(report);
        return Ok(if refused {
            Finalized::Refused { report }
        } else {
            Finalized::Verified { report }
        });
    }

    let schema = Arc::clone(&verified.schema);
    let stats = std::mem::take(&mut verified.stats);
    let commit = Commit {
        format_version: COMMIT_FORMAT_VERSION,
        version,
        parent: base_version,
        kind: "replay".into(),
        rollback_of: None,
        rollback_reason: None,
        run_id: run_id.to_owned(),
        committed_at: Utc::now(),
        committed_by: options.by.clone(),
        projection: plan.projection.name.clone(),
        key: plan.projection.key.clone(),
        schema: columns(&verified.schema),
        sql_sha256: plan.projection.sql_sha256.clone(),
        catalog_sha256: plan.contracts.sha256.clone(),
        build: plan.build.clone(),
        segments: verified.segments,
        totals: verified.totals,
        fingerprint: verified.fingerprint,
        report: Some(report_path),
        accepted,
    };
    let table = commits::TableOf::Schema(&schema, &stats);
    commit_run(target, store, commit, (table, log), report).await
}

/// What the checks of a run found, and what its commit would hold.
struct Verified {
    /// Every check, in the order they ran.
    checks: Vec<CheckResult>,
    /// The diff against the baseline (none for a first version).
    diff: Option<Diff>,
    /// The projection's schema.
    schema: SchemaRef,
    /// The outputs, re-hashed.
    segments: Vec<CommitSegment>,
    /// Each output's Delta `add.stats`, by path.
    stats: BTreeMap<String, String>,
    /// The manifests' counts, summed.
    totals: CommitTotals,
    /// The content fingerprint, hex.
    fingerprint: String,
}

/// Runs every check of `plan`'s run: coverage, the outputs re-hashed, the inputs
/// unchanged, unique keys, the anomaly budget, the invariants and the diff against
/// `baseline`, with the projection loaded into a session of the plan's memory limit.
async fn verify(
    target: &Target,
    source: &Location,
    plan: &Plan,
    baseline: Option<&Commit>,
) -> Result<Verified> {
    let clock = std::time::Instant::now();
    let phase = |name: &str| {
        tracing::debug!(run = %plan.run_id, seconds = clock.elapsed().as_secs_f64(), "finalize: {name}");
    };
    let mut checks = Vec::new();
    let lineages = coverage(target, plan, &mut checks).await?;
    phase("coverage");
    let (outputs, totals) = outputs(target, plan, &lineages, &mut checks).await?;
    phase("outputs re-read");
    inputs_unchanged(source, plan, &mut checks).await?;
    phase("inputs unchanged");

    // DataFusion's spill files in a locked folder of the finalizer's own, swept after a
    // kill like a shard's. The checks read the part files from the target as they go, in
    // the plan's memory limit, on every thread; sorts, aggregations and the diff's join
    // spill past it.
    let scratch = SpillDir::scratch(plan.spill_dir.as_deref().map(std::path::Path::new))?;
    let ctx = checks_session(
        plan.memory_limit_bytes,
        Some(scratch.path()),
        plan.spill_max_bytes,
        threads(),
    )?;
    let schema = outputs
        .first()
        .map(|o| Arc::clone(&o.schema))
        .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
    let mut segments = Vec::with_capacity(outputs.len());
    let mut stats = BTreeMap::new();
    let mut fingerprint = Fingerprint::new();
    for output in outputs {
        stats.insert(output.segment.path.clone(), output.stats);
        fingerprint.merge(&output.fingerprint);
        segments.push(output.segment);
    }
    let paths: Vec<&str> = segments.iter().map(|s| s.path.as_str()).collect();
    register_files(&ctx, target, "projection", Arc::clone(&schema), &paths)?;
    unique_keys(&ctx, &plan.projection.key, &mut checks).await?;
    phase("unique keys");
    anomaly_budget(plan.checks.max_quarantined_ratio, &totals, &mut checks);
    invariants(&ctx, &plan.checks.invariants, &mut checks).await?;
    phase("invariants");
    let diff = match baseline {
        Some(base) => Some(diff(&ctx, target, plan, base, &schema, &mut checks).await?),
        None => None,
    };
    phase("baseline diff");
    Ok(Verified {
        checks,
        diff,
        schema,
        segments,
        stats,
        totals,
        fingerprint: fingerprint.hex(),
    })
}

/// Commits a verified run: claims it in the run-state store (a halt that got there
/// first wins), creates `commit` put-if-absent, and records the phase. Losing the
/// commit race to another finalizer of this very run is not an error (its commit and
/// report stand); losing it to another run corrects the report to `refused`.
async fn commit_run(
    target: &Target,
    store: Option<&dyn RunStore>,
    commit: Commit,
    (table, log): (commits::TableOf<'_>, commits::Log),
    report: Report,
) -> Result<Finalized> {
    let run_id = commit.run_id.as_str();
    if let Err(e) = claim(store, run_id).await {
        // Committed meanwhile by another finalizer of this run: nothing to add.
        if let Some(version) = commits::committed_version(target, run_id).await? {
            return Ok(Finalized::AlreadyCommitted { version });
        }
        return Err(e);
    }
    if let Err(e) = commits::create(target, &commit, commit.parent.unwrap_or(0), table, log).await {
        // Another finalizer of this very run (a second coordinator) got there first:
        // its commit and report stand, and this one has nothing to add.
        if matches!(e, Error::LostRace { .. })
            && let Some(version) = commits::committed_version(target, run_id).await?
        {
            return Ok(Finalized::AlreadyCommitted { version });
        }
        // The report said "committed": correct it before reporting the loss.
        let mut lost = report;
        lost.outcome = "refused".into();
        lost.version = None;
        lost.checks.push(check(
            "commit",
            "integrity",
            false,
            e.to_string(),
            Vec::new(),
        ));
        target
            .put(&Target::report_path(run_id), to_json_bytes(&lost))
            .await?;
        set_phase(store, run_id, RunPhase::Refused, Some(e.to_string()), None).await?;
        return Err(e);
    }
    set_phase(
        store,
        run_id,
        RunPhase::Committed,
        None,
        Some(commit.version),
    )
    .await?;
    Ok(Finalized::Committed {
        commit: Box::new(commit),
        report: Box::new(report),
    })
}

/// Whether the checks let the run commit, and the acceptance that lets it: a failed
/// integrity check always refuses; failed discrepancy checks refuse unless `--accept`
/// gives a reason, which is recorded with who gave it and what it overrode.
fn verdict(checks: &[CheckResult], options: &FinalizeOptions) -> (Option<Acceptance>, bool) {
    let failed: Vec<&CheckResult> = checks.iter().filter(|c| !c.passed).collect();
    let integrity_failed = failed.iter().any(|c| c.class == "integrity");
    let overridden: Vec<String> = failed
        .iter()
        .filter(|c| c.class == "discrepancy")
        .map(|c| c.name.clone())
        .collect();
    let discrepancies = !overridden.is_empty();
    let accepted = match (&options.accept, discrepancies, integrity_failed) {
        (Some(reason), true, false) => Some(Acceptance {
            reason: reason.clone(),
            by: options.by.clone(),
            overridden,
        }),
        _ => None,
    };
    let refused = integrity_failed || (discrepancies && accepted.is_none());
    (accepted, refused)
}

/// One line naming every failed check.
pub fn summary(report: &Report) -> String {
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    failed.join("; ")
}

/// running (or paused) → finalizing by compare-and-set; anything else refuses.
async fn claim(store: Option<&dyn RunStore>, run_id: &str) -> Result<()> {
    let Some(store) = store else { return Ok(()) };
    loop {
        let Some(current) = store.run(run_id).await? else {
            return Ok(());
        };
        match current.value.phase {
            RunPhase::Running | RunPhase::Paused | RunPhase::Planned | RunPhase::Finalizing => {
                let mut next = current.value.clone();
                next.phase = RunPhase::Finalizing;
                next.updated_at = Utc::now();
                match store.update_run(&next, current.revision).await {
                    // Moved meanwhile (a halt, or another finalizer): look again.
                    Err(replayfleet_queue::Error::Conflict { .. }) => continue,
                    other => {
                        other?;
                        return Ok(());
                    }
                }
            }
            other => {
                return Err(Error::NotFinalizable {
                    run_id: run_id.to_owned(),
                    phase: other.as_str().to_owned(),
                });
            }
        }
    }
}

async fn set_phase(
    store: Option<&dyn RunStore>,
    run_id: &str,
    phase: RunPhase,
    reason: Option<String>,
    version: Option<u64>,
) -> Result<()> {
    let Some(store) = store else { return Ok(()) };
    let Some(current) = store.run(run_id).await? else {
        return Ok(());
    };
    if current.value.phase == RunPhase::Halted {
        return Ok(());
    }
    let mut next = current.value.clone();
    next.phase = phase;
    next.reason = reason;
    next.version = version;
    next.updated_at = Utc::now();
    store.update_run(&next, current.revision).await?;
    Ok(())
}

fn check(
    name: &str,
    class: &str,
    passed: bool,
    detail: String,
    samples: Vec<Value>,
) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        class: class.to_owned(),
        passed,
        detail,
        samples,
    }
}

/// Every planned shard has its lineage manifest, for this run and shard, over exactly the
/// planned partitions.
async fn coverage(
    target: &Target,
    plan: &Plan,
    checks: &mut Vec<CheckResult>,
) -> Result<Vec<Lineage>> {
    let mut found = Vec::with_capacity(plan.shards.len());
    for shard in &plan.shards {
        let path = Target::lineage_path(&plan.run_id, &shard.id);
        found.push(target.get_json::<Lineage>(&path).await?);
    }
    let covered: Vec<Option<Covered<'_>>> = found
        .iter()
        .map(|l| {
            l.as_ref().map(|l| Covered {
                run_id: &l.run_id,
                shard: &l.shard,
                partitions: &l.partitions,
                split: l.split,
            })
        })
        .collect();
    checks.push(coverage_check(&plan.run_id, &plan.shards, &covered));
    Ok(found
        .into_iter()
        .zip(&plan.shards)
        .filter_map(|(l, shard)| {
            l.filter(|l| {
                l.run_id == plan.run_id
                    && l.shard == shard.id
                    && l.partitions == shard.partitions
                    && l.split == shard.split
            })
        })
        .collect())
}

/// What a shard's lineage manifest says it covers.
struct Covered<'a> {
    run_id: &'a str,
    shard: &'a str,
    partitions: &'a [i32],
    split: Option<Split>,
}

/// The coverage check over what each planned shard's manifest (`found`, in the plan's
/// order; `None`: no manifest) says: every shard has one, of this run and shard, over
/// exactly the planned partitions (and share of streams), and every partition is planned
/// once: in one shard, or in sub-shards that split it into shares `0..of` of one `of`.
fn coverage_check(
    run_id: &str,
    shards: &[ShardPlan],
    found: &[Option<Covered<'_>>],
) -> CheckResult {
    let mut problems = Vec::new();
    for (shard, covered) in shards.iter().zip(found) {
        match covered {
            None => problems.push(Value::from(format!("{}: no lineage manifest", shard.id))),
            Some(l) if l.run_id != run_id || l.shard != shard.id => {
                problems.push(Value::from(format!(
                    "{} names run {} shard {}",
                    Target::lineage_path(run_id, &shard.id),
                    l.run_id,
                    l.shard
                )));
            }
            Some(l) if l.partitions != shard.partitions.as_slice() => {
                problems.push(Value::from(format!(
                    "{}: covers partitions {:?}, planned {:?}",
                    shard.id, l.partitions, shard.partitions
                )));
            }
            Some(l) if l.split != shard.split => {
                let share = |s: Option<Split>| {
                    s.map_or("every stream".to_owned(), |s| format!("share {s}"))
                };
                problems.push(Value::from(format!(
                    "{}: covers {} of its partitions' streams, planned {}",
                    shard.id,
                    share(l.split),
                    share(shard.split)
                )));
            }
            Some(_) => {}
        }
    }
    let mut planned: std::collections::BTreeMap<i32, Vec<Option<Split>>> = Default::default();
    for shard in shards {
        for p in &shard.partitions {
            planned.entry(*p).or_default().push(shard.split);
        }
    }
    for (p, splits) in planned {
        let whole = splits.len() == 1 && splits[0].is_none();
        let shares: std::collections::BTreeSet<(u32, u32)> =
            splits.iter().flatten().map(|s| (s.bucket, s.of)).collect();
        let of = splits.first().copied().flatten().map_or(0, |s| s.of);
        let split_once = splits.iter().all(Option::is_some)
            && shares.len() == splits.len()
            && shares == (0..of).map(|b| (b, of)).collect();
        if !whole && !split_once {
            problems.push(Value::from(if splits.iter().all(Option::is_none) {
                format!("partition {p} is in two shards")
            } else {
                format!(
                    "partition {p} is not split into shares 0..n of one n: {}",
                    splits
                        .iter()
                        .map(|s| s.map_or("whole".to_owned(), |s| s.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        }
    }
    check(
        "coverage",
        "integrity",
        problems.is_empty(),
        if problems.is_empty() {
            format!("all {} planned shards covered exactly once", shards.len())
        } else {
            format!("{} problems: {}", problems.len(), join_samples(&problems))
        },
        problems.into_iter().take(SAMPLES).collect(),
    )
}

/// A part file as re-read: its entry in the commit, its Arrow schema, the fingerprint
/// of its rows and its Delta `add.stats`.
struct Output {
    segment: CommitSegment,
    schema: SchemaRef,
    fingerprint: Fingerprint,
    stats: String,
}

/// What re-reading one file the manifests name found.
enum Reread {
    /// A part file whose bytes are the manifest's.
    Part(Box<Output>),
    /// An anomalies file whose bytes are the manifest's.
    Anomalies,
    /// Missing, or not the manifest's bytes.
    Problem(String),
}

/// The threads the finalizer spreads its work over (the runtime's workers).
fn threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
        .max(1)
}

/// Re-reads and re-hashes every output the manifests name, decoding each part file on
/// its own (a few at once, on every thread) for its rows' fingerprint and statistics,
/// so that no more than a few part files are in memory at once.
async fn outputs(
    target: &Target,
    plan: &Plan,
    lineages: &[Lineage],
    checks: &mut Vec<CheckResult>,
) -> Result<(Vec<Output>, CommitTotals)> {
    use futures::{StreamExt, TryStreamExt};
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut totals = CommitTotals {
        shards: plan.shards.len() as u64,
        ..CommitTotals::default()
    };
    let mut files = Vec::new();
    for lineage in lineages {
        let a = &lineage.applied;
        totals.events_read += a.events_read;
        totals.duplicates_dropped += a.duplicates_dropped;
        totals.events_projected += a.events_projected;
        totals.quarantined += a.quarantined;
        for (kind, n) in &a.anomalies {
            *totals.anomalies.entry(kind.clone()).or_default() += n;
        }
        files.extend(lineage.outputs.iter().map(|f| (f, Some(&lineage.shard))));
        files.extend(lineage.anomalies_file.iter().map(|f| (f, None)));
    }
    let count = files.len();
    let key = &plan.projection.key;
    let reread: Vec<Reread> = futures::stream::iter(files)
        .map(|(file, shard)| async move {
            let Some(bytes) = target.get(&file.path).await? else {
                return Ok::<_, Error>(Reread::Problem(format!("{}: missing", file.path)));
            };
            let sha = sha256_hex(&bytes);
            if sha != file.sha256 || bytes.len() as u64 != file.bytes {
                return Ok(Reread::Problem(format!(
                    "{}: sha256 {sha} ({} bytes), manifest says {} ({} bytes)",
                    file.path,
                    bytes.len(),
                    file.sha256,
                    file.bytes
                )));
            }
            let Some(shard) = shard else {
                return Ok(Reread::Anomalies);
            };
            let segment = CommitSegment {
                path: file.path.clone(),
                sha256: file.sha256.clone(),
                rows: file.rows,
                bytes: file.bytes,
                key_min: file.key_min.clone(),
                key_max: file.key_max.clone(),
                shard: shard.clone(),
            };
            let key = key.clone();
            let partial = file.fingerprint.as_deref().zip(file.stats.as_ref());
            let partial = partial
                .map(|(hex, stats)| (Fingerprint::from_hex(hex, file.rows), stats.to_string()));
            tokio::task::spawn_blocking(move || {
                let (schema, fingerprint, stats) = match partial {
                    // The worker's fingerprint and statistics of these very bytes: only
                    // the footer is read.
                    Some((Some(fingerprint), stats)) => {
                        (parquet_schema(&segment.path, bytes)?, fingerprint, stats)
                    }
                    Some((None, _)) => {
                        return Ok(Reread::Problem(format!(
                            "{}: the manifest's fingerprint is not 64 hex digits",
                            segment.path
                        )));
                    }
                    // A manifest without them: the rows are decoded for both.
                    None => {
                        let (schema, fingerprint, keys) = decode(&segment.path, bytes, &key)?;
                        let stats = replayfleet_replay::file_stats(&keys, &key, segment.rows);
                        (schema, fingerprint, stats.to_string())
                    }
                };
                Ok(Reread::Part(Box::new(Output {
                    segment,
                    schema,
                    fingerprint,
                    stats,
                })))
            })
            .await
            .map_err(|e| Error::Query {
                what: "output_checksums".into(),
                message: format!("a re-read failed: {e}"),
            })?
        })
        .buffered(threads().max(2))
        .try_collect()
        .await?;
    for r in reread {
        match r {
            Reread::Part(output) => {
                totals.rows += output.segment.rows;
                totals.bytes += output.segment.bytes;
                totals.segments += 1;
                out.push(*output);
            }
            Reread::Anomalies => {}
            Reread::Problem(p) => problems.push(Value::from(p)),
        }
    }
    let files = count;
    checks.push(check(
        "output_checksums",
        "integrity",
        problems.is_empty(),
        if problems.is_empty() {
            format!("{files} files re-read, every SHA-256 matches its manifest")
        } else {
            format!(
                "{} files differ: {}",
                problems.len(),
                join_samples(&problems)
            )
        },
        problems.into_iter().take(SAMPLES).collect(),
    ));
    Ok((out, totals))
}

/// The Arrow schema of a Parquet file, from its footer.
fn parquet_schema(path: &str, bytes: Bytes) -> Result<SchemaRef> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| {
        replayfleet_replay::Error::Format {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    Ok(Arc::clone(builder.schema()))
}

/// The object store URL the checks read the target's files through (any URL of ours: the
/// files' URLs below it are the target store's own paths).
const TARGET_FILES: &str = "replayfleet-target://files/";

/// Registers `name` as the rows of the Parquet files `paths` (relative to the target), of
/// `schema`, read from the target as a query needs them (not held in memory).
fn register_files(
    ctx: &SessionContext,
    target: &Target,
    name: &str,
    schema: SchemaRef,
    paths: &[&str],
) -> Result<()> {
    use datafusion::datasource::{
        file_format::parquet::ParquetFormat,
        listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl},
    };
    if paths.is_empty() {
        return register(ctx, name, schema, Vec::new());
    }
    let failed = |e: datafusion::error::DataFusionError| Error::Query {
        what: format!("table {name}"),
        message: e.to_string(),
    };
    let base = url::Url::parse(TARGET_FILES).expect("a valid URL");
    ctx.register_object_store(&base, Arc::clone(target.location().store()));
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(format!("{TARGET_FILES}{}", target.location().child(p))))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(failed)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ListingTable::try_new(config).map_err(failed)?;
    ctx.register_table(name, Arc::new(table)).map_err(failed)?;
    Ok(())
}

/// Decodes a part file batch by batch: its schema, the fingerprint of its rows, and its
/// `key` columns (for its statistics; the other columns are not kept).
fn decode(
    path: &str,
    bytes: Bytes,
    key: &[String],
) -> Result<(SchemaRef, Fingerprint, Vec<RecordBatch>)> {
    let failed = |message: String| replayfleet_replay::Error::Format {
        path: path.to_owned(),
        message,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| failed(e.to_string()))?;
    let schema = Arc::clone(builder.schema());
    let keys: Vec<usize> = key.iter().filter_map(|k| schema.index_of(k).ok()).collect();
    let reader = builder.build().map_err(|e| failed(e.to_string()))?;
    let mut fingerprint = Fingerprint::new();
    let mut key_batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| failed(e.to_string()))?;
        fingerprint.add_batch(&batch)?;
        key_batches.push(batch.project(&keys).map_err(|e| failed(e.to_string()))?);
    }
    Ok((schema, fingerprint, key_batches))
}

/// Above this many input segments, one listing of the archive replaces a HEAD each (an
/// archive of small files would otherwise cost a request per file).
const LIST_ABOVE: usize = 256;

/// Every input segment still has the size and entity tag it had when planned.
async fn inputs_unchanged(
    source: &Location,
    plan: &Plan,
    checks: &mut Vec<CheckResult>,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let storage = |path: String, source| {
        crate::Error::from(replayfleet_archive::Error::Storage { path, source })
    };
    // What the store says of each planned segment now: (size, etag), or gone.
    let now: Vec<Option<(u64, Option<String>)>> = if plan.segments.len() > LIST_ABOVE {
        let prefix = source.prefix();
        let listed: std::collections::HashMap<String, (u64, Option<String>)> = source
            .list_all((!prefix.as_ref().is_empty()).then_some(prefix))
            .await
            .map_err(|e| storage(source.url().to_string(), e))?
            .into_iter()
            .map(|meta| {
                let path = source.relative(&meta.location).unwrap_or_default();
                (path, (meta.size, meta.e_tag))
            })
            .collect();
        plan.segments
            .iter()
            .map(|s| listed.get(&s.path).cloned())
            .collect()
    } else {
        futures::stream::iter(&plan.segments)
            .map(|segment| async move {
                let path = source.child(&segment.path);
                match source.store().head(&path).await {
                    Ok(meta) => Ok(Some((meta.size, meta.e_tag))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(storage(path.to_string(), e)),
                }
            })
            .buffered(32)
            .try_collect()
            .await?
    };
    let mut problems = Vec::new();
    for (segment, now) in plan.segments.iter().zip(now) {
        match now {
            Some((size, etag)) => {
                if size != segment.bytes {
                    problems.push(Value::from(format!(
                        "{}: {} bytes, planned {}",
                        segment.path, size, segment.bytes
                    )));
                } else if segment.etag.is_some() && etag != segment.etag {
                    problems.push(Value::from(format!(
                        "{}: etag {}, planned {}",
                        segment.path,
                        etag.as_deref().unwrap_or("-"),
                        segment.etag.as_deref().unwrap_or("-")
                    )));
                }
            }
            None => problems.push(Value::from(format!("{}: gone", segment.path))),
        }
    }
    checks.push(check(
        "inputs_unchanged",
        "integrity",
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} input segments unchanged since the plan",
                plan.segments.len()
            )
        } else {
            format!(
                "{} input segments changed since the plan: {}",
                problems.len(),
                join_samples(&problems)
            )
        },
        problems.into_iter().take(SAMPLES).collect(),
    ));
    Ok(())
}

fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Query {
        what: format!("table {name}"),
        message: e.to_string(),
    })?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| Error::Query {
            what: format!("table {name}"),
            message: e.to_string(),
        })?;
    Ok(())
}

/// A check's query failed: `what` names the check.
fn query_failed(what: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error + Copy + '_ {
    move |e| Error::Query {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The plan of a check's read-only `sql`.
async fn frame(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
) -> Result<datafusion::dataframe::DataFrame> {
    ctx.sql_with_options(sql, query_only())
        .await
        .map_err(query_failed(what))
}

async fn query(ctx: &SessionContext, what: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    frame(ctx, what, sql)
        .await?
        .collect()
        .await
        .map_err(query_failed(what))
}

/// Rows as JSON objects.
fn rows_json(batches: &[RecordBatch], limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            if out.len() == limit {
                return out;
            }
            let mut obj = serde_json::Map::new();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                obj.insert(
                    field.name().clone(),
                    replayfleet_replay::json_value(batch.column(i), row),
                );
            }
            out.push(Value::Object(obj));
        }
    }
    out
}

fn count_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

async fn unique_keys(
    ctx: &SessionContext,
    key: &[String],
    checks: &mut Vec<CheckResult>,
) -> Result<()> {
    let cols: Vec<String> = key.iter().map(|k| quote(k)).collect();
    let cols = cols.join(", ");
    let sql = format!(
        "SELECT {cols}, count(*) AS copies FROM projection GROUP BY {cols} HAVING count(*) > 1 ORDER BY copies DESC, {cols}"
    );
    let dup = query(ctx, "unique_keys", &sql).await?;
    let n = count_rows(&dup);
    checks.push(check(
        "unique_keys",
        "integrity",
        n == 0,
        if n == 0 {
            format!("every key ({}) is unique across the projection", key.join(", "))
        } else {
            format!(
                "{n} keys ({}) appear in more than one row: the key must contain stream_id or event_id, or the SQL groups across streams",
                key.join(", ")
            )
        },
        rows_json(&dup, SAMPLES),
    ));
    Ok(())
}

fn anomaly_budget(max: f64, totals: &CommitTotals, checks: &mut Vec<CheckResult>) {
    let ratio = if totals.events_read == 0 {
        0.0
    } else {
        totals.quarantined as f64 / totals.events_read as f64
    };
    checks.push(check(
        "anomaly_budget",
        "discrepancy",
        ratio <= max,
        format!(
            "{} of {} events quarantined (ratio {ratio:.6}, max {max})",
            totals.quarantined, totals.events_read
        ),
        Vec::new(),
    ));
}

async fn invariants(
    ctx: &SessionContext,
    sqls: &[String],
    checks: &mut Vec<CheckResult>,
) -> Result<()> {
    for (i, sql) in sqls.iter().enumerate() {
        let name = format!("invariant[{i}]");
        let rows = query(ctx, &format!("checks.invariants[{i}] `{sql}`"), sql).await?;
        let n = count_rows(&rows);
        checks.push(check(
            &name,
            "discrepancy",
            n == 0,
            if n == 0 {
                format!("`{sql}` selects no row")
            } else {
                format!("`{sql}` selects {n} violating rows")
            },
            rows_json(&rows, SAMPLES),
        ));
    }
    Ok(())
}

/// The diff against the baseline version: keys added, removed and changed (comparing the
/// columns both versions have, with the same type) over the union of keys. A window run
/// compares only its own keys.
async fn diff(
    ctx: &SessionContext,
    target: &Target,
    plan: &Plan,
    base: &Commit,
    schema: &SchemaRef,
    checks: &mut Vec<CheckResult>,
) -> Result<Diff> {
    let gone = |path: &str| Error::Query {
        what: "baseline".into(),
        message: format!("version {} names {path}, which is gone", base.version),
    };
    for segment in &base.segments {
        if !target.exists(&segment.path).await? {
            return Err(gone(&segment.path));
        }
    }
    // Its schema from its first segment's footer; its rows read as the checks go.
    let base_schema = match base.segments.first() {
        Some(first) => {
            let bytes = target
                .get(&first.path)
                .await?
                .ok_or_else(|| gone(&first.path))?;
            parquet_schema(&first.path, bytes)?
        }
        None => Arc::new(arrow::datatypes::Schema::empty()),
    };
    let paths: Vec<&str> = base.segments.iter().map(|s| s.path.as_str()).collect();
    register_files(ctx, target, "baseline", Arc::clone(&base_schema), &paths)?;
    let diffing = Diffing {
        key: &plan.projection.key,
        windowed: plan.window.is_windowed(),
        max_changed_ratio: plan.checks.max_changed_ratio,
        baseline: base.version,
    };
    compare(ctx, &diffing, schema, &base_schema, checks).await
}

/// The columns of the new version against the baseline's.
struct ColumnChanges {
    /// Only in the new version.
    added: Vec<String>,
    /// Only in the baseline.
    removed: Vec<String>,
    /// In both, of another type: `name: <baseline type> -> <new type>`.
    retyped: Vec<String>,
}

impl ColumnChanges {
    fn between(schema: &SchemaRef, base: &SchemaRef) -> Self {
        let mut changes = ColumnChanges {
            added: Vec::new(),
            removed: Vec::new(),
            retyped: Vec::new(),
        };
        for field in schema.fields() {
            match base.field_with_name(field.name()) {
                Err(_) => changes.added.push(field.name().clone()),
                Ok(b) if b.data_type() != field.data_type() => changes.retyped.push(format!(
                    "{}: {} -> {}",
                    field.name(),
                    b.data_type(),
                    field.data_type()
                )),
                Ok(_) => {}
            }
        }
        for field in base.fields() {
            if schema.field_with_name(field.name()).is_err() {
                changes.removed.push(field.name().clone());
            }
        }
        changes
    }

    /// `; columns added: a; removed: b; retyped: c: Int64 -> Utf8`, or nothing.
    fn describe(&self) -> String {
        let mut out = String::new();
        for (what, columns) in [
            ("columns added", &self.added),
            ("columns removed", &self.removed),
            ("columns retyped", &self.retyped),
        ] {
            if !columns.is_empty() {
                out.push_str(&format!("; {what}: {}", columns.join(", ")));
            }
        }
        out
    }
}

/// What the baseline diff compares by.
struct Diffing<'a> {
    /// The projection's key columns.
    key: &'a [String],
    /// A window run: only the window's keys are compared (none is "removed").
    windowed: bool,
    /// `checks.baseline.max_changed_ratio`.
    max_changed_ratio: f64,
    /// The baseline's version.
    baseline: u64,
}

/// The baseline diff between the tables `projection` (the new version, of `schema`) and
/// `baseline` (of `base_schema`) registered in `ctx`: keys added, removed and changed
/// (any column of both, of the same type, distinct), with samples, and its check.
async fn compare(
    ctx: &SessionContext,
    diffing: &Diffing<'_>,
    schema: &SchemaRef,
    base_schema: &SchemaRef,
    checks: &mut Vec<CheckResult>,
) -> Result<Diff> {
    let key = diffing.key;
    let keys_in_base = key.iter().all(|k| base_schema.field_with_name(k).is_ok());
    let compared: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !key.contains(f.name()))
        .filter(|f| {
            base_schema
                .field_with_name(f.name())
                .is_ok_and(|b| b.data_type() == f.data_type())
        })
        .map(|f| f.name().clone())
        .collect();
    let windowed = diffing.windowed;
    let (added, removed, changed, union, samples) = if !keys_in_base {
        let n = query(ctx, "baseline_diff", "SELECT count(*) FROM projection").await?;
        let b = query(ctx, "baseline_diff", "SELECT count(*) FROM baseline").await?;
        let n = first_count(&n);
        let b = if windowed { 0 } else { first_count(&b) };
        (n, b, 0, n + b, BTreeMap::new())
    } else {
        let on: Vec<String> = key
            .iter()
            .map(|k| format!("n.{0} = b.{0}", quote(k)))
            .collect();
        let on = on.join(" AND ");
        let differs: Vec<String> = compared
            .iter()
            .map(|c| format!("(n.{0} IS DISTINCT FROM b.{0})", quote(c)))
            .collect();
        let differs = if differs.is_empty() {
            "false".to_owned()
        } else {
            differs.join(" OR ")
        };
        let join = if windowed {
            "LEFT JOIN"
        } else {
            "FULL OUTER JOIN"
        };
        let from = format!(
            "(SELECT *, true AS __in_new FROM projection) n {join} (SELECT *, true AS __in_base FROM baseline) b ON {on}"
        );
        let class = format!(
            "CASE WHEN b.__in_base IS NULL THEN 'added' WHEN n.__in_new IS NULL THEN 'removed' WHEN {differs} THEN 'changed' ELSE 'same' END"
        );
        let key_cols: Vec<String> = key
            .iter()
            .map(|k| format!("coalesce(n.{0}, b.{0}) AS {0}", quote(k)))
            .collect();
        let sql = format!(
            "SELECT {class} AS class, {} FROM {from}",
            key_cols.join(", ")
        );
        let (by_class, samples) = classify(ctx, &sql, key.len()).await?;
        let get = |c: &str| by_class.get(c).copied().unwrap_or(0);
        let union = by_class.values().sum();
        (get("added"), get("removed"), get("changed"), union, samples)
    };
    let ratio = if union == 0 {
        0.0
    } else {
        (added + removed + changed) as f64 / union as f64
    };
    let max = diffing.max_changed_ratio;
    let columns = ColumnChanges::between(schema, base_schema);
    checks.push(check(
        "baseline_diff",
        "discrepancy",
        ratio <= max,
        format!(
            "against version {}: {added} keys added, {removed} removed, {changed} changed of {union} (changed_ratio {ratio:.6}, max {max}){}{}",
            diffing.baseline,
            columns.describe(),
            if windowed { "; window run: only the window's keys compared" } else { "" }
        ),
        Vec::new(),
    ));
    Ok(Diff {
        baseline: diffing.baseline,
        added,
        removed,
        changed,
        union,
        changed_ratio: ratio,
        max_changed_ratio: max,
        compared_columns: compared,
        added_columns: columns.added,
        removed_columns: columns.removed,
        retyped_columns: columns.retyped,
        samples,
    })
}

/// The classes of the diff's join, in the order its `CASE` names them.
const CLASSES: [&str; 4] = ["added", "removed", "changed", "same"];

/// What one partition of the diff's join holds: the keys of each class counted, and the
/// least [`DIFF_SAMPLES`] keys of each class but `same`, by their sort bytes.
#[derive(Default)]
struct Tally {
    counts: [u64; 4],
    least: [BTreeMap<Vec<u8>, Value>; 3],
}

impl Tally {
    /// Keeps `key` (its sort bytes `sort`) among the least of `class` if it is.
    fn offer(&mut self, class: usize, sort: &[u8], key: impl FnOnce() -> Value) {
        let kept = &mut self.least[class];
        if kept.len() == DIFF_SAMPLES
            && kept
                .last_key_value()
                .is_some_and(|(last, _)| sort >= last.as_slice())
        {
            return;
        }
        kept.insert(sort.to_vec(), key());
        if kept.len() > DIFF_SAMPLES {
            kept.pop_last();
        }
    }

    fn merge(&mut self, other: Tally) {
        for (n, m) in self.counts.iter_mut().zip(other.counts) {
            *n += m;
        }
        for (class, kept) in other.least.into_iter().enumerate() {
            for (sort, key) in kept {
                self.offer(class, &sort, || key);
            }
        }
    }
}

/// One pass over the diff's join `sql` (rows of `class`, then the key columns), each of
/// its partitions tallied on its own task: the keys of each class counted, and the first
/// [`DIFF_SAMPLES`] keys of each class but `same` kept in key order (ascending, nulls
/// last, as `ORDER BY` sorts), whatever order the partitions deliver them in.
async fn classify(
    ctx: &SessionContext,
    sql: &str,
    key_columns: usize,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, Vec<Value>>)> {
    use futures::StreamExt;
    let failed = query_failed("baseline_diff");
    let streams = frame(ctx, "baseline_diff", sql)
        .await?
        .execute_stream_partitioned()
        .await
        .map_err(failed)?;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut converter = None;
                while let Some(batch) = stream.next().await {
                    tally_batch(
                        &batch.map_err(failed)?,
                        key_columns,
                        &mut converter,
                        &mut tally,
                    )?;
                }
                Ok::<_, Error>(tally)
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        let part = task.await.map_err(|e| Error::Query {
            what: "baseline_diff".into(),
            message: format!("a partition's tally failed: {e}"),
        })??;
        tally.merge(part);
    }
    let counts = CLASSES
        .iter()
        .zip(tally.counts)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| ((*c).to_owned(), n))
        .collect();
    let samples = CLASSES
        .iter()
        .zip(tally.least)
        .filter(|(_, kept)| !kept.is_empty())
        .map(|(c, kept)| ((*c).to_owned(), kept.into_values().collect()))
        .collect();
    Ok((counts, samples))
}

/// Tallies one batch of the diff's join into `tally`.
fn tally_batch(
    batch: &RecordBatch,
    key_columns: usize,
    converter: &mut Option<arrow::row::RowConverter>,
    tally: &mut Tally,
) -> Result<()> {
    use arrow::array::AsArray;
    let failed = |e: arrow::error::ArrowError| Error::Query {
        what: "baseline_diff".into(),
        message: e.to_string(),
    };
    let class =
        arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).map_err(failed)?;
    let class = class.as_string::<i32>();
    let classes: Vec<usize> = class
        .iter()
        .map(|c| {
            CLASSES
                .iter()
                .position(|k| Some(*k) == c)
                .unwrap_or(CLASSES.len() - 1)
        })
        .collect();
    for &c in &classes {
        tally.counts[c] += 1;
    }
    if classes.iter().all(|&c| c == CLASSES.len() - 1) {
        return Ok(());
    }
    let keys = batch
        .project(&(1..=key_columns).collect::<Vec<_>>())
        .map_err(failed)?;
    let converter = match converter {
        Some(c) => c,
        None => converter.insert(
            replayfleet_replay::key_order(keys.schema().fields().iter().map(|f| f.data_type()))
                .map_err(failed)?,
        ),
    };
    let rows = converter.convert_columns(keys.columns()).map_err(failed)?;
    for (i, &c) in classes.iter().enumerate() {
        if c < CLASSES.len() - 1 {
            tally.offer(c, rows.row(i).as_ref(), || {
                rows_json(&[keys.slice(i, 1)], 1).remove(0)
            });
        }
    }
    Ok(())
}

fn first_count(batches: &[RecordBatch]) -> u64 {
    rows_json(batches, 1)
        .first()
        .and_then(|r| r.as_object()?.values().next()?.as_u64())
        .unwrap_or(0)
}

fn join_samples(items: &[Value]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(5)
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    let more = if items.len() > 5 {
        format!(" (and {} more)", items.len() - 5)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use arrow::{
        array::{Int64Array, StringArray},
        datatypes::{DataType, Field, Schema},
    };

    use serde_json::json;

    use super::*;

    /// A session whose `projection` holds (account_id, balance) rows.
    fn projection(rows: &[(&str, i64)]) -> SessionContext {
        let ctx = SessionContext::new();
        table(&ctx, "projection", rows);
        ctx
    }

    fn balances() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("account_id", DataType::Utf8, false),
            Field::new("balance", DataType::Int64, false),
        ]))
    }

    /// Registers `name` in `ctx`, holding (account_id, balance) rows.
    fn table(ctx: &SessionContext, name: &str, rows: &[(&str, i64)]) {
        let schema = balances();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        register(ctx, name, schema, vec![batch]).unwrap();
    }

    fn shard(id: &str, partitions: &[i32]) -> ShardPlan {
        ShardPlan {
            id: id.to_owned(),
            partitions: partitions.to_vec(),
            segments: Vec::new(),
            rows: 0,
            bytes: 0,
            split: None,
        }
    }

    fn sub(id: &str, partition: i32, bucket: u32, of: u32) -> ShardPlan {
        ShardPlan {
            split: Some(Split { bucket, of }),
            ..shard(id, &[partition])
        }
    }

    #[test]
    fn coverage_names_every_shard_not_covered_exactly_as_planned() {
        let shards = [shard("shard-0", &[0, 1]), shard("shard-1", &[2])];
        let covered = |run_id, shard, partitions| {
            Some(Covered {
                run_id,
                shard,
                partitions,
                split: None,
            })
        };
        let whole = coverage_check(
            "r",
            &shards,
            &[
                covered("r", "shard-0", &[0, 1]),
                covered("r", "shard-1", &[2]),
            ],
        );
        assert!(whole.passed, "{whole:?}");
        assert_eq!(whole.class, "integrity");
        assert_eq!(whole.detail, "all 2 planned shards covered exactly once");

        let missing = coverage_check("r", &shards, &[covered("r", "shard-0", &[0, 1]), None]);
        assert!(!missing.passed);
        assert_eq!(missing.samples, vec![json!("shard-1: no lineage manifest")]);

        let foreign = coverage_check(
            "r",
            &shards,
            &[
                covered("other", "shard-0", &[0, 1]),
                covered("r", "shard-0", &[2]),
            ],
        );
        assert_eq!(foreign.samples.len(), 2, "{foreign:?}");
        assert!(
            foreign.samples[0]
                .as_str()
                .unwrap()
                .ends_with("shard-0/lineage.json names run other shard shard-0"),
            "{foreign:?}"
        );
        assert!(
            foreign.samples[1]
                .as_str()
                .unwrap()
                .ends_with("shard-1/lineage.json names run r shard shard-0"),
            "{foreign:?}"
        );

        let short = coverage_check(
            "r",
            &shards,
            &[covered("r", "shard-0", &[0]), covered("r", "shard-1", &[2])],
        );
        assert_eq!(
            short.samples,
            vec![json!("shard-0: covers partitions [0], planned [0, 1]")]
        );

        let overlapping = [shard("shard-0", &[0, 1]), shard("shard-1", &[1])];
        let twice = coverage_check(
            "r",
            &overlapping,
            &[
                covered("r", "shard-0", &[0, 1]),
                covered("r", "shard-1", &[1]),
            ],
        );
        assert_eq!(twice.samples, vec![json!("partition 1 is in two shards")]);
    }

    #[test]
    fn coverage_takes_a_partition_split_into_every_share_once() {
        let check = |shards: &[ShardPlan], found: &[Option<Split>]| {
            let covered: Vec<_> = shards
                .iter()
                .zip(found)
                .map(|(s, split)| {
                    Some(Covered {
                        run_id: "r",
                        shard: &s.id,
                        partitions: &s.partitions,
                        split: *split,
                    })
                })
                .collect();
            coverage_check("r", shards, &covered)
        };
        let split = [
            shard("shard-0", &[0]),
            sub("shard-1", 1, 0, 3),
            sub("shard-2", 1, 1, 3),
            sub("shard-3", 1, 2, 3),
        ];
        let planned: Vec<_> = split.iter().map(|s| s.split).collect();
        let whole = check(&split, &planned);
        assert!(whole.passed, "{whole:?}");

        // A manifest of another share than planned.
        let mut found = planned.clone();
        found[2] = Some(Split { bucket: 2, of: 3 });
        let wrong = check(&split, &found);
        assert_eq!(
            wrong.samples,
            vec![json!(
                "shard-2: covers share 2/3 of its partitions' streams, planned share 1/3"
            )]
        );

        // A share missing from the plan, a share twice, a whole shard beside shares.
        let short = &split[..3];
        let missing = check(short, &planned[..3]);
        assert_eq!(
            missing.samples,
            vec![json!(
                "partition 1 is not split into shares 0..n of one n: 0/3, 1/3"
            )]
        );
        let twice = [sub("a", 1, 0, 2), sub("b", 1, 0, 2), sub("c", 1, 1, 2)];
        let found: Vec<_> = twice.iter().map(|s| s.split).collect();
        assert!(!check(&twice, &found).passed);
        let mixed = [shard("a", &[1]), sub("b", 1, 0, 1)];
        let found: Vec<_> = mixed.iter().map(|s| s.split).collect();
        assert_eq!(
            check(&mixed, &found).samples,
            vec![json!(
                "partition 1 is not split into shares 0..n of one n: whole, 0/1"
            )]
        );
    }

    /// The diff of `new` against `base` rows, as a run (`windowed` false) or a window.
    async fn diffed(
        new: &[(&str, i64)],
        base: &[(&str, i64)],
        windowed: bool,
        max: f64,
    ) -> (Diff, CheckResult) {
        let ctx = projection(new);
        table(&ctx, "baseline", base);
        let key = vec!["account_id".to_owned()];
        let diffing = Diffing {
            key: &key,
            windowed,
            max_changed_ratio: max,
            baseline: 4,
        };
        let mut checks = Vec::new();
        let diff = compare(&ctx, &diffing, &balances(), &balances(), &mut checks)
            .await
            .unwrap();
        (diff, checks.remove(0))
    }

    #[tokio::test]
    async fn the_baseline_diff_counts_keys_added_removed_and_changed() {
        let (same, check) = diffed(&[("a", 1), ("b", 2)], &[("b", 2), ("a", 1)], false, 0.0).await;
        assert_eq!(
            (same.added, same.removed, same.changed, same.union),
            (0, 0, 0, 2)
        );
        assert!(check.passed && check.class == "discrepancy", "{check:?}");
        assert_eq!(same.compared_columns, vec!["balance"]);

        // a removed, b changed, c added, d the same: 3 of 4 keys differ
        let (diff, check) = diffed(
            &[("b", 20), ("c", 3), ("d", 4)],
            &[("a", 1), ("b", 2), ("d", 4)],
            false,
            0.5,
        )
        .await;
        assert_eq!(
            (diff.added, diff.removed, diff.changed, diff.union),
            (1, 1, 1, 4)
        );
        assert!((diff.changed_ratio - 0.75).abs() < 1e-9);
        assert!(!check.passed);
        assert!(
            check
                .detail
                .starts_with("against version 4: 1 keys added, 1 removed, 1 changed of 4"),
            "{}",
            check.detail
        );
        assert_eq!(diff.samples["added"], vec![json!({"account_id": "c"})]);
        assert_eq!(diff.samples["removed"], vec![json!({"account_id": "a"})]);
        assert_eq!(diff.samples["changed"], vec![json!({"account_id": "b"})]);

        // samples: the first DIFF_SAMPLES keys of each class, in key order
        let names: Vec<String> = (0..25).rev().map(|i| format!("k{i:02}")).collect();
        let new: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let base: Vec<(&str, i64)> = names[..5].iter().map(|n| (n.as_str(), 2)).collect();
        let (many, _) = diffed(&new, &base, false, 1.0).await;
        assert_eq!((many.added, many.changed, many.removed), (20, 5, 0));
        let first = |from: usize, n: usize| -> Vec<Value> {
            (from..from + n)
                .map(|i| json!({"account_id": format!("k{i:02}")}))
                .collect()
        };
        assert_eq!(many.samples["added"], first(0, DIFF_SAMPLES));
        assert_eq!(many.samples["changed"], first(20, 5));
        assert!(!many.samples.contains_key("removed"), "{:?}", many.samples);
    }

    #[tokio::test]
    async fn a_window_compares_only_its_own_keys() {
        // the baseline's other keys are outside the window, not removed
        let (diff, check) = diffed(&[("b", 2)], &[("a", 1), ("b", 2), ("c", 3)], true, 0.0).await;
        assert_eq!(
            (diff.added, diff.removed, diff.changed, diff.union),
            (0, 0, 0, 1)
        );
        assert!(check.passed, "{check:?}");
        assert!(check.detail.ends_with("only the window's keys compared"));
    }

    #[tokio::test]
    async fn columns_not_in_both_versions_alike_are_not_compared() {
        let ctx = projection(&[("a", 1)]);
        // the baseline's balance is text: not comparable, so not compared
        let text = Arc::new(Schema::new(vec![
            Field::new("account_id", DataType::Utf8, false),
            Field::new("balance", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&text),
            vec![
                Arc::new(StringArray::from_iter_values(["a"])),
                Arc::new(StringArray::from_iter_values(["999"])),
            ],
        )
        .unwrap();
        register(&ctx, "baseline", Arc::clone(&text), vec![batch]).unwrap();
        let key = vec!["account_id".to_owned()];
        let diffing = Diffing {
            key: &key,
            windowed: false,
            max_changed_ratio: 0.0,
            baseline: 1,
        };
        let mut checks = Vec::new();
        let diff = compare(
            &ctx,
            &diffing,
            &balances(),
            &(text as SchemaRef),
            &mut checks,
        )
        .await
        .unwrap();
        assert!(diff.compared_columns.is_empty());
        assert_eq!((diff.added, diff.removed, diff.changed), (0, 0, 0));

        // a baseline without the key column: every row on both sides differs
        let ctx = projection(&[("a", 1), ("b", 2)]);
        let other = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&other),
            vec![Arc::new(Int64Array::from_iter_values([7]))],
        )
        .unwrap();
        register(&ctx, "baseline", Arc::clone(&other), vec![batch]).unwrap();
        let mut checks = Vec::new();
        let diff = compare(
            &ctx,
            &diffing,
            &balances(),
            &(other as SchemaRef),
            &mut checks,
        )
        .await
        .unwrap();
        assert_eq!((diff.added, diff.removed, diff.union), (2, 1, 3));
        assert!(!checks[0].passed);
    }

    #[tokio::test]
    async fn unique_keys_fail_naming_each_repeated_key_and_its_copies() {
        let mut checks = Vec::new();
        let key = vec!["account_id".to_owned()];
        unique_keys(&projection(&[("a", 1), ("b", 2)]), &key, &mut checks)
            .await
            .unwrap();
        assert!(checks[0].passed, "{:?}", checks[0]);
        assert_eq!(checks[0].class, "integrity");

        let ctx = projection(&[("a", 1), ("b", 2), ("a", 3), ("b", 4), ("b", 5)]);
        unique_keys(&ctx, &key, &mut checks).await.unwrap();
        let failed = &checks[1];
        assert!(!failed.passed);
        assert!(
            failed.detail.starts_with("2 keys (account_id)"),
            "{}",
            failed.detail
        );
        // the most copied first
        assert_eq!(failed.samples[0]["account_id"], "b");
        assert_eq!(failed.samples[0]["copies"], 3);
        assert_eq!(failed.samples[1]["account_id"], "a");
    }

    #[tokio::test]
    async fn invariants_fail_with_their_violating_rows_and_a_bad_one_names_itself() {
        let ctx = projection(&[("a", 10), ("b", -5), ("c", -1)]);
        let mut checks = Vec::new();
        let sqls = vec![
            "SELECT * FROM projection WHERE balance < -100".to_owned(),
            "SELECT * FROM projection WHERE balance < 0 ORDER BY account_id".to_owned(),
        ];
        invariants(&ctx, &sqls, &mut checks).await.unwrap();
        assert!(checks[0].passed && checks[0].name == "invariant[0]");
        assert!(!checks[1].passed);
        assert_eq!(checks[1].class, "discrepancy");
        assert!(checks[1].detail.contains("selects 2 violating rows"));
        assert_eq!(checks[1].samples[0]["account_id"], "b");

        let bad = vec!["SELECT nope FROM projection".to_owned()];
        let err = invariants(&ctx, &bad, &mut checks).await.unwrap_err();
        assert!(err.is_input(), "{err}");
        assert!(err.to_string().contains("checks.invariants[0]"), "{err}");
    }

    #[test]
    fn integrity_always_refuses_and_discrepancies_only_without_a_reason() {
        let result =
            |name: &str, class: &str, passed| check(name, class, passed, String::new(), vec![]);
        let options = |accept: Option<&str>| FinalizeOptions {
            accept: accept.map(str::to_owned),
            by: "auditor".into(),
        };
        let clean = [result("coverage", "integrity", true)];
        assert!(matches!(verdict(&clean, &options(None)), (None, false)));
        // nothing to accept: a reason given anyway records nothing
        assert!(matches!(
            verdict(&clean, &options(Some("why"))),
            (None, false)
        ));

        let differs = [
            result("coverage", "integrity", true),
            result("baseline_diff", "discrepancy", false),
        ];
        assert!(matches!(verdict(&differs, &options(None)), (None, true)));
        let (accepted, refused) = verdict(&differs, &options(Some("expected: new rule")));
        let accepted = accepted.expect("accepted");
        assert!(!refused);
        assert_eq!(accepted.overridden, vec!["baseline_diff".to_owned()]);
        assert_eq!(
            (accepted.by.as_str(), accepted.reason.as_str()),
            ("auditor", "expected: new rule")
        );

        let broken = [
            result("output_checksums", "integrity", false),
            result("baseline_diff", "discrepancy", false),
        ];
        assert!(matches!(
            verdict(&broken, &options(Some("please"))),
            (None, true)
        ));
    }

    #[test]
    fn the_anomaly_budget_is_quarantined_over_events_read() {
        let totals = |quarantined, events_read| CommitTotals {
            rows: 0,
            bytes: 0,
            segments: 0,
            shards: 0,
            events_read,
            duplicates_dropped: 0,
            events_projected: 0,
            quarantined,
            anomalies: BTreeMap::new(),
        };
        let mut checks = Vec::new();
        anomaly_budget(0.01, &totals(1, 100), &mut checks);
        anomaly_budget(0.01, &totals(2, 100), &mut checks);
        anomaly_budget(0.0, &totals(0, 0), &mut checks);
        assert!(checks[0].passed, "at the limit passes");
        assert!(!checks[1].passed && checks[1].class == "discrepancy");
        assert!(checks[1].detail.contains("2 of 100 events quarantined"));
        assert!(checks[2].passed, "no events, nothing quarantined");
    }
}
