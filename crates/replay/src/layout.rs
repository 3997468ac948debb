//! The projection's home (SPEC section 5): where every file of a run and every commit
//! lives, and the two ways replayfleet writes there — put-if-absent for files that decide
//! something (lineage manifests, commits), attempt-unique paths for everything else.
//!
//! ```text
//! <target>/_commits/00000000000000000001.json
//! <target>/runs/<run_id>/plan.json
//! <target>/runs/<run_id>/shards/<shard>/<attempt>/part-00000.parquet
//! <target>/runs/<run_id>/shards/<shard>/lineage.json
//! <target>/runs/<run_id>/anomalies/<shard>.parquet
//! <target>/runs/<run_id>/report.json
//! ```

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use replayfleet_archive::Location;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Folder of the commit log.
pub const COMMITS_DIR: &str = "_commits";

/// The outcome of a put-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    Created,
    /// The object existed already; it was left as it was.
    Existed,
}

/// A projection's home: paths and I/O helpers.
#[derive(Debug, Clone)]
pub struct Target {
    location: Location,
}

impl Target {
    /// Wraps a location.
    pub fn new(location: Location) -> Self {
        Target { location }
    }

    /// The location.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// `_commits/<20 digits>.json`.
    pub fn commit_path(version: u64) -> String {
        format!("{COMMITS_DIR}/{version:020}.json")
    }

    /// `runs/<run>`.
    pub fn run_dir(run_id: &str) -> String {
        format!("runs/{run_id}")
    }

    /// `runs/<run>/plan.json`.
    pub fn plan_path(run_id: &str) -> String {
        format!("runs/{run_id}/plan.json")
    }

    /// `runs/<run>/report.json`.
    pub fn report_path(run_id: &str) -> String {
        format!("runs/{run_id}/report.json")
    }

    /// `runs/<run>/shards/<shard>/lineage.json`.
    pub fn lineage_path(run_id: &str, shard: &str) -> String {
        format!("runs/{run_id}/shards/{shard}/lineage.json")
    }

    /// `runs/<run>/shards/<shard>/<attempt>`: only that attempt writes here.
    pub fn attempt_dir(run_id: &str, shard: &str, attempt: &str) -> String {
        format!("runs/{run_id}/shards/{shard}/{attempt}")
    }

    /// `runs/<run>/anomalies/<shard>.parquet`.
    pub fn anomalies_path(run_id: &str, shard: &str) -> String {
        format!("runs/{run_id}/anomalies/{shard}.parquet")
    }

    /// The store path of a target-relative path.
    pub fn path(&self, relative: &str) -> Path {
        self.location.child(relative)
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>> {
        let path = self.path(relative);
        match self.location.store().get(&path).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .map_err(|source| Error::storage(&path, source))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::storage(&path, source)),
        }
    }

    /// Whether an object exists (a HEAD request: nothing is downloaded).
    pub async fn exists(&self, relative: &str) -> Result<bool> {
        let path = self.path(relative);
        match self.location.store().head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(Error::storage(&path, source)),
        }
    }

    /// Reads and parses a JSON object; `None` when it does not exist.
    pub async fn get_json<T: DeserializeOwned>(&self, relative: &str) -> Result<Option<T>> {
        let Some(bytes) = self.get(relative).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Format {
                path: relative.to_owned(),
                message: e.to_string(),
            })
    }

    /// Writes an object, replacing any previous one (only for files no decision rests on).
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(relative);
        self.location
            .store()
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|source| Error::storage(&path, source))?;
        Ok(())
    }

    /// Creates an object only if none exists (`PutMode::Create`).
    pub async fn put_if_absent(&self, relative: &str, bytes: Bytes) -> Result<Created> {
        let path = self.path(relative);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .location
            .store()
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(Created::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Existed),
            Err(source) => Err(Error::storage(&path, source)),
        }
    }

    /// Lists the target-relative paths below `relative`, sorted.
    pub async fn list(&self, relative: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.path(relative);
        let objects: Vec<_> = self
            .location
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| Error::storage(&prefix, source))?;
        let mut paths: Vec<_> = objects
            .into_iter()
            .filter_map(|m| Some((self.location.relative(&m.location)?, m.size)))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Deletes an object (missing is fine).
    pub async fn delete(&self, relative: &str) -> Result<()> {
        let path = self.path(relative);
        match self.location.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::storage(&path, source)),
        }
    }
}

/// Pretty JSON with a trailing newline: what every JSON file replayfleet writes looks like.
pub fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    let mut text = serde_json::to_vec_pretty(value).expect("plain data serializes");
    text.push(b'\n');
    Bytes::from(text)
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
