//! The content fingerprint (docs/FORMATS.md, "Content fingerprint"): a row-level digest
//! that does not depend on how rows are split into shards, segments or batches.
//!
//! Canonical encoding of one row: for each column in output-schema order, the column
//! name's UTF-8 bytes, a `0x00` byte, then `0x00` for a null or `0x01` followed by the
//! value as Arrow displays it (integers in decimal, floats in shortest round-trip form,
//! strings as they are, timestamps as RFC 3339) and a `0x00` byte. The row's digest is the
//! SHA-256 of that encoding. The fingerprint is the sum of every row digest, read as a
//! 256-bit big-endian unsigned integer, modulo 2^256, written as 64 hex digits: a
//! multiset digest, so row order and segmentation do not change it.

use arrow::{
    record_batch::RecordBatch,
    util::display::{ArrayFormatter, FormatOptions},
};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// An order-independent digest of rows, built incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    sum: [u8; 32],
    rows: u64,
}

impl Fingerprint {
    /// An empty fingerprint (no rows).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every row of `batch`.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::default().with_null("");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Write {
                path: "fingerprint".into(),
                message: e.to_string(),
            })?;
        let schema = batch.schema();
        let mut encoded = String::new();
        for row in 0..batch.num_rows() {
            let mut hasher = Sha256::new();
            for (i, field) in schema.fields().iter().enumerate() {
                hasher.update(field.name().as_bytes());
                hasher.update([0u8]);
                if batch.column(i).is_null(row) {
                    hasher.update([0u8]);
                } else {
                    encoded.clear();
                    use std::fmt::Write;
                    let _ = write!(encoded, "{}", formatters[i].value(row));
                    hasher.update([1u8]);
                    hasher.update(encoded.as_bytes());
                    hasher.update([0u8]);
                }
            }
            self.add_digest(&hasher.finalize().into());
        }
        Ok(())
    }

    fn add_digest(&mut self, digest: &[u8; 32]) {
        self.add_sum(digest);
        self.rows += 1;
    }

    /// Adds `digest` to the sum, modulo 2^256.
    fn add_sum(&mut self, digest: &[u8; 32]) {
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let s = u16::from(self.sum[i]) + u16::from(digest[i]) + carry;
            self.sum[i] = s as u8;
            carry = s >> 8;
        }
    }

    /// Adds every row of `other` (the fingerprint of the rows of both).
    pub fn merge(&mut self, other: &Fingerprint) {
        self.add_sum(&other.sum);
        self.rows += other.rows;
    }

    /// The fingerprint of `rows` rows whose [`Fingerprint::hex`] is `hex` (a part's, to
    /// [`Fingerprint::merge`]); `None` when `hex` is not 64 hex digits.
    pub fn from_hex(hex: &str, rows: u64) -> Option<Self> {
        let mut sum = [0u8; 32];
        hex::decode_to_slice(hex, &mut sum).ok()?;
        Some(Self { sum, rows })
    }

    /// Rows added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The fingerprint, 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.sum)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn order_and_split_do_not_matter_but_content_does() {
        let mut one = Fingerprint::new();
        one.add_batch(&batch(&[1, 2, 3], &[Some("a"), None, Some("c")]))
            .unwrap();
        let mut two = Fingerprint::new();
        two.add_batch(&batch(&[3], &[Some("c")])).unwrap();
        two.add_batch(&batch(&[2, 1], &[None, Some("a")])).unwrap();
        assert_eq!(one, two);
        let mut other = Fingerprint::new();
        other
            .add_batch(&batch(&[1, 2, 3], &[Some("a"), Some(""), Some("c")]))
            .unwrap();
        assert_ne!(one.hex(), other.hex(), "null and empty string differ");
        // Fingerprints of parts merge into the whole's (the sum carries across bytes).
        let mut parts = Fingerprint::new();
        for rows in [&[3][..], &[1, 2]] {
            let mut part = Fingerprint::new();
            let names: Vec<Option<&str>> = rows
                .iter()
                .map(|r| [Some("a"), None, Some("c")][*r as usize - 1])
                .collect();
            part.add_batch(&batch(rows, &names)).unwrap();
            parts.merge(&Fingerprint::from_hex(&part.hex(), part.rows()).unwrap());
        }
        assert_eq!(parts, one);
        assert_eq!(Fingerprint::from_hex("00ff", 1), None);
    }
}
