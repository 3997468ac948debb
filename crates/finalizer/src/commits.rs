//! The commit log: reading it, the current version, history and rollback. The log is the
//! target's Delta Lake log (`delta.rs` writes and parses its versions):
//!
//! ```text
//! _delta_log/00000000000000000000.json   the table (protocol, metaData), empty
//! _delta_log/00000000000000000001.json   version 1 (parent null)
//! _delta_log/00000000000000000002.json   version 2 (parent 1)
//! _delta_log/00000000000000000003.json   version 3: rollback_of 1 (parent 2)
//! ```
//!
//! The current version is the highest. A version is created with `PutMode::Create` only,
//! so of two writers of the same version exactly one succeeds. A target written before
//! the Delta log keeps `_commits/<version>.json`, read here (never written) until
//! `migrate` converts it.

use std::collections::BTreeMap;

use arrow::datatypes::Schema;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use replayfleet_replay::{COMMITS_DIR, Created, LEGACY_COMMITS_DIR, Target};
use serde_json::Value;

use crate::delta::{self, Entry, FileAction, TableChange};
use crate::{COMMIT_FORMAT_VERSION, Commit, Error, Result};

/// Log files fetched at once.
const CONCURRENT_READS: usize = 16;

/// The log, read and checked.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Every version of the Delta log, from 0, ascending.
    entries: Vec<Entry>,
    /// Every commit record (the Delta log's, or the legacy log's), ascending.
    commits: Vec<Commit>,
    /// Read from `_commits/`: nothing may be committed before `migrate`.
    legacy: bool,
}

impl Log {
    /// The `metaData` in force at `version`.
    fn metadata_at(&self, version: u64) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.version <= version)
            .find_map(|e| e.metadata.as_ref())
    }

    /// The `protocol` in force now.
    fn protocol(&self) -> Option<&Value> {
        self.entries
            .iter()
            .filter_map(|e| e.protocol.as_ref())
            .next_back()
    }

    /// Every commit record, ascending.
    pub(crate) fn commits(&self) -> &[Commit] {
        &self.commits
    }

    /// [`Error::LegacyLog`] for a log read from `_commits/`.
    pub(crate) fn refuse_legacy(&self, target: &Target) -> Result<()> {
        if self.legacy {
            return Err(Error::LegacyLog {
                target: target.location().url().to_string(),
            });
        }
        Ok(())
    }

    /// [`Error::Table`] when the table holds another projection than `projection`: two
    /// projections would take turns replacing each other's rows in one table.
    pub(crate) fn refuse_other_projection(&self, projection: &str) -> Result<()> {
        let Some(metadata) = self.metadata_at(u64::MAX) else {
            return Ok(());
        };
        let holds = metadata
            .get("configuration")
            .and_then(|c| c.get(delta::PROJECTION_CONF))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if holds == projection {
            return Ok(());
        }
        let version = self
            .entries
            .iter()
            .rev()
            .find(|e| e.metadata.is_some())
            .map_or(0, |e| e.version);
        Err(Error::Table {
            path: Target::commit_path(version),
            message: format!(
                "the table holds the projection `{holds}`, not `{projection}`: give each projection a target of its own"
            ),
        })
    }

    /// The highest version (0 for a table without a commit yet, or none).
    fn latest(&self) -> Option<u64> {
        self.entries.last().map(|e| e.version)
    }
}

/// The 20-digit version of a log file's name, if it is one (`<version>.json`).
fn version_of(path: &str) -> Option<u64> {
    let digits = path.rsplit('/').next()?.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Reads and checks the whole log: every version from 0 with no gap, each ours and of a
/// protocol replayfleet supports ([`Error::Table`] naming the file otherwise).
pub(crate) async fn read_log(target: &Target) -> Result<Log> {
    let mut versions: Vec<u64> = target
        .list(COMMITS_DIR)
        .await?
        .iter()
        .filter_map(|(path, _)| version_of(path))
        .collect();
    versions.sort_unstable();
    if versions.is_empty() {
        let commits = legacy_history(target).await?;
        return Ok(Log {
            legacy: !commits.is_empty(),
            commits,
            entries: Vec::new(),
        });
    }
    if let Some((expected, _)) = versions.iter().enumerate().find(|(i, v)| *i as u64 != **v) {
        return Err(Error::Table {
            path: Target::commit_path(expected as u64),
            message: "missing: a Delta log has every version from 0".into(),
        });
    }
    let entries: Vec<Entry> = futures::stream::iter(versions)
        .map(|version| read_entry(target, version))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let commits = entries.iter().filter_map(|e| e.commit.clone()).collect();
    Ok(Log {
        entries,
        commits,
        legacy: false,
    })
}

/// One version of the Delta log, parsed; [`Error::NoVersion`] when it does not exist.
async fn read_entry(target: &Target, version: u64) -> Result<Entry> {
    let path = Target::commit_path(version);
    let bytes = target.get(&path).await?.ok_or_else(|| Error::NoVersion {
        version,
        target: target.location().url().to_string(),
    })?;
    delta::parse(&path, version, &bytes)
}

/// The commits of a target written before the Delta log (`_commits/`), ascending.
async fn legacy_history(target: &Target) -> Result<Vec<Commit>> {
    let mut commits = Vec::new();
    for (path, _) in target.list(LEGACY_COMMITS_DIR).await? {
        if version_of(&path).is_none() {
            continue;
        }
        if let Some(commit) = target.get_json::<Commit>(&path).await? {
            commits.push(commit);
        }
    }
    commits.sort_by_key(|c| c.version);
    Ok(commits)
}

/// Checks that new versions of `projection` can be committed to `target`: its log is
/// replayfleet's Delta log of that projection (or none yet), of a protocol replayfleet
/// supports, and not the legacy `_commits/`.
/// Run before any work, so that a run into a foreign table writes nothing.
///
/// # Errors
///
/// [`Error::Table`] naming the log file, [`Error::LegacyLog`], storage errors.
pub async fn check_target(target: &Target, projection: &str) -> Result<()> {
    let log = read_log(target).await?;
    log.refuse_legacy(target)?;
    log.refuse_other_projection(projection)
}

/// Every commit, ascending by version.
///
/// # Errors
///
/// Storage errors; [`Error::Table`] for a log replayfleet does not own or cannot read.
pub async fn history(target: &Target) -> Result<Vec<Commit>> {
    Ok(read_log(target).await?.commits)
}

/// The files a Delta reader of `version` reads: the log's `add`s and `remove`s from
/// version 0 to `version` replayed, by path (`None` for a target before the Delta log).
///
/// # Errors
///
/// As [`history`]; [`Error::NoVersion`] when the log has no `version`.
pub async fn table_files(
    target: &Target,
    version: u64,
) -> Result<Option<std::collections::BTreeMap<String, FileAction>>> {
    let log = read_log(target).await?;
    if log.legacy {
        return Ok(None);
    }
    if log.latest().is_none_or(|latest| latest < version) {
        return Err(Error::NoVersion {
            version,
            target: target.location().url().to_string(),
        });
    }
    let mut files = std::collections::BTreeMap::new();
    for entry in log.entries.iter().take_while(|e| e.version <= version) {
        for file in &entry.files {
            if file.add {
                files.insert(file.path.clone(), file.clone());
            } else {
                files.remove(&file.path);
            }
        }
    }
    Ok(Some(files))
}

/// The history ([`history`]) and every file an `add` of any version of the Delta log
/// names (what `gc` never deletes), from one read of the log.
///
/// # Errors
///
/// As [`history`].
pub async fn history_and_added_files(
    target: &Target,
) -> Result<(Vec<Commit>, std::collections::BTreeSet<String>)> {
    let log = read_log(target).await?;
    let added = log
        .entries
        .iter()
        .flat_map(|e| &e.files)
        .filter(|f| f.add)
        .map(|f| f.path.clone())
        .collect();
    Ok((log.commits, added))
}

/// The current (highest) commit, if any.
pub async fn current(target: &Target) -> Result<Option<Commit>> {
    Ok(history(target).await?.pop())
}

/// The version that committed the run `run_id` (a replay commit naming it), if one did.
///
/// # Errors
///
/// As [`history`].
pub async fn committed_version(target: &Target, run_id: &str) -> Result<Option<u64>> {
    Ok(history(target)
        .await?
        .into_iter()
        .find(|c| c.run_id == run_id && c.kind == "replay")
        .map(|c| c.version))
}

/// One version's commit.
pub async fn commit_of(target: &Target, version: u64) -> Result<Commit> {
    let no_version = || Error::NoVersion {
        version,
        target: target.location().url().to_string(),
    };
    if version == 0 {
        return Err(no_version());
    }
    let path = Target::commit_path(version);
    if let Some(bytes) = target.get(&path).await? {
        return delta::parse(&path, version, &bytes)?
            .commit
            .ok_or_else(no_version);
    }
    target
        .get_json::<Commit>(&Target::legacy_commit_path(version))
        .await?
        .ok_or_else(no_version)
}

/// The table a new version describes: the replayed projection's schema, or (a rollback)
/// the table as it was at a version.
pub(crate) enum TableOf<'a> {
    /// The projection's output schema, and each segment's `add.stats` by path.
    Schema(&'a Schema, &'a BTreeMap<String, String>),
    /// The `metaData` in force at this version.
    AsOf(u64),
}

/// Creates `commit` put-if-absent as Delta version `commit.version` (and version 0, the
/// table, first when there is none); [`Error::LostRace`] when its version exists.
///
/// `log` is the log as read when the version to create was chosen (versions never
/// change once written, so the previous version's files and the table's metadata are
/// still what it says; a newer version makes the put-if-absent fail).
pub(crate) async fn create(
    target: &Target,
    commit: &Commit,
    baseline: u64,
    table: TableOf<'_>,
    mut log: Log,
) -> Result<()> {
    log.refuse_legacy(target)?;
    let created_ms = commit.committed_at.timestamp_millis();
    if log.latest().is_none() {
        let TableOf::Schema(schema, _) = table else {
            return Err(Error::NoVersion {
                version: baseline,
                target: target.location().url().to_string(),
            });
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (metadata, protocol) = delta::table_of(&id, commit, schema, created_ms)?;
        let created = target
            .put_if_absent(
                &Target::commit_path(0),
                delta::create_bytes(&metadata, &protocol, created_ms),
            )
            .await?;
        log = match created {
            Created::Created => Log {
                entries: vec![Entry {
                    version: 0,
                    commit: None,
                    metadata: Some(metadata),
                    protocol: Some(protocol),
                    files: Vec::new(),
                }],
                ..Log::default()
            },
            // Another finalizer's version 0 does as well as ours (the race is for
            // version 1), once checked like any log.
            Created::Existed => read_log(target).await?,
        };
    }
    let current = log
        .metadata_at(u64::MAX)
        .cloned()
        .ok_or_else(|| Error::Table {
            path: Target::commit_path(0),
            message: "no metaData".into(),
        })?;
    let mut change = TableChange::default();
    let stats: std::borrow::Cow<'_, BTreeMap<String, String>> = match table {
        TableOf::Schema(schema, read) => {
            let id = current
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (metadata, protocol) = delta::table_of(id, commit, schema, created_ms)?;
            change = change_to(&current, log.protocol(), metadata, protocol);
            std::borrow::Cow::Borrowed(read)
        }
        TableOf::AsOf(version) => {
            if let Some(then) = log.metadata_at(version)
                && !same_table(then, &current)
            {
                let mut metadata = then.clone();
                metadata["createdTime"] = created_ms.into();
                change.metadata = Some(metadata);
            }
            // the statistics the restored files were added with
            std::borrow::Cow::Owned(
                log.entries
                    .iter()
                    .filter(|e| e.version == version)
                    .flat_map(|e| &e.files)
                    .filter(|f| f.add)
                    .filter_map(|f| Some((f.path.clone(), f.stats.clone()?)))
                    .collect(),
            )
        }
    };
    let previous = log
        .commits
        .iter()
        .find(|c| c.version + 1 == commit.version)
        .map(|c| c.segments.as_slice())
        .unwrap_or_default();
    let path = Target::commit_path(commit.version);
    let bytes = delta::version_bytes(commit, previous, &change, &stats);
    match target.put_if_absent(&path, bytes).await? {
        Created::Created => Ok(()),
        Created::Existed => {
            let winner = match target.get(&path).await? {
                Some(bytes) => delta::parse(&path, commit.version, &bytes)
                    .ok()
                    .and_then(|e| e.commit)
                    .map_or_else(|| "?".to_owned(), |c| c.run_id),
                None => "?".to_owned(),
            };
            Err(Error::LostRace {
                version: commit.version,
                run_id: commit.run_id.clone(),
                winner,
                baseline,
            })
        }
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    /// The versions of the `_commits/` log, now Delta versions (1 and up).
    pub versions: Vec<u64>,
    /// Whether the Delta log held them already (nothing was written).
    pub already: bool,
}

/// Converts a target written before the Delta log: each version of `_commits/` becomes the
/// Delta version of the same number (version 0, the table, first), with the schema read
/// from its segments' Parquet footers. The `_commits/` files stay (nothing reads them once
/// the Delta log exists). Running it again on a converted target writes nothing.
///
/// # Errors
///
/// [`Error::NoVersion`] without any commit log; [`Error::Table`] when the Delta log holds
/// other versions; storage errors.
pub async fn migrate(target: &Target) -> Result<Migrated> {
    let legacy = legacy_history(target).await?;
    let log = read_log(target).await?;
    if legacy.is_empty() {
        return if log.latest().is_some() {
            Ok(Migrated {
                versions: Vec::new(),
                already: true,
            })
        } else {
            Err(Error::NoVersion {
                version: 1,
                target: target.location().url().to_string(),
            })
        };
    }
    let versions: Vec<u64> = legacy.iter().map(|c| c.version).collect();
    if let Some((i, v)) = versions
        .iter()
        .enumerate()
        .find(|(i, v)| **v != *i as u64 + 1)
    {
        return Err(Error::Table {
            path: Target::legacy_commit_path(*v),
            message: format!("the `_commits/` log skips version {}", i + 1),
        });
    }
    if !log.legacy {
        // Converted before (or committed to since): the Delta log must hold the same
        // versions, with the same runs and fingerprints.
        for old in &legacy {
            let same = log.commits.iter().any(|c| {
                c.version == old.version
                    && c.run_id == old.run_id
                    && c.fingerprint == old.fingerprint
            });
            if !same {
                return Err(Error::Table {
                    path: Target::commit_path(old.version),
                    message: format!(
                        "the Delta log's version {} is not `{}`'s; the target has two logs that disagree",
                        old.version,
                        Target::legacy_commit_path(old.version)
                    ),
                });
            }
        }
        return Ok(Migrated {
            versions,
            already: true,
        });
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut metadata: Option<Value> = None;
    let mut protocol: Option<Value> = None;
    let mut schema: Option<Schema> = None;
    let mut previous: &[replayfleet_replay::CommitSegment] = &[];
    for commit in &legacy {
        if let Some(first) = commit.segments.first() {
            schema = Some(segment_schema(target, &first.path).await?);
        }
        let schema = schema.clone().unwrap_or_else(Schema::empty);
        let ms = commit.committed_at.timestamp_millis();
        let (new_metadata, new_protocol) = delta::table_of(&id, commit, &schema, ms)?;
        let mut change = TableChange::default();
        match &metadata {
            Some(m) => {
                change = change_to(m, protocol.as_ref(), new_metadata, new_protocol);
                if let Some(m) = &change.metadata {
                    metadata = Some(m.clone());
                }
                if let Some(p) = &change.protocol {
                    protocol = Some(p.clone());
                }
            }
            None => {
                let bytes = delta::create_bytes(&new_metadata, &new_protocol, ms);
                put_new(target, 0, bytes).await?;
                metadata = Some(new_metadata);
                protocol = Some(new_protocol);
            }
        }
        put_new(
            target,
            commit.version,
            delta::version_bytes(commit, previous, &change, &BTreeMap::new()),
        )
        .await?;
        previous = &commit.segments;
    }
    Ok(Migrated {
        versions,
        already: false,
    })
}

/// Creates Delta version `version`; another writer's file there is an error.
async fn put_new(target: &Target, version: u64, bytes: bytes::Bytes) -> Result<()> {
    match target.put_if_absent(&Target::commit_path(version), bytes).await? {
        Created::Created => Ok(()),
        Created::Existed => Err(Error::Table {
            path: Target::commit_path(version),
            message: "written by another process meanwhile (a second `migrate`?): nothing more was written; run `migrate` again once it is done".into(),
        }),
    }
}

/// The Arrow schema of a segment, from its Parquet footer.
async fn segment_schema(target: &Target, path: &str) -> Result<Schema> {
    let bytes = target.get(path).await?.ok_or_else(|| Error::Table {
        path: path.to_owned(),
        message: "a segment the `_commits/` log names is gone".into(),
    })?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::Table {
            path: path.to_owned(),
            message: format!("not a readable Parquet file: {e}"),
        })?;
    Ok(builder.schema().as_ref().clone())
}

/// What a version writes to take the table from `current` (and its protocol, if any) to
/// `metadata` and `protocol`: each only when it changes (a protocol never goes down).
fn change_to(
    current: &Value,
    current_protocol: Option<&Value>,
    metadata: Value,
    protocol: Value,
) -> TableChange {
    TableChange {
        metadata: (!same_table(&metadata, current)).then_some(metadata),
        protocol: current_protocol
            .is_none_or(|p| !covers(p, &protocol))
            .then_some(protocol),
    }
}

/// Whether two `metaData` actions describe the same table (schema and configuration).
fn same_table(a: &Value, b: &Value) -> bool {
    a.get("schemaString") == b.get("schemaString")
        && a.get("configuration") == b.get("configuration")
}

/// Whether the protocol `have` is at least `need` (protocols never go down).
fn covers(have: &Value, need: &Value) -> bool {
    let at = |p: &Value, key: &str| p.get(key).and_then(Value::as_u64).unwrap_or(0);
    at(have, "minReaderVersion") >= at(need, "minReaderVersion")
        && at(have, "minWriterVersion") >= at(need, "minWriterVersion")
}

/// Commits a new version whose segments (and schema) are those of version `to`.
pub async fn rollback(target: &Target, to: u64, by: &str, reason: &str) -> Result<Commit> {
    let log = read_log(target).await?;
    log.refuse_legacy(target)?;
    let old = log
        .commits
        .iter()
        .find(|c| c.version == to)
        .cloned()
        .ok_or_else(|| Error::NoVersion {
            version: to,
            target: target.location().url().to_string(),
        })?;
    let current = log.commits.last().map_or(0, |c| c.version);
    let commit = Commit {
        format_version: COMMIT_FORMAT_VERSION,
        version: current + 1,
        parent: Some(current),
        kind: "rollback".into(),
        rollback_of: Some(to),
        rollback_reason: Some(reason.to_owned()),
        committed_at: Utc::now(),
        committed_by: by.to_owned(),
        accepted: None,
        ..old
    };
    create(target, &commit, current, TableOf::AsOf(to), log).await?;
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn only_version_files_are_versions() {
        assert_eq!(version_of("_delta_log/00000000000000000012.json"), Some(12));
        assert_eq!(
            version_of("_delta_log/00000000000000000012.checkpoint.parquet"),
            None
        );
        assert_eq!(version_of("_delta_log/_last_checkpoint"), None);
        assert_eq!(version_of("_delta_log/12.json"), None);
    }
}
