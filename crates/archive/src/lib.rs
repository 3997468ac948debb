//! Event archives on object storage (SPEC section 1).
//!
//! This crate owns object_store locations, segment listing, the inventory read from
//! Parquet footers, the mapping of foreign columns onto the canonical envelope, and
//! reading segments as envelope-shaped Arrow batches. It never knows about
//! contracts or projections.

mod error;
mod location;

pub use error::{Error, Result};
pub use location::Location;
