//! One shard's replay: a pure function of the plan's snapshot and the input bytes.
//!
//! ```text
//! the pipeline (see pipeline.rs): segments ─▶ dedupe ─▶ order ─▶ upcast ─▶ projection
//!   ─▶ part files in the attempt's own folder ─▶ anomalies file (put-if-absent)
//!   ─▶ lineage manifest (put-if-absent: the first attempt wins, later ones compare)
//! ```

use std::sync::Arc;

use arrow::{array::RecordBatch, compute::concat_batches};
use chrono::Utc;
use futures::StreamExt;
use replayfleet_archive::Location;
use replayfleet_contracts::Catalog;

use crate::{
    Error, Result,
    layout::{Created, Target, sha256_hex, to_json_bytes},
    lineage::{LINEAGE_FORMAT_VERSION, Lineage, OutputFile},
    order::arrow_error,
    pipeline::{self, Pipeline, Tally, quarantine_batch, unwrap_error},
    plan::{Build, Plan},
    write::{SEGMENT_ROWS, key_of, parquet_bytes},
};

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
    /// Waits until `events` more events may be read. An error stops the shard
    /// (a retryable one: the pace's store could not be reached).
    async fn pace(&self, events: u64) -> std::result::Result<(), String>;
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// The shard's lineage manifest: this attempt's, or the earlier winner's.
    pub lineage: Lineage,
    /// Whether this attempt's manifest is the one that counts.
    pub won: bool,
}

/// Replays one shard: reads, upcasts, projects, writes the part files under the attempt's
/// own folder, then tries to create the lineage manifest. A later attempt that finds a
/// manifest compares its outputs' checksums and returns the winner's manifest; differing
/// checksums are [`Error::Nondeterministic`].
pub async fn replay_shard(job: &ShardJob) -> Result<ShardOutcome> {
    let started_at = Utc::now();
    let plan = &job.plan;
    let shard = plan.shard(&job.shard).ok_or_else(|| Error::Format {
        path: crate::Target::plan_path(&plan.run_id),
        message: format!("the plan has no shard {}", job.shard),
    })?;
    let Pipeline {
        mut output,
        tally,
        session: _session,
    } = pipeline::start(plan, shard, &job.source, &job.catalog, job.pacer.clone()).await?;

    // Segments of exactly SEGMENT_ROWS rows (the last one shorter), each written from one
    // batch so its bytes do not depend on how DataFusion sized its batches.
    let attempt_dir = Target::attempt_dir(&plan.run_id, &job.shard, &job.attempt);
    let schema = output.schema();
    let mut outputs = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    while let Some(batch) = output.next().await {
        let batch = batch.map_err(|e| unwrap_error(&job.shard, e))?;
        pending_rows += batch.num_rows();
        pending.push(batch);
        while pending_rows >= SEGMENT_ROWS {
            let all = concat_batches(&schema, &pending).map_err(arrow_error)?;
            let path = format!("{attempt_dir}/part-{:05}.parquet", outputs.len());
            outputs.push(write_segment(job, &path, &all.slice(0, SEGMENT_ROWS)).await?);
            pending = vec![all.slice(SEGMENT_ROWS, all.num_rows() - SEGMENT_ROWS)];
            pending_rows -= SEGMENT_ROWS;
        }
    }
    if pending_rows > 0 || outputs.is_empty() {
        let all = concat_batches(&schema, &pending).map_err(arrow_error)?;
        let path = format!("{attempt_dir}/part-{:05}.parquet", outputs.len());
        outputs.push(write_segment(job, &path, &all).await?);
    }
    drop(output);
    let Tally {
        inputs,
        mut applied,
        quarantine,
        ..
    } = {
        let mut t = tally.lock().expect("tally lock");
        let versions = t.versions(&job.catalog);
        let mut taken = std::mem::take(&mut *t);
        taken.applied.versions = versions;
        taken
    };
    applied.rows_out = outputs.iter().map(|o| o.rows).sum();

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
        inputs,
        applied,
        outputs,
        anomalies_file,
    };
    let path = Target::lineage_path(&plan.run_id, &job.shard);
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
    let bytes = parquet_bytes(path, segment)?;
    let rows = segment.num_rows();
    let key_at = |row: usize| (rows > 0).then(|| key_of(segment, &job.plan.projection.key, row));
    let file = OutputFile {
        path: path.to_owned(),
        sha256: sha256_hex(&bytes),
        rows: rows as u64,
        bytes: bytes.len() as u64,
        key_min: key_at(0),
        key_max: key_at(rows.saturating_sub(1)),
    };
    job.target.put(path, bytes).await?;
    Ok(file)
}
