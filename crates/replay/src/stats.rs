//! Per-file statistics of a projection segment, computed by the worker that writes it and
//! recorded in its lineage manifest; the finalizer puts them in the Delta log's `add.stats`
//! (docs/FORMATS.md, "The commit log").

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, kernels::aggregate};
use arrow::datatypes::{DataType as ArrowType, Int64Type};
use serde_json::{Map, Value, json};

/// The Delta `add.stats` of a part file's rows: the row count, and the null count, minimum and
/// maximum of each key column (min/max for integer and text columns, whose order is the
/// one readers compare statistics in; other types are left out, which readers take as
/// unknown).
pub fn file_stats(batches: &[RecordBatch], key: &[String], rows: u64) -> Value {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for column in key {
        let arrays: Vec<&ArrayRef> = batches
            .iter()
            .filter_map(|b| b.column_by_name(column))
            .collect();
        if arrays.len() != batches.len() {
            continue;
        }
        let null_count: usize = arrays.iter().map(|a| a.null_count()).sum();
        nulls.insert(column.clone(), null_count.into());
        if let Some((lo, hi)) = bounds(&arrays) {
            min.insert(column.clone(), lo);
            max.insert(column.clone(), hi);
        }
    }
    let mut stats = json!({ "numRecords": rows, "nullCount": nulls });
    if !min.is_empty() {
        stats["minValues"] = Value::Object(min);
        stats["maxValues"] = Value::Object(max);
    }
    stats
}

/// The least and greatest value of one column over its arrays: integers and text only.
fn bounds(arrays: &[&ArrayRef]) -> Option<(Value, Value)> {
    let ty = arrays.first()?.data_type();
    let mut lo: Option<Value> = None;
    let mut hi: Option<Value> = None;
    let mut keep = |a: Value, b: Value, less: &dyn Fn(&Value, &Value) -> bool| {
        if lo.as_ref().is_none_or(|l| less(&a, l)) {
            lo = Some(a);
        }
        if hi.as_ref().is_none_or(|h| less(h, &b)) {
            hi = Some(b);
        }
    };
    match ty {
        ArrowType::Int8 | ArrowType::Int16 | ArrowType::Int32 | ArrowType::Int64 => {
            let less = |a: &Value, b: &Value| a.as_i64() < b.as_i64();
            for array in arrays {
                let wide = cast(array, &ArrowType::Int64).ok()?;
                let ints = wide.as_primitive::<Int64Type>();
                if let (Some(a), Some(b)) = (aggregate::min(ints), aggregate::max(ints)) {
                    keep(a.into(), b.into(), &less);
                }
            }
        }
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => {
            let less = |a: &Value, b: &Value| a.as_str() < b.as_str();
            for array in arrays {
                let text = cast(array, &ArrowType::LargeUtf8).ok()?;
                let text = text.as_string::<i64>();
                if let (Some(a), Some(b)) =
                    (aggregate::min_string(text), aggregate::max_string(text))
                {
                    keep(a.into(), b.into(), &less);
                }
            }
        }
        _ => return None,
    }
    lo.zip(hi)
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn stats_hold_each_key_columns_nulls_and_bounds_over_every_batch() {
        use arrow::array::{Int32Array, StringArray};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
        ]));
        let batch = |tenants: Vec<Option<&str>>, ns: Vec<Option<i32>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    std::sync::Arc::new(StringArray::from(tenants)),
                    std::sync::Arc::new(Int32Array::from(ns)),
                ],
            )
            .unwrap()
        };
        let batches = [
            batch(vec![Some("b"), Some("c")], vec![Some(7), None]),
            batch(vec![Some("a"), None], vec![Some(-3), Some(2)]),
        ];
        let key = ["tenant".to_owned(), "n".to_owned()];
        assert_eq!(
            file_stats(&batches, &key, 4),
            json!({
                "numRecords": 4,
                "nullCount": {"tenant": 1, "n": 1},
                "minValues": {"tenant": "a", "n": -3},
                "maxValues": {"tenant": "c", "n": 7},
            })
        );
    }
}
