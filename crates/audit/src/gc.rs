//! `gc`: delete what no commit references, once it is old enough.
//!
//! ```text
//!  _delta_log/*.json ──▶ referenced runs, and every file a commit names or any Delta
//!                      version adds (segments, report)
//!  runs/<run>/     ──▶ no commit names the run, nothing in it newer than the cutoff
//!                        → the whole folder (its plan first, so a late `finalize` stops)
//!                  ──▶ a commit names the run: per shard, the attempt folders that are
//!                        not the manifest's winner, nothing in them newer than the cutoff
//! ```
//!
//! Never deleted: the commit log (`_delta_log/`), and in a referenced run its plan, report, manifests,
//! anomalies files, OpenLineage events and the winning attempts' part files. Every path
//! is checked against the files the commits name before it is deleted.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use replayfleet_finalizer::{Commit, history, history_and_added_files};
use replayfleet_replay::{Lineage, Target, TargetPath};
use serde::Serialize;

use crate::{Error, Result};

/// How to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only folders whose newest file is older than this are deleted.
    pub older_than: std::time::Duration,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
    /// The time the age is measured from.
    pub now: DateTime<Utc>,
}

/// One folder deleted (or, in a dry run, to be deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The folder, relative to the target, with a trailing `/`.
    pub path: String,
    /// Why it goes.
    pub reason: String,
    /// Files in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its newest file's modification time.
    pub last_modified: DateTime<Utc>,
}

/// What `gc` did.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Folders modified after this were kept.
    pub cutoff: DateTime<Utc>,
    /// The folders deleted (or to be deleted), in path order.
    pub removed: Vec<Removal>,
    /// Runs kept because a commit references them.
    pub referenced_runs: Vec<String>,
    /// Unreferenced runs kept because they are newer than the cutoff.
    pub recent_runs: Vec<String>,
}

/// One object under `runs/`.
#[derive(Debug, Clone)]
struct Object {
    path: String,
    bytes: u64,
    modified: DateTime<Utc>,
}

/// Collects `target`: see the module docs.
pub async fn gc(target: &Target, options: &GcOptions) -> Result<Collected> {
    let older_than = chrono::Duration::from_std(options.older_than)
        .map_err(|_| Error::Input("--older-than is too long".into()))?;
    let cutoff = options.now - older_than;
    let (commits, added) = history_and_added_files(target).await?;
    let mut protected = protected(&commits);
    // Every file any Delta version adds: a reader time-travelling to it reads them.
    protected.extend(added);
    let mut referenced: BTreeSet<String> = commits.iter().map(|c| c.run_id.clone()).collect();
    referenced.extend(
        protected
            .iter()
            .filter_map(|p| TargetPath::parse(p).run().map(str::to_owned)),
    );

    let mut runs: BTreeMap<String, Vec<Object>> = BTreeMap::new();
    for object in list(target, "runs").await? {
        let Some(run) = TargetPath::parse(&object.path).run().map(str::to_owned) else {
            continue;
        };
        runs.entry(run).or_default().push(object);
    }

    let mut collected = Collected {
        dry_run: options.dry_run,
        cutoff,
        removed: Vec::new(),
        referenced_runs: Vec::new(),
        recent_runs: Vec::new(),
    };
    let mut doomed: Vec<(Removal, Vec<Object>)> = Vec::new();
    for (run, objects) in runs {
        if referenced.contains(&run) {
            doomed.extend(losing_attempts(target, &run, &objects, cutoff).await?);
            collected.referenced_runs.push(run);
            continue;
        }
        let folder = folder(
            format!("{}/", Target::run_dir(&run)),
            "no commit references the run".into(),
            objects,
        );
        if folder.0.last_modified > cutoff {
            collected.recent_runs.push(run);
        } else {
            doomed.push(folder);
        }
    }

    for (removal, mut objects) in doomed {
        if let Some(named) = objects.iter().find(|o| protected.contains(&o.path)) {
            // Cannot happen with a consistent commit log; never delete a named file.
            tracing::warn!(folder = %removal.path, file = %named.path, "a commit names a file in this folder; kept");
            continue;
        }
        if !options.dry_run {
            // The plan first: a `finalize` that starts now finds no run.
            objects.sort_by_key(|o| !o.path.ends_with("/plan.json"));
            for object in &objects {
                target.delete(&object.path).await?;
            }
            tracing::info!(folder = %removal.path, files = removal.files, "deleted");
        }
        collected.removed.push(removal);
    }
    collected.removed.sort_by(|a, b| a.path.cmp(&b.path));

    if !options.dry_run {
        // A finalize that read a run before its plan went could still have committed it.
        let deleted: BTreeSet<&str> = collected
            .removed
            .iter()
            .filter_map(|r| r.path.strip_prefix("runs/")?.strip_suffix('/'))
            .collect();
        for commit in history(target).await? {
            if deleted.contains(commit.run_id.as_str()) {
                return Err(Error::Conflict(format!(
                    "version {} was committed from run {} while gc deleted that run's folder: restore it from a backup or roll back to an earlier version",
                    commit.version, commit.run_id
                )));
            }
        }
    }
    Ok(collected)
}

/// Every path any commit names.
fn protected(commits: &[Commit]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for commit in commits {
        paths.extend(commit.segments.iter().map(|s| s.path.clone()));
        paths.extend(commit.report.iter().cloned());
        paths.insert(Target::plan_path(&commit.run_id));
    }
    paths
}

/// In a referenced run, the attempt folders of each shard other than its manifest's
/// winner. A shard without a readable manifest keeps everything.
async fn losing_attempts(
    target: &Target,
    run: &str,
    objects: &[Object],
    cutoff: DateTime<Utc>,
) -> Result<Vec<(Removal, Vec<Object>)>> {
    // shard → attempt → its files
    let mut attempts: BTreeMap<&str, BTreeMap<&str, Vec<Object>>> = BTreeMap::new();
    for object in objects {
        if let TargetPath::AttemptFile { shard, attempt, .. } = TargetPath::parse(&object.path) {
            attempts
                .entry(shard)
                .or_default()
                .entry(attempt)
                .or_default()
                .push(object.clone());
        }
    }
    let mut out = Vec::new();
    for (shard, by_attempt) in attempts {
        let lineage_path = Target::lineage_path(run, shard);
        let Ok(Some(lineage)) = target.get_json::<Lineage>(&lineage_path).await else {
            tracing::warn!(
                run,
                shard,
                "no readable lineage manifest; the shard's attempts are kept"
            );
            continue;
        };
        for (attempt, files) in by_attempt {
            if attempt == lineage.attempt {
                continue;
            }
            let removal = folder(
                format!("{}/", Target::attempt_dir(run, shard, attempt)),
                format!(
                    "an attempt that lost {shard} (the winner is {})",
                    lineage.attempt
                ),
                files,
            );
            if removal.0.last_modified <= cutoff {
                out.push(removal);
            }
        }
    }
    Ok(out)
}

fn folder(path: String, reason: String, objects: Vec<Object>) -> (Removal, Vec<Object>) {
    let removal = Removal {
        path,
        reason,
        files: objects.len() as u64,
        bytes: objects.iter().map(|o| o.bytes).sum(),
        last_modified: objects
            .iter()
            .map(|o| o.modified)
            .max()
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    };
    (removal, objects)
}

/// Every object below `relative`, with its size and modification time.
async fn list(target: &Target, relative: &str) -> Result<Vec<Object>> {
    let location = target.location();
    let prefix = location.child(relative);
    let metas = location
        .list_all(Some(&prefix))
        .await
        .map_err(|e| Error::storage(&prefix, e))?;
    Ok(metas
        .into_iter()
        .filter_map(|m| {
            Some(Object {
                path: location.relative(&m.location)?,
                bytes: m.size,
                modified: m.last_modified,
            })
        })
        .collect())
}
