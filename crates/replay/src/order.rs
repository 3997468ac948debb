//! Filtering one segment to the shard's partitions and the window, counting the rows
//! found out of `seq` order inside it (the pipeline's sorts put them back in order).

use std::collections::{BTreeSet, HashMap};

use arrow::{
    array::{Array, AsArray, BooleanArray},
    compute::filter_record_batch,
    datatypes::{Int32Type, Int64Type, TimestampMicrosecondType},
    record_batch::RecordBatch,
};
use replayfleet_config::Window;

use crate::{Error, Result, lineage::LineageInput};

/// Where a segment's filtering stands: its lineage figures so far and the last `seq`
/// seen per partition (for counting rows out of order).
#[derive(Debug)]
pub(crate) struct SegmentFilter {
    pub input: LineageInput,
    pub out_of_order: u64,
    last_seq: HashMap<i32, i64>,
}

impl SegmentFilter {
    pub(crate) fn new(input: LineageInput) -> Self {
        SegmentFilter {
            input,
            out_of_order: 0,
            last_seq: HashMap::new(),
        }
    }

    /// Keeps the rows of `batch` (the segment's next, in file order) that belong to
    /// `partitions` and fall inside the window.
    pub(crate) fn filter(
        &mut self,
        batch: &RecordBatch,
        partitions: &BTreeSet<i32>,
        window: &Window,
    ) -> Result<RecordBatch> {
        let until_time = window.until_time.map(|t| t.timestamp_micros());
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
        let input = &mut self.input;
        for i in (0..batch.num_rows()).filter(|&i| mask.value(i)) {
            input.rows += 1;
            if seq.is_null(i) {
                continue;
            }
            let s = seq.value(i);
            input.seq_min = Some(input.seq_min.map_or(s, |m| m.min(s)));
            input.seq_max = Some(input.seq_max.map_or(s, |m| m.max(s)));
            let last = self.last_seq.entry(partition.value(i)).or_insert(i64::MIN);
            if s < *last {
                self.out_of_order += 1;
            } else {
                *last = s;
            }
        }
        filter_record_batch(batch, &mask).map_err(arrow_error)
    }
}

pub(crate) fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: "-".into(),
        message: e.to_string(),
    }
}
