//! One shard's replay: a pure function of the plan's snapshot and the input bytes.
//!
//! ```text
//! read      segments ─fetch─▶ parts of row groups ─decode, filter─▶ buckets of streams
//!             (every thread; ids seen twice, and in two buckets, noted on the way)
//! dedupe    per bucket: sort by (partition, seq), envelope nulls, duplicates
//! gaps      over every bucket's kept rows (only with `source.contiguous_seq`)
//! events    per bucket: upcast + validate, policies, the columns the projection reads
//! fold      per bucket: the projection SQL (DataFusion, one partition), sorted by key
//! write     the buckets merged by key ─▶ part files in the attempt's own folder
//!           ─▶ anomalies file (put-if-absent) ─▶ lineage manifest (put-if-absent:
//!           the first attempt wins, later ones compare)
//! ```
//!
//! Buckets are groups of whole streams, so a projection whose rows each depend on one
//! stream ([`crate::fold`]) gives the same rows folded per bucket as over the whole
//! shard; any other projection folds the shard as one bucket. The number of buckets
//! follows from the plan alone, never from the thread count, and every step that runs
//! on parts in parallel puts its results back in a fixed order: the part files are the
//! same bytes on any machine.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use arrow::{
    array::{AsArray, RecordBatch},
    datatypes::{Int32Type, Int64Type, UInt64Type},
};
use chrono::Utc;
use replayfleet_archive::Location;
use replayfleet_contracts::{Catalog, PathStatus};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    Error, Fingerprint, Result,
    anomaly::{Policies, RowRef, Tally, quarantine_batch},
    dedupe::{Bucket, cross_bucket_candidates, cross_bucket_winners, dedupe},
    events::{EventsShape, events_of},
    fold::{Deadline, Fold, FoldLimits},
    layout::{Created, Target, sha256_hex, to_json_bytes},
    lineage::{LINEAGE_FORMAT_VERSION, Lineage, OutputFile, VersionApplied},
    merge::Merged,
    plan::{Build, Plan, ShardPlan},
    project::events_schema,
    raw::{ORD, PARTITION, SEQ},
    read::{ReadOptions, join_error, read_shard},
    store::Source,
    write::{SEGMENT_ROWS, key_of, parquet_bytes},
};

/// Rows of a shard per bucket (from the plan's row count): enough buckets to use every
/// thread of a large worker, few enough that each folds a sizeable share.
const BUCKET_ROWS: u64 = 128 * 1024;
/// At most this many buckets (a bucket's index fits the id digests' low byte).
const MAX_BUCKETS: u64 = 255;

/// Everything one attempt at one shard needs.
#[derive(Debug, Clone)]
pub struct ShardJob {
    /// The run's plan.
    pub plan: Arc<Plan>,
    /// The shard's id.
    pub shard: String,
    /// The archive (with this process's credentials).
    pub source: Location,
    /// The projection's home.
    pub target: Target,
    /// The plan's catalog, loaded.
    pub catalog: Catalog,
    /// This attempt's unique name (its output folder).
    pub attempt: String,
    /// Who runs it (host and task), for the manifest.
    pub worker: String,
    /// Holds the read back to the fleet's `pacing.events_per_second`; `None`: unpaced.
    pub pacer: Option<Arc<dyn Pacer>>,
}

/// The fleet-wide pace (`pacing.events_per_second`): the replay asks before each
/// batch of events it reads, and goes on when the returned future resolves.
#[async_trait::async_trait]
pub trait Pacer: Send + Sync + std::fmt::Debug {
    /// Waits until `events` more events may be read. An error stops the shard, with its
    /// kind (transient when the pace's store could not be reached).
    async fn pace(&self, events: u64) -> std::result::Result<(), PaceError>;
}

/// Why a [`Pacer`] could not pace.
#[derive(Debug, Clone)]
pub struct PaceError {
    /// What went wrong.
    pub message: String,
    /// Its kind, which decides whether the shard is tried again.
    pub kind: replayfleet_config::ErrorKind,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// The shard's lineage manifest: this attempt's, or the earlier winner's.
    pub lineage: Lineage,
    /// Whether this attempt's manifest is the one that counts.
    pub won: bool,
}

/// The threads the replay spreads its work over: the async runtime's workers (the
/// worker's `--workers`).
fn threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
        .max(1)
}

/// How many buckets a shard of `rows` rows is folded in when its projection allows it:
/// one per [`BUCKET_ROWS`] rows, or per `REPLAYFLEET_BUCKET_ROWS` (a tuning knob of the
/// process, which changes no output byte: the buckets' outputs merge into the same rows).
fn bucket_count(rows: u64) -> usize {
    let per_bucket = std::env::var("REPLAYFLEET_BUCKET_ROWS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(BUCKET_ROWS);
    rows.div_ceil(per_bucket).clamp(1, MAX_BUCKETS) as usize
}

/// What the replay of a shard produced, before anything is written.
struct Replayed {
    inputs: Vec<crate::lineage::LineageInput>,
    tally: Tally,
    events_read: u64,
    out_of_order: u64,
    merged: Merged,
}

/// Replays one shard: reads, upcasts, projects, writes the part files under the attempt's
/// own folder, then tries to create the lineage manifest. A later attempt that finds a
/// manifest compares its outputs' checksums and returns the winner's manifest; differing
/// checksums are [`Error::Nondeterministic`].
pub async fn replay_shard(job: &ShardJob) -> Result<ShardOutcome> {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let plan = &job.plan;
    // The time a jq step may run on one event (`limits.step_time`), kept by the
    // watchdog for the whole process.
    replayfleet_contracts::watch::set_step_time(match plan.step_time_ms {
        0 => replayfleet_contracts::watch::DEFAULT_STEP_TIME,
        ms => std::time::Duration::from_millis(ms),
    });
    let shard = plan.shard(&job.shard).ok_or_else(|| Error::Format {
        path: crate::Target::plan_path(&plan.run_id),
        message: format!("the plan has no shard {}", job.shard),
    })?;
    let Replayed {
        inputs,
        mut tally,
        events_read,
        out_of_order,
        mut merged,
    } = replay(job, shard).await?;

    // Segments of exactly SEGMENT_ROWS rows (the last one shorter), each written from one
    // batch so its bytes do not depend on how the rows were folded.
    let attempt_dir = Target::attempt_dir(&plan.run_id, &job.shard, &job.attempt);
    let mut outputs = Vec::new();
    while let Some(segment) = merged.next_chunk(SEGMENT_ROWS)? {
        let path = format!("{attempt_dir}/part-{:05}.parquet", outputs.len());
        outputs.push(write_segment(job, &path, &segment).await?);
    }
    if outputs.is_empty() {
        let empty = RecordBatch::new_empty(Arc::clone(merged.schema()));
        let path = format!("{attempt_dir}/part-00000.parquet");
        outputs.push(write_segment(job, &path, &empty).await?);
    }
    tracing::debug!(shard = %job.shard, seconds = clock.elapsed().as_secs_f64(), "parts written");
    let mut applied = std::mem::take(&mut tally.applied);
    applied.events_read = events_read;
    applied.out_of_order = out_of_order;
    applied.versions = versions_applied(&tally.versions, &job.catalog);
    applied.rows_out = outputs.iter().map(|o| o.rows).sum();
    let quarantine = std::mem::take(&mut tally.quarantine);
    let anomalies_file = match quarantine_batch(quarantine)? {
        None => None,
        Some(batch) => {
            let path = Target::anomalies_path(&plan.run_id, &job.shard);
            let bytes = parquet_bytes(&path, &batch)?;
            let file = OutputFile {
                path: path.clone(),
                sha256: sha256_hex(&bytes),
                rows: batch.num_rows() as u64,
                bytes: bytes.len() as u64,
                key_min: None,
                key_max: None,
                fingerprint: None,
                stats: None,
            };
            if job.target.put_if_absent(&path, bytes).await? == Created::Existed {
                let existing = job.target.get(&path).await?.unwrap_or_default();
                if sha256_hex(&existing) != file.sha256 {
                    return Err(Error::Nondeterministic {
                        shard: job.shard.clone(),
                        detail: format!(
                            "{path} was written by another attempt with different content"
                        ),
                    });
                }
            }
            Some(file)
        }
    };

    let lineage = Lineage {
        format_version: LINEAGE_FORMAT_VERSION,
        run_id: plan.run_id.clone(),
        shard: job.shard.clone(),
        attempt: job.attempt.clone(),
        worker: job.worker.clone(),
        build: Build::current(),
        started_at,
        finished_at: Utc::now(),
        partitions: shard.partitions.clone(),
        split: shard.split,
        inputs,
        applied,
        outputs,
        anomalies_file,
    };
    let path = Target::lineage_path(&plan.run_id, &job.shard);
    tracing::debug!(shard = %job.shard, seconds = clock.elapsed().as_secs_f64(), "written");
    match job
        .target
        .put_if_absent(&path, to_json_bytes(&lineage))
        .await?
    {
        Created::Created => Ok(ShardOutcome { lineage, won: true }),
        Created::Existed => {
            let winner: Lineage =
                job.target
                    .get_json(&path)
                    .await?
                    .ok_or_else(|| Error::Format {
                        path: path.clone(),
                        message: "vanished after it was found".into(),
                    })?;
            if winner.output_digests() != lineage.output_digests() {
                return Err(Error::Nondeterministic {
                    shard: job.shard.clone(),
                    detail: format!(
                        "attempt {} wrote outputs {:?} but the winning attempt {} wrote {:?}",
                        job.attempt,
                        lineage.output_digests(),
                        winner.attempt,
                        winner.output_digests()
                    ),
                });
            }
            Ok(ShardOutcome {
                lineage: winner,
                won: false,
            })
        }
    }
}

/// Writes one projection segment into the attempt's own folder (nobody else writes there).
async fn write_segment(job: &ShardJob, path: &str, segment: &RecordBatch) -> Result<OutputFile> {
    let stored = stored_batch(path, segment)?;
    let segment = &stored;
    let bytes = parquet_bytes(path, segment)?;
    let rows = segment.num_rows();
    let key = &job.plan.projection.key;
    let key_at = |row: usize| (rows > 0).then(|| key_of(segment, key, row));
    // The finalizer sums these instead of decoding every part file again; the SHA-256
    // binds them to the bytes, and `verify` recomputes the fingerprint from the files.
    let mut fingerprint = Fingerprint::new();
    fingerprint.add_batch(segment)?;
    let stats = crate::file_stats(std::slice::from_ref(segment), key, rows as u64);
    let file = OutputFile {
        path: path.to_owned(),
        sha256: sha256_hex(&bytes),
        rows: rows as u64,
        bytes: bytes.len() as u64,
        key_min: key_at(0),
        key_max: key_at(rows.saturating_sub(1)),
        fingerprint: Some(fingerprint.hex()),
        stats: Some(stats),
    };
    job.target.put(path, bytes).await?;
    Ok(file)
}

/// `segment` with each column cast to the type it is stored as
/// ([`crate::project::stored_type`]: unsigned integers widened for the Delta table).
fn stored_batch(path: &str, segment: &RecordBatch) -> Result<RecordBatch> {
    let failed = |message: String| Error::Format {
        path: path.to_owned(),
        message,
    };
    let schema = crate::project::stored_schema(segment.schema_ref()).map_err(failed)?;
    if schema.fields() == segment.schema_ref().fields() {
        return Ok(segment.clone());
    }
    let columns = segment
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| failed(e.to_string()))
}

/// Reads, dedupes, upcasts and folds a shard, bucket by bucket on every thread.
async fn replay(job: &ShardJob, shard: &ShardPlan) -> Result<Replayed> {
    let plan = &job.plan;
    let threads = threads();
    let full = events_schema(&job.catalog);
    let fold = Fold::new(&full, &plan.projection.sql, &plan.projection.key).await?;
    if shard.split.is_some() && !fold.keyed_by_stream {
        return Err(Error::Format {
            path: crate::Target::plan_path(&plan.run_id),
            message: format!(
                "shard {} replays a share of partition {:?}'s streams, but the projection \
                 is not keyed by stream: plan the run again",
                shard.id, shard.partitions
            ),
        });
    }
    let buckets = if fold.local {
        // A sub-shard's other rows take the bucket after its own.
        bucket_count(shard.rows).min(MAX_BUCKETS as usize - usize::from(shard.split.is_some()))
    } else {
        1
    };
    // `limits.memory` split: 70% holds the rows read (past it they spill), 15% the
    // segments fetched and not yet decoded, 15% the buckets' DataFusion pools (the
    // buckets' own rows are a small share of the shard's).
    let limit = plan.memory_limit_bytes;
    let budget = (limit / 10 * 7) as usize;
    let fetch_budget = (limit / 100 * 15) as usize;
    let started = std::time::Instant::now();
    tracing::debug!(shard = %shard.id, local = fold.local, "projection planned");
    let shape = Arc::new(EventsShape::new(&job.catalog, &full, &fold.read));
    let read = read_shard(
        plan,
        shard,
        &job.source,
        job.pacer.clone(),
        ReadOptions {
            buckets,
            split: shard.split,
            threads,
            budget,
            fetch_budget,
            needed: shape.raw_columns(),
        },
    )
    .await?;
    tracing::debug!(shard = %shard.id, buckets, threads, seconds = started.elapsed().as_secs_f64(), "read");
    if read.spilled_rows > 0 {
        tracing::info!(shard = %shard.id, rows = read.spilled_rows, "rows spilled to disk: the shard's rows exceed 70% of limits.memory");
    }
    let _spill = read.spill;
    // A sub-shard's last source holds its partition's other rows: they take part in
    // ordering copies of an id and in finding gaps, and are neither upcast nor folded.
    let sources: Vec<Arc<Source>> = read.buckets.into_iter().map(Arc::new).collect();
    let own = sources.len() - usize::from(shard.split.is_some());
    let policies = Policies::new(plan, &shard.id, &shard.segments);
    // Rows that could not be decoded go no further: their anomalies come first (a halt
    // among them is the shard's error before any other stage runs).
    let mut tally = Tally::default();
    for (batch, values) in &read.undecodable {
        for (row, value) in values.iter().enumerate() {
            policies.undecodable(&mut tally, RowRef { batch, row }, value);
        }
    }
    if tally.halt.is_some() {
        tally.halted()?;
    }
    let fold = Arc::new(fold);
    let repeated = Arc::new(read.repeated);
    let permits = Arc::new(Semaphore::new(threads));

    // Ids whose copies name streams in different buckets: which copy is first, over all
    // buckets (a pass of its own, needed only when there are such ids).
    let winners = if read.cross_bucket.is_empty() {
        Arc::new(HashMap::new())
    } else {
        let cross = Arc::new(read.cross_bucket);
        let candidates = each(&shard.id, &permits, sources.clone(), |_, source| {
            let cross = Arc::clone(&cross);
            async move { Ok(cross_bucket_candidates(&source.load()?, &cross)) }
        })
        .await?;
        Arc::new(cross_bucket_winners(
            candidates.into_iter().enumerate().collect(),
        ))
    };

    // Gaps are per partition, across buckets: the kept rows of every bucket first (a
    // pass of its own, only with `source.contiguous_seq`).
    let gaps: Vec<Arc<HashMap<u64, String>>> = if plan.source.contiguous_seq {
        let kept = each(&shard.id, &permits, sources.clone(), |_, source| {
            let (repeated, winners, policies) = (
                Arc::clone(&repeated),
                Arc::clone(&winners),
                policies.clone(),
            );
            async move {
                let bucket = Bucket::sorted(source.load()?);
                let kept = dedupe(
                    &bucket,
                    &repeated,
                    &winners,
                    &policies,
                    &mut Tally::default(),
                );
                Ok(kept_keys(&bucket, &kept))
            }
        })
        .await?;
        find_gaps(kept).into_iter().map(Arc::new).collect()
    } else {
        (0..sources.len())
            .map(|_| Arc::new(HashMap::new()))
            .collect()
    };

    // Each bucket from its rows to its folded output. Once a halting anomaly is found,
    // the folds left are skipped; every bucket is still deduped and upcast, so the shard
    // reports the same first anomaly however its buckets were scheduled.
    let memory =
        (limit / 100 * 15 / threads.min(sources.len().max(1)) as u64).max(16 * 1024 * 1024);
    // `limits.spill_max` for the projection, shared by the buckets folded at once (each
    // bucket's spill files are removed when its fold ends).
    let spill_max = (plan.spill_max_bytes / threads.min(sources.len().max(1)) as u64).max(1 << 20);
    let halted = Arc::new(AtomicBool::new(false));
    // DataFusion's spill files go in a locked folder of the shard's own (swept after a
    // kill like the store's), removed when the shard is done.
    let scratch = Arc::new(crate::store::SpillDir::scratch(
        plan.spill_dir.as_deref().map(std::path::Path::new),
    )?);
    // One time budget for the shard's folds, together (`limits.projection_time`).
    let deadline = Deadline::after(plan.projection_time_ms);
    let work: Vec<_> = sources.into_iter().take(own).zip(gaps).collect();
    let folded = each(&shard.id, &permits, work, |_, (source, gaps)| {
        let (catalog, policies, shape, fold, halted, repeated, winners) = (
            job.catalog.clone(),
            policies.clone(),
            Arc::clone(&shape),
            Arc::clone(&fold),
            Arc::clone(&halted),
            Arc::clone(&repeated),
            Arc::clone(&winners),
        );
        let shard_id = shard.id.clone();
        let spill_dir = plan.spill_dir.clone();
        let scratch = Arc::clone(&scratch);
        async move {
            let rows = Arc::into_inner(source)
                .expect("the passes before are done")
                .take()?;
            let bucket = Bucket::sorted(rows);
            let mut tally = Tally::default();
            let kept = dedupe(&bucket, &repeated, &winners, &policies, &mut tally);
            let events = events_of(
                &bucket, &kept, &gaps, &shape, &catalog, &policies, &mut tally,
            )?;
            drop((kept, bucket));
            if tally.halt.is_some() {
                halted.store(true, Ordering::Relaxed);
            }
            let output = if halted.load(Ordering::Relaxed) {
                Vec::new()
            } else {
                let limits = FoldLimits {
                    memory,
                    spill_max,
                    spill_dir: spill_dir.as_deref().map(std::path::Path::new),
                    scratch: scratch.path(),
                    deadline,
                };
                fold.run(&shard_id, &shape.schema, events, &limits).await?
            };
            Ok((output, tally))
        }
    })
    .await?;
    tracing::debug!(shard = %shard.id, seconds = started.elapsed().as_secs_f64(), "buckets replayed");
    let mut outputs = Vec::with_capacity(folded.len());
    for (output, t) in folded {
        tally.absorb(t);
        outputs.push(output);
    }
    tally.halted()?;
    let merged = Merged::new(&fold.output, outputs, &plan.projection.key)?;
    Ok(Replayed {
        inputs: read.inputs,
        tally,
        events_read: read.events_read,
        out_of_order: read.out_of_order,
        merged,
    })
}

/// Runs `work` on every item, each a task on the runtime's threads holding one of
/// `permits` (so that at most that many items are in memory at once), and returns the
/// results in the items' order; the first error (in item order) wins.
async fn each<T, R, F, Fut>(
    shard: &str,
    permits: &Arc<Semaphore>,
    items: Vec<T>,
    work: F,
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, T) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let fut = work(i, item);
        let permits = Arc::clone(permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            (i, fut.await)
        });
    }
    let mut results: Vec<Option<Result<R>>> = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, r) = done.map_err(|e| join_error(shard, e))?;
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reported"))
        .collect()
}

/// (partition, seq, `__ord`) of a bucket's kept rows.
fn kept_keys(bucket: &Bucket, kept: &[(u32, u32)]) -> Vec<(i32, i64, u64)> {
    kept.iter()
        .map(|at| {
            let batch = &bucket.batches[at.0 as usize];
            let row = at.1 as usize;
            (
                batch
                    .column(PARTITION)
                    .as_primitive::<Int32Type>()
                    .value(row),
                batch.column(SEQ).as_primitive::<Int64Type>().value(row),
                batch.column(ORD).as_primitive::<UInt64Type>().value(row),
            )
        })
        .collect()
}

/// Walks every bucket's kept rows in (partition, seq) order and marks each row more than
/// one seq above the previous row of its partition: per bucket, the message of each
/// such row, by its `__ord`.
fn find_gaps(kept: Vec<Vec<(i32, i64, u64)>>) -> Vec<HashMap<u64, String>> {
    let mut gaps = vec![HashMap::new(); kept.len()];
    let mut all: Vec<(i32, i64, u64, usize)> = kept
        .into_iter()
        .enumerate()
        .flat_map(|(b, rows)| rows.into_iter().map(move |(p, s, o)| (p, s, o, b)))
        .collect();
    all.sort_unstable();
    let mut last: Option<(i32, i64)> = None;
    for (p, s, ord, b) in all {
        if let Some((lp, ls)) = last
            && lp == p
            && s > ls + 1
        {
            // The event after the hole is fine and stays in the replay: quarantine
            // records the hole without setting the event aside.
            gaps[b].insert(
                ord,
                format!("seq {}..{} missing in partition {p}", ls + 1, s - 1),
            );
        }
        last = Some((p, s));
    }
    gaps
}

/// Events per (type, input version) with their upcaster chains, for the manifest.
fn versions_applied(
    versions: &BTreeMap<(String, i32), u64>,
    catalog: &Catalog,
) -> Vec<VersionApplied> {
    versions
        .iter()
        .map(|((event_type, schema_version), events)| {
            let chain = match catalog.path(event_type, *schema_version) {
                PathStatus::Upcastable { chain } => chain,
                _ => Vec::new(),
            };
            let steps = catalog
                .get(event_type)
                .map(|contract| {
                    chain
                        .iter()
                        .filter_map(|v| contract.version(*v))
                        .map(|v| format!("version {}: {}", v.version(), v.step_kinds().join(", ")))
                        .collect()
                })
                .unwrap_or_default();
            VersionApplied {
                event_type: event_type.clone(),
                schema_version: *schema_version,
                events: *events,
                chain,
                steps,
            }
        })
        .collect()
}
