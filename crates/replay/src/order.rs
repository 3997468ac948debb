//! Reading a shard's rows in `seq` order: filter each segment to the shard's partitions
//! and the window, count rows found out of order, then one stable sort by
//! (partition, seq) across all segments (ties keep segment-path then file order).

use std::collections::BTreeSet;

use arrow::{
    array::{Array, AsArray, BooleanArray, UInt32Array},
    compute::{concat_batches, filter_record_batch, take_record_batch},
    datatypes::{Int32Type, Int64Type, TimestampMicrosecondType},
    record_batch::RecordBatch,
};
use replayfleet_archive::envelope_schema;
use replayfleet_config::Window;

use crate::{Error, Result, lineage::LineageInput};

/// A shard's rows, sorted, with the segment each came from.
pub(crate) struct Ordered {
    /// Envelope-shaped rows in (partition, seq) order.
    pub rows: RecordBatch,
    /// Per row: index into the shard's segment list.
    pub segment_of: Vec<u32>,
    /// Rows found out of order inside their segment.
    pub out_of_order: u64,
}

/// Filters one segment's batches to `partitions` and the window; returns the kept rows
/// and the segment's lineage figures.
pub(crate) fn filter_segment(
    batches: &[RecordBatch],
    partitions: &BTreeSet<i32>,
    window: &Window,
    input: &mut LineageInput,
    out_of_order: &mut u64,
) -> Result<Vec<RecordBatch>> {
    let until_time = window.until_time.map(|t| t.timestamp_micros());
    let mut last_seq: std::collections::HashMap<i32, i64> = Default::default();
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        let partition = batch.column(2).as_primitive::<Int32Type>();
        let seq = batch.column(3).as_primitive::<Int64Type>();
        let occurred = batch.column(6).as_primitive::<TimestampMicrosecondType>();
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                if partition.is_null(i) || !partitions.contains(&partition.value(i)) {
                    return Some(false);
                }
                if let Some(until) = window.until_seq
                    && (seq.is_null(i) || seq.value(i) > until)
                {
                    return Some(false);
                }
                if let Some(until) = until_time
                    && (occurred.is_null(i) || occurred.value(i) > until)
                {
                    return Some(false);
                }
                Some(true)
            })
            .collect();
        for i in (0..batch.num_rows()).filter(|&i| mask.value(i)) {
            input.rows += 1;
            if seq.is_null(i) {
                continue;
            }
            let s = seq.value(i);
            input.seq_min = Some(input.seq_min.map_or(s, |m| m.min(s)));
            input.seq_max = Some(input.seq_max.map_or(s, |m| m.max(s)));
            let last = last_seq.entry(partition.value(i)).or_insert(i64::MIN);
            if s < *last {
                *out_of_order += 1;
            } else {
                *last = s;
            }
        }
        let filtered = filter_record_batch(batch, &mask).map_err(arrow_error)?;
        if filtered.num_rows() > 0 {
            kept.push(filtered);
        }
    }
    Ok(kept)
}

/// Concatenates the filtered segments (in the shard's segment order) and sorts by
/// (partition, seq); null seqs sort last in their partition.
pub(crate) fn order(segments: Vec<Vec<RecordBatch>>, out_of_order: u64) -> Result<Ordered> {
    let schema = envelope_schema();
    let mut segment_of = Vec::new();
    let mut all = Vec::new();
    for (i, batches) in segments.into_iter().enumerate() {
        for b in batches {
            segment_of.extend(std::iter::repeat_n(i as u32, b.num_rows()));
            all.push(b);
        }
    }
    let rows = concat_batches(&schema, &all).map_err(arrow_error)?;
    drop(all);
    let partition = rows.column(2).as_primitive::<Int32Type>();
    let seq = rows.column(3).as_primitive::<Int64Type>();
    let mut indices: Vec<u32> = (0..rows.num_rows() as u32).collect();
    // A stable sort: equal (partition, seq) keep their reading order.
    indices.sort_by_key(|&i| {
        let i = i as usize;
        (
            partition.value(i),
            seq.is_null(i),
            if seq.is_null(i) { 0 } else { seq.value(i) },
        )
    });
    let already_sorted = indices.iter().enumerate().all(|(a, &b)| a as u32 == b);
    if already_sorted {
        return Ok(Ordered {
            rows,
            segment_of,
            out_of_order,
        });
    }
    let take = UInt32Array::from(indices.clone());
    let sorted = take_record_batch(&rows, &take).map_err(arrow_error)?;
    let segment_of = indices.iter().map(|&i| segment_of[i as usize]).collect();
    Ok(Ordered {
        rows: sorted,
        segment_of,
        out_of_order,
    })
}

pub(crate) fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: "-".into(),
        message: e.to_string(),
    }
}
