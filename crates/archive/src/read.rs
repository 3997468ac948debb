//! Reading segments as envelope-shaped Arrow batches.

use std::{ops::Range, sync::Arc};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::{
    FutureExt, StreamExt, TryFutureExt, TryStreamExt, future::BoxFuture, stream::BoxStream,
};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use parquet::{
    arrow::{
        ParquetRecordBatchStreamBuilder, ProjectionMask,
        arrow_reader::ArrowReaderOptions,
        async_reader::{AsyncFileReader, ParquetRecordBatchStream},
    },
    errors::ParquetError,
    file::metadata::{ParquetMetaData, ParquetMetaDataReader},
};
use replayfleet_config::{ENVELOPE_COLUMNS, SourceMapping};

use crate::{
    Error, KeptObjects, Location, Result, SegmentRef,
    envelope::Plan,
    undecodable::{self, Undecodable},
};

/// Rows per batch when reading segments.
const BATCH_ROWS: usize = 8192;
/// Bytes fetched from a segment's end to read its footer in one request, usually.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// Runs `decode` (parquet and arrow calls on a segment's bytes), turning a panic into
/// [`Error::BadSegment`] naming `segment`: the decoders trust lengths and offsets read
/// from the file, and some corrupt files make them panic instead of failing
/// (`offset + len out of bounds` in a page's definition levels, found by the property
/// tests below). A corrupt segment is bad input, never a crash.
fn guarded<T>(segment: &str, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|panic| Err(panicked(segment, panic.as_ref())))
}

/// The error for a decoder that panicked on `segment`.
fn panicked(segment: &str, panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    Error::BadSegment {
        segment: segment.to_owned(),
        reason: format!("not a readable Parquet file: the decoder gave up on it ({message})"),
    }
}

/// Parquet's view of one object: ranged GETs, the size known from the listing so the
/// footer costs one request (no HEAD).
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// The listing's entity tag: a read of the whole object kept for the replay must be
    /// of this object.
    etag: Option<String>,
    /// Where a read of the whole object is kept (see [`KeptObjects`]).
    kept: Option<Arc<KeptObjects>>,
    /// The whole object, once a read asked for all of it (the footer's prefetch does for
    /// a small segment): later reads of its columns are cut from it, no request made.
    whole: Option<Bytes>,
}

impl ObjectReader {
    /// A range the footer asks for must lie inside the object: a corrupt footer that
    /// points past its end is a bad segment, not a storage failure to retry.
    fn check_range(&self, range: &Range<u64>) -> parquet::errors::Result<()> {
        if range.start > range.end || range.end > self.size {
            return Err(ParquetError::General(format!(
                "the footer points at bytes {}..{} of an object of {} bytes",
                range.start, range.end, self.size
            )));
        }
        Ok(())
    }

    /// Reads the whole object. With somewhere to keep it, asks for the object the listing
    /// named (its entity tag sent as `If-Match`) and keeps all its bytes; when it was
    /// replaced since, reads it as any other range and keeps nothing.
    async fn get_whole(&self) -> parquet::errors::Result<Bytes> {
        let Some(kept) = &self.kept else {
            return self
                .store
                .get_range(&self.path, 0..self.size)
                .await
                .map_err(ParquetError::from);
        };
        let options = object_store::GetOptions {
            if_match: self.etag.clone(),
            range: Some((0..self.size).into()),
            ..Default::default()
        };
        let read = match self.store.get_opts(&self.path, options).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match read {
            Ok(bytes) => {
                if bytes.len() as u64 == self.size {
                    kept.keep(self.path.as_ref(), self.etag.as_deref(), bytes.clone());
                }
                Ok(bytes)
            }
            Err(object_store::Error::Precondition { .. }) => self
                .store
                .get_range(&self.path, 0..self.size)
                .await
                .map_err(ParquetError::from),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        if let Err(e) = self.check_range(&range) {
            return futures::future::ready(Err(e)).boxed();
        }
        if let Some(whole) = &self.whole {
            let cut = whole.slice(range.start as usize..range.end as usize);
            return futures::future::ready(Ok(cut)).boxed();
        }
        if range == (0..self.size) {
            return async move {
                let bytes = self.get_whole().await?;
                self.whole = Some(bytes.clone());
                Ok(bytes)
            }
            .boxed();
        }
        self.store
            .get_range(&self.path, range)
            .map_err(ParquetError::from)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            for range in &ranges {
                self.check_range(range)?;
            }
            if let Some(whole) = &self.whole {
                return Ok(ranges
                    .iter()
                    .map(|r| whole.slice(r.start as usize..r.end as usize))
                    .collect());
            }
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(ParquetError::from)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A segment whose footer has been read: its metadata, ready to be read.
pub(crate) struct OpenSegment {
    pub(crate) builder: ParquetRecordBatchStreamBuilder<ObjectReader>,
    full_path: String,
    segment: String,
}

impl OpenSegment {
    /// Reads the footer of `segment` (and nothing else).
    pub(crate) async fn open(location: &Location, segment: &SegmentRef) -> Result<Self> {
        let path = location.child(&segment.path);
        let full_path = path.to_string();
        // Opened a second time while planning (the plan's sample rows): no request.
        let whole = location
            .kept()
            .and_then(|kept| kept.peek(path.as_ref(), segment.size, segment.etag.as_deref()));
        let reader = ObjectReader {
            store: Arc::clone(location.store()),
            path,
            size: segment.size,
            etag: segment.etag.clone(),
            kept: location.kept().cloned(),
            whole,
        };
        let builder = std::panic::AssertUnwindSafe(ParquetRecordBatchStreamBuilder::new(reader))
            .catch_unwind()
            .await
            .map_err(|panic| panicked(&segment.path, panic.as_ref()))?
            .map_err(|e| Error::from_parquet(&segment.path, &full_path, e))?;
        Ok(Self {
            builder,
            full_path,
            segment: segment.path.clone(),
        })
    }

    /// Validates `mapping` against the path and footer and plans reading `wanted`
    /// envelope columns.
    pub(crate) fn plan(&self, mapping: &SourceMapping, wanted: &[&'static str]) -> Result<Plan> {
        guarded(&self.segment, || {
            Plan::new(
                &self.segment,
                self.builder.schema(),
                footer_metadata(self.builder.metadata()),
                mapping,
                wanted,
            )
        })
    }

    /// Streams the planned columns of the first `rows` rows, converted onto the envelope.
    pub(crate) fn stream_first(
        mut self,
        plan: Plan,
        rows: usize,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        self.builder = self.builder.with_limit(rows);
        self.stream(plan)
    }

    /// Streams the planned columns, converted onto the envelope.
    pub(crate) fn stream(self, plan: Plan) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let mask =
            ProjectionMask::roots(self.builder.parquet_schema(), plan.roots().iter().copied());
        let Self {
            builder,
            full_path,
            segment,
        } = self;
        let stream: ParquetRecordBatchStream<_> = guarded(&segment, || {
            builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| Error::from_parquet(&segment, &full_path, e))
        })?;
        let mut next_row = 0u64;
        // A panic while decoding ends the stream with a bad-segment error.
        Ok(std::panic::AssertUnwindSafe(stream)
            .catch_unwind()
            .map(move |batch| {
                let batch = batch
                    .map_err(|panic| panicked(&segment, panic.as_ref()))?
                    .map_err(|e| Error::from_parquet(&segment, &full_path, e))?;
                let first_row = next_row;
                next_row += batch.num_rows() as u64;
                guarded(&segment, || plan.convert(&batch, first_row))
            })
            .boxed())
    }
}

/// The footer's key-value metadata.
fn footer_metadata(metadata: &ParquetMetaData) -> Option<&[parquet::file::metadata::KeyValue]> {
    metadata
        .file_metadata()
        .key_value_metadata()
        .map(Vec::as_slice)
}

/// Streams `segment` as batches of [`envelope_schema()`](crate::envelope_schema), reading
/// only the columns `mapping` names. The footer is read and validated before this returns,
/// so a missing column or a wrong type fails here, not mid-stream.
pub async fn read_segment_stream(
    location: &Location,
    segment: &SegmentRef,
    mapping: &SourceMapping,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let open = OpenSegment::open(location, segment).await?;
    let plan = open.plan(mapping, &ENVELOPE_COLUMNS)?;
    open.stream(plan)
}

/// Fetches all of `segment`'s bytes in one request, checking that the object is still the
/// one listed: same size, and (when the listing gave one) the same entity tag, sent as
/// `If-Match` so the store itself refuses a replaced object.
///
/// A segment the planner of this process read whole and kept ([`Location::keeping`]) is
/// taken from there instead, once: it was read with the same checks.
pub async fn fetch_segment(location: &Location, segment: &SegmentRef) -> Result<Bytes> {
    let path = location.child(&segment.path);
    if let Some(kept) = location.kept()
        && let Some(bytes) = kept.take(path.as_ref(), segment.size, segment.etag.as_deref())
    {
        return Ok(bytes);
    }
    let options = object_store::GetOptions {
        if_match: segment.etag.clone(),
        ..Default::default()
    };
    let changed = |reason: String| Error::Changed {
        segment: segment.path.clone(),
        reason,
    };
    let result = match location.store().get_opts(&path, options).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Err(changed("it is gone".into())),
        Err(object_store::Error::Precondition { .. }) => {
            return Err(changed(format!(
                "its entity tag is no longer {}",
                segment.etag.as_deref().unwrap_or("-")
            )));
        }
        Err(source) => {
            return Err(Error::Storage {
                path: path.to_string(),
                source,
            });
        }
    };
    let bytes = result.bytes().await.map_err(|source| Error::Storage {
        path: path.to_string(),
        source,
    })?;
    if bytes.len() as u64 != segment.size {
        return Err(changed(format!(
            "{} bytes instead of {}",
            bytes.len(),
            segment.size
        )));
    }
    Ok(bytes)
}

/// Decodes a whole segment held in memory (see [`fetch_segment`]) into batches of
/// [`envelope_schema()`](crate::envelope_schema), in file order.
pub fn decode_segment(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
) -> Result<Vec<RecordBatch>> {
    decode_segment_batches(segment, bytes, mapping)?.collect()
}

/// Like [`decode_segment`], one batch at a time: only the segment's bytes and the batch
/// being converted are in memory. The footer is validated against `mapping` before this
/// returns.
pub fn decode_segment_batches(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
) -> Result<SegmentBatches> {
    decode_batches(segment, bytes, mapping, None)
}

/// Like [`decode_segment_batches`], only the rows of row group `row_group` (numbered from
/// 0, as in the footer); their row numbers in errors are still their rows in the file.
pub fn decode_row_group(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
    row_group: usize,
) -> Result<SegmentBatches> {
    decode_batches(segment, bytes, mapping, Some(row_group..row_group + 1))
}

/// Like [`decode_segment_batches`], only the rows of the row groups `row_groups`
/// (numbered from 0, as in the footer); their row numbers in errors are still their
/// rows in the file. Parts of one segment can so be decoded on several threads.
pub fn decode_row_groups(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
    row_groups: Range<usize>,
) -> Result<SegmentBatches> {
    decode_batches(segment, bytes, mapping, Some(row_groups))
}

/// The number of rows of each row group of an in-memory segment, from its footer.
pub fn row_group_rows(segment: &str, bytes: &Bytes) -> Result<Vec<u64>> {
    let metadata = guarded(segment, || {
        ParquetMetaDataReader::new()
            .parse_and_finish(bytes)
            .map_err(|e| Error::from_parquet(segment, segment, e))
    })?;
    Ok(metadata
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as u64)
        .collect())
}

fn decode_batches(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
    row_groups: Option<Range<usize>>,
) -> Result<SegmentBatches> {
    guarded(segment, || {
        open_batches(segment, bytes, mapping, row_groups)
    })
}

fn open_batches(
    segment: &str,
    bytes: Bytes,
    mapping: &SourceMapping,
    row_groups: Option<Range<usize>>,
) -> Result<SegmentBatches> {
    use arrow::record_batch::RecordBatchReader;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |e: ParquetError| Error::from_parquet(segment, segment, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(bad)?;
    let plan = Plan::new(
        segment,
        builder.schema(),
        footer_metadata(builder.metadata()),
        mapping,
        &ENVELOPE_COLUMNS,
    )?;
    let groups = builder.metadata().row_groups();
    let (selection, first_row) = match row_groups {
        Some(wanted) => {
            if wanted.start >= wanted.end || wanted.end > groups.len() {
                return Err(bad(ParquetError::General(format!(
                    "row groups {}..{} do not exist ({} row groups)",
                    wanted.start,
                    wanted.end,
                    groups.len()
                ))));
            }
            let first_row = groups[..wanted.start]
                .iter()
                .map(|g| g.num_rows() as u64)
                .sum();
            (wanted.collect(), first_row)
        }
        None => ((0..groups.len()).collect(), 0),
    };
    let source = Source {
        bytes,
        metadata: Arc::clone(builder.metadata()),
        arrow: Arc::clone(builder.schema()),
        roots: plan.roots().to_vec(),
        selection,
        first_row,
    };
    let reader = source.reader(builder, 0).map_err(bad)?;
    Ok(SegmentBatches {
        segment: segment.to_owned(),
        schema: reader.schema(),
        reader,
        plan,
        next_row: first_row,
        failed: false,
        source,
        keep_undecodable: false,
        binary: false,
        undecodable: Vec::new(),
    })
}

/// What a [`SegmentBatches`] reads, kept to read it again with its strings as bytes.
struct Source {
    bytes: Bytes,
    metadata: Arc<ParquetMetaData>,
    /// The segment's Arrow schema (every column).
    arrow: arrow::datatypes::SchemaRef,
    /// The top-level columns read.
    roots: Vec<usize>,
    /// The row groups read.
    selection: Vec<usize>,
    /// The file row number of the selection's first row.
    first_row: u64,
}

impl Source {
    /// A reader of the selection's rows from its `offset`-th on.
    fn reader<T: parquet::file::reader::ChunkReader + 'static>(
        &self,
        builder: parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T>,
        offset: u64,
    ) -> std::result::Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, ParquetError>
    {
        let mask = ProjectionMask::roots(builder.parquet_schema(), self.roots.iter().copied());
        let mut builder = builder.with_row_groups(self.selection.clone());
        if offset > 0 {
            builder = builder.with_offset(offset as usize);
        }
        builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
    }

    /// A reader of the selection's rows from its `offset`-th on, strings as bytes.
    fn binary_reader(
        &self,
        offset: u64,
    ) -> std::result::Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, ParquetError>
    {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let metadata = undecodable::binary_metadata(&self.metadata, &self.arrow)?;
        self.reader(
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.bytes.clone(), metadata),
            offset,
        )
    }
}

/// The batches of one in-memory segment, converted onto the envelope as they are read.
pub struct SegmentBatches {
    segment: String,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// The schema the reader's batches have when strings are read as strings.
    schema: arrow::datatypes::SchemaRef,
    plan: Plan,
    next_row: u64,
    /// A decoder panicked: no batch follows.
    failed: bool,
    source: Source,
    /// Values that are not UTF-8 become nulls handed out by
    /// [`take_undecodable`](Self::take_undecodable) instead of failing the segment.
    keep_undecodable: bool,
    /// The reader reads strings as bytes (a value was not UTF-8).
    binary: bool,
    undecodable: Vec<Undecodable>,
}

impl std::fmt::Debug for SegmentBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBatches")
            .field("segment", &self.segment)
            .field("next_row", &self.next_row)
            .finish()
    }
}

impl SegmentBatches {
    /// The file row number of the first row of the next batch.
    pub fn next_row(&self) -> u64 {
        self.next_row
    }

    /// Reads on past values that are not UTF-8 (in top-level columns): each becomes a
    /// null in its batch and an [`Undecodable`] that [`take_undecodable`](Self::take_undecodable)
    /// hands out, instead of failing the segment. Without it such a value fails the
    /// segment with [`Error::BadSegment`] naming it.
    pub fn keep_undecodable(mut self) -> Self {
        self.keep_undecodable = true;
        self
    }

    /// The values found not UTF-8 since the last call, in row order (see
    /// [`keep_undecodable`](Self::keep_undecodable)).
    pub fn take_undecodable(&mut self) -> Vec<Undecodable> {
        std::mem::take(&mut self.undecodable)
    }

    fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let bad_segment = |segment: &str, reason: String| Error::BadSegment {
            segment: segment.to_owned(),
            reason,
        };
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(e) => {
                let e: ParquetError = e.into();
                if !undecodable::is_utf8_error(&e) {
                    return Some(Err(Error::from_parquet(&self.segment, &self.segment, e)));
                }
                if !self.keep_undecodable || self.binary {
                    return Some(Err(bad_segment(
                        &self.segment,
                        format!(
                            "a text column holds bytes that are not UTF-8 at or after row {} ({e})",
                            self.next_row
                        ),
                    )));
                }
                // Read again from this batch on, strings as bytes.
                let offset = self.next_row - self.source.first_row;
                match self.source.binary_reader(offset) {
                    Ok(reader) => {
                        self.reader = reader;
                        self.binary = true;
                        return self.next_batch();
                    }
                    Err(e) => {
                        return Some(Err(Error::from_parquet(&self.segment, &self.segment, e)));
                    }
                }
            }
        };
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        let batch = if self.binary {
            match undecodable::restore(&batch, &self.schema, first_row, &mut self.undecodable) {
                Ok(batch) => batch,
                Err(reason) => return Some(Err(bad_segment(&self.segment, reason))),
            }
        } else {
            batch
        };
        Some(self.plan.convert(&batch, first_row))
    }
}

impl Iterator for SegmentBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.next_batch()));
        match next {
            Ok(next) => next,
            Err(panic) => {
                // A reader that panicked is in no state to go on.
                self.failed = true;
                Some(Err(panicked(&self.segment, panic.as_ref())))
            }
        }
    }
}

/// Reads all of `segment` as batches of [`envelope_schema()`](crate::envelope_schema),
/// in file order (no sorting: out-of-order rows stay where they are).
pub async fn read_segment(
    location: &Location,
    segment: &SegmentRef,
    mapping: &SourceMapping,
) -> Result<Vec<RecordBatch>> {
    read_segment_stream(location, segment, mapping)
        .await?
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::{
        array::{
            Array, ArrayRef, AsArray, DictionaryArray, Int8Array, Int64Array, LargeStringArray,
            StringArray, StringViewArray, StructArray, TimestampMillisecondArray,
            TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt32Array, UInt64Array,
        },
        buffer::NullBuffer,
        compute::concat_batches,
        datatypes::{DataType, Field, Fields, Int32Type, Int64Type, TimeUnit},
    };
    use bytes::Bytes;

    use super::*;
    use crate::{envelope_schema, testing::*};
    use replayfleet_config::ColumnMapping;

    async fn read_one(
        columns: Vec<(&str, ArrayRef)>,
        mapping: &ColumnMapping,
    ) -> Result<RecordBatch> {
        let mapping = &SourceMapping::with_columns(mapping.clone());
        let location = memory();
        put(&location, "seg.parquet", parquet(columns, 1024)).await;
        let segment = segment(&location, "seg.parquet").await;
        let batches = read_segment(&location, &segment, mapping).await?;
        Ok(concat_batches(&envelope_schema(), &batches).unwrap())
    }

    async fn read_err(columns: Vec<(&str, ArrayRef)>, mapping: &ColumnMapping) -> Error {
        read_one(columns, mapping)
            .await
            .expect_err("reading should fail")
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        batch
            .column_by_name(column)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn canonical_segments_read_as_the_envelope() {
        let batch = read_one(envelope_columns(5, 2, 100), &ColumnMapping::default())
            .await
            .unwrap();
        assert_eq!(batch.schema(), envelope_schema());
        assert_eq!(batch.num_rows(), 5);
        let seq = batch
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![100, 101, 102, 103, 104]);
        assert_eq!(
            strings(&batch, "payload")[1].as_deref(),
            Some(r#"{"amount":1}"#)
        );
        // No metadata column in the archive: null metadata.
        assert_eq!(batch.column_by_name("metadata").unwrap().null_count(), 5);
    }

    #[tokio::test]
    async fn integers_of_any_width_are_widened_and_narrowed_when_they_fit() {
        let keys = arrow::array::Int8Array::from(vec![0, 1, 0]);
        let values = Arc::new(Int64Array::from(vec![7, 8]));
        let dictionary =
            DictionaryArray::<arrow::datatypes::Int8Type>::try_new(keys, values).unwrap();
        let columns = envelope_columns(3, 0, 0);
        let columns = with(columns, "partition", Arc::new(dictionary));
        let columns = with(
            columns,
            "seq",
            Arc::new(UInt32Array::from(vec![1, u32::MAX, 3])),
        );
        let columns = with(
            columns,
            "schema_version",
            Arc::new(UInt8Array::from(vec![1, 2, 255])),
        );
        let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
        let partition = batch
            .column_by_name("partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(partition.values().to_vec(), vec![7, 8, 7]);
        let seq = batch
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![1, i64::from(u32::MAX), 3]);
        let version = batch
            .column_by_name("schema_version")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(version.values().to_vec(), vec![1, 2, 255]);
    }

    #[tokio::test]
    async fn an_integer_that_does_not_fit_names_segment_column_and_row() {
        let mapping = ColumnMapping {
            schema_version: "version".into(),
            ..ColumnMapping::default()
        };
        let columns = renamed(envelope_columns(3, 0, 0), "schema_version", "version");
        let columns = with(
            columns,
            "version",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3_000_000_000)])),
        );
        let err = read_err(columns, &mapping).await;
        assert!(err.is_input());
        let Error::ValueOutOfRange {
            segment,
            column,
            envelope_column,
            row,
            value,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (
                segment.as_str(),
                column.as_str(),
                *envelope_column,
                *row,
                value.as_str()
            ),
            ("seg.parquet", "version", "schema_version", 2, "3000000000")
        );
        assert!(
            err.to_string()
                .contains("segment `seg.parquet`: column `version`"),
            "{err}"
        );

        let columns = with(
            envelope_columns(2, 0, 0),
            "seq",
            Arc::new(UInt64Array::from(vec![1, u64::MAX])),
        );
        let err = read_err(columns, &ColumnMapping::default()).await;
        assert!(
            matches!(&err, Error::ValueOutOfRange { column, row: 1, .. } if column == "seq"),
            "{err}"
        );

        let columns = with(
            envelope_columns(2, 0, 0),
            "partition",
            Arc::new(Int8Array::from(vec![-1, 1])),
        );
        let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
        assert_eq!(
            batch
                .column_by_name("partition")
                .unwrap()
                .as_primitive::<Int32Type>()
                .value(0),
            -1
        );
    }

    #[tokio::test]
    async fn every_string_type_becomes_utf8() {
        let keys = arrow::array::Int32Array::from(vec![0, 1, 0]);
        let values = Arc::new(StringArray::from(vec!["Deposited", "Withdrawn"]));
        let dictionary =
            DictionaryArray::<arrow::datatypes::Int32Type>::try_new(keys, values).unwrap();
        let columns = envelope_columns(3, 0, 0);
        let columns = with(
            columns,
            "event_id",
            Arc::new(LargeStringArray::from(vec!["a", "b", "c"])),
        );
        let columns = with(
            columns,
            "stream_id",
            Arc::new(StringViewArray::from(vec![Some("s"), None, Some("t")])),
        );
        let columns = with(columns, "event_type", Arc::new(dictionary));
        let columns = with(
            columns,
            "payload",
            Arc::new(LargeStringArray::from(vec!["{}", "{\"a\":1}", "{}"])),
        );
        let columns = with(
            columns,
            "metadata",
            Arc::new(StringViewArray::from(vec![r#"{"c":1}"#; 3])),
        );
        let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(strings(&batch, "event_id"), some(&["a", "b", "c"]));
        assert_eq!(
            strings(&batch, "stream_id"),
            vec![Some("s".into()), None, Some("t".into())]
        );
        assert_eq!(
            strings(&batch, "event_type"),
            some(&["Deposited", "Withdrawn", "Deposited"])
        );
        assert_eq!(strings(&batch, "payload")[1].as_deref(), Some("{\"a\":1}"));
        assert_eq!(
            strings(&batch, "metadata")[0].as_deref(),
            Some(r#"{"c":1}"#)
        );
    }

    fn micros(batch: &RecordBatch) -> Vec<i64> {
        let column = batch.column_by_name("occurred_at").unwrap();
        assert_eq!(
            column.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        column
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .values()
            .to_vec()
    }

    #[tokio::test]
    async fn timestamps_of_every_unit_and_zone_become_utc_microseconds() {
        let cases: Vec<(ArrayRef, Vec<i64>)> = vec![
            (
                Arc::new(TimestampSecondArray::from(vec![1, -1]).with_timezone("+02:00")),
                vec![1_000_000, -1_000_000],
            ),
            (
                Arc::new(TimestampMillisecondArray::from(vec![1, 2])),
                vec![1_000, 2_000],
            ),
            (
                Arc::new(
                    TimestampNanosecondArray::from(vec![1_999, -1]).with_timezone("Europe/Paris"),
                ),
                vec![1, -1],
            ),
        ];
        for (array, expected) in cases {
            let found = array.data_type().clone();
            let columns = with(envelope_columns(2, 0, 0), "occurred_at", array);
            let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
            assert_eq!(micros(&batch), expected, "{found}");
        }
        let columns = with(
            envelope_columns(2, 0, 0),
            "occurred_at",
            Arc::new(Int64Array::from(vec![1, 2])),
        );
        let err = read_err(columns, &ColumnMapping::default()).await;
        assert!(
            matches!(&err, Error::WrongType { column, .. } if column == "occurred_at"),
            "{err}"
        );
        assert!(err.is_input());
    }

    #[tokio::test]
    async fn spark_int96_timestamps_are_read() {
        use parquet::{
            data_type::{
                ByteArray, ByteArrayType, Int32Type as PqInt32, Int64Type as PqInt64, Int96,
                Int96Type,
            },
            file::{properties::WriterProperties, writer::SerializedFileWriter},
            schema::parser::parse_message_type,
        };
        const JULIAN_UNIX_EPOCH: i64 = 2_440_588;
        const DAY_NANOS: i64 = 86_400 * 1_000_000_000;
        let schema = parse_message_type(
            "message spark_schema {
                required binary event_id (UTF8);
                required binary stream_id (UTF8);
                required int32 partition;
                required int64 seq;
                required binary event_type (UTF8);
                required int32 schema_version;
                required int96 occurred_at;
                required binary payload (UTF8);
            }",
        )
        .unwrap();
        // 2023-11-14T22:13:20.123456789Z and one nanosecond before the epoch.
        let nanos = [1_700_000_000_123_456_789i64, -1];
        let int96: Vec<Int96> = nanos
            .iter()
            .map(|t| {
                let (day, in_day) = (t.div_euclid(DAY_NANOS), t.rem_euclid(DAY_NANOS) as u64);
                let mut v = Int96::new();
                v.set_data(
                    in_day as u32,
                    (in_day >> 32) as u32,
                    (day + JULIAN_UNIX_EPOCH) as u32,
                );
                v
            })
            .collect();
        let text = |v: &[&str]| v.iter().map(|s| ByteArray::from(*s)).collect::<Vec<_>>();
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(
            &mut out,
            Arc::new(schema),
            Arc::new(WriterProperties::default()),
        )
        .unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                0 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&text(&["a", "b"]), None, None),
                1 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&text(&["s", "s"]), None, None),
                2 => column.typed::<PqInt32>().write_batch(&[0, 0], None, None),
                3 => column.typed::<PqInt64>().write_batch(&[1, 2], None, None),
                4 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&text(&["T", "T"]), None, None),
                5 => column.typed::<PqInt32>().write_batch(&[1, 1], None, None),
                6 => column.typed::<Int96Type>().write_batch(&int96, None, None),
                _ => column
                    .typed::<ByteArrayType>()
                    .write_batch(&text(&["{}", "{}"]), None, None),
            }
            .unwrap();
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
        writer.close().unwrap();

        let location = memory();
        put(&location, "spark.parquet", Bytes::from(out)).await;
        let segment = segment(&location, "spark.parquet").await;
        let batches = read_segment(&location, &segment, &SourceMapping::default())
            .await
            .unwrap();
        let batch = concat_batches(&envelope_schema(), &batches).unwrap();
        assert_eq!(micros(&batch), vec![1_700_000_000_123_456, -1]);
    }

    #[tokio::test]
    async fn struct_payloads_become_json_objects_without_null_keys() {
        let fields = Fields::from(vec![
            Field::new("amount", DataType::Int64, true),
            Field::new("currency", DataType::Utf8, true),
        ]);
        let payload = StructArray::new(
            fields,
            vec![
                Arc::new(Int64Array::from(vec![Some(1250), None, Some(1)])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("EUR"), Some("USD"), None])),
            ],
            Some(NullBuffer::from(vec![true, true, false])),
        );
        let columns = with(
            envelope_columns(3, 0, 0),
            "payload",
            Arc::new(payload.clone()),
        );
        let columns = with(columns, "metadata", Arc::new(payload));
        let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
        let expected = vec![
            Some(r#"{"amount":1250,"currency":"EUR"}"#.to_owned()),
            Some(r#"{"currency":"USD"}"#.to_owned()),
            None,
        ];
        assert_eq!(strings(&batch, "payload"), expected);
        assert_eq!(strings(&batch, "metadata"), expected);
    }

    #[tokio::test]
    async fn foreign_names_are_mapped_and_a_missing_column_is_named() {
        let mapping = ColumnMapping {
            event_id: "key".into(),
            seq: "offset".into(),
            ..ColumnMapping::default()
        };
        let columns = renamed(
            renamed(envelope_columns(2, 0, 5), "event_id", "key"),
            "seq",
            "offset",
        );
        let batch = read_one(columns, &mapping).await.unwrap();
        assert_eq!(
            batch
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(1),
            6
        );

        let columns = renamed(envelope_columns(2, 0, 5), "event_id", "key");
        let err = read_err(columns, &mapping).await;
        assert!(err.is_input());
        assert_eq!(
            err.to_string(),
            "segment `seg.parquet`: column `offset` (mapped to envelope `seq`) not found; columns are: \
             key, stream_id, partition, seq, event_type, schema_version, occurred_at, payload"
        );
    }

    #[tokio::test]
    async fn a_payload_of_the_wrong_type_is_refused() {
        let columns = with(
            envelope_columns(2, 0, 0),
            "payload",
            Arc::new(Int64Array::from(vec![1, 2])),
        );
        let err = read_err(columns, &ColumnMapping::default()).await;
        assert!(
            matches!(&err, Error::WrongType { column, found, .. } if column == "payload" && found == "Int64"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_non_parquet_object_is_a_bad_segment() {
        let location = memory();
        put(
            &location,
            "notes.parquet",
            Bytes::from_static(b"this is not parquet"),
        )
        .await;
        let segment = segment(&location, "notes.parquet").await;
        let err = read_segment(&location, &segment, &SourceMapping::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::BadSegment { segment, .. } if segment == "notes.parquet"),
            "{err}"
        );
        assert!(err.is_input() && !err.is_retryable());
        assert!(
            err.to_string()
                .starts_with("segment `notes.parquet`: not a readable Parquet file"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nulls_in_envelope_columns_are_kept() {
        let columns = with(
            envelope_columns(2, 0, 0),
            "seq",
            Arc::new(Int64Array::from(vec![None, Some(1)])),
        );
        let columns = with(
            columns,
            "event_id",
            Arc::new(StringArray::from(vec![Some("a"), None])),
        );
        let batch = read_one(columns, &ColumnMapping::default()).await.unwrap();
        assert_eq!(batch.column_by_name("seq").unwrap().null_count(), 1);
        assert_eq!(batch.column_by_name("event_id").unwrap().null_count(), 1);
    }
}

/// Corrupted segments (issue 14, hostile input): bytes flipped, cut or spliced into a
/// valid segment never panic a reader; each read succeeds or fails naming the segment.
/// `PROPTEST_CASES` runs more cases than the bounded default.
#[cfg(test)]
mod corrupt {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::testing::{envelope_columns, memory, parquet, put, segment};

    const NAME: &str = "p=0/corrupt.parquet";

    /// A small valid segment: 3 row groups of envelope columns.
    fn valid() -> Bytes {
        parquet(envelope_columns(120, 0, 1), 40)
    }

    #[derive(Debug, Clone)]
    enum Damage {
        /// XOR the byte at (position mod length) with a non-zero mask.
        Flip(usize, u8),
        /// Keep only the first (position mod length) bytes.
        Truncate(usize),
        /// Overwrite bytes from (position mod length) with these.
        Overwrite(usize, Vec<u8>),
        /// Remove up to n bytes from (position mod length).
        Cut(usize, usize),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            4 => (any::<usize>(), 1..=255u8).prop_map(|(at, m)| Damage::Flip(at, m)),
            1 => any::<usize>().prop_map(Damage::Truncate),
            2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, b)| Damage::Overwrite(at, b)),
            1 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Damage::Cut(at, n)),
        ]
    }

    /// Damage aimed at the footer too: the last 8 bytes are its length and magic, and
    /// the bytes just before them the Thrift metadata a decoder trusts.
    fn near_end() -> impl Strategy<Value = Damage> {
        (0..600usize, 1..=255u8).prop_map(|(back, m)| Damage::Flip(usize::MAX - back, m))
    }

    fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        // `usize::MAX - back` lands `back` bytes before the end (near_end).
        let at = |p: usize| {
            if p > usize::MAX - 1000 {
                len.saturating_sub(1 + (usize::MAX - p)) % len
            } else {
                p % len
            }
        };
        match damage {
            Damage::Flip(p, mask) => bytes[at(*p)] ^= mask,
            Damage::Truncate(p) => bytes.truncate(at(*p)),
            Damage::Overwrite(p, with) => {
                let from = at(*p);
                for (i, b) in with.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(from + i) {
                        *slot = *b;
                    }
                }
            }
            Damage::Cut(p, n) => {
                let from = at(*p);
                let to = (from + n).min(len);
                bytes.drain(from..to);
            }
        }
    }

    /// An error must name the segment it is about.
    fn check(what: &str, result: Result<()>) -> std::result::Result<(), TestCaseError> {
        if let Err(e) = result {
            prop_assert_eq!(e.segment(), Some(NAME), "{}: {}", what, e);
            prop_assert!(e.to_string().contains(NAME), "{}: {}", what, e);
            prop_assert!(
                e.is_input(),
                "{}: a corrupt segment is the input's fault: {}",
                what,
                e
            );
        }
        Ok(())
    }

    /// Every way this module decodes a segment, on `bytes`.
    fn read_every_way(
        bytes: Bytes,
        runtime: &tokio::runtime::Runtime,
    ) -> std::result::Result<(), TestCaseError> {
        let mapping = SourceMapping::default();
        check(
            "decode_segment",
            decode_segment(NAME, bytes.clone(), &mapping).map(drop),
        )?;
        match row_group_rows(NAME, &bytes) {
            Ok(groups) => {
                for g in 0..groups.len().min(4) {
                    check(
                        "decode_row_group",
                        decode_row_group(NAME, bytes.clone(), &mapping, g)
                            .and_then(|batches| batches.collect::<Result<Vec<_>>>())
                            .map(drop),
                    )?;
                }
                check(
                    "decode_row_groups",
                    decode_row_groups(NAME, bytes.clone(), &mapping, 0..groups.len().max(1))
                        .and_then(|batches| batches.collect::<Result<Vec<_>>>())
                        .map(drop),
                )?;
            }
            Err(e) => check("row_group_rows", Err(e))?,
        }
        let streamed = runtime.block_on(async {
            let location = memory();
            put(&location, NAME, bytes).await;
            let listed = segment(&location, NAME).await;
            read_segment(&location, &listed, &mapping).await.map(drop)
        });
        check("read_segment", streamed)
    }

    #[test]
    fn the_valid_segment_reads_every_way() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = valid();
        let mapping = SourceMapping::default();
        let rows: usize = decode_segment(NAME, bytes.clone(), &mapping)
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 120);
        assert_eq!(row_group_rows(NAME, &bytes).unwrap(), vec![40, 40, 40]);
        read_every_way(bytes, &runtime).unwrap();
    }

    proptest! {
        #[test]
        fn damaged_segments_fail_naming_the_segment_and_never_panic(
            damages in prop::collection::vec(prop_oneof![3 => damage(), 1 => near_end()], 1..5),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut bytes = valid().to_vec();
            for d in &damages {
                apply(&mut bytes, d);
            }
            read_every_way(Bytes::from(bytes), &runtime)?;
        }

        #[test]
        fn arbitrary_bytes_fail_naming_the_segment_and_never_panic(
            head in prop::collection::vec(any::<u8>(), 0..256),
            magic in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut bytes = head;
            if magic {
                // Parquet's magic at both ends and a footer length: past the first check.
                bytes.splice(0..0, *b"PAR1");
                let len = bytes.len() as u32 / 2;
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(b"PAR1");
            }
            read_every_way(Bytes::from(bytes), &runtime)?;
        }
    }
}
