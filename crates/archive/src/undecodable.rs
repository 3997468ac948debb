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
//! not UTF-8 sets its whole row aside the same way, with the bytes of that string.
//!
//! [`SegmentBatches::keep_undecodable`]: crate::SegmentBatches::keep_undecodable

use std::sync::Arc;

use arrow::{
    array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray},
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
/// segment reads as, projected as the batch is): a value that is not UTF-8 (at the top
/// level or nested) becomes a null and is added to `found` (rows numbered from
/// `first_row`, in row order).
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
    let before = found.len();
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
            let Some(values) = byte_values(column.as_ref()) else {
                // A struct, list or map whose strings are bytes now.
                return restore_nested(column, field, first_row, found);
            };
            let (texts, bad) = texts_of(&values);
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
            cast_with_options(&column, &wanted, &strict)
                .map_err(|e| format!("column `{}` cannot be read as text ({e})", field.name()))
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    // Row order across columns.
    found[before..].sort_by_key(|u| u.row);
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| e.to_string())
}

/// A nested column (a struct, list or map) read with its strings as bytes, back in
/// `field`'s type: a row with a string anywhere inside it that is not UTF-8 becomes a
/// null (its field made nullable) and is added to `found` with the first such string's
/// bytes.
fn restore_nested(
    column: &ArrayRef,
    field: &mut FieldRef,
    first_row: u64,
    found: &mut Vec<Undecodable>,
) -> Result<ArrayRef, String> {
    let wanted = field.data_type().clone();
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let whole = match cast_with_options(column, &wanted, &strict) {
        Ok(cast) => return Ok(cast),
        Err(e) => e,
    };
    // Rare (a corrupt segment): each row on its own, to name the rows. (A cast of a
    // one-row slice of a list would check the whole list's values.)
    let mut bad = vec![false; column.len()];
    for i in (0..column.len()).filter(|i| column.is_valid(*i)) {
        if let Some((bytes, reason)) = first_not_text(column.slice(i, 1).as_ref()) {
            bad[i] = true;
            found.push(Undecodable {
                row: first_row + i as u64,
                column: field.name().clone(),
                bytes,
                reason: format!("a string inside the value: {reason}"),
            });
        }
    }
    if !bad.contains(&true) {
        return Err(format!(
            "column `{}` cannot be read as text ({whole})",
            field.name()
        ));
    }
    // The bad rows are null at the top; the strings under them no longer count.
    let kept =
        arrow::compute::nullif(column, &BooleanArray::from(bad)).map_err(|e| e.to_string())?;
    *field = Arc::new(field.as_ref().clone().with_nullable(true));
    let lenient = CastOptions {
        safe: true,
        ..Default::default()
    };
    cast_with_options(&kept, &wanted, &lenient)
        .map_err(|e| format!("column `{}` cannot be read as text ({e})", field.name()))
}

/// The bytes of the first value that is not UTF-8 in `array` or anything nested in it,
/// with why.
fn first_not_text(array: &dyn Array) -> Option<(Vec<u8>, String)> {
    let valid = |i: usize| array.is_valid(i);
    match array.data_type() {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            byte_values(array)?.into_iter().flatten().find_map(|v| {
                std::str::from_utf8(v)
                    .err()
                    .map(|e| (v.to_vec(), e.to_string()))
            })
        }
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .find_map(|c| first_not_text(c.as_ref())),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            (0..list.len())
                .filter(|i| valid(*i))
                .find_map(|i| first_not_text(list.value(i).as_ref()))
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            (0..list.len())
                .filter(|i| valid(*i))
                .find_map(|i| first_not_text(list.value(i).as_ref()))
        }
        DataType::FixedSizeList(..) => {
            let list = array.as_fixed_size_list();
            (0..list.len())
                .filter(|i| valid(*i))
                .find_map(|i| first_not_text(list.value(i).as_ref()))
        }
        DataType::Map(..) => {
            let map = array.as_map();
            (0..map.len())
                .filter(|i| valid(*i))
                .find_map(|i| first_not_text(&map.value(i)))
        }
        DataType::Dictionary(..) => first_not_text(array.as_any_dictionary().values().as_ref()),
        _ => None,
    }
}

/// The values of a binary column (`Binary`, `LargeBinary`, `BinaryView`); `None` for
/// another type.
fn byte_values(column: &dyn Array) -> Option<Vec<Option<&[u8]>>> {
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

    #[test]
    fn a_row_with_a_nested_value_that_is_not_utf8_is_handed_out_whole() {
        use arrow::array::{ListArray, StructArray};
        use arrow::buffer::OffsetBuffer;
        let text_fields = |t: DataType| {
            vec![
                Field::new("note", t.clone(), true),
                Field::new(
                    "tags",
                    DataType::List(Arc::new(Field::new("item", t, true))),
                    true,
                ),
            ]
        };
        let wanted = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new(
                "payload",
                DataType::Struct(text_fields(DataType::Utf8).into()),
                false,
            ),
        ]));
        let notes = BinaryArray::from_opt_vec(vec![Some(b"a"), Some(b"b\xfe"), Some(b"c"), None]);
        let tags = ListArray::new(
            Arc::new(Field::new("item", DataType::Binary, true)),
            OffsetBuffer::from_lengths([1, 0, 2, 1]),
            Arc::new(BinaryArray::from_opt_vec(vec![
                Some(b"x"),
                Some(b"y"),
                Some(b"\xc3("),
                Some(b"z"),
            ])),
            None,
        );
        let payload = StructArray::new(
            text_fields(DataType::Binary).into(),
            vec![Arc::new(notes), Arc::new(tags)],
            None,
        );
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("seq", DataType::Int64, false),
                Field::new("payload", payload.data_type().clone(), false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(payload),
            ],
        )
        .unwrap();

        let mut found = Vec::new();
        let restored = restore(&batch, &wanted, 10, &mut found).unwrap();
        let rows: Vec<(u64, &str, &[u8])> = found
            .iter()
            .map(|u| (u.row, u.column.as_str(), u.bytes.as_slice()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (11, "payload", &b"b\xfe"[..]),
                (12, "payload", &b"\xc3("[..])
            ]
        );
        assert!(found[0].reason.contains("inside the value"), "{}", found[0]);
        let payload = restored.column(1).as_struct();
        assert_eq!(
            (0..4).map(|i| payload.is_valid(i)).collect::<Vec<_>>(),
            vec![true, false, false, true]
        );
        assert_eq!(
            payload.column(0).as_string::<i32>().value(0),
            "a",
            "good rows keep their text"
        );
        assert!(restored.schema().field(1).is_nullable());
        assert_eq!(
            restored.schema().field(1).data_type(),
            wanted.field(1).data_type()
        );
    }
}
