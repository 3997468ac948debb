//! Phase one: the commit order of the whole history, without any payload.
//!
//! The global `seq` interleaves every partition, so it has to be decided before any
//! partition is written. This pass only decides *which stream* commits at each `seq`
//! (and where resends go); it keeps 16 bytes per row and no JSON. Phase two
//! ([`crate::history`]) then walks one partition at a time in `seq` order and makes up
//! the events themselves.
//!
//! Streams open one after another, evenly over the history (stream `k` opens at about
//! `k * events / streams`); every other event goes to a uniformly chosen open stream,
//! so old accounts have long histories and young ones short ones, and accounts opened
//! late are opened with the late contract versions.

use std::{cmp::Reverse, collections::BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{GenerateSpec, ids};

/// What one row of a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    /// A new event of stream `target`; `resent` when a later slot copies it.
    Original { resent: bool },
    /// An exact resend of the original at row `target` of the same partition.
    Duplicate,
    /// A resend of the original at row `target` with a different payload.
    Conflicting,
}

/// One row of a partition, in `seq` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub seq: u64,
    /// The stream index for an original; the original's row index for a resend.
    pub target: u32,
    pub kind: SlotKind,
}

/// The commit order of a history.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Rows of each partition, `seq` strictly increasing.
    pub partitions: Vec<Vec<Slot>>,
    /// Original events per stream (streams that never opened have 0).
    pub stream_events: Vec<u32>,
    /// The highest `seq` (= rows in the archive).
    pub last_seq: u64,
}

/// Pending resends of one partition: (due when the partition has this many rows,
/// original row, conflicting).
type Pending = BinaryHeap<Reverse<(u64, u32, bool)>>;

pub(crate) fn plan(spec: &GenerateSpec) -> Schedule {
    // Stream 0 of the ChaCha generator; partition p uses stream p + 1 (see history).
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let events = spec.events;
    let streams = spec.streams.min(events.max(1)) as u32;
    let nparts = spec.partitions as usize;
    let partition_of: Vec<u32> = (0..streams)
        .map(|s| ids::partition_of(&ids::stream_id(s), spec.partitions))
        .collect();

    let mut partitions: Vec<Vec<Slot>> = vec![Vec::new(); nparts];
    let mut pending: Vec<Pending> = vec![BinaryHeap::new(); nparts];
    let mut stream_events = vec![0_u32; streams as usize];
    // A "far" resend jumps about one default segment (a third of a partition).
    let rows_per_partition = (events / u64::from(spec.partitions)).max(3);
    let far = (rows_per_partition / 3).max(1)..=(rows_per_partition * 2 / 3).max(1);
    let (dup_rate, conflict_rate) = (spec.edge.duplicates, spec.edge.conflicting_duplicates);

    let mut seq = 0_u64;
    let mut opened = 0_u32;
    for i in 0..events {
        let birth = |k: u32| (u128::from(k) * u128::from(events) / u128::from(streams)) as u64;
        let stream = if opened < streams && birth(opened) <= i {
            opened += 1;
            opened - 1
        } else {
            rng.random_range(0..opened)
        };
        stream_events[stream as usize] += 1;
        let p = partition_of[stream as usize] as usize;
        let rows = &mut partitions[p];
        while let Some(&Reverse((due, original, conflicting))) = pending[p].peek() {
            if due > rows.len() as u64 {
                break;
            }
            pending[p].pop();
            seq += 1;
            rows.push(resend(seq, original, conflicting));
        }
        seq += 1;
        let row = rows.len() as u32;
        let roll: f64 = if dup_rate + conflict_rate > 0.0 {
            rng.random()
        } else {
            1.0
        };
        let resent = roll < dup_rate + conflict_rate;
        rows.push(Slot {
            seq,
            target: stream,
            kind: SlotKind::Original { resent },
        });
        if resent {
            let delay = if rng.random_bool(0.5) {
                rng.random_range(1..=4)
            } else {
                rng.random_range(far.clone())
            };
            pending[p].push(Reverse((u64::from(row) + 1 + delay, row, roll >= dup_rate)));
        }
    }
    // Resends still pending when the history ends are sent last, partition by partition.
    for (p, heap) in pending.iter_mut().enumerate() {
        while let Some(Reverse((_, original, conflicting))) = heap.pop() {
            seq += 1;
            partitions[p].push(resend(seq, original, conflicting));
        }
    }
    Schedule {
        partitions,
        stream_events,
        last_seq: seq,
    }
}

fn resend(seq: u64, original: u32, conflicting: bool) -> Slot {
    Slot {
        seq,
        target: original,
        kind: if conflicting {
            SlotKind::Conflicting
        } else {
            SlotKind::Duplicate
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EdgeCases;

    #[test]
    fn every_seq_is_used_once_and_increases_per_partition() {
        let spec = GenerateSpec::new(5_000, 4, 300, 7).with_edge_cases(EdgeCases::all());
        let plan = plan(&spec);
        let mut all: Vec<u64> = plan.partitions.iter().flatten().map(|s| s.seq).collect();
        for rows in &plan.partitions {
            assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
        }
        all.sort_unstable();
        assert_eq!(all, (1..=plan.last_seq).collect::<Vec<_>>());
        let originals = plan
            .partitions
            .iter()
            .flatten()
            .filter(|s| matches!(s.kind, SlotKind::Original { .. }))
            .count();
        assert_eq!(originals, 5_000);
        assert_eq!(
            plan.stream_events
                .iter()
                .map(|&n| u64::from(n))
                .sum::<u64>(),
            5_000
        );
        assert!(
            plan.stream_events.iter().all(|&n| n > 0),
            "every stream opens"
        );
    }

    #[test]
    fn resends_point_back_at_a_resent_original_of_their_partition() {
        let edge = EdgeCases {
            duplicates: 0.05,
            conflicting_duplicates: 0.02,
            ..EdgeCases::none()
        };
        let plan = plan(&GenerateSpec::new(3_000, 3, 100, 1).with_edge_cases(edge));
        let mut resends = 0;
        for rows in &plan.partitions {
            for (i, slot) in rows.iter().enumerate() {
                if matches!(slot.kind, SlotKind::Duplicate | SlotKind::Conflicting) {
                    resends += 1;
                    let original = rows[slot.target as usize];
                    assert!((slot.target as usize) < i);
                    assert_eq!(original.kind, SlotKind::Original { resent: true });
                }
            }
        }
        let marked = plan
            .partitions
            .iter()
            .flatten()
            .filter(|s| s.kind == SlotKind::Original { resent: true })
            .count();
        assert_eq!(resends, marked);
        assert_eq!(plan.last_seq, 3_000 + resends as u64);
    }

    #[test]
    fn fewer_events_than_streams_opens_only_as_many_streams() {
        let plan = plan(&GenerateSpec::new(5, 2, 100, 1));
        assert_eq!(plan.stream_events, vec![1; 5]);
    }
}
