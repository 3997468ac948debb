//! The in-process run-state store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lock;

use crate::store::{now_us, pace_slot};
use crate::{Error, Result, RunState, RunStore, ShardState, Versioned};

/// Run state and shard attempts in memory. One lock over everything makes each
/// operation atomic, so `update_shard` never has to retry here.
///
/// Cloning gives another handle on the same store.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedStore {
    state: Arc<Mutex<StoreState>>,
    /// Wakes a watcher ([`RunStore::changed`]) after a write.
    written: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct StoreState {
    runs: HashMap<String, Versioned<RunState>>,
    /// Run name -> its unfinished run.
    names: HashMap<String, String>,
    /// Run id -> shard name -> state; ordered so `shards` comes out sorted.
    shards: HashMap<String, BTreeMap<String, Versioned<ShardState>>>,
    /// Run id -> end of the last pace reservation, Unix microseconds.
    pace: HashMap<String, u64>,
}

impl EmbeddedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl RunStore for EmbeddedStore {
    async fn create_run(&self, state: &RunState) -> Result<u64> {
        let mut store = lock(&self.state);
        if store.runs.contains_key(&state.run_id) {
            return Err(Error::AlreadyExists {
                key: state.run_id.clone(),
            });
        }
        store.runs.insert(
            state.run_id.clone(),
            Versioned {
                value: state.clone(),
                revision: 1,
            },
        );
        if !state.phase.is_finished() {
            // The coordinator looks for an unfinished run before creating one;
            // if two raced, the later one is the one resumed by name.
            store.names.insert(state.name.clone(), state.run_id.clone());
        }
        Ok(1)
    }

    async fn run(&self, run_id: &str) -> Result<Option<Versioned<RunState>>> {
        Ok(lock(&self.state).runs.get(run_id).cloned())
    }

    async fn update_run(&self, state: &RunState, expected: u64) -> Result<u64> {
        let mut store = lock(&self.state);
        let stored = store
            .runs
            .get_mut(&state.run_id)
            .ok_or_else(|| Error::NotFound {
                key: state.run_id.clone(),
            })?;
        if stored.revision != expected {
            return Err(Error::Conflict {
                key: state.run_id.clone(),
                expected,
                found: stored.revision,
            });
        }
        stored.value = state.clone();
        stored.revision += 1;
        let revision = stored.revision;
        // Only drop the mapping if it is still ours: a newer run of the same
        // name may have taken it.
        if state.phase.is_finished() && store.names.get(&state.name) == Some(&state.run_id) {
            store.names.remove(&state.name);
        }
        self.written.notify_one();
        Ok(revision)
    }

    async fn unfinished_run(&self, name: &str) -> Result<Option<String>> {
        Ok(lock(&self.state).names.get(name).cloned())
    }

    async fn update_shard(
        &self,
        run_id: &str,
        shard: &str,
        f: &(dyn for<'s> Fn(&'s mut ShardState) + Send + Sync),
    ) -> Result<ShardState> {
        let mut store = lock(&self.state);
        let stored = store
            .shards
            .entry(run_id.to_owned())
            .or_default()
            .entry(shard.to_owned())
            .or_insert_with(|| Versioned {
                value: ShardState::default(),
                revision: 0,
            });
        f(&mut stored.value);
        stored.revision += 1;
        let state = stored.value.clone();
        drop(store);
        self.written.notify_one();
        Ok(state)
    }

    async fn shard(&self, run_id: &str, shard: &str) -> Result<Option<ShardState>> {
        Ok(lock(&self.state)
            .shards
            .get(run_id)
            .and_then(|shards| shards.get(shard))
            .map(|stored| stored.value.clone()))
    }

    async fn shards(&self, run_id: &str) -> Result<Vec<(String, ShardState)>> {
        Ok(lock(&self.state)
            .shards
            .get(run_id)
            .map(|shards| {
                shards
                    .iter()
                    .map(|(name, stored)| (name.clone(), stored.value.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn changed(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.written.notified()).await;
    }

    async fn pace(&self, run_id: &str, events: u64, per_second: u64) -> Result<Duration> {
        if per_second == 0 {
            return Ok(Duration::ZERO);
        }
        let now = now_us();
        let mut store = lock(&self.state);
        let end = store.pace.entry(run_id.to_owned()).or_insert(0);
        let (start, next) = pace_slot(*end, now, events, per_second);
        *end = next;
        Ok(Duration::from_micros(start - now))
    }
}
