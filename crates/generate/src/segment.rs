//! Rows to Parquet bytes in the canonical envelope (docs/SOURCES.md, "The canonical
//! envelope").
//!
//! The bytes must be a pure function of the rows: a fixed `created_by`, no timestamps
//! or host names in the footer, and the writer's defaults otherwise (row-group and
//! page statistics on).

use std::sync::Arc;

use arrow::{
    array::{ArrayRef, Int32Array, Int64Array, StringBuilder, TimestampMicrosecondArray},
    datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit},
    record_batch::RecordBatch,
};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    errors::ParquetError,
    file::properties::WriterProperties,
    schema::types::ColumnPath,
};

use crate::{history::Row, ids};

/// Rows per row group: small enough that readers can skip by statistics.
const MAX_ROW_GROUP_ROWS: usize = 64 * 1024;

/// The canonical envelope as this generator writes it.
pub(crate) fn envelope_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("schema_version", DataType::Int32, false),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("payload", DataType::Utf8, false),
        Field::new("metadata", DataType::Utf8, true),
    ]))
}

pub(crate) fn writer_properties() -> WriterProperties {
    let level = ZstdLevel::try_new(1).expect("zstd level 1 exists");
    let mut builder = WriterProperties::builder()
        .set_created_by(format!(
            "replayfleet-generate {}",
            env!("CARGO_PKG_VERSION")
        ))
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS));
    // Unique per row: a dictionary would only be built to be thrown away.
    for column in ["event_id", "payload", "metadata"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
}

pub(crate) fn encode(
    rows: &[Row],
    partition: i32,
    props: &WriterProperties,
) -> Result<Vec<u8>, ParquetError> {
    let schema = envelope_schema();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns(rows, partition))?;
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props.clone()))?;
    writer.write(&batch)?;
    writer.into_inner()
}

fn columns(rows: &[Row], partition: i32) -> Vec<ArrayRef> {
    let n = rows.len();
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut stream_id = StringBuilder::with_capacity(n, n * 10);
    let mut event_type = StringBuilder::with_capacity(n, n * 12);
    let payload_bytes = rows.iter().map(|r| r.payload.len()).sum();
    let mut payload = StringBuilder::with_capacity(n, payload_bytes);
    let mut metadata = StringBuilder::with_capacity(n, n * 64);
    for row in rows {
        event_id.append_value(&row.event_id);
        stream_id.append_value(ids::stream_id(row.stream));
        event_type.append_value(row.event_type);
        payload.append_value(&row.payload);
        metadata.append_option(row.metadata.as_deref());
    }
    vec![
        Arc::new(event_id.finish()),
        Arc::new(stream_id.finish()),
        Arc::new(Int32Array::from(vec![partition; n])),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.seq as i64),
        )),
        Arc::new(event_type.finish()),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.version))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.occurred_at_us))
                .with_timezone("UTC"),
        ),
        Arc::new(payload.finish()),
        Arc::new(metadata.finish()),
    ]
}
