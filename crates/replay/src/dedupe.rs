//! One bucket's rows in (partition, seq) order, and which of them go on: envelope nulls
//! are anomalies, the first copy of an event id is kept, later copies are exact
//! duplicates (dropped) or conflicting ones (an anomaly).
//!
//! Every copy of an id with the same stream is in one bucket, so most duplicates are
//! found inside a bucket. Copies that name different streams can sit in different
//! buckets; the reading step found their ids ([`crate::read::Read::cross_bucket`]), and
//! [`cross_bucket_winners`] decides, over all buckets, which copy is first.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type, UInt64Type};
use replayfleet_config::AnomalyKind;

use crate::{
    anomaly::{Policies, RowRef, Tally},
    canonical::identity,
    raw::{EVENT_ID, EVENT_TYPE, ORD, PARTITION, PAYLOAD, SEQ, STREAM_ID, VERSION},
    read::{Digests, id_digest},
};

/// A bucket's raw rows and their order.
pub(crate) struct Bucket {
    pub batches: Vec<RecordBatch>,
    /// Every row as (batch, row), in (partition, seq, `__ord`) order, rows without a seq
    /// last.
    pub order: Vec<(u32, u32)>,
    /// Per batch: whether any envelope field is null in it (most batches have none, and
    /// their rows skip the check).
    nulls: Vec<bool>,
    /// Per batch, the columns the hot loops read, downcast once.
    cols: Vec<Cols>,
}

/// One raw batch's columns, typed.
struct Cols {
    id: StringArray,
    event_type: StringArray,
    version: Int32Array,
    payload: StringArray,
}

/// The envelope fields a row must have, with the anomaly a null raises.
const ENVELOPE: [(usize, &str, AnomalyKind); 6] = [
    (EVENT_ID, "event_id", AnomalyKind::InvalidPayload),
    (STREAM_ID, "stream_id", AnomalyKind::InvalidPayload),
    (SEQ, "seq", AnomalyKind::InvalidPayload),
    (EVENT_TYPE, "event_type", AnomalyKind::UnknownType),
    (VERSION, "schema_version", AnomalyKind::NoUpcastPath),
    (PAYLOAD, "payload", AnomalyKind::InvalidPayload),
];

impl Bucket {
    /// Sorts a bucket's rows by (partition, seq, `__ord`).
    pub(crate) fn sorted(batches: Vec<RecordBatch>) -> Bucket {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut keys: Vec<(i32, bool, i64, u64, u32, u32)> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            let partition = batch.column(PARTITION).as_primitive::<Int32Type>();
            let seq = batch.column(SEQ).as_primitive::<Int64Type>();
            let ord = batch.column(ORD).as_primitive::<UInt64Type>();
            for row in 0..batch.num_rows() {
                keys.push((
                    partition.value(row),
                    seq.is_null(row),
                    seq.value(row),
                    ord.value(row),
                    b as u32,
                    row as u32,
                ));
            }
        }
        keys.sort_unstable();
        let nulls = batches
            .iter()
            .map(|b| {
                ENVELOPE
                    .iter()
                    .any(|(c, _, _)| b.column(*c).null_count() > 0)
            })
            .collect();
        let cols = batches
            .iter()
            .map(|b| Cols {
                id: b.column(EVENT_ID).as_string::<i32>().clone(),
                event_type: b.column(EVENT_TYPE).as_string::<i32>().clone(),
                version: b.column(VERSION).as_primitive::<Int32Type>().clone(),
                payload: b.column(PAYLOAD).as_string::<i32>().clone(),
            })
            .collect();
        Bucket {
            order: keys.into_iter().map(|k| (k.4, k.5)).collect(),
            batches,
            nulls,
            cols,
        }
    }

    /// A row's event id (of a row without envelope nulls).
    pub(crate) fn id(&self, (batch, row): (u32, u32)) -> &str {
        self.cols[batch as usize].id.value(row as usize)
    }

    /// A row's (event type, schema version) (of a row without envelope nulls).
    pub(crate) fn type_version(&self, (batch, row): (u32, u32)) -> (&str, i32) {
        let c = &self.cols[batch as usize];
        (
            c.event_type.value(row as usize),
            c.version.value(row as usize),
        )
    }

    /// A row's payload text (of a row without envelope nulls).
    pub(crate) fn payload(&self, (batch, row): (u32, u32)) -> &str {
        self.cols[batch as usize].payload.value(row as usize)
    }

    /// The first null envelope field of a row, as the anomaly it raises.
    fn envelope_null(&self, at: (u32, u32)) -> Option<(&'static str, AnomalyKind)> {
        if !self.nulls[at.0 as usize] {
            return None;
        }
        envelope_null(self.row(at))
    }

    pub(crate) fn row(&self, (batch, row): (u32, u32)) -> RowRef<'_> {
        RowRef {
            batch: &self.batches[batch as usize],
            row: row as usize,
        }
    }
}

/// The copy of an id that is kept when its copies sit in several buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Winner {
    pub partition: i32,
    pub seq: i64,
    pub ord: u64,
}

/// The first null envelope field of a row, as the anomaly it raises.
fn envelope_null(row: RowRef<'_>) -> Option<(&'static str, AnomalyKind)> {
    ENVELOPE
        .into_iter()
        .find(|(col, _, _)| row.batch.column(*col).is_null(row.row))
        .map(|(_, name, kind)| (name, kind))
}

/// The rows of a bucket (its raw batches, in any order: the winner is the least key
/// whatever the order) whose id is one of `cross` (digests of ids seen in several
/// buckets), as candidates for [`cross_bucket_winners`]: (id, winner key). Rows with an
/// envelope null are not candidates.
pub(crate) fn cross_bucket_candidates(
    batches: &[RecordBatch],
    cross: &Digests,
) -> Vec<(String, Winner)> {
    let mut found = Vec::new();
    for batch in batches {
        let nulls = ENVELOPE
            .iter()
            .any(|(c, _, _)| batch.column(*c).null_count() > 0);
        let ids = batch.column(EVENT_ID).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let row = RowRef { batch, row: i };
            if nulls && envelope_null(row).is_some() {
                continue;
            }
            let id = ids.value(i);
            if cross.contains(&id_digest(id)) {
                found.push((
                    id.to_owned(),
                    Winner {
                        partition: row.i32(PARTITION).expect("checked for null"),
                        seq: row.i64(SEQ).expect("checked for null"),
                        ord: row.ord(),
                    },
                ));
            }
        }
    }
    found
}

/// Of the candidates of every bucket (each bucket's list paired with its index), the
/// first copy of each id whose copies sit in more than one bucket.
pub(crate) fn cross_bucket_winners(
    candidates: Vec<(usize, Vec<(String, Winner)>)>,
) -> HashMap<String, Winner> {
    let mut by_id: HashMap<String, (Winner, usize, bool)> = HashMap::new();
    for (bucket, list) in candidates {
        for (id, key) in list {
            by_id
                .entry(id)
                .and_modify(|(first, b, several)| {
                    *several |= *b != bucket;
                    if key < *first {
                        *first = key;
                        *b = bucket;
                    }
                })
                .or_insert((key, bucket, false));
        }
    }
    by_id
        .into_iter()
        .filter(|(_, (_, _, several))| *several)
        .map(|(id, (first, _, _))| (id, first))
        .collect()
}

/// What the first copy of an id left for later copies to compare with.
struct First {
    at: (u32, u32),
    partition: i32,
    seq: i64,
    identity: Option<[u8; 32]>,
}

fn row_identity(row: RowRef<'_>) -> [u8; 32] {
    identity(
        row.str(STREAM_ID).unwrap_or_default(),
        row.str(EVENT_TYPE),
        row.i32(VERSION),
        row.str(PAYLOAD),
    )
}

/// Walks a bucket in order: returns the rows that go on (in order), tallying envelope
/// nulls, exact duplicates and conflicting duplicates. `dups` holds the digests of ids
/// seen more than once in the shard (only their rows are looked up), `winners` the first
/// copies of ids spread over several buckets.
pub(crate) fn dedupe(
    bucket: &Bucket,
    dups: &Digests,
    winners: &HashMap<String, Winner>,
    policies: &Policies,
    tally: &mut Tally,
) -> Vec<(u32, u32)> {
    let mut kept = Vec::with_capacity(bucket.order.len());
    let mut firsts: HashMap<&str, First> = HashMap::new();
    for &at in &bucket.order {
        let row = bucket.row(at);
        if let Some((name, kind)) = bucket.envelope_null(at) {
            policies.apply(
                tally,
                row,
                row.dedupe_stage(),
                kind,
                None,
                format!("the envelope's {name} is null"),
            );
            continue;
        }
        let id = bucket.id(at);
        if dups.is_empty() || !dups.contains(&id_digest(id)) {
            kept.push(at);
            continue;
        }
        let partition = row.i32(PARTITION).expect("checked for null");
        let seq = row.i64(SEQ).expect("checked for null");
        if let Some(winner) = winners.get(id)
            && winner.ord != row.ord()
            && !firsts.contains_key(id)
        {
            // The first copy is in another bucket: another stream, so a conflict.
            conflict(policies, tally, row, id, winner.partition, winner.seq);
            continue;
        }
        match firsts.get_mut(id) {
            None => {
                firsts.insert(
                    id,
                    First {
                        at,
                        partition,
                        seq,
                        identity: None,
                    },
                );
                kept.push(at);
            }
            Some(first) => {
                let theirs = *first
                    .identity
                    .get_or_insert_with(|| row_identity(bucket.row(first.at)));
                if theirs == row_identity(row) {
                    tally.applied.duplicates_dropped += 1;
                } else {
                    let (p, s) = (first.partition, first.seq);
                    conflict(policies, tally, row, id, p, s);
                }
            }
        }
    }
    kept
}

fn conflict(
    policies: &Policies,
    tally: &mut Tally,
    row: RowRef<'_>,
    id: &str,
    partition: i32,
    seq: i64,
) {
    let message = format!(
        "event id {id} was first seen at partition {partition}, seq {seq} with a different stream, type, version or payload"
    );
    policies.apply(
        tally,
        row,
        row.dedupe_stage(),
        AnomalyKind::ConflictingDuplicate,
        None,
        message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_copy_wins_and_ids_in_one_bucket_are_left_alone() {
        let w = |partition, seq, ord| Winner {
            partition,
            seq,
            ord,
        };
        let winners = cross_bucket_winners(vec![
            (
                0,
                vec![("a".into(), w(0, 9, 1)), ("local".into(), w(0, 1, 2))],
            ),
            (
                1,
                vec![("a".into(), w(0, 3, 7)), ("local".into(), w(0, 1, 2))],
            ),
            (2, vec![("a".into(), w(0, 3, 5)), ("b".into(), w(1, 1, 1))]),
            (3, vec![("b".into(), w(0, 5, 1))]),
        ]);
        assert_eq!(winners.len(), 3);
        assert_eq!(winners["a"], w(0, 3, 5));
        assert_eq!(winners["b"], w(0, 5, 1));
        assert_eq!(winners["local"], w(0, 1, 2));
        // Copies in one bucket are that bucket's to judge.
        let one = cross_bucket_winners(vec![
            (0, vec![("x".into(), w(0, 2, 2))]),
            (0, vec![("x".into(), w(0, 1, 1))]),
        ]);
        assert!(one.is_empty());
    }
}
