//! `verify`: re-check a committed version from the target and the archive alone.
//!
//! ```text
//!  _delta_log/<N>.json ──▶ every segment re-read: SHA-256 and size as committed   (segments)
//!                    ──▶ the files Delta readers read at N: the segments, no more  (table)
//!                    ──▶ the rows' content fingerprint and count as committed     (fingerprint)
//!  runs/<run>/plan.json, shards/<shard>/lineage.json
//!                    ──▶ every committed segment named by its shard's manifest    (lineage)
//!                    ──▶ every anomalies file re-read: SHA-256 as in the manifest (anomalies)
//!                    ──▶ every input segment re-read: SHA-256 and size as in the
//!                        manifests that read it                                    (inputs)
//!                    ──▶ a sample of the shards replayed again from the plan's
//!                        snapshot into a scratch target: outputs byte-identical    (rerun)
//! ```
//!
//! Nothing is written to the target: re-runs go to a temporary local folder that is
//! removed afterwards. The sample is chosen by a seed (the version by default), so the
//! same command re-runs the same shards.

use std::{collections::BTreeMap, sync::Arc};

use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use replayfleet_archive::Location;
use replayfleet_finalizer::Commit;
use replayfleet_replay::{
    Build, Fingerprint, Lineage, Plan, ShardJob, Target, replay_shard, sha256_hex,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result, load};

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The version (default: the current one).
    pub version: Option<u64>,
    /// Share of the shards to replay again, 0 to 1; at least one shard when above 0.
    pub sample: f64,
    /// Seed of the sample (default: the version).
    pub seed: Option<u64>,
    /// Who runs it (recorded as the re-runs' worker).
    pub by: String,
}

/// What was found wrong: a file whose bytes or figures differ from what the commit or a
/// manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `segment`, `fingerprint`, `table`, `plan`, `lineage`, `anomalies`, `input` or
    /// `rerun`.
    pub check: String,
    /// The file: relative to the target, or to the archive for `input`.
    pub path: String,
    /// The shard concerned, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// What the commit or the manifest says.
    pub expected: String,
    /// What was found.
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.check, self.path)?;
        if let Some(shard) = &self.shard {
            write!(f, " ({shard})")?;
        }
        write!(f, ": expected {}, found {}", self.expected, self.actual)
    }
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The version verified.
    pub version: u64,
    /// `replay` or `rollback`.
    pub kind: String,
    /// The run whose segments it holds.
    pub run_id: String,
    /// Segments re-hashed.
    pub segments: u64,
    /// Input segments re-hashed.
    pub inputs: u64,
    /// Lineage manifests read.
    pub manifests: u64,
    /// The seed the sample was drawn with.
    pub seed: u64,
    /// The share of shards asked for.
    pub sample: f64,
    /// The shards replayed again, by id.
    pub rerun: Vec<String>,
    /// Everything that differs; empty when the commit holds.
    pub mismatches: Vec<Mismatch>,
    /// Remarks that are not mismatches (an input whose entity tag changed while its bytes
    /// did not).
    pub notes: Vec<String>,
}

impl Verification {
    /// Whether everything held.
    pub fn holds(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Verifies a version of the projection in `target`, reading the archive its plan names
/// with `source_options` (this process's credentials).
pub async fn verify(
    target: &Target,
    source_options: &BTreeMap<String, String>,
    options: &VerifyOptions,
) -> Result<Verification> {
    if !(0.0..=1.0).contains(&options.sample) {
        return Err(Error::Input(format!(
            "--sample {} is not a fraction between 0 and 1",
            options.sample
        )));
    }
    let commit = load::commit(target, options.version).await?;
    let seed = options.seed.unwrap_or(commit.version);
    let mut v = Verification {
        version: commit.version,
        kind: commit.kind.clone(),
        run_id: commit.run_id.clone(),
        segments: 0,
        inputs: 0,
        manifests: 0,
        seed,
        sample: options.sample,
        rerun: Vec::new(),
        mismatches: Vec::new(),
        notes: Vec::new(),
    };
    segments(target, &commit, &mut v).await?;
    table(target, &commit, &mut v).await?;

    let plan = match load::plan(target, &commit.run_id).await? {
        Ok(plan) => plan,
        Err(why) => {
            v.mismatch(
                "plan",
                Target::plan_path(&commit.run_id),
                None,
                "the run's plan",
                why,
            );
            return Ok(v);
        }
    };
    let lineages = manifests(target, &commit, &plan, &mut v).await?;
    let source = Location::parse(&plan.source.url, None, source_options)?;
    inputs(&source, &lineages, &mut v).await?;
    let plan = Arc::new(plan);
    for shard in sample(&plan, options.sample, seed) {
        rerun(&plan, &source, &shard, &lineages, &options.by, &mut v).await?;
        v.rerun.push(shard);
    }
    Ok(v)
}

impl Verification {
    fn mismatch(
        &mut self,
        check: &str,
        path: impl Into<String>,
        shard: Option<&str>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) {
        self.mismatches.push(Mismatch {
            check: check.to_owned(),
            path: path.into(),
            shard: shard.map(str::to_owned),
            expected: expected.into(),
            actual: actual.into(),
        });
    }
}

fn digest_and_size(sha256: &str, bytes: u64) -> String {
    format!("sha256 {sha256} ({bytes} bytes)")
}

/// Every segment re-read and re-hashed; when all match, the rows' fingerprint and count
/// recomputed.
async fn segments(target: &Target, commit: &Commit, v: &mut Verification) -> Result<()> {
    let mut fingerprint = Fingerprint::new();
    let mut intact = true;
    for segment in &commit.segments {
        v.segments += 1;
        let expected = digest_and_size(&segment.sha256, segment.bytes);
        let shard = Some(segment.shard.as_str());
        let Some(bytes) = target.get(&segment.path).await? else {
            v.mismatch("segment", &segment.path, shard, expected, "no such file");
            intact = false;
            continue;
        };
        let actual = sha256_hex(&bytes);
        if actual != segment.sha256 || bytes.len() as u64 != segment.bytes {
            v.mismatch(
                "segment",
                &segment.path,
                shard,
                expected,
                digest_and_size(&actual, bytes.len() as u64),
            );
            intact = false;
            continue;
        }
        if intact {
            add_rows(&mut fingerprint, &segment.path, bytes)?;
        }
    }
    if intact
        && (fingerprint.hex() != commit.fingerprint || fingerprint.rows() != commit.totals.rows)
    {
        v.mismatch(
            "fingerprint",
            Target::commit_path(commit.version),
            None,
            format!(
                "fingerprint {} over {} rows",
                commit.fingerprint, commit.totals.rows
            ),
            format!(
                "fingerprint {} over {} rows",
                fingerprint.hex(),
                fingerprint.rows()
            ),
        );
    }
    Ok(())
}

/// The files a Delta reader of the version reads (the log's adds and removes replayed)
/// are exactly the commit's segments, with their sizes and SHA-256 tags.
async fn table(target: &Target, commit: &Commit, v: &mut Verification) -> Result<()> {
    let Some(mut files) = replayfleet_finalizer::table_files(target, commit.version).await? else {
        v.notes.push(format!(
            "version {} is in the `_commits/` log written before the Delta log: Delta readers do not see it",
            commit.version
        ));
        return Ok(());
    };
    let log = Target::commit_path(commit.version);
    for segment in &commit.segments {
        let expected = digest_and_size(&segment.sha256, segment.bytes);
        match files.remove(&segment.path) {
            None => v.mismatch(
                "table",
                &segment.path,
                Some(&segment.shard),
                expected,
                format!(
                    "not in the Delta table at version {} ({log})",
                    commit.version
                ),
            ),
            Some(file) => {
                let found = digest_and_size(file.sha256.as_deref().unwrap_or("?"), file.size);
                if found != expected {
                    v.mismatch(
                        "table",
                        &segment.path,
                        Some(&segment.shard),
                        expected,
                        found,
                    );
                }
            }
        }
    }
    for extra in files.into_keys() {
        v.mismatch(
            "table",
            extra,
            None,
            "not a segment of the commit",
            format!("in the Delta table at version {} ({log})", commit.version),
        );
    }
    Ok(())
}

fn add_rows(fingerprint: &mut Fingerprint, path: &str, bytes: bytes::Bytes) -> Result<()> {
    let failed = |message: String| replayfleet_replay::Error::Format {
        path: path.to_owned(),
        message,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| failed(e.to_string()))?;
    for batch in reader {
        fingerprint.add_batch(&batch.map_err(|e| failed(e.to_string()))?)?;
    }
    Ok(())
}

/// Every shard's manifest read; each committed segment must be an output of its shard's
/// manifest with the same digest; each anomalies file is re-hashed.
async fn manifests(
    target: &Target,
    commit: &Commit,
    plan: &Plan,
    v: &mut Verification,
) -> Result<BTreeMap<String, Lineage>> {
    let mut lineages = BTreeMap::new();
    for shard in &plan.shards {
        match load::lineage(target, &plan.run_id, &shard.id).await? {
            Ok(lineage) => {
                v.manifests += 1;
                lineages.insert(shard.id.clone(), lineage);
            }
            Err(why) => v.mismatch(
                "lineage",
                Target::lineage_path(&plan.run_id, &shard.id),
                Some(&shard.id),
                "the shard's lineage manifest",
                why,
            ),
        }
    }
    for segment in &commit.segments {
        let Some(lineage) = lineages.get(&segment.shard) else {
            continue;
        };
        let named = lineage.outputs.iter().find(|o| o.path == segment.path);
        if named.is_none_or(|o| o.sha256 != segment.sha256) {
            v.mismatch(
                "lineage",
                &segment.path,
                Some(&segment.shard),
                format!("named by its manifest with sha256 {}", segment.sha256),
                named.map_or_else(
                    || "not named by it".to_owned(),
                    |o| format!("sha256 {}", o.sha256),
                ),
            );
        }
    }
    for (shard, lineage) in &lineages {
        let Some(file) = &lineage.anomalies_file else {
            continue;
        };
        let expected = digest_and_size(&file.sha256, file.bytes);
        match target.get(&file.path).await? {
            None => v.mismatch(
                "anomalies",
                &file.path,
                Some(shard),
                expected,
                "no such file",
            ),
            Some(bytes) if sha256_hex(&bytes) != file.sha256 => v.mismatch(
                "anomalies",
                &file.path,
                Some(shard),
                expected,
                digest_and_size(&sha256_hex(&bytes), bytes.len() as u64),
            ),
            Some(_) => {}
        }
    }
    Ok(lineages)
}

/// Every input segment the manifests name, re-read and re-hashed once.
async fn inputs(
    source: &Location,
    lineages: &BTreeMap<String, Lineage>,
    v: &mut Verification,
) -> Result<()> {
    // path → (sha256, bytes, etag, shards that read it)
    let mut wanted: BTreeMap<&str, Vec<(&str, &replayfleet_replay::LineageInput)>> =
        BTreeMap::new();
    for (shard, lineage) in lineages {
        for input in &lineage.inputs {
            wanted
                .entry(input.path.as_str())
                .or_default()
                .push((shard.as_str(), input));
        }
    }
    for (path, readers) in wanted {
        v.inputs += 1;
        let full = source.child(path);
        let found = match source.store().get(&full).await {
            Ok(result) => {
                let etag = result.meta.e_tag.clone();
                let bytes =
                    result
                        .bytes()
                        .await
                        .map_err(|e| replayfleet_archive::Error::Storage {
                            path: full.to_string(),
                            source: e,
                        })?;
                Some((sha256_hex(&bytes), bytes.len() as u64, etag))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => {
                return Err(replayfleet_archive::Error::Storage {
                    path: full.to_string(),
                    source: e,
                }
                .into());
            }
        };
        for (shard, input) in readers {
            let expected = digest_and_size(&input.sha256, input.bytes);
            match &found {
                None => v.mismatch("input", path, Some(shard), expected, "no such segment"),
                Some((sha, bytes, _)) if *sha != input.sha256 || *bytes != input.bytes => v
                    .mismatch(
                        "input",
                        path,
                        Some(shard),
                        expected,
                        digest_and_size(sha, *bytes),
                    ),
                Some((_, _, etag)) if input.etag.is_some() && *etag != input.etag => {
                    let note = format!(
                        "input `{path}` ({shard}): entity tag {} instead of {}, bytes unchanged",
                        etag.as_deref().unwrap_or("-"),
                        input.etag.as_deref().unwrap_or("-")
                    );
                    if !v.notes.contains(&note) {
                        v.notes.push(note);
                    }
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The shards to replay again: `ceil(sample × shards)` of them (at least one when the
/// sample is above 0), those whose SHA-256 of (seed as 8 big-endian bytes, shard id) is
/// smallest; returned in id order.
pub fn sample(plan: &Plan, sample: f64, seed: u64) -> Vec<String> {
    let n = plan.shards.len();
    if sample <= 0.0 || n == 0 {
        return Vec::new();
    }
    let k = ((sample * n as f64).ceil() as usize).clamp(1, n);
    let mut ranked: Vec<([u8; 32], &str)> = plan
        .shards
        .iter()
        .map(|s| {
            let mut h = Sha256::new();
            h.update(seed.to_be_bytes());
            h.update(s.id.as_bytes());
            (h.finalize().into(), s.id.as_str())
        })
        .collect();
    ranked.sort();
    let mut chosen: Vec<String> = ranked
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_owned())
        .collect();
    chosen.sort();
    chosen
}

/// Replays one shard from the plan's snapshot into a scratch folder and compares its
/// outputs' digests with the committed manifest's.
async fn rerun(
    plan: &Arc<Plan>,
    source: &Location,
    shard: &str,
    lineages: &BTreeMap<String, Lineage>,
    by: &str,
    v: &mut Verification,
) -> Result<()> {
    let Some(committed) = lineages.get(shard) else {
        // Already reported: the shard has no manifest to compare with.
        return Ok(());
    };
    let scratch = tempfile::Builder::new()
        .prefix("replayfleet-verify-")
        .tempdir()
        .map_err(Error::Scratch)?;
    let scratch_target = Target::new(Location::parse(
        scratch.path().to_str().unwrap_or_default(),
        None,
        &BTreeMap::new(),
    )?);
    let attempt = format!("verify-{}", ulid::Ulid::new());
    let job = ShardJob {
        plan: Arc::clone(plan),
        shard: shard.to_owned(),
        source: source.clone(),
        target: scratch_target,
        catalog: plan.contracts.catalog()?,
        attempt: attempt.clone(),
        worker: format!("{by}/verify"),
        pacer: None,
    };
    tracing::info!(shard, attempt, "re-running the shard");
    let build_note = if plan.build == Build::current() {
        String::new()
    } else {
        format!(
            " (re-run by {}, the plan's build is {})",
            Build::current(),
            plan.build
        )
    };
    let lineage_path = Target::lineage_path(&plan.run_id, shard);
    let outcome = match replay_shard(&job).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => {
            v.mismatch(
                "rerun",
                lineage_path,
                Some(shard),
                "a replay of the shard from its plan",
                format!("the replay failed: {e}{build_note}"),
            );
            return Ok(());
        }
    };
    let redone = &outcome.lineage;
    let files = |l: &Lineage| -> Vec<(String, String)> {
        l.outputs
            .iter()
            .chain(l.anomalies_file.iter())
            .map(|o| (o.path.clone(), o.sha256.clone()))
            .collect()
    };
    let (theirs, ours) = (files(committed), files(redone));
    if theirs.len() != ours.len() {
        v.mismatch(
            "rerun",
            lineage_path,
            Some(shard),
            format!("{} output files", theirs.len()),
            format!("{} output files{build_note}", ours.len()),
        );
    } else {
        for ((path, expected), (_, actual)) in theirs.iter().zip(&ours) {
            if expected != actual {
                v.mismatch(
                    "rerun",
                    path,
                    Some(shard),
                    format!("sha256 {expected}"),
                    format!("sha256 {actual} when replayed again{build_note}"),
                );
            }
        }
    }
    drop(scratch);
    Ok(())
}
