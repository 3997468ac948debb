//! The run configuration, `backfill.toml` (SPEC section 4).
//!
//! This crate owns the raw serde structs (unknown keys rejected by name), the
//! `REPLAYFLEET_<SECTION>__<KEY>` environment overrides, and the validated run
//! model that the other crates consume. It never does I/O beyond reading the
//! one file it is given.

mod mapping;

pub use mapping::{ColumnMapping, ENVELOPE_COLUMNS};
mod anomaly;

pub use anomaly::{AnomalyKind, Policy};
