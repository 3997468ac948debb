//! Parquet fixtures: event segments built in memory, for unit tests of the crates that
//! read archives and for the integration tests.

use std::sync::Arc;

use arrow::{
    array::{
        ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    },
    datatypes::{Field, Schema},
};
use bytes::Bytes;
use parquet::{arrow::ArrowWriter, file::properties::WriterProperties};

/// Parquet bytes of `columns`, `row_group_rows` rows per row group.
pub fn parquet(columns: Vec<(&str, ArrayRef)>, row_group_rows: usize) -> Bytes {
    parquet_with_footer(columns, row_group_rows, Vec::new())
}

/// Parquet bytes of `columns` with `footer` as the footer's key-value metadata.
pub fn parquet_with_footer(
    columns: Vec<(&str, ArrayRef)>,
    row_group_rows: usize,
    footer: Vec<(&str, &str)>,
) -> Bytes {
    let batch = batch(columns);
    let footer: Vec<parquet::file::metadata::KeyValue> = footer
        .into_iter()
        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.to_owned(), v.to_owned()))
        .collect();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_key_value_metadata((!footer.is_empty()).then_some(footer))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    Bytes::from(out)
}

/// One batch of `columns` (every field nullable).
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

/// Envelope columns in canonical types for `n` events of `partition`, seq `first_seq..`.
pub fn envelope_columns(n: usize, partition: i32, first_seq: i64) -> Vec<(&'static str, ArrayRef)> {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("e-{partition}-{}", first_seq + i as i64))
        .collect();
    let streams: Vec<String> = (0..n).map(|i| format!("s-{partition}-{}", i % 3)).collect();
    let types: Vec<&str> = (0..n)
        .map(|i| if i % 2 == 0 { "Deposited" } else { "Withdrawn" })
        .collect();
    let payloads: Vec<String> = (0..n).map(|i| format!(r#"{{"amount":{i}}}"#)).collect();
    vec![
        ("event_id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("stream_id", Arc::new(StringArray::from(streams))),
        ("partition", Arc::new(Int32Array::from(vec![partition; n]))),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| first_seq + i),
            )),
        ),
        ("event_type", Arc::new(StringArray::from(types))),
        ("schema_version", Arc::new(Int32Array::from(vec![1; n]))),
        (
            "occurred_at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n as i64).map(|i| 1_700_000_000_000_000 + i),
                )
                .with_timezone("UTC"),
            ),
        ),
        ("payload", Arc::new(StringArray::from(payloads))),
    ]
}

/// `columns` with `name` replaced by `array` (or added when absent).
pub fn with(
    mut columns: Vec<(&'static str, ArrayRef)>,
    name: &'static str,
    array: ArrayRef,
) -> Vec<(&'static str, ArrayRef)> {
    match columns.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = array,
        None => columns.push((name, array)),
    }
    columns
}

/// `columns` with `name` renamed to `new_name`.
pub fn renamed(
    columns: Vec<(&'static str, ArrayRef)>,
    name: &str,
    new_name: &'static str,
) -> Vec<(&'static str, ArrayRef)> {
    columns
        .into_iter()
        .map(|(n, a)| if n == name { (new_name, a) } else { (n, a) })
        .collect()
}
