//! Struct columns as JSON object text (a payload written as a record value).

use std::sync::Arc;

use arrow::{
    array::{Array, StringArray, StructArray},
    datatypes::Schema,
    error::ArrowError,
    json::{LineDelimitedWriter, WriterBuilder},
    record_batch::{RecordBatch, RecordBatchOptions},
};

/// One JSON object per row, keys in field order, a null field being an absent key
/// (at every depth); a null row stays null.
pub(crate) fn struct_to_json(array: &StructArray) -> Result<StringArray, ArrowError> {
    let rows = array.len();
    let (fields, columns, nulls) = array.clone().into_parts();
    // A RecordBatch refuses a struct with nulls: strip them here and restore them below.
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    let mut writer: LineDelimitedWriter<Vec<u8>> = WriterBuilder::new()
        .with_explicit_nulls(false)
        .build(Vec::with_capacity(rows * 64));
    writer.write(&batch)?;
    writer.finish()?;
    let text = String::from_utf8(writer.into_inner())
        .map_err(|e| ArrowError::JsonError(format!("writer produced invalid UTF-8: {e}")))?;
    // JSON strings escape newlines, so every line is one row.
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != rows {
        return Err(ArrowError::JsonError(format!(
            "expected {rows} JSON rows, the writer produced {}",
            lines.len()
        )));
    }
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(row, line)| {
            nulls
                .as_ref()
                .is_none_or(|n| n.is_valid(row))
                .then_some(line)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::{
        array::{
            ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
            types::Int32Type,
        },
        buffer::NullBuffer,
        datatypes::{DataType, Field, Fields},
    };

    fn texts(a: &StringArray) -> Vec<Option<&str>> {
        a.iter().collect()
    }

    #[test]
    fn null_fields_are_absent_keys_and_null_rows_stay_null() {
        let inner = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        )]);
        let fields = Fields::from(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("nested", inner.data_type().clone(), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![Some(12.5), None, Some(1.0)])),
            Arc::new(StringArray::from(vec![Some("a\nb"), Some("c"), None])),
            Arc::new(BooleanArray::from(vec![Some(true), None, None])),
            Arc::new(inner),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
        ];
        let array = StructArray::new(
            fields,
            columns,
            Some(NullBuffer::from(vec![true, true, false])),
        );
        let json = struct_to_json(&array).unwrap();
        assert_eq!(
            texts(&json),
            vec![
                Some(r#"{"amount":12.5,"note":"a\nb","ok":true,"nested":{"x":1},"tags":[1,null]}"#),
                Some(r#"{"note":"c","nested":{}}"#),
                None,
            ]
        );
    }

    #[test]
    fn a_struct_without_fields_is_an_empty_object() {
        let array = StructArray::new_empty_fields(2, None);
        assert_eq!(
            texts(&struct_to_json(&array).unwrap()),
            vec![Some("{}"), Some("{}")]
        );
    }
}
