//! One shard's replay: a pure function of the plan's snapshot and the input bytes.
//!
//! ```text
//! fetch segments (If-Match etag) ─▶ filter to the shard's partitions and the window
//!   ─▶ sort by (partition, seq) ─▶ drop exact duplicates, flag conflicting ones
//!   ─▶ upcast + validate per (type, version) ─▶ anomaly policies (halt / quarantine / allow)
//!   ─▶ `events` table ─▶ projection SQL (one partition) sorted by key
//!   ─▶ part files in the attempt's own folder ─▶ anomalies file (put-if-absent)
//!   ─▶ lineage manifest (put-if-absent: the first attempt wins, later ones compare)
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int32Array, Int32Builder,
        Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
        UInt32Array,
    },
    compute::take,
    datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef},
};
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use replayfleet_archive::{Location, decode_segment, fetch_segment};
use replayfleet_config::{AnomalyKind, Policy};
use replayfleet_contracts::{Catalog, Outcome, PathStatus};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    canonical::identity,
    layout::{Created, Target, sha256_hex, to_json_bytes},
    lineage::{Applied, LINEAGE_FORMAT_VERSION, Lineage, LineageInput, OutputFile, VersionApplied},
    order::{Ordered, arrow_error, filter_segment, order},
    plan::{Build, Plan, ShardPlan},
    project::{events_schema, project},
    write::{key_of, parquet_bytes, split_segments},
};

/// Rows upcast and turned into `events` rows at a time.
const CHUNK_ROWS: usize = 64 * 1024;
/// Segments fetched at once.
const FETCH_CONCURRENCY: usize = 4;

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
    // Owned futures (no borrow of the plan): the worker runs this inside a spawned task.
    let mut fetches = Vec::with_capacity(shard.segments.len());
    for path in &shard.segments {
        let segment = plan.segment(path).cloned().ok_or_else(|| Error::Format {
            path: crate::Target::plan_path(&plan.run_id),
            message: format!(
                "shard {} names segment {path}, which the plan lacks",
                shard.id
            ),
        })?;
        let source = job.source.clone();
        fetches.push(async move {
            let bytes = fetch_segment(&source, &segment.segment_ref()).await?;
            Ok::<_, Error>((segment.path, bytes))
        });
    }
    let fetched: Vec<(String, Bytes)> = futures::stream::iter(fetches)
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;

    let prepared = {
        let plan = Arc::clone(plan);
        let shard = shard.clone();
        let catalog = job.catalog.clone();
        tokio::task::spawn_blocking(move || prepare(&plan, &shard, &catalog, fetched))
            .await
            .map_err(|e| Error::Projection {
                shard: job.shard.clone(),
                message: format!("replay task failed: {e}"),
            })??
    };

    let Prepared {
        schema,
        events,
        inputs,
        mut applied,
        quarantine,
    } = prepared;
    let (out_schema, rows) = project(
        &job.shard,
        schema,
        events,
        &plan.projection.sql,
        &plan.projection.key,
        plan.memory_limit_bytes,
    )
    .await?;

    let attempt_dir = Target::attempt_dir(&plan.run_id, &job.shard, &job.attempt);
    let segments = split_segments(&out_schema, &rows)?;
    drop(rows);
    let mut outputs = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let path = format!("{attempt_dir}/part-{i:05}.parquet");
        let bytes = parquet_bytes(&path, segment)?;
        let rows = segment.num_rows();
        let key_at = |row: usize| (rows > 0).then(|| key_of(segment, &plan.projection.key, row));
        outputs.push(OutputFile {
            path: path.clone(),
            sha256: sha256_hex(&bytes),
            rows: segment.num_rows() as u64,
            bytes: bytes.len() as u64,
            key_min: key_at(0),
            key_max: key_at(rows.saturating_sub(1)),
        });
        // The attempt's folder is its own: nobody else writes here.
        job.target.put(&path, bytes).await?;
    }
    applied.rows_out = outputs.iter().map(|o| o.rows).sum();

    let anomalies_file = match quarantine.into_batch()? {
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

/// A shard's events, ready for the projection.
struct Prepared {
    schema: SchemaRef,
    events: Vec<RecordBatch>,
    inputs: Vec<LineageInput>,
    applied: Applied,
    quarantine: Quarantine,
}

/// What happens to one sorted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Duplicate,
    Anomaly,
}

fn prepare(
    plan: &Plan,
    shard: &ShardPlan,
    catalog: &Catalog,
    fetched: Vec<(String, Bytes)>,
) -> Result<Prepared> {
    let partitions: BTreeSet<i32> = shard.partitions.iter().copied().collect();
    let mut inputs = Vec::with_capacity(fetched.len());
    let mut filtered = Vec::with_capacity(fetched.len());
    let mut out_of_order = 0;
    for (path, bytes) in fetched {
        let segment = plan.segment(&path).expect("checked when fetched");
        let mut input = LineageInput {
            path: path.clone(),
            etag: segment.etag.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            rows: 0,
            seq_min: None,
            seq_max: None,
        };
        let batches = decode_segment(&path, bytes, &plan.source.columns)?;
        filtered.push(filter_segment(
            &batches,
            &partitions,
            &plan.window,
            &mut input,
            &mut out_of_order,
        )?);
        inputs.push(input);
    }
    let segment_paths: Vec<String> = inputs.iter().map(|i| i.path.clone()).collect();
    let ordered = order(filtered, out_of_order)?;
    let mut ctx = Context {
        plan,
        shard: &shard.id,
        catalog,
        segment_paths: &segment_paths,
        ordered: &ordered,
        applied: Applied {
            events_read: ordered.rows.num_rows() as u64,
            out_of_order: ordered.out_of_order,
            ..Applied::default()
        },
        quarantine: Quarantine::default(),
    };
    let mut fates = ctx.dedupe()?;
    if plan.source.contiguous_seq {
        ctx.gaps(&fates)?;
    }
    let schema = events_schema(catalog);
    let mut events = Vec::new();
    let mut start = 0;
    while start < fates.len() {
        let end = (start + CHUNK_ROWS).min(fates.len());
        if let Some(batch) = ctx.events_chunk(&schema, start..end, &mut fates)? {
            events.push(batch);
        }
        start = end;
    }
    ctx.count_versions(&fates);
    let Context {
        applied,
        quarantine,
        ..
    } = ctx;
    Ok(Prepared {
        schema,
        events,
        inputs,
        applied,
        quarantine,
    })
}

struct Context<'a> {
    plan: &'a Plan,
    shard: &'a str,
    catalog: &'a Catalog,
    segment_paths: &'a [String],
    ordered: &'a Ordered,
    applied: Applied,
    quarantine: Quarantine,
}

impl Context<'_> {
    fn col(&self, i: usize) -> &ArrayRef {
        self.ordered.rows.column(i)
    }

    fn str_at(&self, col: usize, row: usize) -> Option<&str> {
        let a = self.col(col).as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn i32_at(&self, col: usize, row: usize) -> Option<i32> {
        let a = self.col(col).as_primitive::<Int32Type>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn i64_at(&self, col: usize, row: usize) -> Option<i64> {
        let a = self.col(col).as_primitive::<Int64Type>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    /// Applies the policy of `kind` to row `row`: halt fails the shard, quarantine sets
    /// the event aside, allow only counts it.
    fn anomaly(
        &mut self,
        row: usize,
        kind: AnomalyKind,
        step: Option<String>,
        message: String,
    ) -> Result<()> {
        *self
            .applied
            .anomalies
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        match self.plan.checks.policy(kind) {
            Policy::Halt => Err(Error::Halted {
                shard: self.shard.to_owned(),
                kind,
                event_id: self.str_at(0, row).unwrap_or("-").to_owned(),
                segment: self.segment_paths[self.ordered.segment_of[row] as usize].clone(),
                partition: self.i32_at(2, row).unwrap_or_default(),
                seq: self
                    .i64_at(3, row)
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                message: match step {
                    Some(step) => format!("{step}: {message}"),
                    None => message,
                },
            }),
            Policy::Quarantine => {
                self.applied.quarantined += 1;
                let segment = self.segment_paths[self.ordered.segment_of[row] as usize].clone();
                self.quarantine.rows.push(QuarantineRow {
                    event_id: self.str_at(0, row).map(str::to_owned),
                    stream_id: self.str_at(1, row).map(str::to_owned),
                    partition: self.i32_at(2, row),
                    seq: self.i64_at(3, row),
                    event_type: self.str_at(4, row).map(str::to_owned),
                    schema_version: self.i32_at(5, row),
                    kind: kind.as_str(),
                    step,
                    message,
                    payload: self.str_at(7, row).map(str::to_owned),
                    segment,
                });
                Ok(())
            }
            Policy::Allow => {
                self.applied.allowed += 1;
                Ok(())
            }
        }
    }

    /// Envelope nulls become anomalies; rows sharing an event id are exact duplicates
    /// (same stream, type, version and parsed payload: the first in (partition, seq)
    /// order is kept) or conflicting ones (the later copies raise `conflicting_duplicate`).
    fn dedupe(&mut self) -> Result<Vec<Fate>> {
        let n = self.ordered.rows.num_rows();
        let ids = self.col(0).as_string::<i32>().clone();
        let mut fates = vec![Fate::Keep; n];
        let mut counts: HashMap<&str, u32> = HashMap::with_capacity(n);
        for row in 0..n {
            if !ids.is_null(row) {
                *counts.entry(ids.value(row)).or_default() += 1;
            }
        }
        // First copy of each repeated id: its identity and where it was.
        let mut firsts: HashMap<&str, ([u8; 32], i32, Option<i64>)> = HashMap::new();
        for (row, fate) in fates.iter_mut().enumerate() {
            let null = [
                (0, "event_id", AnomalyKind::InvalidPayload),
                (1, "stream_id", AnomalyKind::InvalidPayload),
                (3, "seq", AnomalyKind::InvalidPayload),
                (4, "event_type", AnomalyKind::UnknownType),
                (5, "schema_version", AnomalyKind::NoUpcastPath),
                (7, "payload", AnomalyKind::InvalidPayload),
            ]
            .into_iter()
            .find(|(col, _, _)| self.col(*col).is_null(row));
            if let Some((_, name, kind)) = null {
                *fate = Fate::Anomaly;
                self.anomaly(row, kind, None, format!("the envelope's {name} is null"))?;
                continue;
            }
            let id = ids.value(row);
            if counts[id] < 2 {
                continue;
            }
            let this = identity(
                self.str_at(1, row).unwrap_or_default(),
                self.str_at(4, row),
                self.i32_at(5, row),
                self.str_at(7, row),
            );
            match firsts.get(id) {
                None => {
                    firsts.insert(
                        id,
                        (
                            this,
                            self.i32_at(2, row).unwrap_or_default(),
                            self.i64_at(3, row),
                        ),
                    );
                }
                Some((first, _, _)) if *first == this => {
                    *fate = Fate::Duplicate;
                    self.applied.duplicates_dropped += 1;
                }
                Some((_, partition, seq)) => {
                    let message = format!(
                        "event id {id} was first seen at partition {partition}, seq {} with a different stream, type, version or payload",
                        seq.map_or_else(|| "-".to_owned(), |s| s.to_string())
                    );
                    *fate = Fate::Anomaly;
                    self.anomaly(row, AnomalyKind::ConflictingDuplicate, None, message)?;
                }
            }
        }
        Ok(fates)
    }

    /// With `source.contiguous_seq`: a hole between consecutive offsets of a partition is
    /// a `gap` anomaly, reported on the event after the hole (which is still replayed).
    fn gaps(&mut self, fates: &[Fate]) -> Result<()> {
        let mut last: Option<(i32, i64)> = None;
        for (row, fate) in fates.iter().enumerate() {
            if *fate == Fate::Duplicate {
                continue;
            }
            let (Some(p), Some(s)) = (self.i32_at(2, row), self.i64_at(3, row)) else {
                continue;
            };
            if let Some((lp, ls)) = last
                && lp == p
                && s > ls + 1
            {
                let message = format!("seq {}..{} missing in partition {p}", ls + 1, s - 1);
                // The event after the hole is fine and stays in the replay: quarantine
                // records the hole in the anomalies file without setting the event aside.
                self.anomaly(row, AnomalyKind::Gap, None, message)?;
            }
            last = Some((p, s));
        }
        Ok(())
    }

    /// Upcasts the kept rows of `range` and builds their `events` rows.
    fn events_chunk(
        &mut self,
        schema: &SchemaRef,
        range: std::ops::Range<usize>,
        fates: &mut [Fate],
    ) -> Result<Option<RecordBatch>> {
        let mut groups: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
        let types = self.col(4).as_string::<i32>().clone();
        let versions = self.col(5).as_primitive::<Int32Type>().clone();
        for row in range.clone() {
            if fates[row] == Fate::Keep {
                groups
                    .entry((types.value(row), versions.value(row)))
                    .or_default()
                    .push(row);
            }
        }
        let payloads = self.col(7).as_string::<i32>().clone();
        let mut upcast: Vec<(usize, Map<String, Value>)> = Vec::new();
        for ((event_type, version), rows) in groups {
            let texts: Vec<&str> = rows.iter().map(|&r| payloads.value(r)).collect();
            let outcomes = self
                .catalog
                .upcaster()
                .upcast_batch(event_type, version, &texts);
            for (row, outcome) in rows.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Ok(map) => upcast.push((row, map)),
                    Outcome::Anomaly {
                        kind,
                        step,
                        message,
                    } => {
                        fates[row] = Fate::Anomaly;
                        self.anomaly(row, kind, step, message)?;
                    }
                }
            }
        }
        if upcast.is_empty() {
            return Ok(None);
        }
        upcast.sort_unstable_by_key(|(row, _)| *row);
        self.applied.events_projected += upcast.len() as u64;
        let indices = UInt32Array::from_iter_values(upcast.iter().map(|(r, _)| *r as u32));
        let take_col = |i: usize| take(self.col(i).as_ref(), &indices, None).map_err(arrow_error);
        let mut columns: Vec<ArrayRef> = vec![
            take_col(0)?,
            take_col(1)?,
            take_col(2)?,
            take_col(3)?,
            take_col(4)?,
        ];
        let target_versions: Int32Array = upcast
            .iter()
            .map(|(r, _)| self.catalog.target_version(types.value(*r)))
            .collect();
        columns.push(Arc::new(target_versions));
        columns.push(take_col(6)?);
        let mut payload = StringBuilder::with_capacity(upcast.len(), upcast.len() * 64);
        for (_, map) in &upcast {
            payload.append_value(serde_json::to_string(map).expect("JSON maps serialize"));
        }
        columns.push(Arc::new(payload.finish()));
        columns.push(take_col(8)?);
        for column in self.catalog.typed_columns() {
            columns.push(typed_column(
                &column.data_type,
                &column.name,
                &column.event_types,
                upcast.iter().map(|(r, m)| (types.value(*r), m)),
            ));
        }
        let batch = RecordBatch::try_new(Arc::clone(schema), columns).map_err(arrow_error)?;
        Ok(Some(batch))
    }

    fn count_versions(&mut self, fates: &[Fate]) {
        let types = self.col(4).as_string::<i32>();
        let versions = self.col(5).as_primitive::<Int32Type>();
        let mut counts: BTreeMap<(String, i32), u64> = BTreeMap::new();
        for (row, fate) in fates.iter().enumerate() {
            if *fate != Fate::Duplicate && !types.is_null(row) && !versions.is_null(row) {
                *counts
                    .entry((types.value(row).to_owned(), versions.value(row)))
                    .or_default() += 1;
            }
        }
        self.applied.versions = counts
            .into_iter()
            .map(|((event_type, schema_version), events)| {
                let chain = match self.catalog.path(&event_type, schema_version) {
                    PathStatus::Upcastable { chain } => chain,
                    _ => Vec::new(),
                };
                let steps = self
                    .catalog
                    .get(&event_type)
                    .map(|contract| {
                        chain
                            .iter()
                            .filter_map(|v| contract.version(*v))
                            .map(|v| {
                                format!("version {}: {}", v.version(), v.step_kinds().join(", "))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                VersionApplied {
                    event_type,
                    schema_version,
                    events,
                    chain,
                    steps,
                }
            })
            .collect();
    }
}

/// One typed payload column over the upcast rows: the property's value for event types
/// whose target schema declares it, null otherwise.
fn typed_column<'a>(
    data_type: &DataType,
    name: &str,
    event_types: &[String],
    rows: impl Iterator<Item = (&'a str, &'a Map<String, Value>)>,
) -> ArrayRef {
    let values = rows.map(|(t, m)| {
        if event_types.binary_search_by(|e| e.as_str().cmp(t)).is_ok() {
            m.get(name).filter(|v| !v.is_null())
        } else {
            None
        }
    });
    match data_type {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(v.and_then(|v| {
                    v.as_i64().or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                            .map(|f| f as i64)
                    })
                }));
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            for v in values {
                b.append_option(v.and_then(Value::as_f64));
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                b.append_option(v.and_then(Value::as_bool));
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(_, tz) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone());
            for v in values {
                b.append_option(v.and_then(Value::as_str).and_then(|s| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .ok()
                        .map(|t| t.timestamp_micros())
                }));
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// Quarantined events, written to `runs/<run>/anomalies/<shard>.parquet`.
#[derive(Debug, Default)]
struct Quarantine {
    rows: Vec<QuarantineRow>,
}

#[derive(Debug)]
struct QuarantineRow {
    event_id: Option<String>,
    stream_id: Option<String>,
    partition: Option<i32>,
    seq: Option<i64>,
    event_type: Option<String>,
    schema_version: Option<i32>,
    kind: &'static str,
    step: Option<String>,
    message: String,
    payload: Option<String>,
    segment: String,
}

/// The anomalies file's schema.
pub fn anomalies_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("stream_id", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("seq", DataType::Int64, true),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("schema_version", DataType::Int32, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, true),
        Field::new("segment", DataType::Utf8, false),
    ]))
}

impl Quarantine {
    fn into_batch(self) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let r = &self.rows;
        let strings = |f: &dyn Fn(&QuarantineRow) -> Option<&str>| -> ArrayRef {
            Arc::new(r.iter().map(f).collect::<StringArray>())
        };
        let mut partition = Int32Builder::new();
        let mut seq = Int64Builder::new();
        let mut version = Int32Builder::new();
        for row in r {
            partition.append_option(row.partition);
            seq.append_option(row.seq);
            version.append_option(row.schema_version);
        }
        let columns: Vec<ArrayRef> = vec![
            strings(&|q| q.event_id.as_deref()),
            strings(&|q| q.stream_id.as_deref()),
            Arc::new(partition.finish()),
            Arc::new(seq.finish()),
            strings(&|q| q.event_type.as_deref()),
            Arc::new(version.finish()),
            strings(&|q| Some(q.kind)),
            strings(&|q| q.step.as_deref()),
            strings(&|q| Some(q.message.as_str())),
            strings(&|q| q.payload.as_deref()),
            strings(&|q| Some(q.segment.as_str())),
        ];
        RecordBatch::try_new(anomalies_schema(), columns)
            .map(Some)
            .map_err(arrow_error)
    }
}
