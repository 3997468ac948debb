//! Reading a shard: its segments fetched a few at a time, each cut into parts of whole row
//! groups that are decoded on every thread the worker has, filtered to the shard's
//! partitions and the window, and routed to the shard's buckets of streams.
//!
//! ```text
//! segments ─fetch (If-Match, a few ahead)─▶ parts of row groups ─decode, filter─▶ rows
//!   rows ─hash(stream_id)─▶ bucket b        (every row of a stream in one bucket)
//!   rows ─hash(event_id)──▶ id digests      (to find ids whose copies sit in two buckets)
//! ```
//!
//! What a segment contributes to the lineage (its SHA-256, rows, seq range, rows out of
//! order) is put together once all its parts are read, in file order.

use std::{
    collections::{BTreeSet, HashSet},
    ops::Range,
    sync::Arc,
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, UInt64Array,
        new_null_array,
    },
    compute::{filter_record_batch, take_record_batch},
    datatypes::{Int32Type, Int64Type, TimestampMicrosecondType},
};
use bytes::Bytes;
use futures::StreamExt;
use replayfleet_archive::{
    Location, SegmentBatches, Undecodable, decode_row_groups, decode_segment_batches,
    fetch_segment, row_group_rows,
};
use replayfleet_config::Window;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    Error, Pacer, Result,
    layout::sha256_hex,
    lineage::LineageInput,
    order::arrow_error,
    plan::{InputSegment, Plan, ShardPlan, Split, stream_bucket, stream_hash},
    raw::{
        EVENT_ID, EVENT_TYPE, METADATA, OCCURRED_AT, ORD, PARTITION, PAYLOAD, SEQ, STREAM_ID, ord,
        raw_schema,
    },
    store::{Source, Store},
};

const MIB: usize = 1024 * 1024;

/// Rows a part of a segment holds at least (whole row groups), so that a large segment
/// is decoded on several threads and a small one is not cut at all.
const PART_ROWS: u64 = 128 * 1024;

/// What reading a shard produced.
pub(crate) struct Read {
    /// Every segment read, in the plan's order.
    pub inputs: Vec<LineageInput>,
    /// Rows of the shard's partitions inside the window.
    pub events_read: u64,
    /// Rows below an earlier seq of their partition inside their segment.
    pub out_of_order: u64,
    /// The rows of each bucket, as raw batches (any order: every later step sorts), in
    /// memory or spilled to disk.
    pub buckets: Vec<Source>,
    /// The spill folder, while any bucket's rows are in it.
    pub spill: Option<crate::store::SpillDir>,
    /// Rows spilled to disk.
    pub spilled_rows: usize,
    /// Digests ([`id_digest`]) of the event ids seen more than once in the shard: only
    /// their rows need comparing.
    pub repeated: Digests,
    /// Digests of the event ids whose copies sit in two buckets or more.
    pub cross_bucket: Digests,
    /// Rows that could not be decoded (a text value that is not UTF-8), set aside as
    /// they were read: raw batches (the bad values null) and, per row, what was wrong.
    pub undecodable: Vec<SetAside>,
}

/// Rows of a batch set aside because a value of theirs is not UTF-8: the rows (raw
/// schema, the bad values null) and, per row, the first bad value.
pub(crate) type SetAside = (RecordBatch, Vec<Undecodable>);

/// Sets of id digests ([`id_digest`]): the digests are hashes already, so the set only
/// spreads them (a multiplication) instead of hashing them again.
pub(crate) type Digests = HashSet<u64, std::hash::BuildHasherDefault<Spread>>;

/// The hasher of [`Digests`].
#[derive(Default)]
pub(crate) struct Spread(u64);

impl std::hash::Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Digests keep their low byte for the bucket: fold the high bits down.
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The bucket a stream belongs to: a fixed hash of its id, spread over `buckets`. In a
/// sub-shard, the hash's place inside the sub-shard's share is spread instead, so that
/// its streams fill every bucket.
pub(crate) fn bucket_of(stream_id: &str, split: Option<Split>, buckets: usize) -> usize {
    let mut h = stream_hash(stream_id);
    if let Some(split) = split {
        // The fraction left once the share is taken off: `hash × of mod 2^64`.
        h = (u128::from(h) * u128::from(split.of)) as u64;
    }
    ((u128::from(h) * buckets as u128) >> 64) as usize
}

/// The digest of an event id that finds its copies: 56 bits of a fixed hash (the low
/// byte is left for the bucket). Equal digests are only candidates; ids are compared.
pub(crate) fn id_digest(event_id: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(event_id.as_bytes()) & !0xff
}

/// The seqs of one partition's rows in one part of a segment, in file order, folded so
/// that the part's rows need not be kept to count the segment's rows out of order (a row
/// is out of order when its seq is below a seq earlier in its segment and partition).
///
/// Rows below an earlier seq of the part are counted at once; the others (the part's
/// running maxima, non-decreasing) are kept as runs of consecutive seqs, which are few in
/// an archive whose seqs mostly step by one. Whether such a row is out of order depends
/// only on the highest seq of the segment's earlier parts: [`SeqRuns::out_of_order_after`].
#[derive(Debug, Default)]
struct SeqRuns {
    min: Option<i64>,
    /// Rows below an earlier seq of the part.
    below: u64,
    /// The running maxima, as runs `(first, last, rows)`: `rows` rows whose seqs step by
    /// one from `first` to `last` (`rows == last - first + 1`), or repeat one seq
    /// (`first == last`).
    runs: Vec<(i64, i64, u64)>,
}

impl SeqRuns {
    fn push(&mut self, seq: i64) {
        self.min = Some(self.min.map_or(seq, |m| m.min(seq)));
        match self.runs.last_mut() {
            Some((_, last, _)) if seq < *last => self.below += 1,
            Some((first, last, rows))
                if (seq == *last && first == last)
                    || (Some(seq) == last.checked_add(1) && *rows == last.abs_diff(*first) + 1) =>
            {
                *last = seq;
                *rows += 1;
            }
            _ => self.runs.push((seq, seq, 1)),
        }
    }

    fn min(&self) -> Option<i64> {
        self.min
    }

    fn max(&self) -> Option<i64> {
        self.runs.last().map(|(_, last, _)| *last)
    }

    /// The part's rows out of order once the segment's earlier parts reached `earlier`.
    fn out_of_order_after(&self, earlier: i64) -> u64 {
        let mut n = self.below;
        for &(first, last, rows) in &self.runs {
            if first >= earlier {
                break;
            }
            n += if first == last {
                rows
            } else {
                // Seqs first..=last step by one: those below `earlier`.
                earlier.abs_diff(first).min(rows)
            };
        }
        n
    }
}

/// One part of one segment: whole row groups (or the whole segment).
struct Part {
    segment: usize,
    input: Arc<InputSegment>,
    bytes: Bytes,
    /// `None`: the whole segment.
    row_groups: Option<Range<usize>>,
    /// Whether this part also hashes the segment's bytes (the first part does).
    hashes: bool,
    /// The segment's share of the fetch budget, given back when its last part is done.
    _fetched: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// What a part read.
struct PartRead {
    segment: usize,
    /// The first row group (orders a segment's parts).
    first_group: usize,
    sha256: Option<String>,
    rows: u64,
    /// What its rows' seqs say, per partition (see [`SeqRuns`]).
    seqs: Vec<(i32, SeqRuns)>,
    /// Its rows that could not be decoded.
    undecodable: Vec<SetAside>,
}

/// How many ranges [`IdDigests`] spreads the digests over (by their top byte).
const RANGES: usize = 256;

/// The id digests ([`id_digest`], with the bucket in the low byte) of every row of a
/// shard with an id, spread over [`RANGES`] ranges by their top byte as they are read, so
/// that each range is sorted in place on its own at the end (no copy of them all).
struct IdDigests {
    ranges: Vec<std::sync::Mutex<Vec<u64>>>,
}

impl IdDigests {
    fn new() -> IdDigests {
        IdDigests {
            ranges: (0..RANGES).map(|_| Default::default()).collect(),
        }
    }

    /// Moves the digests of `local` (a part's, spread by range) in; returns the bytes the
    /// ranges grew by.
    fn append(&self, local: &mut [Vec<u64>]) -> usize {
        let mut grown = 0;
        for (range, digests) in self.ranges.iter().zip(local) {
            if digests.is_empty() {
                continue;
            }
            let mut range = range.lock().expect("digest lock");
            let before = range.capacity();
            range.extend_from_slice(digests);
            grown += (range.capacity() - before) * std::mem::size_of::<u64>();
            digests.clear();
        }
        grown
    }

    fn into_ranges(self) -> Vec<Vec<u64>> {
        self.ranges
            .into_iter()
            .map(|r| r.into_inner().expect("digest lock"))
            .collect()
    }
}

/// Everything a part needs besides its bytes.
struct Job {
    plan: Arc<Plan>,
    /// Which raw columns the replay uses after reading (the others are not kept).
    needed: [bool; ORD],
    partitions: Arc<BTreeSet<i32>>,
    buckets: usize,
    /// A sub-shard's share: the other rows of its partition are read too, kept in bucket
    /// `buckets` with only what finding duplicates and gaps needs ([`foreign_rows`]).
    split: Option<Split>,
    pacer: Option<Arc<dyn Pacer>>,
    store: Store,
    /// Counted against the store's budget as they grow (they cannot spill).
    digests: IdDigests,
}

/// How a shard is read: into how many buckets, on how many threads, holding how many
/// bytes of rows in memory (the rest spills to disk), keeping which envelope columns.
pub(crate) struct ReadOptions {
    pub buckets: usize,
    /// A sub-shard's share of its partition's streams (see [`Job::split`]).
    pub split: Option<Split>,
    pub threads: usize,
    pub budget: usize,
    /// Bytes of fetched segments held until decoded (at least one segment).
    pub fetch_budget: usize,
    /// Which envelope columns the replay uses after reading; the others are not kept.
    pub needed: [bool; ORD],
}

/// Reads the shard's segments into buckets.
pub(crate) async fn read_shard(
    plan: &Arc<Plan>,
    shard: &ShardPlan,
    source: &Location,
    pacer: Option<Arc<dyn Pacer>>,
    options: ReadOptions,
) -> Result<Read> {
    let ReadOptions {
        buckets,
        split: share,
        threads,
        budget,
        fetch_budget,
        needed,
    } = options;
    let by_path: std::collections::HashMap<&str, &InputSegment> =
        plan.segments.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut planned = Vec::with_capacity(shard.segments.len());
    for path in &shard.segments {
        let segment = by_path
            .get(path.as_str())
            .map(|s| (*s).clone())
            .ok_or_else(|| Error::Format {
                path: crate::Target::plan_path(&plan.run_id),
                message: format!(
                    "shard {} names segment {path}, which the plan lacks",
                    shard.id
                ),
            })?;
        planned.push(Arc::new(segment));
    }
    let job = Arc::new(Job {
        plan: Arc::clone(plan),
        needed,
        partitions: Arc::new(shard.partitions.iter().copied().collect()),
        buckets,
        split: share,
        pacer,
        store: Store::new(
            buckets + usize::from(share.is_some()),
            budget,
            shard.rows,
            plan.spill_dir.as_deref().map(std::path::PathBuf::from),
            plan.spill_max_bytes,
            plan.spill_compression,
        ),
        digests: IdDigests::new(),
    });
    // Fetches run ahead of decoding by a few segments; decoding takes a permit per part,
    // so at most `threads` parts are decoded at once and the fetched bytes waiting are
    // bounded by the fetches in flight.
    let permits = Arc::new(Semaphore::new(threads.max(1)));
    // Many fetches in flight hide the store's latency on archives of small files; the
    // fetch budget below bounds the bytes they hold.
    let ahead = (threads * 8).max(32);
    // Segments are fetched whole (their SHA-256 is in the lineage), and held until
    // their parts are decoded: at most the fetch budget at once (or one segment, however
    // large).
    let fetch_mib = (fetch_budget / MIB).max(16);
    let fetch_budget = Arc::new(Semaphore::new(fetch_mib));
    let mut fetches = futures::stream::iter(planned.iter().cloned().enumerate())
        .map(|(index, segment)| {
            let source = source.clone();
            let fetch_budget = Arc::clone(&fetch_budget);
            async move {
                let mib = (segment.bytes as usize).div_ceil(MIB).clamp(1, fetch_mib);
                let share = fetch_budget
                    .acquire_many_owned(mib as u32)
                    .await
                    .expect("never closed");
                let bytes = fetch_segment(&source, &segment.segment_ref()).await?;
                Ok::<_, Error>((index, segment, bytes, Arc::new(share)))
            }
        })
        .buffered(ahead);
    let mut tasks: JoinSet<Result<PartRead>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut failed: Option<Error> = None;
    'fetching: while let Some(fetched) = fetches.next().await {
        let (index, segment, bytes, share) = match fetched {
            Ok(f) => f,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let split = match split(index, &segment, bytes, share) {
            Ok(split) => split,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        for part in split {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let job = Arc::clone(&job);
            tasks.spawn(async move {
                let read = read_part(&job, part).await;
                drop(permit);
                read
            });
            // Collect what is done, so that a failure stops the rest early.
            while let Some(done) = tasks.try_join_next() {
                match done.map_err(|e| join_error(&shard.id, e)).and_then(|r| r) {
                    Ok(part) => parts.push(part),
                    Err(e) => {
                        failed = Some(e);
                        break 'fetching;
                    }
                }
            }
        }
    }
    drop(fetches);
    if failed.is_some() {
        tasks.abort_all();
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(part)) => parts.push(part),
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(join_error(&shard.id, e));
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let job = Arc::into_inner(job).expect("every part is done");
    let spilled_rows = job.store.spilled_rows();
    let (sources, spill) = job.store.finish()?;
    let mut read = assemble(&planned, parts, job.digests.into_ranges(), threads).await?;
    read.buckets = sources;
    read.spill = spill;
    read.spilled_rows = spilled_rows;
    Ok(read)
}

pub(crate) fn join_error(shard: &str, e: tokio::task::JoinError) -> Error {
    Error::Projection {
        shard: shard.to_owned(),
        message: format!("a replay task failed: {e}"),
    }
}

/// Cuts a fetched segment into parts of whole row groups of about [`PART_ROWS`] rows.
fn split(
    index: usize,
    segment: &Arc<InputSegment>,
    bytes: Bytes,
    share: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Vec<Part>> {
    let whole = |bytes, share| Part {
        segment: index,
        input: Arc::clone(segment),
        bytes,
        row_groups: None,
        hashes: true,
        _fetched: share,
    };
    if segment.rows <= PART_ROWS {
        return Ok(vec![whole(bytes, share)]);
    }
    let groups = row_group_rows(&segment.path, &bytes)?;
    let mut ranges = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, n) in groups.iter().enumerate() {
        rows += n;
        if rows >= PART_ROWS || i + 1 == groups.len() {
            ranges.push(start..i + 1);
            start = i + 1;
            rows = 0;
        }
    }
    if ranges.len() <= 1 {
        return Ok(vec![whole(bytes, share)]);
    }
    Ok(ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| Part {
            segment: index,
            input: Arc::clone(segment),
            bytes: bytes.clone(),
            row_groups: Some(range),
            hashes: i == 0,
            _fetched: Arc::clone(&share),
        })
        .collect())
}

/// Decodes, filters and routes one part.
async fn read_part(job: &Job, part: Part) -> Result<PartRead> {
    let mapping = &job.plan.source.mapping;
    let sha256 = part.hashes.then(|| sha256_hex(&part.bytes));
    let (first_group, batches): (usize, SegmentBatches) = match &part.row_groups {
        None => (
            0,
            decode_segment_batches(&part.input.path, part.bytes, mapping)?,
        ),
        Some(range) => (
            range.start,
            decode_row_groups(&part.input.path, part.bytes, mapping, range.clone())?,
        ),
    };
    let mut read = PartRead {
        segment: part.segment,
        first_group,
        sha256,
        rows: 0,
        seqs: Vec::new(),
        undecodable: Vec::new(),
    };
    // This part's digests of the batch being routed, by range.
    let mut digests: Vec<Vec<u64>> = vec![Vec::new(); RANGES];
    let mut batches = batches.keep_undecodable();
    // Where each partition's seqs are in `read.seqs` (rows of a partition come in runs).
    let mut seq_index: std::collections::HashMap<i32, usize> = Default::default();
    let mut last_partition: Option<(i32, usize)> = None;
    loop {
        let first_row = batches.next_row();
        let Some(batch) = batches.next() else { break };
        let batch = batch?;
        let undecodable = batches.take_undecodable();
        let kept = keep(
            &batch,
            first_row,
            part.segment,
            &job.partitions,
            &job.plan.window,
            &job.needed,
        )?;
        let kept = match job.split {
            None => kept,
            Some(split) => {
                let (own, foreign) = own_rows(&kept, split)?;
                if foreign.num_rows() > 0 {
                    let foreign = foreign_rows(&foreign, part.segment, &undecodable)?;
                    let tag = job.buckets as u64;
                    let ids = foreign.column(EVENT_ID).as_string::<i32>();
                    for id in ids.iter().flatten() {
                        let d = id_digest(id) | tag;
                        digests[(d >> 56) as usize].push(d);
                    }
                    let bytes = foreign.get_array_memory_size();
                    job.store.push(vec![(job.buckets, foreign)], bytes)?;
                }
                own
            }
        };
        let n = kept.num_rows();
        if n == 0 {
            let grown = job.digests.append(&mut digests);
            job.store.hold(grown as isize)?;
            continue;
        }
        if let Some(pacer) = &job.pacer {
            pacer.pace(n as u64).await.map_err(Error::Paced)?;
        }
        read.rows += n as u64;
        let partition = kept.column(PARTITION).as_primitive::<Int32Type>();
        let seq = kept.column(SEQ).as_primitive::<Int64Type>();
        for i in (0..n).filter(|&i| !seq.is_null(i)) {
            let p = partition.value(i);
            let at = match last_partition {
                Some((q, at)) if q == p => at,
                _ => {
                    let next = read.seqs.len();
                    let at = *seq_index.entry(p).or_insert(next);
                    if at == next {
                        read.seqs.push((p, SeqRuns::default()));
                    }
                    last_partition = Some((p, at));
                    at
                }
            };
            read.seqs[at].1.push(seq.value(i));
        }
        let kept = if undecodable.is_empty() {
            kept
        } else {
            let (kept, aside) = set_aside(&kept, part.segment, undecodable)?;
            read.undecodable.extend(aside);
            if kept.num_rows() == 0 {
                continue;
            }
            kept
        };
        let (pieces, bytes) = route(&kept, job.buckets, job.split, &mut digests)?;
        job.store.push(pieces, bytes)?;
        let grown = job.digests.append(&mut digests);
        job.store.hold(grown as isize)?;
        // Decoding is CPU work on the runtime's threads: let heartbeats and other
        // tasks in between batches.
        tokio::task::yield_now().await;
    }
    Ok(read)
}

/// Splits the rows of `kept` (a batch of segment `segment` with `__ord`) that hold a value
/// that is not UTF-8 (`undecodable`, by file row) from the others. A row with several such
/// values is set aside with the first, naming the others.
fn set_aside(
    kept: &RecordBatch,
    segment: usize,
    undecodable: Vec<Undecodable>,
) -> Result<(RecordBatch, Option<SetAside>)> {
    let mut by_ord: std::collections::HashMap<u64, Undecodable> = Default::default();
    for u in undecodable {
        match by_ord.entry(ord(segment, u.row)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(u);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let first = o.get_mut();
                first.reason = format!(
                    "{}; column `{}` is not UTF-8 either",
                    first.reason, u.column
                );
            }
        }
    }
    let ords = kept
        .column(ORD)
        .as_primitive::<arrow::datatypes::UInt64Type>();
    let (mut good, mut bad, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (i, o) in ords.values().iter().enumerate() {
        match by_ord.remove(o) {
            Some(u) => {
                bad.push(i as u32);
                values.push(u);
            }
            None => good.push(i as u32),
        }
    }
    if bad.is_empty() {
        return Ok((kept.clone(), None));
    }
    let take =
        |rows: Vec<u32>| take_record_batch(kept, &UInt32Array::from(rows)).map_err(arrow_error);
    Ok((take(good)?, Some((take(bad)?, values))))
}

/// The rows of `batch` (a segment's, from file row `first_row` on) in the shard's
/// partitions and inside the window, with `__ord` added; columns not `needed` are nulls.
fn keep(
    batch: &RecordBatch,
    first_row: u64,
    segment: usize,
    partitions: &BTreeSet<i32>,
    window: &Window,
    needed: &[bool; ORD],
) -> Result<RecordBatch> {
    let until_time = window.until_time.map(|t| t.timestamp_micros());
    let partition = batch.column(PARTITION).as_primitive::<Int32Type>();
    let seq = batch.column(SEQ).as_primitive::<Int64Type>();
    let occurred = batch
        .column(OCCURRED_AT)
        .as_primitive::<TimestampMicrosecondType>();
    let mut columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(needed)
        .map(|(c, needed)| {
            if *needed {
                Arc::clone(c)
            } else {
                new_null_array(c.data_type(), c.len())
            }
        })
        .collect();
    columns.push(Arc::new(UInt64Array::from_iter_values(
        (0..batch.num_rows() as u64).map(|i| ord(segment, first_row + i)),
    )));
    let with_ord = RecordBatch::try_new(raw_schema(), columns).map_err(arrow_error)?;
    let (low, high) = match (partitions.first(), partitions.last()) {
        (Some(l), Some(h)) => (*l, *h),
        _ => return Ok(with_ord.slice(0, 0)),
    };
    let contiguous = partitions.len() as i64 == i64::from(high) - i64::from(low) + 1;
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            if partition.is_null(i) {
                return Some(false);
            }
            let p = partition.value(i);
            let member = if contiguous {
                (low..=high).contains(&p)
            } else {
                partitions.contains(&p)
            };
            if !member {
                return Some(false);
            }
            if let Some(until) = window.until_seq
                && (seq.is_null(i) || seq.value(i) > until)
            {
                return Some(false);
            }
            if let Some(until) = until_time
                && (occurred.is_null(i) || occurred.value(i) > until)
            {
                return Some(false);
            }
            Some(true)
        })
        .collect();
    if mask.true_count() == batch.num_rows() {
        return Ok(with_ord);
    }
    filter_record_batch(&with_ord, &mask).map_err(arrow_error)
}

/// A sub-shard's rows of `kept` (those whose stream is in its share; a null stream id
/// belongs to share 0), and the others as it keeps them: only to order copies of an
/// event id across the split (which copy is first) and, with `source.contiguous_seq`, to
/// see which seqs the partition holds. The others keep their id, stream, partition, seq,
/// version and `__ord`; the type and payload keep only whether they are null (an
/// envelope null keeps a row from being compared), as empty text; the rest is null. They
/// are narrowed before they are filtered, so their payloads are never copied.
fn own_rows(kept: &RecordBatch, split: Split) -> Result<(RecordBatch, RecordBatch)> {
    let streams = kept.column(STREAM_ID).as_string::<i32>();
    let own: BooleanArray = streams
        .iter()
        .map(|s| Some(stream_bucket(s, split.of) == split.bucket))
        .collect();
    if own.true_count() == kept.num_rows() {
        return Ok((kept.clone(), kept.slice(0, 0)));
    }
    let n = kept.num_rows();
    // Empty text where the value is not null: zero offsets, no bytes, the same nulls.
    let blank = |c: &ArrayRef| -> ArrayRef {
        Arc::new(arrow::array::StringArray::new(
            arrow::buffer::OffsetBuffer::new_zeroed(n),
            arrow::buffer::Buffer::from_vec(Vec::<u8>::new()),
            c.nulls().cloned(),
        ))
    };
    let mut narrow = kept.columns().to_vec();
    narrow[EVENT_TYPE] = blank(&narrow[EVENT_TYPE]);
    narrow[PAYLOAD] = blank(&narrow[PAYLOAD]);
    for c in [OCCURRED_AT, METADATA] {
        narrow[c] = new_null_array(narrow[c].data_type(), n);
    }
    let narrow = RecordBatch::try_new(kept.schema(), narrow).map_err(arrow_error)?;
    let foreign = arrow::compute::not(&own).map_err(arrow_error)?;
    Ok((
        filter_record_batch(kept, &own).map_err(arrow_error)?,
        filter_record_batch(&narrow, &foreign).map_err(arrow_error)?,
    ))
}

/// The other sub-shards' rows (from [`own_rows`]) without those that could not be
/// decoded: such rows are never compared.
fn foreign_rows(
    rows: &RecordBatch,
    segment: usize,
    undecodable: &[Undecodable],
) -> Result<RecordBatch> {
    if undecodable.is_empty() {
        return Ok(rows.clone());
    }
    Ok(set_aside(rows, segment, undecodable.to_vec())?.0)
}

/// Splits kept rows by bucket (one `take`, then slices) and records their id digests
/// (by range, see [`IdDigests`]); returns the pieces and the memory they hold.
fn route(
    kept: &RecordBatch,
    buckets: usize,
    split: Option<Split>,
    digests: &mut [Vec<u64>],
) -> Result<(Vec<(usize, RecordBatch)>, usize)> {
    let n = kept.num_rows();
    let ids = kept.column(EVENT_ID).as_string::<i32>();
    let mut record = |d: u64| digests[(d >> 56) as usize].push(d);
    if buckets == 1 {
        (0..n)
            .filter(|&i| !ids.is_null(i))
            .for_each(|i| record(id_digest(ids.value(i))));
        return Ok((vec![(0, kept.clone())], kept.get_array_memory_size()));
    }
    let streams = kept.column(STREAM_ID).as_string::<i32>();
    let of: Vec<u32> = (0..n)
        .map(|i| {
            if streams.is_null(i) {
                0
            } else {
                bucket_of(streams.value(i), split, buckets) as u32
            }
        })
        .collect();
    for (i, b) in of.iter().enumerate() {
        if !ids.is_null(i) {
            record(id_digest(ids.value(i)) | u64::from(*b));
        }
    }
    // A counting sort by bucket keeps file order inside each bucket.
    let mut counts = vec![0u32; buckets + 1];
    for b in &of {
        counts[*b as usize + 1] += 1;
    }
    for b in 0..buckets {
        counts[b + 1] += counts[b];
    }
    let starts = counts.clone();
    let mut indices = vec![0u32; n];
    for (i, b) in of.iter().enumerate() {
        let slot = &mut counts[*b as usize];
        indices[*slot as usize] = i as u32;
        *slot += 1;
    }
    let grouped = take_record_batch(kept, &UInt32Array::from(indices)).map_err(arrow_error)?;
    let bytes = grouped.get_array_memory_size();
    let mut pieces = Vec::new();
    for b in 0..buckets {
        let (start, end) = (starts[b] as usize, starts[b + 1] as usize);
        if end > start {
            pieces.push((b, grouped.slice(start, end - start)));
        }
    }
    Ok((pieces, bytes))
}

/// Puts the parts together: lineage inputs per segment, rows per bucket, and the ids
/// whose copies sit in several buckets.
async fn assemble(
    planned: &[Arc<InputSegment>],
    mut parts: Vec<PartRead>,
    digests: Vec<Vec<u64>>,
    threads: usize,
) -> Result<Read> {
    parts.sort_by_key(|p| (p.segment, p.first_group));
    let mut inputs = Vec::with_capacity(planned.len());
    let mut out_of_order = 0;
    let mut events_read = 0;
    let undecodable = parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.undecodable))
        .collect();
    let mut parts = parts.into_iter().peekable();
    for (index, segment) in planned.iter().enumerate() {
        let mut input = LineageInput {
            path: segment.path.clone(),
            etag: segment.etag.clone(),
            sha256: String::new(),
            bytes: segment.bytes,
            rows: 0,
            seq_min: None,
            seq_max: None,
        };
        // The highest seq of each partition in the segment's parts before this one.
        let mut last_seq: std::collections::HashMap<i32, i64> = Default::default();
        while let Some(part) = parts.next_if(|p| p.segment == index) {
            if let Some(sha) = part.sha256 {
                input.sha256 = sha;
            }
            input.rows += part.rows;
            for (p, runs) in part.seqs {
                let (Some(min), Some(max)) = (runs.min(), runs.max()) else {
                    continue;
                };
                input.seq_min = Some(input.seq_min.map_or(min, |m| m.min(min)));
                input.seq_max = Some(input.seq_max.map_or(max, |m| m.max(max)));
                let last = last_seq.entry(p).or_insert(i64::MIN);
                out_of_order += runs.out_of_order_after(*last);
                *last = (*last).max(max);
            }
        }
        events_read += input.rows;
        inputs.push(input);
    }
    let (repeated, cross_bucket) = repeated_ids(digests, threads).await?;
    Ok(Read {
        inputs,
        events_read,
        out_of_order,
        buckets: Vec::new(),
        spill: None,
        spilled_rows: 0,
        repeated,
        cross_bucket,
        undecodable,
    })
}

/// The id digests seen more than once, and those seen in more than one bucket. Each of
/// the [`RANGES`] ranges of digests (by their top byte) is sorted in place on its own (on
/// every thread): equal digests become neighbours, and their low bytes say in which
/// buckets they were seen.
async fn repeated_ids(mut ranges: Vec<Vec<u64>>, threads: usize) -> Result<(Digests, Digests)> {
    let groups = threads.max(1).min(ranges.len().max(1));
    let mut tasks = JoinSet::new();
    // Each task takes a run of whole ranges, split off the end.
    for g in (0..groups).rev() {
        let mine = ranges.split_off(ranges.len() * g / (g + 1));
        tasks.spawn(async move {
            let (mut repeated, mut cross) = (Vec::new(), Vec::new());
            for mut range in mine {
                range.sort_unstable();
                let mut i = 0;
                while i < range.len() {
                    let id = range[i] & !0xff;
                    let mut j = i + 1;
                    let mut several = false;
                    while j < range.len() && range[j] & !0xff == id {
                        several |= range[j] != range[i];
                        j += 1;
                    }
                    if j > i + 1 {
                        repeated.push(id);
                    }
                    if several {
                        cross.push(id);
                    }
                    i = j;
                }
            }
            (repeated, cross)
        });
    }
    let (mut repeated, mut cross) = (Digests::default(), Digests::default());
    while let Some(found) = tasks.join_next().await {
        let (r, c) = found.map_err(|e| join_error("-", e))?;
        repeated.extend(r);
        cross.extend(c);
    }
    Ok((repeated, cross))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_spread_streams_and_are_stable() {
        let mut seen = vec![0usize; 16];
        for i in 0..16_000 {
            seen[bucket_of(&format!("acc-{i:06}"), None, 16)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
        // A fixed hash: the same stream lands in the same bucket on every machine.
        assert_eq!(
            bucket_of("acc-000001", None, 16),
            bucket_of("acc-000001", None, 16)
        );
        assert_eq!(bucket_of("anything", None, 1), 0);
        assert_eq!(id_digest("e") & 0xff, 0);
    }

    #[test]
    fn a_sub_shards_streams_fill_all_of_its_buckets() {
        // 3 shares; share 1's streams over 8 buckets.
        let split = Split { bucket: 1, of: 3 };
        let mut seen = [0u32; 8];
        let mut shares = [0u32; 3];
        for i in 0..48_000 {
            let stream = format!("acc-{i:06}");
            let share = stream_bucket(Some(&stream), 3);
            shares[share as usize] += 1;
            if share == 1 {
                seen[bucket_of(&stream, Some(split), 8)] += 1;
            }
        }
        assert!(
            shares.iter().all(|n| (15_000..17_000).contains(n)),
            "{shares:?}"
        );
        assert!(seen.iter().all(|n| (1_700..2_300).contains(n)), "{seen:?}");
        // A null stream is share 0's; one share is everything.
        assert_eq!(stream_bucket(None, 5), 0);
        assert_eq!(stream_bucket(Some("x"), 1), 0);
        // The documented formula: floor(xxh3_64(id) × of / 2^64).
        let h = twox_hash::XxHash3_64::oneshot(b"acc-000001");
        assert_eq!(
            stream_bucket(Some("acc-000001"), 7),
            ((u128::from(h) * 7) >> 64) as u32
        );
    }

    /// The rows out of order of a segment's partition, row by row (the definition).
    fn out_of_order(seqs: &[i64]) -> u64 {
        let (mut last, mut n) = (i64::MIN, 0);
        for &s in seqs {
            if s < last {
                n += 1;
            } else {
                last = s;
            }
        }
        n
    }

    #[test]
    fn seq_runs_count_rows_out_of_order_across_parts_like_row_by_row() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..2_000 {
            // Mostly steps of one, with repeats, gaps, rows sent back and jumps ahead.
            let len = rng.random_range(0..60);
            let mut seq = rng.random_range(-5..5i64);
            let seqs: Vec<i64> = (0..len)
                .map(|_| {
                    seq += match rng.random_range(0..10) {
                        0 => 0,
                        1 => rng.random_range(2..6),
                        2 => -rng.random_range(1..8),
                        _ => 1,
                    };
                    seq
                })
                .collect();
            // Cut into parts at random, fold each, then put them together like `assemble`.
            let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..=seqs.len()))
                .collect();
            cuts.extend([0, seqs.len()]);
            cuts.sort_unstable();
            let (mut last, mut n) = (i64::MIN, 0);
            let (mut min, mut max) = (None::<i64>, None::<i64>);
            for w in cuts.windows(2) {
                let mut runs = SeqRuns::default();
                seqs[w[0]..w[1]].iter().for_each(|s| runs.push(*s));
                let (Some(lo), Some(hi)) = (runs.min(), runs.max()) else {
                    continue;
                };
                min = Some(min.map_or(lo, |m| m.min(lo)));
                max = Some(max.map_or(hi, |m| m.max(hi)));
                n += runs.out_of_order_after(last);
                last = last.max(hi);
            }
            assert_eq!(
                n,
                out_of_order(&seqs),
                "case {case}: {seqs:?} cut at {cuts:?}"
            );
            assert_eq!(min, seqs.iter().min().copied(), "case {case}");
            assert_eq!(max, seqs.iter().max().copied(), "case {case}");
        }
        // An archive whose seqs step by one keeps one run per part.
        let mut runs = SeqRuns::default();
        (0..100_000).for_each(|s| runs.push(s));
        assert_eq!(runs.runs.len(), 1);
        assert_eq!(runs.out_of_order_after(50_000), 50_000);
        // Seqs at the ends of i64 neither overflow nor miscount.
        let mut runs = SeqRuns::default();
        for s in [i64::MAX - 1, i64::MAX, i64::MAX, i64::MIN] {
            runs.push(s);
        }
        assert_eq!(runs.out_of_order_after(i64::MIN), 1);
        assert_eq!(runs.out_of_order_after(i64::MAX), 2);
    }

    #[tokio::test]
    async fn ids_in_two_buckets_are_found_once() {
        let d = |id: &str, b: u64| id_digest(id) | b;
        let parts = vec![
            vec![d("a", 1), d("b", 2), d("c", 3)],
            vec![d("a", 1), d("b", 4), d("z", 0)],
            vec![d("c", 3), d("c", 5)],
        ];
        // As the reading spreads them: by range, whatever part they came from.
        let digests = IdDigests::new();
        for part in parts {
            let mut local = vec![Vec::new(); RANGES];
            part.into_iter()
                .for_each(|d| local[(d >> 56) as usize].push(d));
            digests.append(&mut local);
            assert!(local.iter().all(Vec::is_empty));
        }
        let (repeated, cross) = repeated_ids(digests.into_ranges(), 3).await.unwrap();
        let expected: Digests = [id_digest("b"), id_digest("c")].into_iter().collect();
        assert_eq!(cross, expected);
        let expected: Digests = [id_digest("a"), id_digest("b"), id_digest("c")]
            .into_iter()
            .collect();
        assert_eq!(repeated, expected);
    }
}
