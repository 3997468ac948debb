//! The archive suite: listing, inventory and reading, run unchanged against a local
//! folder and against a real S3 server (moto), a fresh bucket per case.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::{Context, Result, ensure};
use arrow::{
    array::{
        Array, ArrayRef, AsArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    },
    compute::concat_batches,
    datatypes::Int64Type,
};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use replayfleet_archive::{
    Error, Location, StatsSource, envelope_schema, inventory, list_segments, read_segment,
};
use replayfleet_config::{ColumnMapping, SourceMapping};
use replayfleet_testkit::S3Server;

/// Runs every case, each on a fresh, empty location from `fresh`.
async fn archive_suite(fresh: impl Fn() -> Location) -> Result<()> {
    lists_parquet_segments_recursively(fresh())
        .await
        .context("listing")?;
    inventories_from_footers(fresh())
        .await
        .context("inventory")?;
    reads_segments_as_the_envelope(fresh())
        .await
        .context("reading")?;
    names_a_missing_column(fresh())
        .await
        .context("missing column")?;
    refuses_a_non_parquet_segment(fresh())
        .await
        .context("bad segment")?;
    Ok(())
}

#[tokio::test]
async fn archive_suite_on_a_local_folder() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = std::sync::atomic::AtomicUsize::new(0);
    archive_suite(|| {
        let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("case-{n}"));
        Location::parse(path.to_str().unwrap(), None, &BTreeMap::new()).unwrap()
    })
    .await
}

#[tokio::test]
async fn archive_suite_on_s3() -> Result<()> {
    let server = S3Server::start();
    archive_suite(|| {
        let bucket = server.create_bucket();
        Location::parse(
            &format!("s3://{bucket}/archive/events"),
            None,
            &server.options(),
        )
        .unwrap()
    })
    .await
}

async fn lists_parquet_segments_recursively(location: Location) -> Result<()> {
    let a = segment_bytes(0, 0, 3);
    put(&location, "partition=1/b.parquet", segment_bytes(1, 10, 2)).await?;
    put(&location, "partition=0/a.parquet", a.clone()).await?;
    put(
        &location,
        "partition=1/late/c.parquet",
        segment_bytes(1, 20, 2),
    )
    .await?;
    put(&location, "_SUCCESS", Bytes::new()).await?;
    put(
        &location,
        "partition=0/readme.txt",
        Bytes::from_static(b"hello"),
    )
    .await?;
    let segments = list_segments(&location).await?;
    let paths: Vec<_> = segments.iter().map(|s| s.path.as_str()).collect();
    ensure!(
        paths
            == [
                "partition=0/a.parquet",
                "partition=1/b.parquet",
                "partition=1/late/c.parquet"
            ],
        "listed {paths:?}"
    );
    ensure!(
        segments[0].size == a.len() as u64,
        "size {}",
        segments[0].size
    );
    ensure!(
        segments.iter().all(|s| s.etag.is_some()),
        "etags {segments:?}"
    );
    Ok(())
}

async fn inventories_from_footers(location: Location) -> Result<()> {
    // The folder says 7; the column says 2 and is authoritative.
    put(
        &location,
        "partition=7/x.parquet",
        segment_bytes(2, 100, 10),
    )
    .await?;
    put(&location, "partition=0/a.parquet", segment_bytes(0, 0, 5)).await?;
    put(&location, "partition=0/b.parquet", segment_bytes(0, 5, 5)).await?;
    let segments = list_segments(&location).await?;
    let inv = inventory(&location, &SourceMapping::canonical()).await?;

    let rows: Vec<_> = inv
        .segments
        .iter()
        .map(|s| (s.path.as_str(), s.rows, s.seq_min, s.seq_max))
        .collect();
    ensure!(
        rows == [
            ("partition=0/a.parquet", 5, Some(0), Some(4)),
            ("partition=0/b.parquet", 5, Some(5), Some(9)),
            ("partition=7/x.parquet", 10, Some(100), Some(109)),
        ],
        "segments {rows:?}"
    );
    for (s, listed) in inv.segments.iter().zip(&segments) {
        ensure!(
            s.etag == listed.etag && s.etag.is_some(),
            "etag of {}",
            s.path
        );
        ensure!(s.bytes == listed.size, "bytes of {}", s.path);
        ensure!(s.stats == StatsSource::Footer, "stats of {}", s.path);
    }
    ensure!(
        inv.totals.rows == 20 && inv.totals.segments == 3,
        "totals {:?}",
        inv.totals
    );
    ensure!(
        inv.partition_ids() == [0, 2],
        "partitions {:?}",
        inv.partitions
    );
    ensure!(
        inv.partitions[0].rows == 10 && inv.partitions[0].segments == 2,
        "{:?}",
        inv.partitions[0]
    );
    let types: Vec<_> = inv
        .event_types
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.event_type.as_deref(), c.schema_version, c.events))
        .collect();
    ensure!(
        types
            == [
                (Some("Deposited"), Some(1), 10),
                (Some("Withdrawn"), Some(2), 10)
            ],
        "event types {types:?}"
    );
    Ok(())
}

async fn reads_segments_as_the_envelope(location: Location) -> Result<()> {
    put(&location, "partition=3/a.parquet", segment_bytes(3, 40, 4)).await?;
    let segments = list_segments(&location).await?;
    let batches = read_segment(&location, &segments[0], &SourceMapping::canonical()).await?;
    let batch = concat_batches(&envelope_schema(), &batches)?;
    ensure!(batch.num_rows() == 4, "rows {}", batch.num_rows());
    let seq = batch
        .column_by_name("seq")
        .unwrap()
        .as_primitive::<Int64Type>();
    ensure!(seq.values().to_vec() == [40, 41, 42, 43], "seq {seq:?}");
    let event_ids = batch.column_by_name("event_id").unwrap().as_string::<i32>();
    ensure!(
        event_ids.value(1) == "e-3-41",
        "event id {}",
        event_ids.value(1)
    );
    let payload = batch.column_by_name("payload").unwrap().as_string::<i32>();
    ensure!(
        payload.value(2) == r#"{"amount":2}"#,
        "payload {}",
        payload.value(2)
    );
    let occurred = batch.column_by_name("occurred_at").unwrap();
    ensure!(
        occurred
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0)
            == 1_700_000_000_000_000,
        "occurred_at {occurred:?}"
    );
    ensure!(
        batch.column_by_name("metadata").unwrap().null_count() == 4,
        "metadata"
    );
    Ok(())
}

async fn names_a_missing_column(location: Location) -> Result<()> {
    put(&location, "a.parquet", segment_bytes(0, 0, 2)).await?;
    let mapping = SourceMapping::with_columns(ColumnMapping {
        seq: "offset".into(),
        ..ColumnMapping::default()
    });
    let err = inventory(&location, &mapping)
        .await
        .expect_err("inventory must fail");
    ensure!(
        matches!(&err, Error::MissingColumn { segment, column, envelope_column, .. }
            if segment == "a.parquet" && column == "offset" && *envelope_column == "seq"),
        "{err}"
    );
    ensure!(err.is_input(), "{err} is the user's");
    let segments = list_segments(&location).await?;
    let err = read_segment(&location, &segments[0], &mapping)
        .await
        .expect_err("read must fail");
    ensure!(matches!(err, Error::MissingColumn { .. }), "{err}");
    Ok(())
}

async fn refuses_a_non_parquet_segment(location: Location) -> Result<()> {
    put(
        &location,
        "broken.parquet",
        Bytes::from_static(b"definitely not a parquet file"),
    )
    .await?;
    let err = inventory(&location, &SourceMapping::canonical())
        .await
        .expect_err("inventory must fail");
    ensure!(
        matches!(&err, Error::BadSegment { segment, .. } if segment == "broken.parquet"),
        "{err}"
    );
    ensure!(err.is_input() && !err.is_retryable(), "{err}");
    Ok(())
}

async fn put(location: &Location, path: &str, bytes: Bytes) -> Result<()> {
    location
        .store()
        .put(&location.child(path), PutPayload::from(bytes))
        .await
        .with_context(|| format!("put {path}"))?;
    Ok(())
}

/// `n` events of `partition` with seq `first_seq..`, written as pandas would (Int64
/// everywhere, millisecond timestamps without zone), in row groups of 3.
fn segment_bytes(partition: i64, first_seq: i64, n: usize) -> Bytes {
    let seqs: Vec<i64> = (0..n as i64).map(|i| first_seq + i).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "event_id",
            Arc::new(StringArray::from_iter_values(
                seqs.iter().map(|s| format!("e-{partition}-{s}")),
            )),
        ),
        (
            "stream_id",
            Arc::new(StringArray::from_iter_values(
                seqs.iter().map(|s| format!("s-{}", s % 2)),
            )),
        ),
        ("partition", Arc::new(Int64Array::from(vec![partition; n]))),
        ("seq", Arc::new(Int64Array::from(seqs.clone()))),
        (
            "event_type",
            Arc::new(StringArray::from_iter_values(
                seqs.iter()
                    .map(|s| if s % 2 == 0 { "Deposited" } else { "Withdrawn" }),
            )),
        ),
        (
            "schema_version",
            Arc::new(Int32Array::from_iter_values(
                seqs.iter().map(|s| 1 + (s % 2) as i32),
            )),
        ),
        (
            "occurred_at",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                seqs.iter().map(|s| 1_700_000_000_000 + s - first_seq),
            )),
        ),
        (
            "payload",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!(r#"{{"amount":{i}}}"#)),
            )),
        ),
    ];
    replayfleet_testkit::parquet::parquet(columns, 3)
}
