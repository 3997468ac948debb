//! Fixtures for this crate's unit tests: in-memory stores, and the Parquet fixtures of
//! testkit (`replayfleet_testkit::parquet`).

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, memory::InMemory, path::Path};
pub(crate) use replayfleet_testkit::parquet::{
    batch, envelope_columns, parquet, parquet_with_footer, renamed, with,
};
use url::Url;

use crate::{Location, SegmentRef, list_segments};

/// An empty in-memory archive.
pub(crate) fn memory() -> Location {
    Location::from_store(
        Arc::new(InMemory::new()),
        Path::default(),
        Url::parse("memory:///").unwrap(),
    )
}

/// Stores `bytes` at `path` below the location.
pub(crate) async fn put(location: &Location, path: &str, bytes: Bytes) {
    location
        .store()
        .put(&location.child(path), PutPayload::from(bytes))
        .await
        .unwrap();
}

/// The listed segment at `path`.
pub(crate) async fn segment(location: &Location, path: &str) -> SegmentRef {
    list_segments(location)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.path == path)
        .unwrap_or_else(|| panic!("no segment {path}"))
}
