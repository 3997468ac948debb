//! The shard's replay as one chain of streams over one DataFusion session, so memory is
//! bounded by `limits.memory` whatever the history length: both sorts and the
//! projection's aggregation share the session's spilling memory pool.
//!
//! ```text
//! segments (one at a time: fetch, hash, decode, filter)            ── raw
//!   ─▶ ORDER BY event_id, partition, seq, __ord   (external sort)
//!   ─▶ dedupe: envelope nulls, exact duplicates, conflicting ones  ── kept
//!   ─▶ ORDER BY partition, seq, __ord             (external sort)
//!   ─▶ gaps, upcast + validate per (type, version), policies       ── events
//!   ─▶ the projection SQL ORDER BY key            (aggregation, external sort)
//! ```
//!
//! `__seg` (the segment's index in the shard) and `__ord` (the row's position in segment
//! then file order) make every sort total, so the fold sees one order on every run.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int32Array, Int32Builder,
        Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
        UInt32Array, UInt64Array,
    },
    compute::{filter_record_batch, take},
    datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef},
};
use datafusion::{
    catalog::streaming::StreamingTable,
    error::DataFusionError,
    execution::{SendableRecordBatchStream, TaskContext},
    physical_plan::{stream::RecordBatchStreamAdapter, streaming::PartitionStream},
    prelude::SessionContext,
};
use futures::{StreamExt, TryStreamExt};
use replayfleet_archive::{
    Location, SegmentBatches, decode_segment_batches, envelope_schema, fetch_segment,
};
use replayfleet_config::{AnomalyKind, Policy};
use replayfleet_contracts::{Catalog, Outcome, PathStatus};
use serde_json::Value;

use crate::{
    Error, Result,
    canonical::identity,
    layout::sha256_hex,
    lineage::{Applied, LineageInput, VersionApplied},
    order::{SegmentFilter, arrow_error},
    plan::{Plan, ShardPlan},
    project::{events_schema, keyed_query, query_only, session},
};

/// Segments fetched ahead of the one being decoded.
const PREFETCH: usize = 2;

/// What the stages learn while the rows stream through.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub inputs: Vec<LineageInput>,
    pub applied: Applied,
    pub quarantine: Vec<QuarantineRow>,
    versions: BTreeMap<(String, i32), u64>,
}

type Shared = Arc<Mutex<Tally>>;

/// The running pipeline: the projection's sorted output and what was tallied.
pub(crate) struct Pipeline {
    pub output: SendableRecordBatchStream,
    pub tally: Shared,
    /// Keeps the session (and its spill files) alive while the output streams.
    pub session: SessionContext,
}

/// Builds the chain for one shard; nothing is read until the output is polled.
pub(crate) async fn start(
    plan: &Arc<Plan>,
    shard: &ShardPlan,
    source: &Location,
    catalog: &Catalog,
    pacer: Option<Arc<dyn crate::Pacer>>,
) -> Result<Pipeline> {
    let tally: Shared = Arc::default();
    let ctx = session(plan.memory_limit_bytes)?;
    let fail = |e: DataFusionError| Error::Projection {
        shard: shard.id.clone(),
        message: e.to_string(),
    };
    // Each stage is a table of the stream before it, read by one query.
    let stage = async |table: &str, stream, sql: &str| {
        register(&ctx, table, stream)?;
        ctx.sql_with_options(sql, query_only())
            .await?
            .execute_stream()
            .await
    };

    let raw = raw_stream(plan, shard, source, &tally, pacer)?;
    let by_id = stage(
        "raw",
        raw,
        "SELECT * FROM raw ORDER BY event_id NULLS FIRST, \"partition\", seq NULLS LAST, __ord",
    )
    .await
    .map_err(fail)?;
    let policies = Policies::new(plan, shard, &tally);
    let kept = dedupe(by_id, policies.clone());
    let by_seq = stage(
        "kept",
        kept,
        "SELECT * FROM kept ORDER BY \"partition\", seq, __ord",
    )
    .await
    .map_err(fail)?;
    let events = upcast(by_seq, events_schema(catalog), catalog.clone(), policies);
    let output = stage(
        "events",
        events,
        &keyed_query(&plan.projection.sql, &plan.projection.key),
    )
    .await
    .map_err(fail)?;
    Ok(Pipeline {
        output,
        tally,
        session: ctx,
    })
}

/// Turns a stream error back into the replay error it carries.
pub(crate) fn unwrap_error(shard: &str, e: DataFusionError) -> Error {
    let e = e.find_root();
    if let DataFusionError::External(inner) = e
        && let Some(err) = inner.downcast_ref::<SharedError>()
        && let Some(error) = err.0.lock().expect("error lock").take()
    {
        return error;
    }
    Error::Projection {
        shard: shard.to_owned(),
        message: e.to_string(),
    }
}

/// A replay error travelling through DataFusion (which needs `Sync` errors).
#[derive(Debug)]
struct SharedError(Mutex<Option<Error>>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.lock().expect("error lock").as_ref() {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("replay error"),
        }
    }
}

impl std::error::Error for SharedError {}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(SharedError(Mutex::new(Some(e)))))
}

/// A one-shot stream as a table of one partition.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneShot")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        self.stream
            .lock()
            .expect("stream lock")
            .take()
            .expect("a replay stage is read once")
    }
}

fn register(
    ctx: &SessionContext,
    name: &str,
    stream: SendableRecordBatchStream,
) -> datafusion::error::Result<()> {
    let schema = stream.schema();
    let partition: Arc<dyn PartitionStream> = Arc::new(OneShot {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some(stream)),
    });
    let table = StreamingTable::try_new(schema, vec![partition])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// The envelope plus `__seg` and `__ord`.
fn raw_schema() -> SchemaRef {
    let mut fields: Vec<Field> = envelope_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("__seg", DataType::UInt32, false));
    fields.push(Field::new("__ord", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// The shard's segments, one at a time (a few fetched ahead): bytes hashed, decoded,
/// filtered to the shard's partitions and the window.
fn raw_stream(
    plan: &Arc<Plan>,
    shard: &ShardPlan,
    source: &Location,
    tally: &Shared,
    pacer: Option<Arc<dyn crate::Pacer>>,
) -> Result<SendableRecordBatchStream> {
    let mut fetches = Vec::with_capacity(shard.segments.len());
    for path in &shard.segments {
        let segment = plan.segment(path).cloned().ok_or_else(|| Error::Format {
            path: crate::Target::plan_path(&plan.run_id),
            message: format!(
                "shard {} names segment {path}, which the plan lacks",
                shard.id
            ),
        })?;
        let source = source.clone();
        fetches.push(async move {
            let bytes = fetch_segment(&source, &segment.segment_ref()).await?;
            Ok::<_, Error>((segment, bytes))
        });
    }
    let schema = raw_schema();
    let partitions: Arc<BTreeSet<i32>> = Arc::new(shard.partitions.iter().copied().collect());
    let plan = Arc::clone(plan);
    let tally = Arc::clone(tally);
    let ord = Arc::new(AtomicU64::new(0));
    let out_schema = Arc::clone(&schema);
    let stream = futures::stream::iter(fetches)
        .buffered(PREFETCH)
        .enumerate()
        .map(move |(index, fetched)| {
            let (segment, bytes) = fetched.map_err(external)?;
            let input = LineageInput {
                path: segment.path.clone(),
                etag: segment.etag.clone(),
                sha256: sha256_hex(&bytes),
                bytes: bytes.len() as u64,
                rows: 0,
                seq_min: None,
                seq_max: None,
            };
            let batches = decode_segment_batches(&segment.path, bytes, &plan.source.mapping)
                .map_err(|e| external(e.into()))?;
            Ok::<_, DataFusionError>(futures::stream::iter(SegmentRows {
                batches,
                index: index as u32,
                filter: Some(SegmentFilter::new(input)),
                plan: Arc::clone(&plan),
                partitions: Arc::clone(&partitions),
                ord: Arc::clone(&ord),
                tally: Arc::clone(&tally),
                schema: Arc::clone(&out_schema),
            }))
        })
        .try_flatten()
        .and_then(move |batch| {
            let pacer = pacer.clone();
            async move {
                if let Some(pacer) = pacer {
                    pacer
                        .pace(batch.num_rows() as u64)
                        .await
                        .map_err(|message| external(Error::Paced { message }))?;
                }
                Ok(batch)
            }
        });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// One segment's rows, a batch at a time, filtered and numbered; its lineage figures go
/// to the tally once it is read to the end.
struct SegmentRows {
    batches: SegmentBatches,
    index: u32,
    filter: Option<SegmentFilter>,
    plan: Arc<Plan>,
    partitions: Arc<BTreeSet<i32>>,
    ord: Arc<AtomicU64>,
    tally: Shared,
    schema: SchemaRef,
}

impl Iterator for SegmentRows {
    type Item = datafusion::error::Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let filter = self.filter.as_mut()?;
            let batch = match self.batches.next() {
                None => {
                    let done = self.filter.take().expect("checked above");
                    let mut t = self.tally.lock().expect("tally lock");
                    t.applied.out_of_order += done.out_of_order;
                    t.applied.events_read += done.input.rows;
                    t.inputs.push(done.input);
                    return None;
                }
                Some(Err(e)) => return Some(Err(external(e.into()))),
                Some(Ok(batch)) => batch,
            };
            let kept = match filter.filter(&batch, &self.partitions, &self.plan.window) {
                Ok(kept) => kept,
                Err(e) => return Some(Err(external(e))),
            };
            let n = kept.num_rows();
            if n == 0 {
                continue;
            }
            let first = self.ord.fetch_add(n as u64, Ordering::Relaxed);
            let mut columns = kept.columns().to_vec();
            columns.push(Arc::new(UInt32Array::from(vec![self.index; n])));
            columns.push(Arc::new(UInt64Array::from_iter_values(
                first..first + n as u64,
            )));
            return Some(
                RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(Into::into),
            );
        }
    }
}

/// Column positions in raw, kept and sorted batches.
const EVENT_ID: usize = 0;
const STREAM_ID: usize = 1;
const PARTITION: usize = 2;
const SEQ: usize = 3;
const EVENT_TYPE: usize = 4;
const VERSION: usize = 5;
const PAYLOAD: usize = 7;
const SEG: usize = 9;

fn str_at(batch: &RecordBatch, col: usize, row: usize) -> Option<&str> {
    let a = batch.column(col).as_string::<i32>();
    (!a.is_null(row)).then(|| a.value(row))
}

fn i32_at(batch: &RecordBatch, col: usize, row: usize) -> Option<i32> {
    let a = batch.column(col).as_primitive::<Int32Type>();
    (!a.is_null(row)).then(|| a.value(row))
}

fn i64_at(batch: &RecordBatch, col: usize, row: usize) -> Option<i64> {
    let a = batch.column(col).as_primitive::<Int64Type>();
    (!a.is_null(row)).then(|| a.value(row))
}

/// The anomaly policies, applied to rows of any stage.
#[derive(Clone)]
struct Policies {
    plan: Arc<Plan>,
    shard: String,
    segments: Arc<Vec<String>>,
    tally: Shared,
}

impl Policies {
    fn new(plan: &Arc<Plan>, shard: &ShardPlan, tally: &Shared) -> Self {
        Policies {
            plan: Arc::clone(plan),
            shard: shard.id.clone(),
            segments: Arc::new(shard.segments.clone()),
            tally: Arc::clone(tally),
        }
    }

    /// Halt fails the shard, quarantine sets the event aside, allow only counts it.
    fn apply(
        &self,
        batch: &RecordBatch,
        row: usize,
        kind: AnomalyKind,
        step: Option<String>,
        message: String,
    ) -> Result<()> {
        let segment = batch
            .column(SEG)
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .value(row);
        let segment = self.segments[segment as usize].clone();
        let mut tally = self.tally.lock().expect("tally lock");
        *tally
            .applied
            .anomalies
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        match self.plan.checks.policy(kind) {
            Policy::Halt => Err(Error::Halted {
                shard: self.shard.clone(),
                kind,
                event_id: str_at(batch, EVENT_ID, row).unwrap_or("-").to_owned(),
                segment,
                partition: i32_at(batch, PARTITION, row).unwrap_or_default(),
                seq: i64_at(batch, SEQ, row).map_or_else(|| "-".to_owned(), |s| s.to_string()),
                message: match step {
                    Some(step) => format!("{step}: {message}"),
                    None => message,
                },
            }),
            Policy::Quarantine => {
                tally.applied.quarantined += 1;
                tally.quarantine.push(QuarantineRow {
                    event_id: str_at(batch, EVENT_ID, row).map(str::to_owned),
                    stream_id: str_at(batch, STREAM_ID, row).map(str::to_owned),
                    partition: i32_at(batch, PARTITION, row),
                    seq: i64_at(batch, SEQ, row),
                    event_type: str_at(batch, EVENT_TYPE, row).map(str::to_owned),
                    schema_version: i32_at(batch, VERSION, row),
                    kind: kind.as_str(),
                    step,
                    message,
                    payload: str_at(batch, PAYLOAD, row).map(str::to_owned),
                    segment,
                });
                Ok(())
            }
            Policy::Allow => {
                tally.applied.allowed += 1;
                Ok(())
            }
        }
    }
}

/// The first copy of the event id being read, for comparing later copies with it.
struct First {
    id: String,
    batch: RecordBatch,
    row: usize,
    identity: Option<[u8; 32]>,
}

fn row_identity(batch: &RecordBatch, row: usize) -> [u8; 32] {
    identity(
        str_at(batch, STREAM_ID, row).unwrap_or_default(),
        str_at(batch, EVENT_TYPE, row),
        i32_at(batch, VERSION, row),
        str_at(batch, PAYLOAD, row),
    )
}

/// Over rows sorted by (event_id, partition, seq): envelope nulls become anomalies; the
/// first copy of an id is kept; a later copy equal in stream, type, version and parsed
/// payload is an exact duplicate (dropped and counted), any other raises
/// `conflicting_duplicate`.
fn dedupe(input: SendableRecordBatchStream, policies: Policies) -> SendableRecordBatchStream {
    let schema = input.schema();
    let mut first: Option<First> = None;
    let stream = input.map(move |batch| {
        let batch = batch?;
        let mut keep = BooleanBuilder::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let null = [
                (EVENT_ID, "event_id", AnomalyKind::InvalidPayload),
                (STREAM_ID, "stream_id", AnomalyKind::InvalidPayload),
                (SEQ, "seq", AnomalyKind::InvalidPayload),
                (EVENT_TYPE, "event_type", AnomalyKind::UnknownType),
                (VERSION, "schema_version", AnomalyKind::NoUpcastPath),
                (PAYLOAD, "payload", AnomalyKind::InvalidPayload),
            ]
            .into_iter()
            .find(|(col, _, _)| batch.column(*col).is_null(row));
            if let Some((_, name, kind)) = null {
                keep.append_value(false);
                policies
                    .apply(&batch, row, kind, None, format!("the envelope's {name} is null"))
                    .map_err(external)?;
                continue;
            }
            let id = str_at(&batch, EVENT_ID, row).expect("checked for null");
            match &mut first {
                Some(f) if f.id == id => {
                    keep.append_value(false);
                    let theirs = *f
                        .identity
                        .get_or_insert_with(|| row_identity(&f.batch, f.row));
                    if theirs == row_identity(&batch, row) {
                        policies.tally.lock().expect("tally lock").applied.duplicates_dropped += 1;
                    } else {
                        let message = format!(
                            "event id {id} was first seen at partition {}, seq {} with a different stream, type, version or payload",
                            i32_at(&f.batch, PARTITION, f.row).unwrap_or_default(),
                            i64_at(&f.batch, SEQ, f.row).map_or_else(|| "-".to_owned(), |s| s.to_string())
                        );
                        policies
                            .apply(&batch, row, AnomalyKind::ConflictingDuplicate, None, message)
                            .map_err(external)?;
                    }
                }
                _ => {
                    keep.append_value(true);
                    first = Some(First {
                        id: id.to_owned(),
                        batch: batch.clone(),
                        row,
                        identity: None,
                    });
                }
            }
        }
        Ok(filter_record_batch(&batch, &keep.finish())?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Over kept rows sorted by (partition, seq): gaps (with `source.contiguous_seq`),
/// then every event upcast and validated; the `events` rows of those that pass.
fn upcast(
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    catalog: Catalog,
    policies: Policies,
) -> SendableRecordBatchStream {
    let out_schema = Arc::clone(&schema);
    let mut last: Option<(i32, i64)> = None;
    let contiguous = policies.plan.source.contiguous_seq;
    let stream = input
        .map(move |batch| {
            let batch = batch?;
            if contiguous {
                for row in 0..batch.num_rows() {
                    let (p, s) = (
                        i32_at(&batch, PARTITION, row).unwrap_or_default(),
                        i64_at(&batch, SEQ, row).unwrap_or_default(),
                    );
                    if let Some((lp, ls)) = last
                        && lp == p
                        && s > ls + 1
                    {
                        // The event after the hole is fine and stays in the replay:
                        // quarantine records the hole without setting the event aside.
                        let message = format!("seq {}..{} missing in partition {p}", ls + 1, s - 1);
                        policies
                            .apply(&batch, row, AnomalyKind::Gap, None, message)
                            .map_err(external)?;
                    }
                    last = Some((p, s));
                }
            }
            events_batch(&batch, &out_schema, &catalog, &policies).map_err(external)
        })
        .try_filter_map(|b| futures::future::ready(Ok(b)));
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Upcasts one sorted batch and builds its `events` rows.
fn events_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
    catalog: &Catalog,
    policies: &Policies,
) -> Result<Option<RecordBatch>> {
    let types = batch.column(EVENT_TYPE).as_string::<i32>();
    let versions = batch.column(VERSION).as_primitive::<Int32Type>();
    let payloads = batch.column(PAYLOAD).as_string::<i32>();
    let mut groups: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
    for row in 0..batch.num_rows() {
        groups
            .entry((types.value(row), versions.value(row)))
            .or_default()
            .push(row);
    }
    {
        let mut tally = policies.tally.lock().expect("tally lock");
        for ((t, v), rows) in &groups {
            *tally.versions.entry(((*t).to_owned(), *v)).or_default() += rows.len() as u64;
        }
    }
    // Each upcast payload becomes its `events` cells as soon as the upcaster makes it
    // (its JSON text and its typed columns), so the batch's maps are never all held.
    let typed = catalog.typed_columns();
    let mut upcast: Vec<Upcast> = Vec::with_capacity(batch.num_rows());
    for ((event_type, version), rows) in groups {
        let texts: Vec<&str> = rows.iter().map(|&r| payloads.value(r)).collect();
        // Which typed columns this type feeds, once per group.
        let feeds: Vec<bool> = typed
            .iter()
            .map(|c| {
                c.event_types
                    .binary_search_by(|e| e.as_str().cmp(event_type))
                    .is_ok()
            })
            .collect();
        // The first anomaly whose policy fails the shard stops it (after this group).
        let mut applied = Ok(());
        catalog
            .upcaster()
            .upcast_each(event_type, version, &texts, |i, outcome| match outcome {
                Outcome::Ok(map) => upcast.push(Upcast {
                    row: rows[i],
                    payload: serde_json::to_string(&map).expect("JSON maps serialize"),
                    cells: typed
                        .iter()
                        .zip(&feeds)
                        .map(|(c, feeds)| {
                            feeds
                                .then(|| map.get(&c.name))
                                .flatten()
                                .map_or(Cell::Null, |v| Cell::of(&c.data_type, v))
                        })
                        .collect(),
                }),
                Outcome::Anomaly {
                    kind,
                    step,
                    message,
                } => {
                    if applied.is_ok() {
                        applied = policies.apply(batch, rows[i], kind, step, message);
                    }
                }
            });
        applied?;
    }
    if upcast.is_empty() {
        return Ok(None);
    }
    upcast.sort_unstable_by_key(|u| u.row);
    policies
        .tally
        .lock()
        .expect("tally lock")
        .applied
        .events_projected += upcast.len() as u64;
    let indices = UInt32Array::from_iter_values(upcast.iter().map(|u| u.row as u32));
    let take_col = |i: usize| take(batch.column(i).as_ref(), &indices, None).map_err(arrow_error);
    let mut columns: Vec<ArrayRef> = (0..5).map(take_col).collect::<Result<_>>()?;
    let target_versions: Int32Array = upcast
        .iter()
        .map(|u| catalog.target_version(types.value(u.row)))
        .collect();
    columns.push(Arc::new(target_versions));
    columns.push(take_col(6)?);
    let mut payload =
        StringBuilder::with_capacity(upcast.len(), upcast.iter().map(|u| u.payload.len()).sum());
    for u in &upcast {
        payload.append_value(&u.payload);
    }
    columns.push(Arc::new(payload.finish()));
    columns.push(take_col(8)?);
    for (i, column) in typed.iter().enumerate() {
        columns.push(typed_column(
            &column.data_type,
            upcast.iter().map(|u| &u.cells[i]),
        ));
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map(Some)
        .map_err(arrow_error)
}

/// One upcast event's `events` cells: its row in the sorted batch, its payload's JSON
/// text and its typed columns' values.
struct Upcast {
    row: usize,
    payload: String,
    cells: Vec<Cell>,
}

/// A typed payload column's value for one event (SPEC section 2's mapping of JSON Schema
/// types onto Arrow): null when the event's type does not have the column, the field is
/// absent or null, or the value does not fit the column.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Micros(i64),
    Text(String),
}

impl Cell {
    fn of(data_type: &DataType, v: &Value) -> Cell {
        let cell = match data_type {
            DataType::Int64 => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                })
                .map(Cell::Int),
            DataType::Float64 => v.as_f64().map(Cell::Float),
            DataType::Boolean => v.as_bool().map(Cell::Bool),
            DataType::Timestamp(..) => v.as_str().and_then(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| Cell::Micros(t.timestamp_micros()))
            }),
            _ => match v {
                Value::Null => None,
                Value::String(s) => Some(Cell::Text(s.clone())),
                other => Some(Cell::Text(other.to_string())),
            },
        };
        cell.unwrap_or(Cell::Null)
    }
}

impl Tally {
    /// Events per (type, input version) with their upcaster chains.
    pub(crate) fn versions(&self, catalog: &Catalog) -> Vec<VersionApplied> {
        self.versions
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
                            .map(|v| {
                                format!("version {}: {}", v.version(), v.step_kinds().join(", "))
                            })
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
}

/// One typed payload column over the upcast rows: the property's value for event types
/// whose target schema declares it, null otherwise.
fn typed_column<'a>(data_type: &DataType, cells: impl Iterator<Item = &'a Cell>) -> ArrayRef {
    match data_type {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Int(i) => Some(*i),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Float(f) => Some(*f),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Bool(v) => Some(*v),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(_, tz) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone());
            for c in cells {
                b.append_option(match c {
                    Cell::Micros(t) => Some(*t),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for c in cells {
                match c {
                    Cell::Text(s) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// One quarantined event.
#[derive(Debug)]
pub(crate) struct QuarantineRow {
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

/// The quarantined events as one batch, in (partition, seq, kind, event id) order so the
/// file does not depend on which stage found each anomaly first.
pub(crate) fn quarantine_batch(mut rows: Vec<QuarantineRow>) -> Result<Option<RecordBatch>> {
    if rows.is_empty() {
        return Ok(None);
    }
    rows.sort_by(|a, b| {
        (
            a.partition,
            a.seq,
            a.kind,
            &a.event_id,
            &a.segment,
            &a.message,
        )
            .cmp(&(
                b.partition,
                b.seq,
                b.kind,
                &b.event_id,
                &b.segment,
                &b.message,
            ))
    });
    let r = &rows;
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
