//! Deterministic Parquet: the same rows always give the same bytes (fixed writer name,
//! fixed properties, one batch per file so page boundaries never depend on how rows
//! arrived).

use arrow::{
    array::{Array, ArrayRef, AsArray},
    record_batch::RecordBatch,
};
use bytes::Bytes;
use parquet::{
    arrow::ArrowWriter,
    basic::Compression,
    file::properties::{EnabledStatistics, WriterProperties},
};
use serde_json::Value;

use crate::{Error, Result};

/// Rows per projection segment.
pub const SEGMENT_ROWS: usize = 1 << 20;
/// Rows per row group.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Version of the Parquet files replayfleet writes (projection segments, anomalies),
/// kept in each footer's key-value metadata as `replayfleet.format_version`.
pub const PARQUET_FORMAT_VERSION: u32 = 1;

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by("replayfleet".into())
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "replayfleet.format_version".to_owned(),
            PARQUET_FORMAT_VERSION.to_string(),
        )]))
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// Writes `batch` as one Parquet file.
pub fn parquet_bytes(path: &str, batch: &RecordBatch) -> Result<Bytes> {
    let failed = |e: parquet::errors::ParquetError| Error::Write {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties())).map_err(failed)?;
    writer.write(batch).map_err(failed)?;
    writer.close().map_err(failed)?;
    Ok(Bytes::from(out))
}

/// The key of row `row` as JSON values (for key ranges in manifests and commits).
pub fn key_of(batch: &RecordBatch, key: &[String], row: usize) -> Vec<Value> {
    key.iter()
        .map(|k| match batch.column_by_name(k) {
            Some(col) => json_value(col, row),
            None => Value::Null,
        })
        .collect()
}

/// One cell as JSON: numbers and booleans as themselves, timestamps as RFC 3339, the
/// rest as Arrow displays it.
pub fn json_value(col: &ArrayRef, row: usize) -> Value {
    use arrow::datatypes::*;
    if col.is_null(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Int8 => col.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => f64::from(col.as_primitive::<Float32Type>().value(row)).into(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(row).into(),
        DataType::Boolean => col.as_boolean().value(row).into(),
        DataType::Utf8 => col.as_string::<i32>().value(row).into(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(row).into(),
        DataType::Utf8View => col.as_string_view().value(row).into(),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => {
                    col.as_primitive::<TimestampSecondType>().value(row) * 1_000_000
                }
                TimeUnit::Millisecond => {
                    col.as_primitive::<TimestampMillisecondType>().value(row) * 1000
                }
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => {
                    col.as_primitive::<TimestampNanosecondType>().value(row) / 1000
                }
            };
            chrono::DateTime::from_timestamp_micros(v)
                .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
                .unwrap_or(Value::Null)
        }
        _ => {
            let formatter = arrow::util::display::ArrayFormatter::try_new(
                col.as_ref(),
                &arrow::util::display::FormatOptions::default(),
            );
            match formatter {
                Ok(f) => Value::from(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use serde_json::json;

    use super::*;

    fn batch(ids: &[&str], balances: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("account_id", DataType::Utf8, false),
            Field::new("balance", DataType::Int64, true),
            Field::new("rate", DataType::Float64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let n = ids.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(ids)),
                Arc::new(Int64Array::from(balances.to_vec())),
                Arc::new(Float64Array::from(vec![0.5; n])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_700_000_000_123_456; n])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_same_rows_give_the_same_bytes_with_the_format_in_the_footer() {
        let rows = batch(&["a", "b"], &[Some(1), None]);
        let first = parquet_bytes("p/part-0.parquet", &rows).unwrap();
        let second = parquet_bytes("p/part-0.parquet", &rows.clone()).unwrap();
        assert_eq!(first, second);
        assert_ne!(
            first,
            parquet_bytes("p", &batch(&["a", "b"], &[Some(1), Some(2)])).unwrap()
        );

        let reader = SerializedFileReader::new(first).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.created_by(), Some("replayfleet"));
        assert_eq!(meta.num_rows(), 2);
        let version = meta
            .key_value_metadata()
            .unwrap()
            .iter()
            .find(|kv| kv.key == "replayfleet.format_version")
            .and_then(|kv| kv.value.clone());
        assert_eq!(version, Some(PARQUET_FORMAT_VERSION.to_string()));
    }

    /// The worker fingerprints the rows it writes, `verify` the rows it reads back: both
    /// must agree for every type a part file can hold.
    #[test]
    fn rows_read_back_have_the_fingerprint_of_the_rows_written() {
        use arrow::array::*;
        use arrow::datatypes::{Fields, Int64Type};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let nested = StructArray::new(
            fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("x"), Some(""), None])),
            ],
            None,
        );
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "utf8",
                Arc::new(StringArray::from(vec![Some("é"), None, Some("")])),
            ),
            (
                "large",
                Arc::new(LargeStringArray::from(vec!["a", "b", "c"])),
            ),
            (
                "view",
                Arc::new(StringViewArray::from(vec![
                    Some("long enough to be out of line"),
                    None,
                    Some("s"),
                ])),
            ),
            ("i8", Arc::new(Int8Array::from(vec![i8::MIN, 0, i8::MAX]))),
            (
                "i16",
                Arc::new(Int16Array::from(vec![i16::MIN, 0, i16::MAX])),
            ),
            (
                "i32",
                Arc::new(Int32Array::from(vec![i32::MIN, 0, i32::MAX])),
            ),
            (
                "i64",
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(i64::MAX)])),
            ),
            (
                "f32",
                Arc::new(Float32Array::from(vec![0.1, f32::NAN, -0.0])),
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![0.1, f64::INFINITY, 1e300])),
            ),
            (
                "bool",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            ("date32", Arc::new(Date32Array::from(vec![0, -1, 20000]))),
            (
                "date64",
                Arc::new(Date64Array::from(vec![0, 86_400_000, -86_400_000])),
            ),
            (
                "ts_s",
                Arc::new(TimestampSecondArray::from(vec![0, 1, 1_700_000_000])),
            ),
            (
                "ts_ms",
                Arc::new(TimestampMillisecondArray::from(vec![0, 1, 2]).with_timezone("UTC")),
            ),
            (
                "ts_us",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1, 2]).with_timezone("+02:00")),
            ),
            (
                "ts_ns",
                Arc::new(TimestampNanosecondArray::from(vec![
                    0,
                    1,
                    1_700_000_000_123_456_789,
                ])),
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                        .with_precision_and_scale(20, 2)
                        .unwrap(),
                ),
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00\xff"[..]),
                    None,
                    Some(b""),
                ])),
            ),
            ("list", Arc::new(list)),
            ("struct", Arc::new(nested)),
        ];
        let rows = RecordBatch::try_from_iter(columns).unwrap();
        let bytes = parquet_bytes("p/part-00000.parquet", &rows).unwrap();
        let mut written = crate::Fingerprint::new();
        written.add_batch(&rows).unwrap();
        let mut read = crate::Fingerprint::new();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.schema(), rows.schema(), "types read back as written");
            read.add_batch(&batch).unwrap();
        }
        assert_eq!(read, written);
    }

    #[test]
    fn keys_and_cells_read_as_json() {
        let rows = batch(&["a", "b"], &[Some(-3), None]);
        let key = ["account_id".to_owned(), "balance".to_owned()];
        assert_eq!(key_of(&rows, &key, 0), vec![json!("a"), json!(-3)]);
        assert_eq!(key_of(&rows, &key, 1), vec![json!("b"), json!(null)]);
        assert_eq!(key_of(&rows, &["missing".to_owned()], 0), vec![json!(null)]);
        assert_eq!(json_value(rows.column(2), 0), json!(0.5));
        assert_eq!(
            json_value(rows.column(3), 0),
            json!("2023-11-14T22:13:20.123456Z")
        );
    }
}
