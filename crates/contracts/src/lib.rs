//! Versioned event contracts (docs/CONTRACTS.md): the catalog of event types, each
//! version's JSON Schema (2020-12, `format` asserted), the upcasters between versions
//! (native steps, SQL through DataFusion, jq through jaq) and the typed payload columns of
//! the `events` table.
//!
//! The crate owns the catalog YAML format, every static check of `contracts check`, the
//! batch upcaster the replay engine calls per (event type, version), and the
//! schema-upgrade test matrix of `contracts test`. It never reads archives, and it never
//! panics or fails a batch because of one event's data: a bad event is an [`Outcome`]
//! carrying an anomaly kind.

mod bench;
mod bounded;
mod catalog;
mod error;
#[cfg(test)]
mod fuzz;
mod jq;
mod lite;
mod matrix;
mod raw;
mod schema;
mod sql;
mod step;
mod upcast;
pub mod watch;

// The unit tests run under the binaries' counting allocator, so that the jq memory bound
// is tested where it is kept.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: watch::Metered<std::alloc::System> = watch::Metered(std::alloc::System);

pub use bench::{BENCH_BATCH, BenchReport, Measurement, bench_catalog, bench_upcast};
pub use bounded::{MAX_BATCH_BYTES, MAX_VALUE_BYTES, bound_functions};
pub use catalog::{
    Catalog, CatalogFile, EventContract, Example, PathStatus, TypedColumn, VersionContract,
};
pub use error::{Error, Result};
pub use lite::{Lite, LiteJson, Obj};
pub use matrix::{Finding, MatrixRow, check, test_matrix};
pub use upcast::{Anomaly, Outcome, Upcaster};

// The catalog is shared by the replay engine's worker tasks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Catalog>();
    send_sync::<Upcaster>();
};
