//! Event archives on object storage (docs/SOURCES.md).
//!
//! This crate owns object_store locations, segment listing, the inventory read from
//! Parquet footers, the mapping of foreign columns onto the canonical envelope, and
//! reading segments as envelope-shaped Arrow batches. It never knows about
//! contracts or projections, and it never decides what a null or a duplicate means:
//! values are carried through for the replay's anomaly policy to judge.
//!
//! - [`Location`]: a URL or bare path, resolved to a store and a prefix;
//! - [`list_segments`]: every `*.parquet` object under a location, in path order;
//! - [`inventory`]: rows, `seq` and partition ranges from footers, event types present;
//! - [`read_segment`] / [`read_segment_stream`]: a segment as [`envelope_schema`] batches.
//!
//! Errors say whether they are the user's ([`Error::is_input`], exit code 2) or worth
//! retrying ([`Error::is_retryable`]).

mod convert;
mod envelope;
mod error;
mod inventory;
mod json;
mod kept;
mod location;
mod read;
mod segment;
#[cfg(test)]
mod testing;
mod undecodable;

pub use envelope::envelope_schema;
pub use error::{Error, ErrorKind, Result, is_transient, storage_kind};
pub use inventory::{
    EventTypeCount, Inventory, InventoryOptions, PagesVerified, PartitionRange, PartitionSummary,
    Sample, SegmentInventory, StatsSource, Totals, inventory, inventory_of, inventory_with, sample,
    verify_pages,
};
pub use kept::KeptObjects;
pub use location::{DEFAULT_RETRY_TIMEOUT, LIST_RETRIES_METRIC, Location, RETRY_TIMEOUT_OPTION};
pub use read::{
    SegmentBatches, decode_row_group, decode_row_groups, decode_segment, decode_segment_batches,
    fetch_segment, read_segment, read_segment_stream, row_group_rows,
};
pub use segment::{SegmentRef, list_segments, list_segments_matching};
pub use undecodable::Undecodable;
