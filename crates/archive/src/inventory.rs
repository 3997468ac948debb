//! What an archive holds, from Parquet footers (plus, optionally, the two columns that
//! name event types and versions).
//!
//! Footers give rows, row groups, and the `seq` and `partition` ranges of every segment
//! from column-chunk statistics, without reading data pages. Only when the statistics
//! cannot answer exactly (missing, nulls present, or several partitions in one segment)
//! are the `partition` and `seq` columns read for that segment, and the segment says so
//! (`stats: "data"`).

use std::collections::BTreeMap;

use arrow::{
    array::{Array, AsArray},
    compute::cast,
    datatypes::{DataType, Int32Type, Int64Type},
};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use replayfleet_config::SourceMapping;
use serde::{Deserialize, Serialize};

use crate::{
    Location, Result, SegmentRef, envelope::Plan, list_segments_matching, read::OpenSegment,
};

/// How to take an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryOptions {
    /// Count the (event_type, schema_version) pairs (reads those two columns).
    pub event_types: bool,
    /// Segments whose footers are read at once.
    pub concurrency: usize,
    /// Rows of a sample segment (the first holding that many) to show as the mapped
    /// envelope (0: none).
    pub sample_rows: usize,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            event_types: true,
            concurrency: LOCAL_CONCURRENCY,
            sample_rows: 0,
        }
    }
}

/// Footers read at once on a local folder: each read is a short blocking task.
const LOCAL_CONCURRENCY: usize = 16;

/// Footers read at once on object storage: each is a request that mostly waits on the
/// network, so the requests in flight are the rate against a store with latency (an
/// archive of small files is a request per file). The replay's fetches run 32 or more
/// in flight for the same reason.
const REMOTE_CONCURRENCY: usize = 64;

impl InventoryOptions {
    /// The default options for an archive at `location`: more footers read at once on
    /// object storage than on a local folder.
    pub fn for_location(location: &Location) -> Self {
        Self {
            concurrency: if location.is_local() {
                LOCAL_CONCURRENCY
            } else {
                REMOTE_CONCURRENCY
            },
            ..Self::default()
        }
    }
}

/// An archive's inventory: its segments, totals, partitions and event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The archive's URL.
    pub location: String,
    /// Every segment, in path order.
    pub segments: Vec<SegmentInventory>,
    /// Sums over all segments.
    pub totals: Totals,
    /// Every partition present, ascending.
    pub partitions: Vec<PartitionSummary>,
    /// `(event_type, schema_version)` pairs present with their counts, sorted; `None`
    /// when not requested ([`InventoryOptions::event_types`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<EventTypeCount>>,
    /// The first rows of a sample segment as the mapping makes them, to check a mapping
    /// before a run; `None` when not requested ([`InventoryOptions::sample_rows`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
}

/// The first rows of one segment, mapped onto the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The segment, relative to the archive location.
    pub segment: String,
    /// One object per row: every envelope column with its value (`payload` and
    /// `metadata` as the JSON they hold, text where they are not JSON).
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Sums over all segments of an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Number of segments.
    pub segments: u64,
    /// Rows (events, duplicates included).
    pub rows: u64,
    /// Bytes of Parquet.
    pub bytes: u64,
    /// Smallest `seq` (none when no row has one).
    pub seq_min: Option<i64>,
    /// Largest `seq`.
    pub seq_max: Option<i64>,
    /// Rows whose `partition` is null.
    pub null_partition_rows: u64,
}

/// One segment of an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInventory {
    /// Path relative to the archive location.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The store's entity tag.
    pub etag: Option<String>,
    /// Last modification time, RFC 3339.
    pub last_modified: String,
    /// Rows, from the footer.
    pub rows: u64,
    /// Row groups, from the footer.
    pub row_groups: u64,
    /// Smallest `seq` (none when no row has one).
    pub seq_min: Option<i64>,
    /// Largest `seq`.
    pub seq_max: Option<i64>,
    /// The partitions in this segment, ascending, with their rows and `seq` ranges.
    pub partitions: Vec<PartitionRange>,
    /// Rows whose `partition` is null.
    pub null_partition_rows: u64,
    /// Where `seq` and `partition` figures came from.
    pub stats: StatsSource,
}

/// Where a segment's `seq` and `partition` figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsSource {
    /// Column-chunk statistics in the footer (no data page read).
    Footer,
    /// The statistics could not answer exactly (missing, nulls, several partitions):
    /// the `partition` and `seq` columns were read.
    Data,
}

/// One partition's share of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    /// The partition.
    pub partition: i32,
    /// Rows of this partition in the segment.
    pub rows: u64,
    /// Smallest `seq` of those rows.
    pub seq_min: Option<i64>,
    /// Largest `seq` of those rows.
    pub seq_max: Option<i64>,
}

/// One partition over the whole archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// The partition.
    pub partition: i32,
    /// Segments holding rows of it.
    pub segments: u64,
    /// Its rows.
    pub rows: u64,
    /// Its smallest `seq`.
    pub seq_min: Option<i64>,
    /// Its largest `seq`.
    pub seq_max: Option<i64>,
}

/// How many events of one type and version the archive holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventTypeCount {
    /// The event type (null in the archive: none).
    pub event_type: Option<String>,
    /// The schema version (null in the archive: none).
    pub schema_version: Option<i32>,
    /// Events.
    pub events: u64,
}

impl Inventory {
    /// The partition numbers present, ascending.
    pub fn partition_ids(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition).collect()
    }
}

/// The inventory of the archive at `location` with the default options: footers of
/// every segment, validated against `mapping`, plus the event-type counts.
pub async fn inventory(location: &Location, mapping: &SourceMapping) -> Result<Inventory> {
    inventory_with(location, mapping, InventoryOptions::default()).await
}

/// What [`verify_pages`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagesVerified {
    /// Segments read whole.
    pub segments: u64,
    /// Their rows, decoded and mapped onto the envelope.
    pub rows: u64,
    /// Values that are not UTF-8 (each an `undecodable` anomaly in a run).
    pub undecodable: u64,
    /// The first few of them, in segment and row order: "segment `s`: column `c` row r
    /// is not UTF-8 (...)".
    pub undecodable_examples: Vec<String>,
}

/// How many undecodable values [`PagesVerified`] describes.
const UNDECODABLE_EXAMPLES: usize = 10;

/// Reads every page of every segment of `inventory` as a replay would (fetched whole and
/// checked against the listing's size and entity tag, every row decoded and mapped onto
/// the envelope), `concurrency` segments at a time: a corrupt data page behind an intact
/// footer, a value the mapping cannot convert, or fewer or more rows than the footer
/// promises fail here, naming the segment, before any work. Values that are not UTF-8 do
/// not fail: a run sets their rows aside as `undecodable` anomalies, so they are counted
/// and the first few described.
pub async fn verify_pages(
    location: &Location,
    inventory: &Inventory,
    mapping: &SourceMapping,
    concurrency: usize,
) -> Result<PagesVerified> {
    futures::stream::iter(inventory.segments.iter().map(|s| {
        let segment = SegmentRef {
            path: s.path.clone(),
            size: s.bytes,
            etag: s.etag.clone(),
            last_modified: chrono::DateTime::parse_from_rfc3339(&s.last_modified)
                .map_or_else(|_| chrono::Utc::now(), |t| t.with_timezone(&chrono::Utc)),
        };
        let (mapping, expected) = (mapping.clone(), s.rows);
        async move {
            let bytes = crate::read::fetch_segment(location, &segment).await?;
            let path = segment.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut rows = 0u64;
                let mut batches =
                    crate::read::decode_segment_batches(&segment.path, bytes, &mapping)?
                        .keep_undecodable();
                for batch in batches.by_ref() {
                    rows += batch?.num_rows() as u64;
                }
                let undecodable = batches.take_undecodable();
                if rows != expected {
                    return Err(crate::Error::BadSegment {
                        segment: segment.path,
                        reason: format!(
                            "its pages hold {rows} rows where its footer says {expected}"
                        ),
                    });
                }
                let described = undecodable
                    .iter()
                    .take(UNDECODABLE_EXAMPLES)
                    .map(|u| format!("segment `{}`: {u}", segment.path))
                    .collect::<Vec<_>>();
                Ok((rows, undecodable.len() as u64, described))
            })
            .await
            .map_err(|e| crate::Error::BadSegment {
                segment: path,
                reason: format!("its pages could not be read: {e}"),
            })?
        }
    }))
    .buffered(concurrency.max(1))
    .try_fold(
        PagesVerified::default(),
        |mut done, (rows, undecodable, described)| async move {
            done.segments += 1;
            done.rows += rows;
            done.undecodable += undecodable;
            let room = UNDECODABLE_EXAMPLES.saturating_sub(done.undecodable_examples.len());
            done.undecodable_examples
                .extend(described.into_iter().take(room));
            Ok(done)
        },
    )
    .await
}

/// The inventory of the archive at `location`.
///
/// Every segment's footer is validated against `mapping` (a missing or mistyped column
/// fails the inventory, naming the segment). Segments are read `options.concurrency` at
/// a time; results are in path order.
pub async fn inventory_with(
    location: &Location,
    mapping: &SourceMapping,
    options: InventoryOptions,
) -> Result<Inventory> {
    let listed = list_segments_matching(location, &mapping.segments).await?;
    inventory_of(location, listed, mapping, options).await
}

/// The inventory of already listed `segments` of the archive at `location`.
pub async fn inventory_of(
    location: &Location,
    segments: Vec<SegmentRef>,
    mapping: &SourceMapping,
    options: InventoryOptions,
) -> Result<Inventory> {
    let sample_from = segments.clone();
    // Each segment is a task of its own: reading its footer waits on the store, and
    // counting its types is CPU work that should use every thread.
    let per_segment: Vec<(SegmentInventory, BTreeMap<TypeKey, u64>)> =
        futures::stream::iter(segments)
            .map(|segment| {
                let (location, mapping) = (location.clone(), mapping.clone());
                let event_types = options.event_types;
                let path = segment.path.clone();
                async move {
                    tokio::spawn(async move {
                        inventory_segment(&location, segment, &mapping, event_types).await
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::Error::BadSegment {
                            segment: path,
                            reason: format!("reading its footer failed: {e}"),
                        })
                    })
                }
            })
            .buffered(options.concurrency.max(1))
            .try_collect()
            .await?;

    let mut totals = Totals::default();
    let mut partitions: BTreeMap<i32, PartitionSummary> = BTreeMap::new();
    let mut types: BTreeMap<TypeKey, u64> = BTreeMap::new();
    let mut segments = Vec::with_capacity(per_segment.len());
    for (segment, segment_types) in per_segment {
        totals.segments += 1;
        totals.rows += segment.rows;
        totals.bytes += segment.bytes;
        totals.null_partition_rows += segment.null_partition_rows;
        totals.seq_min = min_opt(totals.seq_min, segment.seq_min);
        totals.seq_max = max_opt(totals.seq_max, segment.seq_max);
        for range in &segment.partitions {
            let summary = partitions
                .entry(range.partition)
                .or_insert_with(|| PartitionSummary {
                    partition: range.partition,
                    segments: 0,
                    rows: 0,
                    seq_min: None,
                    seq_max: None,
                });
            summary.segments += 1;
            summary.rows += range.rows;
            summary.seq_min = min_opt(summary.seq_min, range.seq_min);
            summary.seq_max = max_opt(summary.seq_max, range.seq_max);
        }
        for (key, count) in segment_types {
            *types.entry(key).or_default() += count;
        }
        segments.push(segment);
    }
    // The first segment that holds as many rows as asked for (else the fullest one).
    let sample_segment = segments
        .iter()
        .position(|s| s.rows >= options.sample_rows as u64)
        .or_else(|| (0..segments.len()).max_by_key(|&i| (segments[i].rows, std::cmp::Reverse(i))))
        .filter(|&i| segments[i].rows > 0);
    let sample = match (options.sample_rows, sample_segment) {
        (0, _) | (_, None) => None,
        (rows, Some(index)) => Some(sample(location, &sample_from[index], mapping, rows).await?),
    };
    Ok(Inventory {
        location: location.url().to_string(),
        sample,
        segments,
        totals,
        partitions: partitions.into_values().collect(),
        event_types: options.event_types.then(|| {
            types
                .into_iter()
                .map(|((event_type, schema_version), events)| EventTypeCount {
                    event_type,
                    schema_version,
                    events,
                })
                .collect()
        }),
    })
}

type TypeKey = (Option<String>, Option<i32>);

async fn inventory_segment(
    location: &Location,
    segment: SegmentRef,
    mapping: &SourceMapping,
    event_types: bool,
) -> Result<(SegmentInventory, BTreeMap<TypeKey, u64>)> {
    let open = OpenSegment::open(location, &segment).await?;
    // Validates every entry of the mapping, whatever this inventory goes on to read, and
    // tells which figures the segment's path or footer already gives.
    let given = open.plan(
        mapping,
        &["partition", "seq", "event_type", "schema_version"],
    )?;
    let metadata = std::sync::Arc::clone(open.builder.metadata());
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let mut figures = if rows == 0 {
        Some(Figures::default())
    } else {
        footer_figures(&open, &given, rows)
    };
    let stats = if figures.is_some() {
        StatsSource::Footer
    } else {
        StatsSource::Data
    };

    let mut wanted: Vec<&'static str> = Vec::new();
    if figures.is_none() {
        wanted.extend(["partition", "seq"]);
    }
    let mut types = BTreeMap::new();
    if event_types && rows > 0 {
        // A type and version fixed for the segment (a folder, a file name, the footer's
        // record name) count without reading a row.
        match (
            given.constant_text("event_type"),
            given.constant_int("schema_version"),
        ) {
            (Some(t), Some(v)) => {
                types.insert((Some(t.to_owned()), i32::try_from(v).ok()), rows);
            }
            // A segment of one type and version (a sink writes one file per schema)
            // says so in its statistics: min = max in every row group, no null.
            _ => match footer_type(&open, &given) {
                Some((t, v)) => {
                    types.insert((Some(t), Some(v)), rows);
                }
                None => wanted.extend(["event_type", "schema_version"]),
            },
        }
    }
    if !wanted.is_empty() {
        let plan = open.plan(mapping, &wanted)?;
        let mut batches = open.stream(plan)?;
        let mut from_data = Figures::default();
        let mut partitions: BTreeMap<i32, PartitionRange> = BTreeMap::new();
        while let Some(batch) = batches.try_next().await? {
            if let (Some(partition), Some(seq)) = (
                batch.column_by_name("partition"),
                batch.column_by_name("seq"),
            ) {
                let partition = partition.as_primitive::<Int32Type>();
                let seq = seq.as_primitive::<Int64Type>();
                for (p, s) in partition.iter().zip(seq.iter()) {
                    from_data.seq_min = min_opt(from_data.seq_min, s);
                    from_data.seq_max = max_opt(from_data.seq_max, s);
                    let Some(p) = p else {
                        from_data.null_partition_rows += 1;
                        continue;
                    };
                    let range = partitions.entry(p).or_insert_with(|| PartitionRange {
                        partition: p,
                        rows: 0,
                        seq_min: None,
                        seq_max: None,
                    });
                    range.rows += 1;
                    range.seq_min = min_opt(range.seq_min, s);
                    range.seq_max = max_opt(range.seq_max, s);
                }
            }
            if let (Some(event_type), Some(version)) = (
                batch.column_by_name("event_type"),
                batch.column_by_name("schema_version"),
            ) {
                let event_type = event_type.as_string::<i32>();
                let version = version.as_primitive::<Int32Type>();
                // Few distinct pairs: counted by reference, keys allocated once a batch.
                let mut counts: std::collections::HashMap<(Option<&str>, Option<i32>), u64> =
                    Default::default();
                for key in event_type.iter().zip(version.iter()) {
                    *counts.entry(key).or_default() += 1;
                }
                for ((t, v), n) in counts {
                    *types.entry((t.map(str::to_owned), v)).or_insert(0u64) += n;
                }
            }
        }
        if figures.is_none() {
            from_data.partitions = partitions.into_values().collect();
            figures = Some(from_data);
        }
    }
    let figures = figures.unwrap_or_default();
    Ok((
        SegmentInventory {
            path: segment.path,
            bytes: segment.size,
            etag: segment.etag,
            last_modified: segment
                .last_modified
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            rows,
            row_groups: metadata.num_row_groups() as u64,
            seq_min: figures.seq_min,
            seq_max: figures.seq_max,
            partitions: figures.partitions,
            null_partition_rows: figures.null_partition_rows,
            stats,
        },
        types,
    ))
}

/// The first `rows` rows of `segment`, mapped onto the envelope.
pub async fn sample(
    location: &Location,
    segment: &SegmentRef,
    mapping: &SourceMapping,
    rows: usize,
) -> Result<Sample> {
    use arrow::{array::TimestampMicrosecondArray, datatypes::TimeUnit};
    use serde_json::Value;

    let open = OpenSegment::open(location, segment).await?;
    let plan = open.plan(mapping, &replayfleet_config::ENVELOPE_COLUMNS)?;
    let mut batches = open.stream_first(plan, rows)?;
    let mut out = Vec::new();
    while let Some(batch) = batches.try_next().await? {
        for row in 0..batch.num_rows() {
            let mut object = serde_json::Map::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                let value = if column.is_null(row) {
                    Value::Null
                } else {
                    match column.data_type() {
                        DataType::Int32 => {
                            Value::from(column.as_primitive::<Int32Type>().value(row))
                        }
                        DataType::Int64 => {
                            Value::from(column.as_primitive::<Int64Type>().value(row))
                        }
                        DataType::Timestamp(TimeUnit::Microsecond, _) => {
                            let micros = column
                                .as_any()
                                .downcast_ref::<TimestampMicrosecondArray>()
                                .map(|a| a.value(row))
                                .unwrap_or_default();
                            chrono::DateTime::from_timestamp_micros(micros)
                                .map(|t| {
                                    Value::from(
                                        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                                    )
                                })
                                .unwrap_or(Value::from(micros))
                        }
                        _ => {
                            let text = column.as_string::<i32>().value(row);
                            if matches!(field.name().as_str(), "payload" | "metadata") {
                                serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
                            } else {
                                Value::from(text)
                            }
                        }
                    }
                };
                object.insert(field.name().clone(), value);
            }
            out.push(object);
        }
    }
    Ok(Sample {
        segment: segment.path.clone(),
        rows: out,
    })
}

#[derive(Debug, Default)]
struct Figures {
    seq_min: Option<i64>,
    seq_max: Option<i64>,
    partitions: Vec<PartitionRange>,
    null_partition_rows: u64,
}

/// The segment's figures without reading data pages, when they are exact: a partition and
/// seq fixed by the segment's path or footer (seq numbered by row from a start offset),
/// or column statistics present in every non-empty row group, without nulls, of one
/// partition.
fn footer_figures(open: &OpenSegment, given: &Plan, rows: u64) -> Option<Figures> {
    let (seq_min, seq_max) = match (given.row_number_base("seq"), given.constant_int("seq")) {
        (Some(base), _) => (base, base.checked_add(i64::try_from(rows).ok()? - 1)?),
        (None, Some(seq)) => (seq, seq),
        (None, None) => column_range(open, given.plain_column("seq")?)?,
    };
    let (p_min, p_max) = match given.constant_int("partition") {
        Some(p) => (p, p),
        None => column_range(open, given.plain_column("partition")?)?,
    };
    if p_min != p_max {
        return None;
    }
    let partition = i32::try_from(p_min).ok()?;
    Some(Figures {
        seq_min: Some(seq_min),
        seq_max: Some(seq_max),
        partitions: vec![PartitionRange {
            partition,
            rows,
            seq_min: Some(seq_min),
            seq_max: Some(seq_max),
        }],
        null_partition_rows: 0,
    })
}

/// The one (event type, version) of every row, when the footer's statistics say so:
/// both columns mapped as plain columns, min = max over all row groups, no null. (A
/// truncated string statistic has its max rounded up, so it never equals its min.)
fn footer_type(open: &OpenSegment, given: &Plan) -> Option<(String, i32)> {
    let (v_min, v_max) = match given.constant_int("schema_version") {
        Some(v) => (v, v),
        None => column_range(open, given.plain_column("schema_version")?)?,
    };
    if v_min != v_max {
        return None;
    }
    let version = i32::try_from(v_min).ok()?;
    if let Some(t) = given.constant_text("event_type") {
        return Some((t.to_owned(), version));
    }
    let column = given.plain_column("event_type")?;
    let builder = &open.builder;
    let row_groups = builder.metadata().row_groups();
    let converter =
        StatisticsConverter::try_new(column, builder.schema(), builder.parquet_schema())
            .ok()?
            .with_missing_null_counts_as_zero(false);
    let as_text = |a: arrow::array::ArrayRef| cast(&a, &DataType::Utf8).ok();
    let mins = as_text(converter.row_group_mins(row_groups.iter()).ok()?)?;
    let maxes = as_text(converter.row_group_maxes(row_groups.iter()).ok()?)?;
    let nulls = converter.row_group_null_counts(row_groups.iter()).ok()?;
    let (mins, maxes) = (mins.as_string::<i32>(), maxes.as_string::<i32>());
    let mut found: Option<&str> = None;
    for (i, group) in row_groups.iter().enumerate() {
        if group.num_rows() == 0 {
            continue;
        }
        if nulls.is_null(i) || nulls.value(i) != 0 || mins.is_null(i) || maxes.is_null(i) {
            return None;
        }
        let (lo, hi) = (mins.value(i), maxes.value(i));
        if lo != hi || found.is_some_and(|f| f != lo) {
            return None;
        }
        found = Some(lo);
    }
    found.map(|t| (t.to_owned(), version))
}

/// `(min, max)` of an integer column over all row groups, from statistics; `None` when
/// any non-empty row group lacks them or has nulls.
fn column_range(open: &OpenSegment, column: &str) -> Option<(i64, i64)> {
    let builder = &open.builder;
    let row_groups = builder.metadata().row_groups();
    let converter =
        StatisticsConverter::try_new(column, builder.schema(), builder.parquet_schema())
            .ok()?
            .with_missing_null_counts_as_zero(false);
    // A value that does not fit Int64 becomes null here; reading the column then reports it.
    let mins = cast(
        &converter.row_group_mins(row_groups.iter()).ok()?,
        &DataType::Int64,
    )
    .ok()?;
    let maxes = cast(
        &converter.row_group_maxes(row_groups.iter()).ok()?,
        &DataType::Int64,
    )
    .ok()?;
    let nulls = converter.row_group_null_counts(row_groups.iter()).ok()?;
    let (mins, maxes) = (
        mins.as_primitive::<Int64Type>(),
        maxes.as_primitive::<Int64Type>(),
    );
    let mut range: Option<(i64, i64)> = None;
    for (i, group) in row_groups.iter().enumerate() {
        if group.num_rows() == 0 {
            continue;
        }
        if nulls.is_null(i) || nulls.value(i) != 0 || mins.is_null(i) || maxes.is_null(i) {
            return None;
        }
        let (lo, hi) = (mins.value(i), maxes.value(i));
        range = Some(match range {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
    range
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
    use bytes::Bytes;

    use super::*;
    use crate::{Error, testing::*};
    use replayfleet_config::ColumnMapping;

    fn partitions(inventory: &Inventory) -> Vec<(i32, u64, Option<i64>, Option<i64>)> {
        inventory
            .partitions
            .iter()
            .map(|p| (p.partition, p.rows, p.seq_min, p.seq_max))
            .collect()
    }

    #[test]
    fn object_storage_reads_more_footers_at_once_than_a_local_folder() {
        let options = |url: &str| {
            InventoryOptions::for_location(
                &Location::parse(url, None, &Default::default()).unwrap(),
            )
        };
        let (local, remote) = (options("/tmp/archive"), options("s3://bucket/archive"));
        assert_eq!(local, InventoryOptions::default());
        assert_eq!(remote.concurrency, REMOTE_CONCURRENCY);
        assert!(remote.concurrency > local.concurrency);
        assert_eq!(remote.event_types, local.event_types);
    }

    #[tokio::test]
    async fn footers_give_rows_seq_ranges_and_partitions() {
        let location = memory();
        // The hive folder says 9; the column says 1, and the column wins.
        put(
            &location,
            "partition=9/a.parquet",
            parquet(envelope_columns(10, 1, 100), 3),
        )
        .await;
        put(
            &location,
            "partition=0/b.parquet",
            parquet(envelope_columns(4, 0, 50), 1024),
        )
        .await;
        put(&location, "_SUCCESS", Bytes::from_static(b"")).await;
        let inventory = inventory(&location, &SourceMapping::default())
            .await
            .unwrap();

        let paths: Vec<_> = inventory.segments.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["partition=0/b.parquet", "partition=9/a.parquet"]);
        let a = &inventory.segments[1];
        assert_eq!(
            (a.rows, a.row_groups, a.seq_min, a.seq_max),
            (10, 4, Some(100), Some(109))
        );
        assert_eq!(a.stats, StatsSource::Footer);
        assert!(a.etag.is_some());
        assert_eq!(inventory.totals.rows, 14);
        assert_eq!(inventory.totals.segments, 2);
        assert_eq!(
            (inventory.totals.seq_min, inventory.totals.seq_max),
            (Some(50), Some(109))
        );
        assert_eq!(
            partitions(&inventory),
            vec![(0, 4, Some(50), Some(53)), (1, 10, Some(100), Some(109))]
        );
        assert_eq!(inventory.partition_ids(), vec![0, 1]);
        assert_eq!(
            inventory.event_types.as_deref().unwrap(),
            [
                EventTypeCount {
                    event_type: Some("Deposited".into()),
                    schema_version: Some(1),
                    events: 7
                },
                EventTypeCount {
                    event_type: Some("Withdrawn".into()),
                    schema_version: Some(1),
                    events: 7
                },
            ]
        );
        let json = serde_json::to_value(&inventory).unwrap();
        assert_eq!(json["segments"][1]["stats"], "footer");
        let back: Inventory = serde_json::from_value(json).unwrap();
        assert_eq!(back, inventory);
    }

    #[tokio::test]
    async fn mixed_partitions_and_nulls_are_read_from_the_columns() {
        let location = memory();
        let columns = with(
            envelope_columns(5, 0, 0),
            "partition",
            Arc::new(Int32Array::from(vec![
                Some(3),
                Some(1),
                None,
                Some(3),
                Some(1),
            ])) as ArrayRef,
        );
        let columns = with(
            columns,
            "seq",
            Arc::new(Int64Array::from(vec![10, 20, 30, 40, 50])),
        );
        put(&location, "mixed.parquet", parquet(columns, 1024)).await;
        let options = InventoryOptions {
            event_types: false,
            ..InventoryOptions::default()
        };
        let inventory = inventory_with(&location, &SourceMapping::default(), options)
            .await
            .unwrap();
        let segment = &inventory.segments[0];
        assert_eq!(segment.stats, StatsSource::Data);
        assert_eq!(segment.null_partition_rows, 1);
        assert_eq!(
            partitions(&inventory),
            vec![(1, 2, Some(20), Some(50)), (3, 2, Some(10), Some(40))]
        );
        assert_eq!((segment.seq_min, segment.seq_max), (Some(10), Some(50)));
        assert!(inventory.event_types.is_none());
    }

    #[tokio::test]
    async fn event_types_count_nulls_and_versions() {
        let location = memory();
        let columns = with(
            envelope_columns(3, 0, 0),
            "event_type",
            Arc::new(StringArray::from(vec![Some("A"), None, Some("A")])) as ArrayRef,
        );
        let columns = with(
            columns,
            "schema_version",
            Arc::new(Int64Array::from(vec![1, 1, 2])),
        );
        put(&location, "x.parquet", parquet(columns, 1024)).await;
        let inventory = inventory(&location, &SourceMapping::default())
            .await
            .unwrap();
        let counts: Vec<_> = inventory
            .event_types
            .unwrap()
            .into_iter()
            .map(|c| (c.event_type, c.schema_version, c.events))
            .collect();
        assert_eq!(
            counts,
            vec![
                (None, Some(1), 1),
                (Some("A".into()), Some(1), 1),
                (Some("A".into()), Some(2), 1)
            ]
        );
    }

    #[tokio::test]
    async fn footers_are_validated_against_the_mapping() {
        let location = memory();
        put(
            &location,
            "a.parquet",
            parquet(envelope_columns(2, 0, 0), 1024),
        )
        .await;
        let mapping = SourceMapping::with_columns(ColumnMapping {
            seq: "offset".into(),
            ..ColumnMapping::default()
        });
        let err = inventory(&location, &mapping).await.unwrap_err();
        assert!(
            matches!(&err, Error::MissingColumn { segment, column, .. } if segment == "a.parquet" && column == "offset"),
            "{err}"
        );

        put(
            &location,
            "b.parquet",
            Bytes::from_static(b"PAR1 but not really"),
        )
        .await;
        let err = inventory(&location, &SourceMapping::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::BadSegment { segment, .. } if segment == "b.parquet"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_empty_archive_has_an_empty_inventory() {
        let inventory = inventory(&memory(), &SourceMapping::default())
            .await
            .unwrap();
        assert_eq!(inventory.totals, Totals::default());
        assert!(inventory.partitions.is_empty());
    }
}
