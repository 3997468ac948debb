//! Raw rows: the envelope as the archive reads it, plus `__ord`, the row's place in the
//! shard (its segment's index in the plan's list, then its row in the file), which makes
//! every order total and names the segment a row came from.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use replayfleet_archive::envelope_schema;

/// Column positions in raw batches (the envelope's order, then `__ord`).
pub(crate) const EVENT_ID: usize = 0;
pub(crate) const STREAM_ID: usize = 1;
pub(crate) const PARTITION: usize = 2;
pub(crate) const SEQ: usize = 3;
pub(crate) const EVENT_TYPE: usize = 4;
pub(crate) const VERSION: usize = 5;
pub(crate) const OCCURRED_AT: usize = 6;
pub(crate) const PAYLOAD: usize = 7;
pub(crate) const METADATA: usize = 8;
pub(crate) const ORD: usize = 9;

/// Bits of `__ord` that hold the row's number in its file.
const ROW_BITS: u32 = 40;

/// `__ord` of row `row` (in file order) of the shard's `segment`-th segment.
pub(crate) fn ord(segment: usize, row: u64) -> u64 {
    ((segment as u64) << ROW_BITS) | row
}

/// The segment index an `__ord` names.
pub(crate) fn segment_of(ord: u64) -> usize {
    (ord >> ROW_BITS) as usize
}

static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = envelope_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("__ord", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
});

/// The envelope plus `__ord`.
pub(crate) fn raw_schema() -> SchemaRef {
    Arc::clone(&RAW_SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_orders_by_segment_then_row_and_names_the_segment() {
        assert!(ord(0, (1 << ROW_BITS) - 1) < ord(1, 0));
        assert_eq!(segment_of(ord(7, 12345)), 7);
        let schema = raw_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names[..],
            [
                "event_id",
                "stream_id",
                "partition",
                "seq",
                "event_type",
                "schema_version",
                "occurred_at",
                "payload",
                "metadata",
                "__ord"
            ]
        );
        assert_eq!(
            (
                EVENT_ID,
                STREAM_ID,
                PARTITION,
                SEQ,
                EVENT_TYPE,
                VERSION,
                OCCURRED_AT,
                PAYLOAD,
                METADATA,
                ORD
            ),
            (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
        );
    }
}
