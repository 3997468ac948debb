//! Merging the buckets' projections, each sorted by the key, into the shard's one key
//! order: the rows one fold over the whole shard would have given, in its order.
//!
//! Keys compare as DataFusion's `ORDER BY` compares them (ascending, nulls last), through
//! Arrow's row format; rows with equal keys (which the finalizer refuses anyway) come in
//! bucket order.

use std::{cmp::Reverse, collections::BinaryHeap, sync::Arc};

use arrow::{
    array::{Array, ArrayRef, RecordBatch},
    compute::{SortOptions, concat_batches, interleave},
    datatypes::{DataType, SchemaRef},
    row::{RowConverter, Rows, SortField},
};

use crate::{Result, order::arrow_error};

/// The buckets' outputs, merged a chunk at a time.
pub(crate) struct Merged {
    schema: SchemaRef,
    outputs: Vec<RecordBatch>,
    keys: Vec<Rows>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize, usize)>>,
}

/// A row converter whose rows compare as DataFusion's `ORDER BY` compares keys of
/// `types` (ascending, nulls last): the order of part files, and of the samples the
/// finalizer's baseline diff reports.
pub fn key_order<'a>(
    types: impl IntoIterator<Item = &'a DataType>,
) -> std::result::Result<RowConverter, arrow::error::ArrowError> {
    RowConverter::new(
        types
            .into_iter()
            .map(|ty| {
                SortField::new_with_options(
                    ty.clone(),
                    SortOptions {
                        descending: false,
                        nulls_first: false,
                    },
                )
            })
            .collect(),
    )
}

impl Merged {
    /// Prepares the merge of `outputs` (one list of batches per bucket, each sorted by
    /// `key`).
    pub(crate) fn new(
        schema: &SchemaRef,
        outputs: Vec<Vec<RecordBatch>>,
        key: &[String],
    ) -> Result<Merged> {
        let outputs: Vec<RecordBatch> = outputs
            .into_iter()
            .map(|batches| concat_batches(schema, &batches).map_err(arrow_error))
            .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
            .collect::<Result<_>>()?;
        let key_columns: Vec<usize> = key
            .iter()
            .map(|k| schema.index_of(k).map_err(arrow_error))
            .collect::<Result<_>>()?;
        let converter = key_order(key_columns.iter().map(|&i| schema.field(i).data_type()))
            .map_err(arrow_error)?;
        let mut keys = Vec::with_capacity(outputs.len());
        let mut heap = BinaryHeap::with_capacity(outputs.len());
        for (b, batch) in outputs.iter().enumerate() {
            let columns: Vec<ArrayRef> = key_columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect();
            let rows = converter.convert_columns(&columns).map_err(arrow_error)?;
            heap.push(Reverse((rows.row(0).as_ref().to_vec(), b, 0)));
            keys.push(rows);
        }
        Ok(Merged {
            schema: Arc::clone(schema),
            outputs,
            keys,
            heap,
        })
    }

    /// The rows' schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows left to merge.
    #[cfg(test)]
    pub(crate) fn remaining(&self) -> usize {
        self.heap
            .iter()
            .map(|Reverse((_, b, r))| self.outputs[*b].num_rows() - r)
            .sum()
    }

    /// The next `rows` rows (fewer at the end), or `None` when all are out.
    pub(crate) fn next_chunk(&mut self, rows: usize) -> Result<Option<RecordBatch>> {
        if self.heap.is_empty() {
            return Ok(None);
        }
        if self.outputs.len() == 1 {
            let Reverse((_, _, at)) = self.heap.pop().expect("not empty");
            let all = &self.outputs[0];
            let n = rows.min(all.num_rows() - at);
            if at + n < all.num_rows() {
                let next = self.keys[0].row(at + n).as_ref().to_vec();
                self.heap.push(Reverse((next, 0, at + n)));
            }
            return Ok(Some(all.slice(at, n)));
        }
        let mut picked: Vec<(usize, usize)> = Vec::with_capacity(rows);
        while picked.len() < rows {
            let Some(Reverse((_, b, r))) = self.heap.pop() else {
                break;
            };
            picked.push((b, r));
            if r + 1 < self.outputs[b].num_rows() {
                let next = self.keys[b].row(r + 1).as_ref().to_vec();
                self.heap.push(Reverse((next, b, r + 1)));
            }
        }
        let columns: Vec<ArrayRef> = (0..self.schema.fields().len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    self.outputs.iter().map(|o| o.column(c).as_ref()).collect();
                interleave(&sources, &picked).map_err(arrow_error)
            })
            .collect::<Result<_>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map(Some)
            .map_err(arrow_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::{
        array::{AsArray, Int64Array, StringArray},
        datatypes::{DataType, Field, Int64Type, Schema},
    };

    fn batch(schema: &SchemaRef, keys: &[Option<&str>], values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn merges_sorted_buckets_into_one_order_nulls_last() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let outputs = vec![
            vec![batch(&schema, &[Some("a"), Some("d")], &[1, 4])],
            vec![],
            vec![
                batch(&schema, &[Some("b")], &[2]),
                batch(&schema, &[Some("c"), None], &[3, 5]),
            ],
        ];
        let mut merged = Merged::new(&schema, outputs, &["k".to_owned()]).unwrap();
        assert_eq!(merged.remaining(), 5);
        let mut values: Vec<i64> = Vec::new();
        while let Some(chunk) = merged.next_chunk(2).unwrap() {
            assert!(chunk.num_rows() <= 2);
            values.extend(chunk.column(1).as_primitive::<Int64Type>().values().iter());
        }
        assert_eq!(values, [1, 2, 3, 4, 5]);
    }
}
