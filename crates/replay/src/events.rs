//! The `events` table of one bucket: its kept rows, in (partition, seq) order, upcast and
//! validated, with only the columns the projection reads.
//!
//! Rows are taken a chunk at a time, grouped by (event type, version) for the upcaster
//! (SQL steps evaluate a group at once), and every upcast payload is turned into the
//! cells of the columns the projection reads as soon as the upcaster hands it over. The
//! payload is written back as JSON text only when the projection reads `payload`.

use std::{collections::HashMap, sync::Arc};

use arrow::{
    array::{
        Array, ArrayRef, BooleanBuilder, Float64Builder, Int32Array, Int64Builder, RecordBatch,
        StringBuilder, TimestampMicrosecondBuilder,
    },
    compute::interleave,
    datatypes::{DataType, SchemaRef},
};
use replayfleet_config::AnomalyKind;
use replayfleet_contracts::{Anomaly, Catalog, Lite};

use crate::{
    Result,
    anomaly::{Policies, Tally},
    dedupe::Bucket,
    order::arrow_error,
    raw::{METADATA, OCCURRED_AT, ORD},
};

/// Kept rows upcast at once: a few thousand keep their payloads' text in the cache.
const CHUNK_ROWS: usize = 8192;

/// What the `events` table holds and how each column is made.
#[derive(Debug, Clone)]
pub(crate) struct EventsShape {
    /// The table's schema: the columns the projection reads, in the full table's order.
    pub schema: SchemaRef,
    /// How each of those columns is made.
    columns: Vec<Source>,
    /// Whether the upcast payload's JSON text is needed.
    payload_text: bool,
}

#[derive(Debug, Clone)]
enum Source {
    /// An envelope column of the raw rows, as it is.
    Raw(usize),
    /// The target version of the event's type.
    TargetVersion,
    /// The upcast payload as JSON text.
    Payload,
    /// A typed payload column: its type, and the event types that declare it (sorted).
    Typed {
        name: String,
        data_type: DataType,
        event_types: Vec<String>,
    },
}

impl EventsShape {
    /// The shape of a table that holds `read` (column indices of the full `events`
    /// schema, [`crate::events_schema`]).
    pub(crate) fn new(catalog: &Catalog, full: &SchemaRef, read: &[usize]) -> EventsShape {
        let typed = catalog.typed_columns();
        let mut columns = Vec::with_capacity(read.len());
        let mut fields = Vec::with_capacity(read.len());
        for &i in read {
            fields.push(full.field(i).clone());
            columns.push(match i {
                5 => Source::TargetVersion,
                7 => Source::Payload,
                0..=8 => Source::Raw(i),
                _ => {
                    let c = &typed[i - 9];
                    Source::Typed {
                        name: c.name.clone(),
                        data_type: c.data_type.clone(),
                        event_types: c.event_types.clone(),
                    }
                }
            });
        }
        let payload_text = columns.iter().any(|c| matches!(c, Source::Payload));
        EventsShape {
            schema: Arc::new(arrow::datatypes::Schema::new(fields)),
            columns,
            payload_text,
        }
    }
}

impl EventsShape {
    /// Which envelope columns of the raw rows the replay needs: those the dedupe, the
    /// upcast and the anomalies file read, and those the projection reads as they are.
    pub(crate) fn raw_columns(&self) -> [bool; ORD] {
        let mut needed = [true; ORD];
        needed[OCCURRED_AT] = false;
        needed[METADATA] = false;
        for c in &self.columns {
            if let Source::Raw(i) = c {
                needed[*i] = true;
            }
        }
        needed
    }
}

/// A typed column's value for one event, with text kept in a chunk-wide buffer.
#[derive(Clone, Copy)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Micros(i64),
    Text { start: u32, len: u32 },
}

/// The cells of one column over a chunk, by position in the chunk.
struct Cells {
    cells: Vec<Cell>,
    text: String,
}

impl Cells {
    fn new(rows: usize) -> Self {
        Cells {
            cells: vec![Cell::Null; rows],
            text: String::new(),
        }
    }

    fn text(&mut self, at: usize, s: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        self.cells[at] = Cell::Text {
            start,
            len: s.len() as u32,
        };
    }

    fn str(&self, start: u32, len: u32) -> &str {
        &self.text[start as usize..(start + len) as usize]
    }

    /// The typed columns' mapping of JSON Schema types onto Arrow (docs/CONTRACTS.md,
    /// "Typed columns"): null when the value is null or does not fit the column.
    fn set(&mut self, at: usize, data_type: &DataType, v: &Lite<'_>) {
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
                Lite::Null => None,
                Lite::Str(s) => {
                    self.text(at, s);
                    return;
                }
                other => {
                    self.text(at, &other.to_json());
                    return;
                }
            },
        };
        self.cells[at] = cell.unwrap_or(Cell::Null);
    }

    fn finish(&self, data_type: &DataType, rows: &[usize]) -> ArrayRef {
        match data_type {
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for &r in rows {
                    b.append_option(match self.cells[r] {
                        Cell::Int(i) => Some(i),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for &r in rows {
                    b.append_option(match self.cells[r] {
                        Cell::Float(f) => Some(f),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for &r in rows {
                    b.append_option(match self.cells[r] {
                        Cell::Bool(v) => Some(v),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(_, tz) => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len())
                    .with_timezone_opt(tz.clone());
                for &r in rows {
                    b.append_option(match self.cells[r] {
                        Cell::Micros(t) => Some(t),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::with_capacity(rows.len(), self.text.len());
                for &r in rows {
                    match self.cells[r] {
                        Cell::Text { start, len } => b.append_value(self.str(start, len)),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// Upcasts and validates the kept rows of a bucket (in order), applies the anomaly
/// policies (and gaps: the message of each row after a hole, by `__ord`), and returns
/// the bucket's `events` batches.
pub(crate) fn events_of(
    bucket: &Bucket,
    kept: &[(u32, u32)],
    gaps: &HashMap<u64, String>,
    shape: &EventsShape,
    catalog: &Catalog,
    policies: &Policies,
    tally: &mut Tally,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(kept.len().div_ceil(CHUNK_ROWS));
    for chunk in kept.chunks(CHUNK_ROWS) {
        if !gaps.is_empty() {
            for at in chunk {
                let row = bucket.row(*at);
                if let Some(message) = gaps.get(&row.ord()) {
                    policies.apply(
                        tally,
                        row,
                        row.events_stage(false),
                        AnomalyKind::Gap,
                        None,
                        message.clone(),
                    );
                }
            }
        }
        if let Some(batch) = chunk_events(bucket, chunk, shape, catalog, policies, tally)? {
            out.push(batch);
        }
    }
    Ok(out)
}

fn chunk_events(
    bucket: &Bucket,
    chunk: &[(u32, u32)],
    shape: &EventsShape,
    catalog: &Catalog,
    policies: &Policies,
    tally: &mut Tally,
) -> Result<Option<RecordBatch>> {
    // Few (type, version) pairs per chunk: found by a scan, or through an index once a
    // chunk has many (a hostile archive).
    let mut groups: Vec<((&str, i32), Vec<usize>)> = Vec::new();
    let mut index: HashMap<(&str, i32), usize> = HashMap::new();
    for (i, at) in chunk.iter().enumerate() {
        let key = bucket.type_version(*at);
        let found = if groups.len() <= 16 {
            groups.iter().position(|(k, _)| *k == key)
        } else {
            if index.is_empty() {
                index = groups
                    .iter()
                    .enumerate()
                    .map(|(g, (k, _))| (*k, g))
                    .collect();
            }
            index.get(&key).copied()
        };
        let g = found.unwrap_or_else(|| {
            groups.push((key, Vec::new()));
            if !index.is_empty() {
                index.insert(key, groups.len() - 1);
            }
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    // Upcast in (type, version) order, as the replay always has.
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut cells: Vec<Option<Cells>> = shape
        .columns
        .iter()
        .map(|c| matches!(c, Source::Typed { .. }).then(|| Cells::new(chunk.len())))
        .collect();
    let mut payloads = shape.payload_text.then(|| Cells::new(chunk.len()));
    let mut ok = vec![false; chunk.len()];
    let mut target = vec![0i32; chunk.len()];
    for ((event_type, version), rows) in &groups {
        *tally
            .versions
            .entry(((*event_type).to_owned(), *version))
            .or_default() += rows.len() as u64;
        let texts: Vec<&str> = rows.iter().map(|&i| bucket.payload(chunk[i])).collect();
        // Which typed columns this type feeds, once per group.
        let feeds: Vec<bool> = shape
            .columns
            .iter()
            .map(|c| match c {
                Source::Typed { event_types, .. } => event_types
                    .binary_search_by(|e| e.as_str().cmp(event_type))
                    .is_ok(),
                _ => false,
            })
            .collect();
        let target_version = catalog.target_version(event_type).unwrap_or_default();
        catalog
            .upcaster()
            .upcast_lite(event_type, *version, &texts, |i, outcome| {
                let at = rows[i];
                match outcome {
                    Ok(map) => {
                        ok[at] = true;
                        target[at] = target_version;
                        for ((column, cells), feeds) in
                            shape.columns.iter().zip(cells.iter_mut()).zip(&feeds)
                        {
                            if let (
                                Source::Typed {
                                    name, data_type, ..
                                },
                                Some(cells),
                                true,
                            ) = (column, cells, feeds)
                                && let Some(v) = map.get(name)
                            {
                                cells.set(at, data_type, v);
                            }
                        }
                        if let Some(p) = payloads.as_mut() {
                            p.text(at, &map.to_json());
                        }
                    }
                    Err(Anomaly {
                        kind,
                        step,
                        message,
                    }) => {
                        let row = bucket.row(chunk[at]);
                        policies.apply(tally, row, row.events_stage(true), kind, step, message);
                    }
                }
            });
    }
    let rows: Vec<usize> = (0..chunk.len()).filter(|&i| ok[i]).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    tally.applied.events_projected += rows.len() as u64;
    let indices: Vec<(usize, usize)> = rows
        .iter()
        .map(|&i| (chunk[i].0 as usize, chunk[i].1 as usize))
        .collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(shape.columns.len());
    for (column, cells) in shape.columns.iter().zip(&cells) {
        columns.push(match column {
            Source::Raw(i) => {
                let sources: Vec<&dyn Array> = bucket
                    .batches
                    .iter()
                    .map(|b| b.column(*i).as_ref())
                    .collect();
                interleave(&sources, &indices).map_err(arrow_error)?
            }
            Source::TargetVersion => Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|&i| target[i]),
            )),
            Source::Payload => payloads
                .as_ref()
                .expect("payload text is kept when read")
                .finish(&DataType::Utf8, &rows),
            Source::Typed { data_type, .. } => cells
                .as_ref()
                .expect("cells are kept for typed columns")
                .finish(data_type, &rows),
        });
    }
    RecordBatch::try_new(Arc::clone(&shape.schema), columns)
        .map(Some)
        .map_err(arrow_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    #[test]
    fn cells_follow_the_typed_column_mapping() {
        let mut c = Cells::new(6);
        let lite = |v: serde_json::Value| Lite::from_value(v);
        c.set(0, &DataType::Int64, &lite(serde_json::json!(12)));
        c.set(1, &DataType::Int64, &lite(serde_json::json!(12.0)));
        c.set(2, &DataType::Int64, &lite(serde_json::json!("12")));
        c.set(3, &DataType::Int64, &lite(serde_json::json!(1.5)));
        let a = c.finish(&DataType::Int64, &[0, 1, 2, 3, 4]);
        let a = a.as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [Some(12), Some(12), None, None, None]
        );
        let mut t = Cells::new(3);
        t.set(0, &DataType::Utf8, &lite(serde_json::json!("x")));
        t.set(1, &DataType::Utf8, &lite(serde_json::json!({"a": [1]})));
        t.set(2, &DataType::Utf8, &lite(serde_json::json!(null)));
        let a = t.finish(&DataType::Utf8, &[2, 1, 0]);
        let a = a.as_string::<i32>();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [None, Some(r#"{"a":[1]}"#), Some("x")]
        );
    }
}
