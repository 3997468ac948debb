//! Planning (docs/CONFIG.md; the plan's format: docs/FORMATS.md, section 1, `plan.json`):
//! inventory the archive, group whole partitions into shards, check upcaster coverage and
//! the projection SQL, and snapshot every replay input into a [`Plan`]. Nothing is written
//! here; `run` and `coordinator` store the plan.

use std::{collections::BTreeSet, sync::Arc};

use chrono::Utc;
use replayfleet_archive::{Inventory, InventoryOptions, KeptObjects, Location, inventory_with};
use replayfleet_config::{AnomalyKind, Config, Policy, redact_url};
use replayfleet_contracts::{Catalog, PathStatus};
use replayfleet_replay::{
    Build, ContractsSnapshot, InputSegment, PLAN_FORMAT_VERSION, Plan, ProjectionSnapshot,
    ShardPlan, SourceSnapshot, Split, TypeCoverage, check_invariants, check_projection, shard_id,
    split_hazard,
};
use serde::Serialize;

use crate::{Error, Result};

/// Events per second one worker replays, for the estimate only (measured on the example
/// archive with a debug-free release build; see docs/PERFORMANCE.md).
const NOMINAL_EVENTS_PER_SECOND_PER_WORKER: u64 = 150_000;

/// A plan and what it was made from.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan, ready to be stored as `plan.json`.
    pub plan: Plan,
    /// The archive's inventory.
    pub inventory: Inventory,
    /// The catalog the plan snapshots.
    pub catalog: Catalog,
    /// The source location.
    pub source: Location,
    /// The target location.
    pub target: Location,
    /// Rough cost.
    pub estimate: Estimate,
    /// What the plan found that may make the run fail or give another answer than the
    /// user expects (`plan` prints them; a run logs them at WARN).
    pub warnings: Vec<String>,
}

/// The rough cost of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// Rows the shards will read (duplicates included).
    pub events: u64,
    /// Bytes of the segments the shards read.
    pub bytes: u64,
    /// Shards.
    pub shards: u64,
    /// Seconds with one worker, at a nominal rate.
    pub seconds_one_worker: u64,
}

/// A new run id: `<name>-<ULID>`.
pub fn new_run_id(name: &str) -> String {
    format!("{name}-{}", ulid::Ulid::new())
}

/// Rows of the first segment a plan shows as the mapped envelope.
pub const SAMPLE_ROWS: usize = 3;

/// Plans a run of `config` under `run_id`. Fails with exit-2 errors (config, catalog,
/// SQL, mapping, coverage) before any work. With `kept`, the small segments read whole
/// for their footers are kept there for a replay in this process ([`KeptObjects`]).
pub async fn plan_run(
    config: &Config,
    run_id: &str,
    kept: Option<Arc<KeptObjects>>,
) -> Result<Planned> {
    let catalog = Catalog::load(&config.contracts_dir)?;
    let output_columns =
        check_projection(&catalog, &config.projection.sql, &config.projection.key).await?;
    check_invariants(&catalog, &config.projection.sql, &config.checks.invariants).await?;
    let mut source = Location::parse(&config.source.url, None, &config.source.options)?;
    if let Some(kept) = kept {
        source = source.keeping(kept);
    }
    let target = Location::parse(&config.target.url, None, &config.target.options)?;
    let inventory = inventory_with(
        &source,
        &config.source.mapping,
        InventoryOptions {
            event_types: true,
            // `plan` shows how the mapping reads the archive before anything runs.
            sample_rows: SAMPLE_ROWS,
            ..InventoryOptions::for_location(&source)
        },
    )
    .await?;
    if inventory.segments.is_empty() {
        return Err(Error::Plan(format!(
            "source `{}` holds no segment (source.segments = \"{}\")",
            redact_url(&config.source.url),
            config.source.mapping.segments.as_str()
        )));
    }
    if inventory.totals.null_partition_rows > 0 {
        let named: Vec<_> = inventory
            .segments
            .iter()
            .filter(|s| s.null_partition_rows > 0)
            .take(5)
            .map(|s| format!("`{}` ({} rows)", s.path, s.null_partition_rows))
            .collect();
        return Err(Error::Plan(format!(
            "{} rows have a null partition (source.columns.partition = {}), so no shard can own them: {}",
            inventory.totals.null_partition_rows,
            config.source.mapping.columns.partition.describe(),
            named.join(", ")
        )));
    }

    let present: BTreeSet<i32> = inventory.partitions.iter().map(|p| p.partition).collect();
    let wanted: BTreeSet<i32> = match &config.window.partitions {
        None => present.clone(),
        Some(list) => {
            let missing: Vec<String> = list
                .iter()
                .filter(|p| !present.contains(p))
                .map(|p| p.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(Error::Plan(format!(
                    "`window.partitions` names partitions the archive lacks: {}",
                    missing.join(", ")
                )));
            }
            list.iter().copied().collect()
        }
    };

    let coverage = coverage(&catalog, &inventory, config)?;
    let hazard = split_hazard(&catalog, &config.projection.sql, &config.projection.key).await?;
    // A partition's streams can be replayed apart only when no two streams give one key.
    let splits = hazard.is_none();
    let shards = shards(&inventory, &wanted, config.shard_target_events, splits);
    let used: BTreeSet<&str> = shards
        .iter()
        .flat_map(|s| s.segments.iter().map(String::as_str))
        .collect();
    let segments: Vec<InputSegment> = inventory
        .segments
        .iter()
        .filter(|s| used.contains(s.path.as_str()))
        .map(|s| InputSegment {
            path: s.path.clone(),
            bytes: s.bytes,
            etag: s.etag.clone(),
            last_modified: chrono::DateTime::parse_from_rfc3339(&s.last_modified)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            rows: s.rows,
            seq_min: s.seq_min,
            seq_max: s.seq_max,
            partitions: s.partitions.clone(),
        })
        .collect();
    let estimate = Estimate {
        events: shards.iter().map(|s| s.rows).sum(),
        bytes: shards.iter().map(|s| s.bytes).sum(),
        shards: shards.len() as u64,
        seconds_one_worker: shards.iter().map(|s| s.rows).sum::<u64>()
            / NOMINAL_EVENTS_PER_SECOND_PER_WORKER,
    };
    let mut warnings = Vec::new();
    if let Some(why) = hazard {
        let whole: Vec<String> = inventory
            .partitions
            .iter()
            .filter(|p| {
                wanted.contains(&p.partition) && shares(p.rows, config.shard_target_events) >= 2
            })
            .take(5)
            .map(|p| format!("{} ({} events)", p.partition, p.rows))
            .collect();
        if !whole.is_empty() {
            warnings.push(format!(
                "partitions of 1.5 × shards.target_events ({}) or more are replayed whole, \
                 each by one worker, instead of split into sub-shards, because the \
                 projection's streams cannot be replayed apart ({why}): {}",
                config.shard_target_events,
                whole.join(", ")
            ));
        }
        let warning = if shards.len() > 1 {
            format!(
                "projection.sql: {why}; the plan has {} shards, each folded apart, so two \
                 shards can give the same key and the finalizer would refuse the run \
                 (unique_keys). Key the projection by stream (its `stream_id`, or \
                 `event_id`), or raise shards.target_events above the archive's {} events \
                 for one shard",
                shards.len(),
                estimate.events
            )
        } else {
            format!(
                "projection.sql: {why}; it replays correctly only while the plan has one \
                 shard (shards.target_events above the events read)"
            )
        };
        warnings.push(warning);
    }
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        run_id: run_id.to_owned(),
        name: config.name.clone(),
        created_at: Utc::now(),
        build: Build::current(),
        source: SourceSnapshot {
            url: source.url().to_string(),
            mapping: config.source.mapping.clone(),
            contiguous_seq: config.source.contiguous_seq,
        },
        target: target.url().to_string(),
        contracts: ContractsSnapshot::of(&catalog),
        projection: ProjectionSnapshot::new(
            &config.projection.name,
            &config.projection.key,
            &config.projection.sql,
        ),
        checks: config.checks.clone(),
        window: config.window.clone(),
        shard_target_events: config.shard_target_events,
        memory_limit_bytes: config.memory_limit_bytes,
        spill_dir: config.spill_dir.as_ref().map(|d| d.display().to_string()),
        spill_max_bytes: config.spill_max_bytes,
        max_attempts: config.fleet.max_attempts,
        lease_ttl_ms: config.fleet.lease_ttl.as_millis() as u64,
        projection_time_ms: config.projection_time.as_millis() as u64,
        step_time_ms: config.step_time.as_millis() as u64,
        spill_compression: config.spill_compression,
        pacing_events_per_second: config.pacing_events_per_second,
        // For the record only, without credentials: the coordinator posts to the
        // config's URL.
        lineage_url: config.lineage_url.as_deref().map(redact_url),
        segments,
        shards,
        event_types: coverage,
        output_columns,
    };
    Ok(Planned {
        plan,
        inventory,
        catalog,
        source,
        target,
        estimate,
        warnings,
    })
}

/// Every (type, version) present and where it stands; pairs without a path whose policy
/// is `halt` fail the plan, all named at once.
fn coverage(
    catalog: &Catalog,
    inventory: &Inventory,
    config: &Config,
) -> Result<Vec<TypeCoverage>> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for count in inventory.event_types.iter().flatten() {
        let status = match (&count.event_type, count.schema_version) {
            (None, _) => PathStatus::Anomaly(AnomalyKind::UnknownType),
            (Some(_), None) => PathStatus::Anomaly(AnomalyKind::NoUpcastPath),
            (Some(t), Some(v)) => catalog.path(t, v),
        };
        let (status, chain, policy) = match status {
            PathStatus::AtTarget => ("at_target".to_owned(), Vec::new(), None),
            PathStatus::Upcastable { chain } => ("upcast".to_owned(), chain, None),
            PathStatus::Anomaly(kind) => {
                let policy = config.checks.policy(kind);
                if policy == Policy::Halt {
                    failures.push(format!(
                        "{} events of {} version {} are {kind} and `checks.anomalies.{kind}` is halt",
                        count.events,
                        count.event_type.as_deref().unwrap_or("(null type)"),
                        count
                            .schema_version
                            .map_or_else(|| "(null)".to_owned(), |v| v.to_string()),
                    ));
                }
                (kind.as_str().to_owned(), Vec::new(), Some(policy))
            }
        };
        out.push(TypeCoverage {
            event_type: count.event_type.clone(),
            schema_version: count.schema_version,
            events: count.events,
            status,
            chain,
            policy,
        });
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(Error::Coverage(failures))
    }
}

/// Sub-shards a partition is split into at most (its shares of streams).
const MAX_SPLIT: u64 = 256;

/// The sub-shards a partition of `rows` rows would be split into: `round(rows / target)`,
/// at most [`MAX_SPLIT`] (below 2: not split).
fn shares(rows: u64, target: u64) -> u64 {
    let target = target.max(1);
    (rows.saturating_add(target / 2) / target).min(MAX_SPLIT)
}

/// Groups the wanted partitions, ascending, into shards of about `target_events` rows: a
/// partition that would take a non-empty shard past the target starts the next shard. A
/// partition larger than the target is a shard of its own or, when `splits` (the
/// projection is keyed by stream) and it holds at least 1.5 targets, `round(rows /
/// target)` sub-shards (at most [`MAX_SPLIT`]), each replaying one share of its streams
/// ([`Split`]) and estimated at an equal share of its rows. Every sub-shard reads the
/// whole partition, so one barely past the target is not split in two.
fn shards(
    inventory: &Inventory,
    wanted: &BTreeSet<i32>,
    target_events: u64,
    splits: bool,
) -> Vec<ShardPlan> {
    let target = target_events.max(1);
    // (partitions, rows, split)
    let mut groups: Vec<(Vec<i32>, u64, Option<Split>)> = Vec::new();
    let mut current: (Vec<i32>, u64) = (Vec::new(), 0);
    for p in inventory
        .partitions
        .iter()
        .filter(|p| wanted.contains(&p.partition))
    {
        let of = shares(p.rows, target);
        if splits && of >= 2 {
            if !current.0.is_empty() {
                let (partitions, rows) = std::mem::take(&mut current);
                groups.push((partitions, rows, None));
            }
            for bucket in 0..of {
                // Equal shares whose sum is the partition's rows.
                let rows = p.rows * (bucket + 1) / of - p.rows * bucket / of;
                let split = Split {
                    bucket: bucket as u32,
                    of: of as u32,
                };
                groups.push((vec![p.partition], rows, Some(split)));
            }
            continue;
        }
        if !current.0.is_empty() && current.1 + p.rows > target && current.1 > 0 {
            let (partitions, rows) = std::mem::take(&mut current);
            groups.push((partitions, rows, None));
        }
        current.0.push(p.partition);
        current.1 += p.rows;
    }
    if !current.0.is_empty() {
        groups.push((current.0, current.1, None));
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (partitions, rows, split))| {
            let set: BTreeSet<i32> = partitions.iter().copied().collect();
            let segments: Vec<_> = inventory
                .segments
                .iter()
                .filter(|s| s.partitions.iter().any(|r| set.contains(&r.partition)))
                .collect();
            ShardPlan {
                id: shard_id(i),
                partitions,
                segments: segments.iter().map(|s| s.path.clone()).collect(),
                rows,
                bytes: segments.iter().map(|s| s.bytes).sum(),
                split,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use replayfleet_archive::{PartitionSummary, Totals};

    use super::*;

    fn inventory(rows: &[u64]) -> Inventory {
        Inventory {
            location: "memory:///".into(),
            segments: Vec::new(),
            totals: Totals::default(),
            partitions: rows
                .iter()
                .enumerate()
                .map(|(i, r)| PartitionSummary {
                    partition: i as i32,
                    segments: 1,
                    rows: *r,
                    seq_min: None,
                    seq_max: None,
                })
                .collect(),
            event_types: None,
            sample: None,
        }
    }

    #[test]
    fn shards_group_whole_partitions_near_the_target() {
        let inv = inventory(&[40, 40, 40, 100, 10]);
        let all: BTreeSet<i32> = (0..5).collect();
        let shards = shards(&inv, &all, 100, true);
        let parts: Vec<_> = shards.iter().map(|s| s.partitions.clone()).collect();
        assert_eq!(parts, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        assert_eq!(shards[0].id, "shard-00000");
        assert!(shards.iter().all(|s| s.split.is_none()));
        let one = super::shards(&inv, &all, u64::MAX, true);
        assert_eq!(one.len(), 1);
        let canary: BTreeSet<i32> = [1, 3].into();
        let parts: Vec<_> = super::shards(&inv, &canary, 1000, true)
            .into_iter()
            .map(|s| s.partitions)
            .collect();
        assert_eq!(parts, vec![vec![1, 3]]);
    }

    #[test]
    fn a_partition_past_the_target_is_split_into_shares_of_its_streams() {
        let inv = inventory(&[40, 250, 40, 40, 140]);
        let all: BTreeSet<i32> = (0..5).collect();
        let shards = shards(&inv, &all, 100, true);
        let got: Vec<_> = shards
            .iter()
            .map(|s| (s.id.as_str(), s.partitions.clone(), s.rows, s.split))
            .collect();
        let share = |bucket| Some(Split { bucket, of: 3 });
        assert_eq!(
            got,
            vec![
                ("shard-00000", vec![0], 40, None),
                ("shard-00001", vec![1], 83, share(0)),
                ("shard-00002", vec![1], 83, share(1)),
                ("shard-00003", vec![1], 84, share(2)),
                ("shard-00004", vec![2, 3], 80, None),
                // 1.4 targets: whole, as a shard of its own.
                ("shard-00005", vec![4], 140, None),
            ]
        );
        // A projection whose streams cannot be replayed apart keeps partitions whole.
        let whole = super::shards(&inv, &all, 100, false);
        assert!(whole.iter().all(|s| s.split.is_none()), "{whole:?}");
        assert_eq!(whole.len(), 4);
        // At most MAX_SPLIT shares.
        let huge = super::shards(&inventory(&[10_000]), &[0].into(), 1, true);
        assert_eq!(huge.len(), MAX_SPLIT as usize);
        assert_eq!(huge.iter().map(|s| s.rows).sum::<u64>(), 10_000);
    }
}
