//! The commit log: reading it, the current version, history and rollback.
//!
//! ```text
//! _commits/00000000000000000001.json   version 1 (parent null)
//! _commits/00000000000000000002.json   version 2 (parent 1)
//! _commits/00000000000000000003.json   version 3: rollback_of 1 (parent 2)
//! ```
//!
//! The current version is the highest commit. A version is created with
//! `PutMode::Create` only, so of two writers of the same version exactly one succeeds.

use chrono::Utc;
use replayfleet_replay::{COMMITS_DIR, Created, Target, to_json_bytes};

use crate::{COMMIT_FORMAT_VERSION, Commit, Error, Result};

/// Every commit, ascending by version.
pub async fn history(target: &Target) -> Result<Vec<Commit>> {
    let mut commits = Vec::new();
    for (path, _) in target.list(COMMITS_DIR).await? {
        let Some(name) = path.rsplit('/').next() else {
            continue;
        };
        let Some(digits) = name.strip_suffix(".json") else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(commit) = target.get_json::<Commit>(&path).await? {
            commits.push(commit);
        }
    }
    commits.sort_by_key(|c| c.version);
    Ok(commits)
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
    target
        .get_json::<Commit>(&Target::commit_path(version))
        .await?
        .ok_or_else(|| Error::NoVersion {
            version,
            target: target.location().url().to_string(),
        })
}

/// Creates `commit` put-if-absent; [`Error::LostRace`] when its version exists.
pub(crate) async fn create(target: &Target, commit: &Commit, baseline: u64) -> Result<()> {
    let path = Target::commit_path(commit.version);
    match target.put_if_absent(&path, to_json_bytes(commit)).await? {
        Created::Created => Ok(()),
        Created::Existed => {
            let winner = target
                .get_json::<Commit>(&path)
                .await?
                .map_or_else(|| "?".to_owned(), |c| c.run_id);
            Err(Error::LostRace {
                version: commit.version,
                run_id: commit.run_id.clone(),
                winner,
                baseline,
            })
        }
    }
}

/// Commits a new version whose segments are those of version `to`.
pub async fn rollback(target: &Target, to: u64, by: &str, reason: &str) -> Result<Commit> {
    let old = commit_of(target, to).await?;
    let current = current(target).await?.map_or(0, |c| c.version);
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
    create(target, &commit, current).await?;
    Ok(commit)
}
