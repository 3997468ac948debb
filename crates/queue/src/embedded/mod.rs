//! Both traits in memory, for one process (`replayfleet run`).
//!
//! The handles are cheap to clone and share one state, so the coordinator and
//! every worker task can hold their own. Nothing survives the process: an
//! embedded run that stops is started again from its plan.

mod queue;
mod store;

pub use queue::EmbeddedQueue;
pub use store::EmbeddedStore;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks the state even if a task panicked while holding it: every update
/// here is a few field writes that cannot be left half-done, so the state
/// stays consistent and the other tasks should keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
