//! `explain`: one projection row and every event behind it.
//!
//! ```text
//!  _delta_log/<N>.json ──▶ the segment whose key range holds the key ──▶ the row
//!  runs/<run>/shards/<shard>/lineage.json ──▶ the input segments the shard read
//!  each input segment ──▶ row groups whose stream_id / event_id statistics can hold a key
//!                         value ──▶ the events of the key's stream (or the keyed event)
//!  each event ──▶ duplicate? anomaly? ──▶ each upcaster of its chain, payload after it
//! ```
//!
//! A key's row comes from one stream (docs/CONCEPTS.md, "Projection"): the key is
//! `stream_id`, contains it, or is `event_id`. So the events behind a row are the shard's
//! events whose `stream_id` or `event_id` equals one of the key's values, inside the
//! plan's window, judged as the replay judged them: the first copy of an event id in
//! (partition, seq, file) order is kept, later copies are duplicates; then the upcaster
//! chain.

use std::collections::{BTreeMap, BTreeSet};

use arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{Int32Type, Int64Type, TimestampMicrosecondType},
};
use bytes::Bytes;
use parquet::{
    arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder},
    file::{metadata::RowGroupMetaData, statistics::Statistics},
};
use replayfleet_archive::{Location, decode_row_group, fetch_segment};
use replayfleet_config::AnomalyKind;
use replayfleet_contracts::{Catalog, Outcome, PathStatus};
use replayfleet_finalizer::{Commit, CommitSegment};
use replayfleet_replay::{Plan, Target, json_value, sha256_hex};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Error, Result, load};

/// What to explain.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    /// The version (default: the current one).
    pub version: Option<u64>,
    /// The key: one `(column, value)` per key column, values as text.
    pub key: Vec<(String, String)>,
}

/// A row and the events behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The version explained.
    pub version: u64,
    /// The run whose segments it holds.
    pub run_id: String,
    /// The shard that wrote the row.
    pub shard: String,
    /// The projection segment holding the row, relative to the target.
    pub segment: String,
    /// The row, column by column.
    pub row: Map<String, Value>,
    /// The shard's lineage manifest.
    pub lineage: String,
    /// Every event of the key's stream the shard read, in (partition, seq) order.
    pub events: Vec<ExplainedEvent>,
    /// Row groups of the input segments read.
    pub row_groups_read: u64,
    /// Row groups skipped by their `stream_id` / `event_id` statistics.
    pub row_groups_skipped: u64,
    /// Remarks (an input segment whose bytes changed since the replay).
    pub notes: Vec<String>,
}

/// One event behind a row.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedEvent {
    /// Its id.
    pub event_id: Option<String>,
    /// Its stream.
    pub stream_id: Option<String>,
    /// Its partition.
    pub partition: Option<i32>,
    /// Its seq.
    pub seq: Option<i64>,
    /// When it occurred (RFC 3339).
    pub occurred_at: Option<String>,
    /// The input segment it is in, relative to the archive.
    pub segment: String,
    /// Its row in that segment (from 0, in file order).
    pub row: u64,
    /// Its type.
    pub event_type: Option<String>,
    /// Its version in the archive.
    pub schema_version: Option<i32>,
    /// `projected` (it reached the `events` table), `duplicate` (an exact duplicate of an
    /// earlier copy, dropped) or `anomaly` (see `anomaly`).
    pub status: String,
    /// The anomaly it raised and how its policy handled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<ExplainedAnomaly>,
    /// The upcasters applied, in order: one per version of its chain.
    pub upcast: Vec<UpcastStep>,
    /// The payload as archived.
    pub payload_before: Value,
    /// The payload the projection saw (at the target version), when it was projected.
    pub payload_after: Option<Value>,
}

/// An anomaly one event raised.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedAnomaly {
    /// The kind.
    pub kind: String,
    /// The plan's policy for it.
    pub policy: String,
    /// The failing step, if any.
    pub step: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// One upcaster of an event's chain.
#[derive(Debug, Clone, Serialize)]
pub struct UpcastStep {
    /// The version it produces.
    pub version: i32,
    /// Its step kinds, in order (`rename`, `default`, `sql`, `jq`...).
    pub steps: Vec<String>,
    /// The payload after it (validated against that version's schema).
    pub payload: Option<Value>,
    /// Why there is no payload: the step failed, or the result is not valid at that
    /// version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Explains one row of a version of the projection in `target`, reading the archive its
/// plan names with `source_options`.
pub async fn explain(
    target: &Target,
    source_options: &BTreeMap<String, String>,
    options: &ExplainOptions,
) -> Result<Explanation> {
    let commit = load::commit(target, options.version).await?;
    let key = key_values(&commit, &options.key)?;
    let (segment, row) = find_row(target, &commit, &key).await?;
    let plan = load::plan(target, &commit.run_id)
        .await?
        .map_err(|why| Error::Conflict(format!("version {}: {why}", commit.version)))?;
    let lineage = load::lineage(target, &plan.run_id, &segment.shard)
        .await?
        .map_err(|why| Error::Conflict(format!("version {}: {why}", commit.version)))?;
    let shard = plan.shard(&segment.shard).ok_or_else(|| {
        Error::Conflict(format!(
            "`{}` has no shard {}",
            Target::plan_path(&plan.run_id),
            segment.shard
        ))
    })?;
    let source = Location::parse(&plan.source.url, None, source_options)?;
    let wanted: BTreeSet<String> = key.iter().map(|(_, v)| v.clone()).collect();
    let mut explanation = Explanation {
        version: commit.version,
        run_id: commit.run_id.clone(),
        shard: segment.shard.clone(),
        segment: segment.path.clone(),
        row,
        lineage: Target::lineage_path(&plan.run_id, &shard.id),
        events: Vec::new(),
        row_groups_read: 0,
        row_groups_skipped: 0,
        notes: Vec::new(),
    };
    let partitions: BTreeSet<i32> = shard.partitions.iter().copied().collect();
    let mut found = Vec::new();
    for (index, path) in shard.segments.iter().enumerate() {
        let input = plan.segment(path).ok_or_else(|| {
            Error::Conflict(format!(
                "shard {} names segment {path}, which the plan lacks",
                shard.id
            ))
        })?;
        let bytes = fetch_segment(&source, &input.segment_ref()).await?;
        if let Some(read) = lineage.inputs.iter().find(|i| &i.path == path)
            && read.sha256 != sha256_hex(&bytes)
        {
            explanation.notes.push(format!(
                "input `{path}` changed since the replay (sha256 {} then, {} now): these events may not be the ones replayed",
                read.sha256,
                sha256_hex(&bytes)
            ));
        }
        found.extend(
            events_in(
                &plan,
                (index, path),
                bytes,
                &wanted,
                &partitions,
                &mut explanation,
            )
            .await?,
        );
    }
    explanation.events = judge(&plan, found)?;
    Ok(explanation)
}

/// The `--key` pairs in the commit's key order; every key column exactly once.
fn key_values(commit: &Commit, given: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut by_column: BTreeMap<&str, &str> = BTreeMap::new();
    for (column, value) in given {
        if !commit.key.contains(column) {
            return Err(Error::Input(format!(
                "--key {column}={value}: `{column}` is not a key column of {} (its key: {})",
                commit.projection,
                commit.key.join(", ")
            )));
        }
        if by_column.insert(column, value).is_some() {
            return Err(Error::Input(format!("--key {column} is given twice")));
        }
    }
    commit
        .key
        .iter()
        .map(|column| match by_column.get(column.as_str()) {
            Some(value) => Ok((column.clone(), (*value).to_owned())),
            None => Err(Error::Input(format!(
                "the key of {} is ({}): --key {column}=VALUE is missing",
                commit.projection,
                commit.key.join(", ")
            ))),
        })
        .collect()
}

/// A cell as the text `--key` compares with: strings as they are, the rest as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a segment's key range may hold a row whose first key column is `first`.
fn may_hold(segment: &CommitSegment, first: &str) -> bool {
    let bound = |b: &Option<Vec<Value>>| b.as_ref().and_then(|k| k.first().cloned());
    let (Some(min), Some(max)) = (bound(&segment.key_min), bound(&segment.key_max)) else {
        return segment.rows > 0;
    };
    match (&min, &max) {
        (Value::String(lo), Value::String(hi)) => lo.as_str() <= first && first <= hi.as_str(),
        (Value::Number(lo), Value::Number(hi)) => {
            match (first.parse::<f64>(), lo.as_f64(), hi.as_f64()) {
                (Ok(v), Some(lo), Some(hi)) => lo <= v && v <= hi,
                _ => true,
            }
        }
        _ => true,
    }
}

/// The committed row with this key, and the segment holding it.
async fn find_row(
    target: &Target,
    commit: &Commit,
    key: &[(String, String)],
) -> Result<(CommitSegment, Map<String, Value>)> {
    for segment in commit.segments.iter().filter(|s| may_hold(s, &key[0].1)) {
        let bytes = target.get(&segment.path).await?.ok_or_else(|| {
            Error::Conflict(format!(
                "version {} names {}, which is gone",
                commit.version, segment.path
            ))
        })?;
        let failed = |e: parquet::errors::ParquetError| replayfleet_replay::Error::Format {
            path: segment.path.clone(),
            message: e.to_string(),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(failed)?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(e.into()))?;
            if let Some(row) = row_with_key(&batch, key) {
                return Ok((segment.clone(), row));
            }
        }
    }
    let shown: Vec<String> = key.iter().map(|(c, v)| format!("{c}={v}")).collect();
    Err(Error::Input(format!(
        "version {} of {} has no row with {}",
        commit.version,
        commit.projection,
        shown.join(", ")
    )))
}

fn row_with_key(batch: &RecordBatch, key: &[(String, String)]) -> Option<Map<String, Value>> {
    let columns: Vec<_> = key
        .iter()
        .map(|(c, v)| Some((batch.column_by_name(c)?, v)))
        .collect::<Option<_>>()?;
    let row = (0..batch.num_rows()).find(|&row| {
        columns
            .iter()
            .all(|(col, v)| !col.is_null(row) && text_of(&json_value(col, row)) == **v)
    })?;
    Some(
        batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), json_value(batch.column(i), row)))
            .collect(),
    )
}

/// One archived row of the key's stream.
#[derive(Debug)]
struct Found {
    event: ExplainedEvent,
    payload: Option<String>,
    order: (i32, i64, usize, u64),
}

/// Whether a row group's statistics of `column` can hold any of `wanted`.
fn stats_may_hold(
    group: &RowGroupMetaData,
    column: Option<&str>,
    wanted: &BTreeSet<String>,
) -> bool {
    // Derived (a template, a path into a struct, ...): statistics cannot tell.
    let Some(column) = column else {
        return true;
    };
    let Some(chunk) = group
        .columns()
        .iter()
        .find(|c| c.column_path().string() == column)
    else {
        return false;
    };
    let Some(Statistics::ByteArray(stats)) = chunk.statistics() else {
        return true;
    };
    let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt()) else {
        return true;
    };
    wanted
        .iter()
        .any(|v| min.data() <= v.as_bytes() && v.as_bytes() <= max.data())
}

/// The rows of one input segment whose stream id or event id is a wanted value, inside
/// the shard's partitions and the window; row groups are skipped by their statistics.
async fn events_in(
    plan: &Plan,
    (segment_index, path): (usize, &str),
    bytes: Bytes,
    wanted: &BTreeSet<String>,
    partitions: &BTreeSet<i32>,
    explanation: &mut Explanation,
) -> Result<Vec<Found>> {
    let mapping = &plan.source.mapping;
    let columns = &mapping.columns;
    let metadata = ArrowReaderMetadata::load(&bytes, Default::default()).map_err(|e| {
        replayfleet_archive::Error::BadSegment {
            segment: path.to_owned(),
            reason: format!("not a readable Parquet file: {e}"),
        }
    })?;
    let mut out = Vec::new();
    for (group, meta) in metadata.metadata().row_groups().iter().enumerate() {
        if !stats_may_hold(meta, columns.stream_id.plain_column(), wanted)
            && !stats_may_hold(meta, columns.event_id.plain_column(), wanted)
        {
            explanation.row_groups_skipped += 1;
            continue;
        }
        explanation.row_groups_read += 1;
        let first_row: u64 = metadata.metadata().row_groups()[..group]
            .iter()
            .map(|g| g.num_rows() as u64)
            .sum();
        let mut row_number = first_row;
        for batch in decode_row_group(path, bytes.clone(), mapping, group)? {
            let batch = batch?;
            for row in 0..batch.num_rows() {
                let at = (path, segment_index, row_number);
                out.extend(matching(plan, &batch, row, wanted, partitions, at));
                row_number += 1;
            }
        }
    }
    Ok(out)
}

/// Row `row` of `batch` (the row `at.2` of segment `at.0`, the shard's `at.1`th) when it
/// belongs to the key and the shard's window.
fn matching(
    plan: &Plan,
    batch: &RecordBatch,
    row: usize,
    wanted: &BTreeSet<String>,
    partitions: &BTreeSet<i32>,
    (segment, segment_index, row_number): (&str, usize, u64),
) -> Option<Found> {
    let text = |i: usize| {
        let a = batch.column(i).as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row).to_owned())
    };
    let (event_id, stream_id) = (text(0), text(1));
    let hit = |v: &Option<String>| v.as_ref().is_some_and(|v| wanted.contains(v));
    if !hit(&stream_id) && !hit(&event_id) {
        return None;
    }
    let partition = batch.column(2).as_primitive::<Int32Type>();
    let seq = batch.column(3).as_primitive::<Int64Type>();
    let version = batch.column(5).as_primitive::<Int32Type>();
    let occurred = batch.column(6).as_primitive::<TimestampMicrosecondType>();
    let partition = (!partition.is_null(row)).then(|| partition.value(row))?;
    if !partitions.contains(&partition) {
        return None;
    }
    let seq = (!seq.is_null(row)).then(|| seq.value(row));
    let occurred = (!occurred.is_null(row)).then(|| occurred.value(row));
    if let Some(until) = plan.window.until_seq
        && seq.is_none_or(|s| s > until)
    {
        return None;
    }
    if let Some(until) = plan.window.until_time
        && occurred.is_none_or(|t| t > until.timestamp_micros())
    {
        return None;
    }
    let payload = text(7);
    let event = ExplainedEvent {
        payload_before: payload.as_deref().map_or(Value::Null, |p| {
            serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.to_owned()))
        }),
        event_id,
        stream_id,
        partition: Some(partition),
        seq,
        occurred_at: occurred.and_then(|t| {
            chrono::DateTime::from_timestamp_micros(t)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        segment: segment.to_owned(),
        row: row_number,
        event_type: text(4),
        schema_version: (!version.is_null(row)).then(|| version.value(row)),
        status: String::new(),
        anomaly: None,
        upcast: Vec::new(),
        payload_after: None,
    };
    Some(Found {
        order: (
            partition,
            seq.unwrap_or(i64::MAX),
            segment_index,
            row_number,
        ),
        payload,
        event,
    })
}

/// Judges the rows as the replay did: envelope nulls, duplicates, then the upcaster chain.
fn judge(plan: &Plan, mut found: Vec<Found>) -> Result<Vec<ExplainedEvent>> {
    let catalog = plan.contracts.catalog()?;
    found.sort_by_key(|f| f.order);
    let mut first: BTreeMap<String, Identity> = BTreeMap::new();
    let mut out = Vec::with_capacity(found.len());
    for Found {
        mut event, payload, ..
    } in found
    {
        if let Some((kind, column)) = null_column(&event, payload.as_deref()) {
            set_anomaly(
                plan,
                &mut event,
                kind,
                None,
                format!("the envelope's {column} is null"),
            );
            out.push(event);
            continue;
        }
        let id = event.event_id.clone().unwrap_or_default();
        let identity = Identity::of(&event);
        match first.get(&id) {
            Some(kept) if *kept == identity => {
                event.status = "duplicate".into();
                out.push(event);
                continue;
            }
            Some(_) => {
                set_anomaly(
                    plan,
                    &mut event,
                    AnomalyKind::ConflictingDuplicate,
                    None,
                    format!(
                        "event id {id} was seen earlier with a different stream, type, version or payload"
                    ),
                );
                out.push(event);
                continue;
            }
            None => {
                first.insert(id, identity);
            }
        }
        upcast(
            plan,
            &catalog,
            &mut event,
            payload.as_deref().unwrap_or_default(),
        );
        out.push(event);
    }
    Ok(out)
}

/// What makes two copies of an event id the same event (docs/FORMATS.md, "Duplicates and
/// anomalies", step 3).
#[derive(Debug, PartialEq)]
struct Identity {
    stream_id: Option<String>,
    event_type: Option<String>,
    schema_version: Option<i32>,
    payload: Value,
}

impl Identity {
    fn of(event: &ExplainedEvent) -> Self {
        Identity {
            stream_id: event.stream_id.clone(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload: event.payload_before.clone(),
        }
    }
}

/// The first null envelope field, in the replay's order, and the anomaly it raises.
fn null_column(
    event: &ExplainedEvent,
    payload: Option<&str>,
) -> Option<(AnomalyKind, &'static str)> {
    if event.event_id.is_none() {
        Some((AnomalyKind::InvalidPayload, "event_id"))
    } else if event.stream_id.is_none() {
        Some((AnomalyKind::InvalidPayload, "stream_id"))
    } else if event.seq.is_none() {
        Some((AnomalyKind::InvalidPayload, "seq"))
    } else if event.event_type.is_none() {
        Some((AnomalyKind::UnknownType, "event_type"))
    } else if event.schema_version.is_none() {
        Some((AnomalyKind::NoUpcastPath, "schema_version"))
    } else if payload.is_none() {
        Some((AnomalyKind::InvalidPayload, "payload"))
    } else {
        None
    }
}

fn set_anomaly(
    plan: &Plan,
    event: &mut ExplainedEvent,
    kind: AnomalyKind,
    step: Option<String>,
    message: String,
) {
    event.status = "anomaly".into();
    event.anomaly = Some(ExplainedAnomaly {
        kind: kind.as_str().to_owned(),
        policy: serde_json::to_value(plan.checks.policy(kind))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        step,
        message,
    });
}

/// Upcasts one kept event: each upcaster of its chain on its own (to show the payload
/// after it), then the whole chain as the replay ran it (the payload the projection saw).
fn upcast(plan: &Plan, catalog: &Catalog, event: &mut ExplainedEvent, payload: &str) {
    let event_type = event.event_type.clone().unwrap_or_default();
    let version = event.schema_version.unwrap_or_default();
    if let PathStatus::Upcastable { chain } = catalog.path(&event_type, version) {
        let contract = catalog.get(&event_type);
        let mut from = version;
        let mut current = Some(event.payload_before.clone());
        for to in chain {
            let steps = contract
                .and_then(|c| c.version(to))
                .map(|v| v.step_kinds().iter().map(|k| (*k).to_owned()).collect())
                .unwrap_or_default();
            let (payload, error) = match &current {
                None => (None, Some("an earlier upcaster failed".to_owned())),
                Some(before) => match catalog
                    .upcaster()
                    .upcast_values(&event_type, from, to, std::slice::from_ref(before))
                    .and_then(|mut o| o.pop())
                {
                    Some(Outcome::Ok(map)) => (Some(Value::Object(map)), None),
                    Some(Outcome::Anomaly { step, message, .. }) => (
                        None,
                        Some(match step {
                            Some(step) => format!("{step}: {message}"),
                            None => message,
                        }),
                    ),
                    None => (None, Some(format!("no upcaster from version {from}"))),
                },
            };
            current = payload.clone();
            event.upcast.push(UpcastStep {
                version: to,
                steps,
                payload,
                error,
            });
            from = to;
        }
    }
    match catalog
        .upcaster()
        .upcast_batch(&event_type, version, &[payload])
        .pop()
    {
        Some(Outcome::Ok(map)) => {
            event.status = "projected".into();
            event.payload_after = Some(Value::Object(map));
        }
        Some(Outcome::Anomaly {
            kind,
            step,
            message,
        }) => set_anomaly(plan, event, kind, step, message),
        None => set_anomaly(
            plan,
            event,
            AnomalyKind::InvalidPayload,
            None,
            "the upcaster returned nothing".into(),
        ),
    }
}
