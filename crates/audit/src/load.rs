//! Reading what a commit rests on: the commit itself, its run's plan, its shards' lineage
//! manifests.

use replayfleet_finalizer::{Commit, commit_of, current};
use replayfleet_replay::{Lineage, Plan, Target};

use crate::{Error, Result};

/// Version `version` of the projection, or the current one.
pub(crate) async fn commit(target: &Target, version: Option<u64>) -> Result<Commit> {
    match version {
        Some(v) => Ok(commit_of(target, v).await?),
        None => current(target).await?.ok_or_else(|| {
            Error::Input(format!(
                "no version committed in `{}`",
                target.location().url()
            ))
        }),
    }
}

/// What a file the commit rests on turned out to be: the parsed file, or why not (gone or
/// malformed: a finding, not an operational error).
pub(crate) type Found<T> = std::result::Result<T, String>;

/// The plan of `run_id`.
pub(crate) async fn plan(target: &Target, run_id: &str) -> Result<Found<Plan>> {
    let path = Target::plan_path(run_id);
    Ok(match target.get(&path).await? {
        Some(bytes) => Plan::from_json(&path, &bytes).map_err(|e| e.to_string()),
        None => Err(format!("`{path}` is missing")),
    })
}

/// The lineage manifest of one shard.
pub(crate) async fn lineage(target: &Target, run_id: &str, shard: &str) -> Result<Found<Lineage>> {
    let path = Target::lineage_path(run_id, shard);
    Ok(match target.get(&path).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("`{path}`: {e}")),
        None => Err(format!("`{path}` is missing")),
    })
}
