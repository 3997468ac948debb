//! The projection's home (docs/FORMATS.md): where every file of a run and every commit
//! lives, and the two ways replayfleet writes there — put-if-absent for files that decide
//! something (lineage manifests, commits), attempt-unique paths for everything else.
//!
//! A write whose outcome is unknown (the connection reset after the request was sent, a
//! timeout, a 5xx, or "already exists" on a retry of our own request) is never guessed:
//! the object is read back. Our bytes there mean the write landed; other bytes mean
//! another writer won; nothing there means the write is tried again, with jittered
//! backoff, for at most the location's retry budget (`retry_timeout`).
//!
//! ```text
//! <target>/_delta_log/00000000000000000000.json     the table (Delta Lake's commit log)
//! <target>/_delta_log/00000000000000000001.json     version 1
//! <target>/runs/<run_id>/plan.json
//! <target>/runs/<run_id>/shards/<shard>/<attempt>/part-00000.parquet
//! <target>/runs/<run_id>/shards/<shard>/lineage.json
//! <target>/runs/<run_id>/anomalies/<shard>.parquet
//! <target>/runs/<run_id>/report.json
//! ```

use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use replayfleet_archive::{Location, is_transient};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Folder of the commit log: the target is a Delta Lake table, and its log is Delta's.
pub const COMMITS_DIR: &str = "_delta_log";

/// Folder of the commit log of targets written before the Delta log (read-only: `history`,
/// `show`, `verify`, `explain` and `gc` read it; nothing commits there).
pub const LEGACY_COMMITS_DIR: &str = "_commits";

/// The counter of storage writes tried again after an unknown outcome or a transient
/// failure (label `op`: `put_if_absent` or `put`).
pub const WRITE_RETRIES_METRIC: &str = "replayfleet_storage_write_retries_total";

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

    /// `_delta_log/<20 digits>.json`: the Delta commit of `version`.
    pub fn commit_path(version: u64) -> String {
        format!("{COMMITS_DIR}/{version:020}.json")
    }

    /// `_commits/<20 digits>.json`: a version of a target written before the Delta log.
    pub fn legacy_commit_path(version: u64) -> String {
        format!("{LEGACY_COMMITS_DIR}/{version:020}.json")
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

    /// The newest run with a plan (run ids end in a ULID, which sorts by time).
    pub async fn latest_run(&self) -> Result<Option<String>> {
        for run_id in self.runs().await?.into_iter().rev() {
            if self.exists(&Self::plan_path(&run_id)).await? {
                return Ok(Some(run_id));
            }
        }
        Ok(None)
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

    /// Writes an object, replacing any previous one (only for files no decision rests
    /// on). An overwrite is idempotent: transient failures are tried again within the
    /// retry budget.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(relative);
        let mut retry = Retry::new(&self.location, "put", &path);
        loop {
            match self
                .location
                .store()
                .put(&path, PutPayload::from(bytes.clone()))
                .await
            {
                Ok(_) => return Ok(()),
                Err(source) if self.location.is_local() || !is_transient(&source) => {
                    return Err(Error::storage(&path, source));
                }
                Err(source) => retry.wait(source.to_string()).await?,
            }
        }
    }

    /// Creates an object only if none exists (`PutMode::Create`): [`Created::Created`]
    /// when the object now holds `bytes` because of this call (or an earlier try of it
    /// whose answer was lost), [`Created::Existed`] when another writer's object was there.
    ///
    /// When the outcome is unknown — a transient failure after the request may have
    /// landed, or "already exists" — the object is read back and compared with `bytes`;
    /// absent, the write is tried again (jittered backoff, counted in
    /// [`WRITE_RETRIES_METRIC`], logged once) until the location's retry budget is spent.
    pub async fn put_if_absent(&self, relative: &str, bytes: Bytes) -> Result<Created> {
        let path = self.path(relative);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let mut retry = Retry::new(&self.location, "put_if_absent", &path);
        loop {
            let failure = match self
                .location
                .store()
                .put_opts(&path, PutPayload::from(bytes.clone()), options.clone())
                .await
            {
                Ok(_) => return Ok(Created::Created),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    "the object exists (perhaps from an earlier try of this write)".to_owned()
                }
                Err(source) if self.location.is_local() || !is_transient(&source) => {
                    return Err(Error::storage(&path, source));
                }
                Err(source) => format!("the outcome is unknown: {source}"),
            };
            match self.location.store().get(&path).await {
                Ok(found) => match found.bytes().await {
                    Ok(existing) if existing == bytes => {
                        if retry.tried() {
                            tracing::info!(path = %path, "an earlier try of the write landed: the object holds our bytes");
                        }
                        return Ok(Created::Created);
                    }
                    Ok(_) => return Ok(Created::Existed),
                    Err(source) if is_transient(&source) => {
                        retry
                            .wait(format!("{failure}; reading it back: {source}"))
                            .await?;
                    }
                    Err(source) => return Err(Error::storage(&path, source)),
                },
                Err(object_store::Error::NotFound { .. }) => retry.wait(failure).await?,
                Err(source) if is_transient(&source) => {
                    retry
                        .wait(format!("{failure}; reading it back: {source}"))
                        .await?;
                }
                Err(source) => return Err(Error::storage(&path, source)),
            }
        }
    }

    /// Lists the target-relative paths below `relative`, sorted.
    pub async fn list(&self, relative: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.path(relative);
        let objects = self
            .location
            .list_all(Some(&prefix))
            .await
            .map_err(|source| Error::storage(&prefix, source))?;
        let mut paths: Vec<_> = objects
            .into_iter()
            .filter_map(|m| Some((self.location.relative(&m.location)?, m.size)))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// The ids of the runs with a folder under `runs/`, oldest first (a run id ends in a
    /// ULID, which sorts by time). One listing of the run folders, not of their files.
    pub async fn runs(&self) -> Result<Vec<String>> {
        let prefix = self.path("runs");
        let listed = self
            .location
            .list_folders(Some(&prefix))
            .await
            .map_err(|source| Error::storage(&prefix, source))?;
        let mut ids: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| {
                let relative = self.location.relative(p)?;
                Some(relative.strip_prefix("runs/")?.to_owned())
            })
            .collect();
        ids.sort_by(|a, b| {
            let ulid = |id: &str| id.rsplit('-').next().unwrap_or_default().to_owned();
            ulid(a).cmp(&ulid(b)).then_with(|| a.cmp(b))
        });
        Ok(ids)
    }

    /// The newest run named `name` (its id is `<name>-<ULID>`) when it has a plan and no
    /// report yet: a run that stopped before its finalizer ended (killed, or failed).
    /// `None` when the newest run of the name has ended, or there is none.
    pub async fn unfinished_run(&self, name: &str) -> Result<Option<String>> {
        let newest = self.runs().await?.into_iter().rev().find(|id| {
            id.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|ulid| ulid.len() == 26 && !ulid.contains('-'))
        });
        let Some(run_id) = newest else {
            return Ok(None);
        };
        if self.exists(&Self::report_path(&run_id)).await?
            || !self.exists(&Self::plan_path(&run_id)).await?
        {
            return Ok(None);
        }
        Ok(Some(run_id))
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

/// What a target-relative path is in the target's layout (docs/FORMATS.md, "Layout"):
/// the one parser of it, so that no command splits paths by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPath<'a> {
    /// `_delta_log/<version>.json`.
    Commit {
        /// The version.
        version: u64,
    },
    /// `runs/<run>/shards/<shard>/<attempt>/<file>`: a file one attempt wrote.
    AttemptFile {
        /// The run.
        run: &'a str,
        /// The shard.
        shard: &'a str,
        /// The attempt.
        attempt: &'a str,
        /// The file's name.
        file: &'a str,
    },
    /// Anything else under `runs/<run>/` (the plan, the report, lineage manifests,
    /// anomalies files, OpenLineage events).
    RunFile {
        /// The run.
        run: &'a str,
        /// The path below the run's folder.
        rest: &'a str,
    },
    /// Not in the layout.
    Other,
}

impl<'a> TargetPath<'a> {
    /// Parses a target-relative path.
    pub fn parse(relative: &'a str) -> Self {
        if let Some(name) = relative.strip_prefix(&format!("{COMMITS_DIR}/"))
            && let Some(version) = name.strip_suffix(".json").and_then(|v| v.parse().ok())
        {
            return TargetPath::Commit { version };
        }
        let Some((run, rest)) = relative
            .strip_prefix("runs/")
            .and_then(|r| r.split_once('/'))
            .filter(|(run, rest)| !run.is_empty() && !rest.is_empty())
        else {
            return TargetPath::Other;
        };
        if let ["shards", shard, attempt, file] = rest.splitn(4, '/').collect::<Vec<_>>()[..] {
            return TargetPath::AttemptFile {
                run,
                shard,
                attempt,
                file,
            };
        }
        TargetPath::RunFile { run, rest }
    }

    /// The run the path belongs to.
    pub fn run(&self) -> Option<&'a str> {
        match self {
            TargetPath::AttemptFile { run, .. } | TargetPath::RunFile { run, .. } => Some(run),
            TargetPath::Commit { .. } | TargetPath::Other => None,
        }
    }
}

/// The retries of one write: jittered exponential backoff whose total stays within the
/// location's retry budget.
struct Retry {
    op: &'static str,
    path: String,
    budget: Duration,
    started: Instant,
    backoff: backon::ExponentialBackoff,
    tries: u32,
}

impl Retry {
    fn new(location: &Location, op: &'static str, path: &Path) -> Self {
        let budget = location.retry_budget();
        Retry {
            op,
            path: path.to_string(),
            budget,
            started: Instant::now(),
            backoff: location.retry_backoff().build(),
            tries: 0,
        }
    }

    fn tried(&self) -> bool {
        self.tries > 0
    }

    /// Sleeps before the next try, or fails once the budget is spent.
    async fn wait(&mut self, why: String) -> Result<()> {
        let delay = match self.backoff.next() {
            Some(delay) if self.started.elapsed() + delay <= self.budget => delay,
            _ => {
                return Err(Error::Write {
                    path: self.path.clone(),
                    message: format!(
                        "gave up after {} tries in {:.1}s (retry budget {}s, location option `retry_timeout`): {why}",
                        self.tries + 1,
                        self.started.elapsed().as_secs_f64(),
                        self.budget.as_secs()
                    ),
                });
            }
        };
        if self.tries == 0 {
            tracing::warn!(path = %self.path, op = self.op, "storage write failed or its outcome is unknown; trying again: {why}");
        } else {
            tracing::debug!(path = %self.path, op = self.op, try_ = self.tries + 1, "trying the write again: {why}");
        }
        metrics::counter!(WRITE_RETRIES_METRIC, "op" => self.op).increment(1);
        self.tries += 1;
        tokio::time::sleep(delay).await;
        Ok(())
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

#[cfg(test)]
mod path_tests {
    use super::{Target, TargetPath};

    #[test]
    fn target_paths_parse_as_the_layout_writes_them() {
        assert_eq!(
            TargetPath::parse(&Target::commit_path(12)),
            TargetPath::Commit { version: 12 }
        );
        let part = format!(
            "{}/part-00000.parquet",
            Target::attempt_dir("r-1", "s-0", "a")
        );
        assert_eq!(
            TargetPath::parse(&part),
            TargetPath::AttemptFile {
                run: "r-1",
                shard: "s-0",
                attempt: "a",
                file: "part-00000.parquet"
            }
        );
        for path in [
            Target::plan_path("r-1"),
            Target::report_path("r-1"),
            Target::lineage_path("r-1", "s-0"),
            Target::anomalies_path("r-1", "s-0"),
        ] {
            assert!(
                matches!(
                    TargetPath::parse(&path),
                    TargetPath::RunFile { run: "r-1", .. }
                ),
                "{path}"
            );
        }
        assert_eq!(TargetPath::parse("runs/"), TargetPath::Other);
        assert_eq!(TargetPath::parse("_delta_log/x.json"), TargetPath::Other);
        assert_eq!(TargetPath::parse("_commits/1.json"), TargetPath::Other);
        assert_eq!(TargetPath::parse("elsewhere/file"), TargetPath::Other);
        assert_eq!(
            TargetPath::parse(&Target::plan_path("r-1")).run(),
            Some("r-1")
        );
    }
}
