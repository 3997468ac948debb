//! The run-state store on a JetStream KV bucket.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use serde::{Deserialize, Serialize};

use super::{
    decode_json, decode_token, encode_json, encode_token, list_under, open_bucket, unavailable,
};
use crate::store::{now_us, pace_slot};
use crate::{Error, Result, RunState, RunStore, ShardState, Versioned};

/// Where [`NatsStore`] keeps run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsStoreOptions {
    /// The KV bucket of run states, name mappings and shard states.
    pub bucket: String,
    /// Replicas of the bucket: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for NatsStoreOptions {
    fn default() -> Self {
        Self {
            bucket: "REPLAYFLEET_RUNS".to_owned(),
            replicas: 1,
        }
    }
}

/// Run state and shard attempts in a JetStream KV bucket, written by
/// compare-and-set.
///
/// KV revisions are sequence numbers of the bucket's stream, shared by every
/// key, so they cannot be the per-run revisions [`RunStore`] promises (1 at
/// creation, one more per write): each run's value carries its own revision.
/// Every write is still conditional on the KV revision read with it, which is
/// what makes it a compare-and-set; shard updates retry on a lost race.
///
/// Cloning gives another handle on the same bucket.
#[derive(Clone)]
pub struct NatsStore {
    kv: kv::Store,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.kv.name)
            .finish()
    }
}

/// A run's state as stored, with the run's own revision.
#[derive(Serialize, Deserialize)]
struct StoredRun {
    revision: u64,
    state: RunState,
}

impl NatsStore {
    /// Opens the store: creates the bucket (or updates it to these options).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] if the server cannot be reached, [`Error::Invalid`]
    /// if it refuses the bucket.
    pub async fn connect(client: async_nats::Client, options: NatsStoreOptions) -> Result<Self> {
        let kv = open_bucket(
            &jetstream::new(client),
            &options.bucket,
            "replayfleet run states, unfinished runs by name, shard states",
            options.replicas,
        )
        .await?;
        Ok(Self { kv })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    fn what(&self, op: &str, key: &str) -> String {
        format!("{op} key {key} in bucket {}", self.kv.name)
    }

    /// The live entry under `key`: `None` if missing or deleted.
    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable(self.what("read", key), e))?;
        Ok(entry.filter(|entry| entry.operation == Operation::Put))
    }

    /// Drops the name's mapping if it still points at `run_id`: a newer run of
    /// the name may have taken it.
    async fn clear_name(&self, name: &str, run_id: &str) -> Result<()> {
        let key = name_key(name);
        let Some(entry) = self.entry(&key).await? else {
            return Ok(());
        };
        if entry.value != run_id.as_bytes() {
            return Ok(());
        }
        match self
            .kv
            .delete_expect_revision(&key, Some(entry.revision))
            .await
        {
            Ok(()) => Ok(()),
            // Remapped to a newer run meanwhile: that mapping stays.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(unavailable(self.what("delete", &key), e)),
        }
    }
}

fn run_key(run_id: &str) -> String {
    format!("run.{}", encode_token(run_id))
}

fn name_key(name: &str) -> String {
    format!("name.{}", encode_token(name))
}

fn shard_prefix(run_id: &str) -> String {
    format!("shard.{}.", encode_token(run_id))
}

fn pace_key(run_id: &str) -> String {
    format!("pace.{}", encode_token(run_id))
}

fn shard_key(run_id: &str, shard: &str) -> String {
    format!("{}{}", shard_prefix(run_id), encode_token(shard))
}

#[async_trait::async_trait]
impl RunStore for NatsStore {
    async fn create_run(&self, state: &RunState) -> Result<u64> {
        let key = run_key(&state.run_id);
        let stored = StoredRun {
            revision: 1,
            state: state.clone(),
        };
        match self.kv.create(&key, encode_json(&stored)).await {
            Ok(_) => {}
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists {
                    key: state.run_id.clone(),
                });
            }
            Err(e) => return Err(unavailable(self.what("create", &key), e)),
        }
        if !state.phase.is_finished() {
            // The coordinator looks for an unfinished run before creating one;
            // if two raced, the later one is the one resumed by name.
            let key = name_key(&state.name);
            self.kv
                .put(&key, state.run_id.clone().into())
                .await
                .map_err(|e| unavailable(self.what("write", &key), e))?;
        }
        Ok(1)
    }

    async fn run(&self, run_id: &str) -> Result<Option<Versioned<RunState>>> {
        let key = run_key(run_id);
        let Some(entry) = self.entry(&key).await? else {
            return Ok(None);
        };
        let stored: StoredRun = decode_json(&self.kv.name, &key, &entry.value)?;
        Ok(Some(Versioned {
            value: stored.state,
            revision: stored.revision,
        }))
    }

    async fn update_run(&self, state: &RunState, expected: u64) -> Result<u64> {
        let key = run_key(&state.run_id);
        let revision = loop {
            let entry = self.entry(&key).await?.ok_or_else(|| Error::NotFound {
                key: state.run_id.clone(),
            })?;
            let stored: StoredRun = decode_json(&self.kv.name, &key, &entry.value)?;
            if stored.revision != expected {
                return Err(Error::Conflict {
                    key: state.run_id.clone(),
                    expected,
                    found: stored.revision,
                });
            }
            let next = StoredRun {
                revision: expected + 1,
                state: state.clone(),
            };
            match self
                .kv
                .update(&key, encode_json(&next), entry.revision)
                .await
            {
                Ok(_) => break next.revision,
                // Written since the read: the next read reports the conflict.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(self.what("write", &key), e)),
            }
        };
        if state.phase.is_finished() {
            self.clear_name(&state.name, &state.run_id).await?;
        }
        Ok(revision)
    }

    async fn unfinished_run(&self, name: &str) -> Result<Option<String>> {
        let key = name_key(name);
        let Some(entry) = self.entry(&key).await? else {
            return Ok(None);
        };
        String::from_utf8(entry.value.to_vec())
            .map(Some)
            .map_err(|e| Error::Invalid {
                key: format!("key {key} in bucket {}", self.kv.name),
                message: format!("not a run id: {e}"),
            })
    }

    async fn update_shard(
        &self,
        run_id: &str,
        shard: &str,
        f: &(dyn for<'s> Fn(&'s mut ShardState) + Send + Sync),
    ) -> Result<ShardState> {
        let key = shard_key(run_id, shard);
        loop {
            let entry = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| unavailable(self.what("read", &key), e))?;
            let (mut state, revision) = match entry {
                Some(entry) if entry.operation == Operation::Put => (
                    decode_json::<ShardState>(&self.kv.name, &key, &entry.value)?,
                    entry.revision,
                ),
                Some(entry) => (ShardState::default(), entry.revision),
                // Revision 0: written only if the key still has no entry.
                None => (ShardState::default(), 0),
            };
            f(&mut state);
            match self.kv.update(&key, encode_json(&state), revision).await {
                Ok(_) => return Ok(state),
                // Someone else's write landed first, so there is progress:
                // re-read and apply `f` to what they wrote.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(self.what("write", &key), e)),
            }
        }
    }

    async fn shard(&self, run_id: &str, shard: &str) -> Result<Option<ShardState>> {
        let key = shard_key(run_id, shard);
        let Some(entry) = self.entry(&key).await? else {
            return Ok(None);
        };
        decode_json(&self.kv.name, &key, &entry.value).map(Some)
    }

    async fn shards(&self, run_id: &str) -> Result<Vec<(String, ShardState)>> {
        let prefix = shard_prefix(run_id);
        let mut shards = Vec::new();
        for (key, value) in list_under(&self.kv, &prefix).await? {
            let Some(name) = key.strip_prefix(&prefix).and_then(decode_token) else {
                tracing::warn!(bucket = %self.kv.name, %key, "not a shard key; skipped");
                continue;
            };
            shards.push((name, decode_json(&self.kv.name, &key, &value)?));
        }
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(shards)
    }

    async fn pace(&self, run_id: &str, events: u64, per_second: u64) -> Result<Duration> {
        if per_second == 0 {
            return Ok(Duration::ZERO);
        }
        // The schedule's end is one key per run, moved by compare-and-set: two
        // workers reserving at once get consecutive slots. Clocks of the workers'
        // hosts should agree to well under a second (NTP), as for any lease.
        let key = pace_key(run_id);
        loop {
            let entry = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| unavailable(self.what("read", &key), e))?;
            let (end, revision) = match entry {
                Some(entry) if entry.operation == Operation::Put => {
                    let end = std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| Error::Invalid {
                            key: format!("key {key} in bucket {}", self.kv.name),
                            message: "not a pace schedule (microseconds)".to_owned(),
                        })?;
                    (end, entry.revision)
                }
                Some(entry) => (0, entry.revision),
                None => (0, 0),
            };
            let now = now_us();
            let (start, next) = pace_slot(end, now, events, per_second);
            match self
                .kv
                .update(&key, next.to_string().into(), revision)
                .await
            {
                Ok(_) => return Ok(Duration::from_micros(start - now)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(self.what("write", &key), e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_kinds_and_runs() {
        assert_eq!(run_key("r.1"), "run.r=2E1");
        assert_eq!(name_key("orders daily"), "name.orders=20daily");
        assert_eq!(shard_key("r", "s-0"), "shard.r.s-0");
        assert!(!shard_key("ab", "c").starts_with(&shard_prefix("a")));
    }
}
