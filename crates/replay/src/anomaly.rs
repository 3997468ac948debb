//! The anomaly policies and what a replay tallies on its way: counts for the lineage
//! manifest, the quarantined events, and the halting anomaly it reports.
//!
//! The replay works on parts of a shard at once (segments, then buckets of streams), so
//! anomalies are found in no fixed order. Everything tallied is order-independent (sums,
//! and quarantined rows sorted before they are written), and when several anomalies
//! have the policy `halt`, the shard reports the first in a fixed order
//! ([`Stage`]): whatever the thread count, the same error.

use std::{cmp::Ordering, collections::BTreeMap, sync::Arc};

use arrow::{
    array::{Array, ArrayRef, AsArray, Int32Builder, Int64Builder, RecordBatch, StringArray},
    datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef},
};
use replayfleet_config::{AnomalyKind, Policy};

use crate::{
    Error, Result,
    lineage::Applied,
    order::arrow_error,
    plan::Plan,
    raw::{EVENT_ID, EVENT_TYPE, ORD, PARTITION, PAYLOAD, SEQ, STREAM_ID, VERSION, segment_of},
};

/// Where an anomaly was raised, in the order the shard reports halting anomalies: rows
/// that could not be decoded (`undecodable`, found while reading) in (partition, seq,
/// row) order; then every anomaly of the dedupe stage (envelope nulls, conflicting duplicates) in (event id,
/// partition, seq, row) order, as if the rows were sorted by event id; then those of the
/// events stage (gaps, upcast and validation) in (partition, seq, row) order, a gap
/// before an upcast anomaly of the same row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    Read {
        partition: i32,
        seq: NullsLast,
        ord: u64,
    },
    Dedupe {
        event_id: Option<String>,
        partition: i32,
        seq: NullsLast,
        ord: u64,
    },
    Events {
        partition: i32,
        seq: NullsLast,
        ord: u64,
        upcast: bool,
    },
}

/// An optional seq that sorts nulls after every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NullsLast(pub Option<i64>);

impl Ord for NullsLast {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.cmp(&b),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
        }
    }
}

impl PartialOrd for NullsLast {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One raw row (envelope columns and `__ord`) of a bucket.
#[derive(Clone, Copy)]
pub(crate) struct RowRef<'a> {
    pub batch: &'a RecordBatch,
    pub row: usize,
}

impl<'a> RowRef<'a> {
    pub(crate) fn str(&self, col: usize) -> Option<&'a str> {
        let a = self.batch.column(col).as_string::<i32>();
        (!a.is_null(self.row)).then(|| a.value(self.row))
    }

    pub(crate) fn i32(&self, col: usize) -> Option<i32> {
        let a = self.batch.column(col).as_primitive::<Int32Type>();
        (!a.is_null(self.row)).then(|| a.value(self.row))
    }

    pub(crate) fn i64(&self, col: usize) -> Option<i64> {
        let a = self.batch.column(col).as_primitive::<Int64Type>();
        (!a.is_null(self.row)).then(|| a.value(self.row))
    }

    pub(crate) fn ord(&self) -> u64 {
        self.batch
            .column(ORD)
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .value(self.row)
    }

    /// Where the row stands among the rows that could not be decoded.
    pub(crate) fn read_stage(&self) -> Stage {
        Stage::Read {
            partition: self.i32(PARTITION).unwrap_or_default(),
            seq: NullsLast(self.i64(SEQ)),
            ord: self.ord(),
        }
    }

    /// Where the row stands in the dedupe stage's order.
    pub(crate) fn dedupe_stage(&self) -> Stage {
        Stage::Dedupe {
            event_id: self.str(EVENT_ID).map(str::to_owned),
            partition: self.i32(PARTITION).unwrap_or_default(),
            seq: NullsLast(self.i64(SEQ)),
            ord: self.ord(),
        }
    }

    /// Where the row stands in the events stage's order.
    pub(crate) fn events_stage(&self, upcast: bool) -> Stage {
        Stage::Events {
            partition: self.i32(PARTITION).unwrap_or_default(),
            seq: NullsLast(self.i64(SEQ)),
            ord: self.ord(),
            upcast,
        }
    }
}

/// What one part of a replay found; parts are merged with [`Tally::absorb`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Counts for the lineage manifest (`events_read`, `out_of_order` and `rows_out` are
    /// filled in by the shard).
    pub applied: Applied,
    /// Rows per (type, input version) after deduplication.
    pub versions: BTreeMap<(String, i32), u64>,
    /// Events set aside by the `quarantine` policy.
    pub quarantine: Vec<QuarantineRow>,
    /// The first halting anomaly found, in [`Stage`] order.
    pub halt: Option<(Stage, Error)>,
}

impl Tally {
    /// Adds another part's findings to this one.
    pub(crate) fn absorb(&mut self, other: Tally) {
        let a = &mut self.applied;
        let b = other.applied;
        a.duplicates_dropped += b.duplicates_dropped;
        a.events_projected += b.events_projected;
        a.quarantined += b.quarantined;
        a.allowed += b.allowed;
        for (kind, n) in b.anomalies {
            *a.anomalies.entry(kind).or_default() += n;
        }
        for (key, n) in other.versions {
            *self.versions.entry(key).or_default() += n;
        }
        self.quarantine.extend(other.quarantine);
        if let Some((stage, error)) = other.halt {
            self.halt_at(stage, error);
        }
    }

    fn halt_at(&mut self, stage: Stage, error: Error) {
        match &self.halt {
            Some((first, _)) if *first <= stage => {}
            _ => self.halt = Some((stage, error)),
        }
    }

    /// The halting anomaly, as the shard's error.
    pub(crate) fn halted(&mut self) -> Result<()> {
        match self.halt.take() {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}

/// The plan's anomaly policies for one shard.
#[derive(Clone)]
pub(crate) struct Policies {
    plan: Arc<Plan>,
    shard: String,
    segments: Arc<Vec<String>>,
}

impl Policies {
    pub(crate) fn new(plan: &Arc<Plan>, shard: &str, segments: &[String]) -> Self {
        Policies {
            plan: Arc::clone(plan),
            shard: shard.to_owned(),
            segments: Arc::new(segments.to_vec()),
        }
    }

    /// Halt records the anomaly as a candidate for the shard's error, quarantine sets the
    /// event aside, allow only counts it.
    pub(crate) fn apply(
        &self,
        tally: &mut Tally,
        row: RowRef<'_>,
        stage: Stage,
        kind: AnomalyKind,
        step: Option<String>,
        message: String,
    ) {
        self.apply_raw(tally, row, stage, kind, (step, message, None));
    }

    /// A row of a segment whose value in `column` is not UTF-8 (`bytes`): the
    /// `undecodable` anomaly, its raw bytes kept when it is quarantined.
    pub(crate) fn undecodable(
        &self,
        tally: &mut Tally,
        row: RowRef<'_>,
        value: &replayfleet_archive::Undecodable,
    ) {
        self.apply_raw(
            tally,
            row,
            row.read_stage(),
            AnomalyKind::Undecodable,
            (None, value.to_string(), Some(value.bytes.clone())),
        );
    }

    /// [`apply`](Self::apply), with the raw bytes a quarantined row keeps (the detail is
    /// the step, the message and those bytes).
    fn apply_raw(
        &self,
        tally: &mut Tally,
        row: RowRef<'_>,
        stage: Stage,
        kind: AnomalyKind,
        (step, message, raw): (Option<String>, String, Option<Vec<u8>>),
    ) {
        *tally
            .applied
            .anomalies
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        let segment = self.segments[segment_of(row.ord())].clone();
        match self.plan.checks.policy(kind) {
            Policy::Halt => {
                // Building the error costs; only a candidate that could be first does.
                if tally
                    .halt
                    .as_ref()
                    .is_some_and(|(first, _)| *first <= stage)
                {
                    return;
                }
                let error = Error::Halted {
                    shard: self.shard.clone(),
                    kind,
                    event_id: row.str(EVENT_ID).unwrap_or("-").to_owned(),
                    segment,
                    partition: row.i32(PARTITION).unwrap_or_default(),
                    seq: row
                        .i64(SEQ)
                        .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    message: match step {
                        Some(step) => format!("{step}: {message}"),
                        None => message,
                    },
                };
                tally.halt_at(stage, error);
            }
            Policy::Quarantine => {
                tally.applied.quarantined += 1;
                tally.quarantine.push(QuarantineRow {
                    event_id: row.str(EVENT_ID).map(str::to_owned),
                    stream_id: row.str(STREAM_ID).map(str::to_owned),
                    partition: row.i32(PARTITION),
                    seq: row.i64(SEQ),
                    event_type: row.str(EVENT_TYPE).map(str::to_owned),
                    schema_version: row.i32(VERSION),
                    kind: kind.as_str(),
                    step,
                    message,
                    payload: row.str(PAYLOAD).map(str::to_owned),
                    segment,
                    raw,
                });
            }
            Policy::Allow => tally.applied.allowed += 1,
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
    /// For `undecodable`, the bytes of the value that is not UTF-8.
    raw: Option<Vec<u8>>,
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
        Field::new("raw", DataType::Binary, true),
    ]))
}

/// The quarantined events as one batch, in (partition, seq, kind, event id) order so the
/// file does not depend on which part of the replay raised each anomaly first.
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
        Arc::new(
            r.iter()
                .map(|q| q.raw.as_deref())
                .collect::<arrow::array::BinaryArray>(),
        ),
    ];
    RecordBatch::try_new(anomalies_schema(), columns)
        .map(Some)
        .map_err(arrow_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedupe(id: Option<&str>, partition: i32, seq: Option<i64>, ord: u64) -> Stage {
        Stage::Dedupe {
            event_id: id.map(str::to_owned),
            partition,
            seq: NullsLast(seq),
            ord,
        }
    }

    #[test]
    fn halting_anomalies_are_ordered_as_the_stages_ran() {
        let events = Stage::Events {
            partition: 0,
            seq: NullsLast(Some(0)),
            ord: 0,
            upcast: false,
        };
        let mut stages = vec![
            events.clone(),
            dedupe(Some("b"), 0, Some(1), 0),
            dedupe(Some("a"), 1, None, 0),
            dedupe(Some("a"), 1, Some(9), 0),
            dedupe(None, 5, Some(5), 3),
        ];
        stages.sort();
        assert_eq!(
            stages,
            vec![
                dedupe(None, 5, Some(5), 3),
                dedupe(Some("a"), 1, Some(9), 0),
                dedupe(Some("a"), 1, None, 0),
                dedupe(Some("b"), 0, Some(1), 0),
                events,
            ]
        );
    }

    #[test]
    fn the_first_halt_wins_whatever_the_order_parts_are_absorbed() {
        let halt = |shard: &str| Error::Projection {
            shard: shard.into(),
            message: String::new(),
        };
        let mut one = Tally::default();
        one.halt_at(dedupe(Some("b"), 0, Some(1), 0), halt("late"));
        let mut two = Tally::default();
        two.halt_at(dedupe(Some("a"), 0, Some(1), 0), halt("early"));
        one.absorb(two);
        let Err(Error::Projection { shard, .. }) = one.halted() else {
            panic!("a halt was recorded")
        };
        assert_eq!(shard, "early");
    }
}
