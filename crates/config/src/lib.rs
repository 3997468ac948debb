//! The run configuration, `backfill.toml` (docs/CONFIG.md).
//!
//! This crate owns the raw serde structs (unknown keys rejected by name), the
//! `REPLAYFLEET_<SECTION>__<KEY>` environment overrides, and the validated run
//! model ([`Config`]) that the other crates consume. The file says *what* to
//! replay; how a process runs comes from its command-line flags. It never does
//! I/O beyond reading the file it is given and the SQL file that file names.

mod anomaly;
mod error;
mod kind;
mod mapping;
mod model;
mod pattern;
mod raw;
mod redact;

pub use anomaly::{AnomalyKind, Policy};
pub use error::{Error, Result};
pub use kind::ErrorKind;
pub use mapping::{
    ColumnMapping, Constant, ENVELOPE_COLUMNS, Entry, EnvelopeKind, EpochUnit, Origin,
    SourceMapping, TemplatePart, template_parts,
};
pub use model::{
    Checks, Config, DEFAULT_PROJECTION_TIME, DEFAULT_STEP_TIME, ENV_PREFIX, FleetConfig,
    MAX_NAME_BYTES, ProjectionConfig, SourceConfig, SpillCompression, StoreConfig, Window,
    parse_bytes, store_options_from_env,
};
pub use pattern::{DEFAULT_SEGMENTS, KeyPattern, KeyPatterns, SegmentGlob};
pub use redact::redact_url;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
