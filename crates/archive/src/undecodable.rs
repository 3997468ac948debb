//! Rows whose text is not UTF-8.
//!
//! Parquet's decoder checks a string column's bytes a page at a time and fails the whole
//! batch on one bad value ("encountered non UTF-8 data"), so one corrupt payload would
//! stop a run. When a reader asks for it ([`SegmentBatches::keep_undecodable`]), a
//! segment whose batch fails so is read again from that batch on with its string
//! columns as bytes (the footer's string annotations dropped, the Arrow schema's strings
//! made binary), and each top-level value is checked on its own: a value that is not
//! UTF-8 becomes a null and is handed out as an [`Undecodable`] with its raw bytes, for
//! the replay's anomaly policy to judge. A string nested in a struct, list or map that is
//! not UTF-8 still fails the segment (exit 2, naming it and the column).
//!
//! [`SegmentBatches::keep_undecodable`]: crate::SegmentBatches::keep_undecodable

use std::sync::Arc;

use arrow::{
    array::{Array, ArrayRef, AsArray, RecordBatch, StringArray},
    compute::{CastOptions, cast_with_options},
    datatypes::{DataType, Field, FieldRef, Schema, SchemaRef},
};
use parquet::{
    arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions},
    basic::{ConvertedType, LogicalType, Type as PhysicalType},
    errors::ParquetError,
    file::metadata::{FileMetaData, ParquetMetaData},
    schema::types::{SchemaDescriptor, Type, TypePtr},
};

/// One value of a segment that is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Zero-based row number inside the segment.
    pub row: u64,
    /// The segment's column (top-level) that holds it.
    pub column: String,
    /// The value's bytes, as stored.
    pub bytes: Vec<u8>,
    /// Why it is not text (`invalid utf-8 sequence of 1 bytes from index 17`).
    pub reason: String,
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column `{}` row {} is not UTF-8 ({}; {} bytes)",
            self.column,
            self.row,
            self.reason,
            self.bytes.len()
        )
    }
}

/// Whether a decoder error is a string column's bytes failing UTF-8 validation.
pub(crate) fn is_utf8_error(err: &ParquetError) -> bool {
    let text = err.to_string();
    text.contains("UTF-8") || text.contains("utf-8") || text.contains("utf8")
}

/// The reader metadata that reads every string column of `metadata` as bytes:
/// `schema` (the segment's Arrow schema) with strings made binary, over the footer with
/// the string annotations of its leaves dropped (the decoder validates by annotation).
pub(crate) fn binary_metadata(
    metadata: &ParquetMetaData,
    schema: &Schema,
) -> Result<ArrowReaderMetadata, ParquetError> {
    let file = metadata.file_metadata();
    let root = without_strings(file.schema_descr().root_schema())?;
    let descr = Arc::new(SchemaDescriptor::new(Arc::new(root)));
    let stripped = ParquetMetaData::new(
        FileMetaData::new(
            file.version(),
            file.num_rows(),
            file.created_by().map(str::to_owned),
            file.key_value_metadata().cloned(),
            descr,
            file.column_orders().cloned(),
        ),
        metadata.row_groups().to_vec(),
    );
    let binary = Schema::new_with_metadata(
        schema.fields().iter().map(binary_field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    );
    ArrowReaderMetadata::try_new(
        Arc::new(stripped),
        ArrowReaderOptions::new().with_schema(Arc::new(binary)),
    )
}

/// `t` with the string annotation of every byte-array leaf dropped.
fn without_strings(t: &Type) -> Result<Type, ParquetError> {
    let info = t.get_basic_info();
    match t {
        Type::GroupType { fields, .. } => {
            let fields = fields
                .iter()
                .map(|f| without_strings(f).map(Arc::new))
                .collect::<Result<Vec<TypePtr>, _>>()?;
            let mut b = Type::group_type_builder(info.name())
                .with_fields(fields)
                .with_converted_type(info.converted_type())
                .with_logical_type(info.logical_type_ref().cloned())
                .with_id(info.has_id().then(|| info.id()));
            if info.has_repetition() {
                b = b.with_repetition(info.repetition());
            }
            b.build()
        }
        Type::PrimitiveType {
            physical_type,
            type_length,
            scale,
            precision,
            ..
        } => {
            let string = *physical_type == PhysicalType::BYTE_ARRAY
                && (info.converted_type() == ConvertedType::UTF8
                    || matches!(info.logical_type_ref(), Some(LogicalType::String)));
            let (converted, logical) = if string {
                (ConvertedType::NONE, None)
            } else {
                (info.converted_type(), info.logical_type_ref().cloned())
            };
            let mut b = Type::primitive_type_builder(info.name(), *physical_type)
                .with_converted_type(converted)
                .with_logical_type(logical)
                .with_length(*type_length)
                .with_scale(*scale)
                .with_precision(*precision)
                .with_id(info.has_id().then(|| info.id()));
            if info.has_repetition() {
                b = b.with_repetition(info.repetition());
            }
            b.build()
        }
    }
}

fn binary_field(field: &FieldRef) -> Field {
    field
        .as_ref()
        .clone()
        .with_data_type(binary_type(field.data_type()))
}

/// `dt` with every string type made the matching binary type.
fn binary_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8 => DataType::Binary,
        DataType::LargeUtf8 => DataType::LargeBinary,
        DataType::Utf8View => DataType::BinaryView,
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(binary_field(f))).collect())
        }
        DataType::List(f) => DataType::List(Arc::new(binary_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(binary_field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(binary_field(f)), *n),
        DataType::Map(f, sorted) => DataType::Map(Arc::new(binary_field(f)), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(binary_type(v))),
        other => other.clone(),
    }
}

/// A batch read with [`binary_metadata`] back in `schema`'s types (the schema the
/// segment reads as, projected as the batch is): a top-level value that is not UTF-8
/// becomes a null and is added to `found` (rows numbered from `first_row`). A nested one
/// fails, naming its column.
pub(crate) fn restore(
    batch: &RecordBatch,
    schema: &SchemaRef,
    first_row: u64,
    found: &mut Vec<Undecodable>,
) -> Result<RecordBatch, String> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    let columns = batch
        .columns()
        .iter()
        .zip(fields.iter_mut())
        .map(|(column, field)| {
            let wanted = field.data_type().clone();
            if *column.data_type() == wanted {
                return Ok(Arc::clone(column));
            }
            let (texts, bad) = byte_values(column)
                .map(|v| texts_of(&v))
                .unwrap_or_default();
            let column = if bad.is_empty() {
                Arc::clone(column)
            } else {
                // The text of every other value, the bad ones null (their bytes gone: a
                // cast validates the whole buffer, null slots included).
                let cleared: ArrayRef = Arc::new(StringArray::from(texts));
                // The column now holds nulls, whatever the file declared.
                *field = Arc::new(field.as_ref().clone().with_nullable(true));
                for (i, bytes, reason) in bad {
                    found.push(Undecodable {
                        row: first_row + i as u64,
                        column: field.name().clone(),
                        bytes,
                        reason,
                    });
                }
                cleared
            };
            cast_with_options(&column, &wanted, &strict).map_err(|e| {
                format!(
                    "column `{}` holds bytes that are not UTF-8 inside a nested value ({e}); \
                     only a top-level column's value can be set aside as an anomaly",
                    field.name()
                )
            })
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| e.to_string())
}

/// The values of a binary column (`Binary`, `LargeBinary`, `BinaryView`); `None` for
/// another type.
fn byte_values(column: &ArrayRef) -> Option<Vec<Option<&[u8]>>> {
    Some(match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => column.as_binary_view().iter().collect(),
        _ => return None,
    })
}

/// Each value as text (`None` for a null or a value that is not UTF-8), and the rows
/// (index, bytes, reason) of the values that are not UTF-8, in row order.
type Texts<'a> = (Vec<Option<&'a str>>, Vec<(usize, Vec<u8>, String)>);

fn texts_of<'a>(values: &[Option<&'a [u8]>]) -> Texts<'a> {
    let mut bad = Vec::new();
    let texts = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = (*v)?;
            std::str::from_utf8(v)
                .map_err(|e| bad.push((i, v.to_vec(), e.to_string())))
                .ok()
        })
        .collect();
    (texts, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int64Array};

    /// A canonical segment of `n` rows (`row_group_rows` per row group) whose payloads
    /// at `bad` are not UTF-8: written uncompressed with markers, then patched.
    fn segment_with_bad_payloads(n: usize, row_group_rows: usize, bad: &[usize]) -> bytes::Bytes {
        use parquet::{
            arrow::ArrowWriter,
            basic::Compression,
            file::properties::{EnabledStatistics, WriterProperties},
            schema::types::ColumnPath,
        };
        let payloads: StringArray = (0..n)
            .map(|i| match bad.iter().position(|b| *b == i) {
                Some(k) => Some(format!(r#"{{"amount":"@@{k:04}@@"}}"#)),
                None => Some(format!(r#"{{"amount":{i}}}"#)),
            })
            .collect();
        let columns = crate::testing::with(
            crate::testing::envelope_columns(n, 0, 0),
            "payload",
            Arc::new(payloads),
        );
        let batch = crate::testing::batch(columns);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_column_statistics_enabled(ColumnPath::from("payload"), EnabledStatistics::None)
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        for k in 0..bad.len() {
            let marker = format!("@@{k:04}@@");
            let at = out
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .unwrap();
            out[at] = 0xC3; // a lead byte followed by `@`: not UTF-8
        }
        bytes::Bytes::from(out)
    }

    #[test]
    fn a_segment_reads_on_past_values_that_are_not_utf8_when_asked() {
        let mapping = replayfleet_config::SourceMapping::canonical();
        // Three row groups; the bad rows sit in the second batch of 8,192 rows, in two
        // row groups, so the segment is read again from an offset.
        let bad = [9_000, 15_001];
        let bytes = segment_with_bad_payloads(20_000, 7_000, &bad);

        let strict: Result<Vec<_>, _> =
            crate::decode_segment_batches("s.parquet", bytes.clone(), &mapping)
                .unwrap()
                .collect();
        let err = strict.unwrap_err().to_string();
        assert!(
            err.contains("s.parquet") && err.contains("not UTF-8"),
            "{err}"
        );

        let check = |batches: crate::SegmentBatches, first: u64, rows: u64| {
            let mut batches = batches.keep_undecodable();
            let mut read = 0u64;
            let mut nulls = Vec::new();
            for batch in batches.by_ref() {
                let batch = batch.unwrap();
                let seq = batch
                    .column_by_name("seq")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>();
                let payload = batch.column_by_name("payload").unwrap().as_string::<i32>();
                for i in 0..batch.num_rows() {
                    assert_eq!(
                        seq.value(i) as u64,
                        first + read + i as u64,
                        "rows in order"
                    );
                    if payload.is_null(i) {
                        nulls.push(seq.value(i) as u64);
                    } else {
                        assert_eq!(
                            payload.value(i),
                            format!(r#"{{"amount":{}}}"#, seq.value(i))
                        );
                    }
                }
                read += batch.num_rows() as u64;
            }
            assert_eq!(read, rows);
            let found = batches.take_undecodable();
            assert_eq!(found.iter().map(|u| u.row).collect::<Vec<_>>(), nulls);
            for u in &found {
                assert_eq!(u.column, "payload");
                assert!(u.bytes.starts_with(b"{\"amount\":\"\xC3@"), "{u}");
            }
            nulls
        };
        let all = crate::decode_segment_batches("s.parquet", bytes.clone(), &mapping).unwrap();
        assert_eq!(check(all, 0, 20_000), vec![9_000, 15_001]);
        // Row groups 1..3 (rows 7,000..20,000): row numbers are still the file's.
        let part = crate::decode_row_groups("s.parquet", bytes, &mapping, 1..3).unwrap();
        assert_eq!(check(part, 7_000, 13_000), vec![9_000, 15_001]);
    }

    #[test]
    fn string_types_become_binary_and_back() {
        assert_eq!(binary_type(&DataType::Utf8), DataType::Binary);
        let nested = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            binary_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::BinaryView, true)))
        );
        assert_eq!(binary_type(&DataType::Int64), DataType::Int64);
    }

    #[test]
    fn a_value_that_is_not_utf8_becomes_a_null_and_is_handed_out() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, true),
            Field::new("payload", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("seq", DataType::Int64, true),
                Field::new("payload", DataType::Binary, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(BinaryArray::from_opt_vec(vec![
                    Some(b"{}"),
                    Some(b"{\"a\":\"\xff\"}"),
                    None,
                ])),
            ],
        )
        .unwrap();
        let mut found = Vec::new();
        let restored = restore(&batch, &schema, 100, &mut found).unwrap();
        let payload = restored.column(1).as_string::<i32>();
        assert_eq!(payload, &StringArray::from(vec![Some("{}"), None, None]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].row, 101);
        assert_eq!(found[0].column, "payload");
        assert_eq!(found[0].bytes, b"{\"a\":\"\xff\"}");
        assert!(found[0].to_string().contains("not UTF-8"), "{}", found[0]);
    }
}
