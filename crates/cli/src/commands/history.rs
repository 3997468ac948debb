//! `replayfleet history`, `rollback` and `migrate`: the versions of a projection.

use replayfleet_archive::Location;
use replayfleet_config::store_options_from_env;
use replayfleet_finalizer::{
    Commit, commit_of, current, history as commits, migrate as convert, rollback as roll_back,
};
use replayfleet_replay::Target;

use crate::{
    cli::{HistoryArgs, MigrateArgs, RollbackArgs, ShowArgs},
    commands::finalize::who,
    exit,
    output::{Table, print_json, thousands},
};

/// The target at `url`, which must exist (a local folder that does not is exit 2).
pub(crate) fn target(url: &str) -> anyhow::Result<Target> {
    let location = Location::parse(url, None, &store_options_from_env("target"))?;
    location.must_exist()?;
    Ok(Target::new(location))
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<u8> {
    let list = commits(&target(&args.target)?).await?;
    if args.json {
        print_json(&list)?;
        return Ok(exit::SUCCESS);
    }
    if list.is_empty() {
        println!("no version committed in {}", args.target);
        return Ok(exit::SUCCESS);
    }
    print!("{}", render(&list));
    Ok(exit::SUCCESS)
}

fn render(list: &[Commit]) -> String {
    let mut table = Table::new(&[
        "version",
        "parent",
        "kind",
        "run",
        "committed at",
        "by",
        "rows",
        "segments",
        "fingerprint",
        "note",
    ]);
    for c in list {
        table.row(vec![
            c.version.to_string(),
            c.parent.map_or_else(|| "-".into(), |p| p.to_string()),
            c.kind.clone(),
            c.run_id.clone(),
            c.committed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            c.committed_by.clone(),
            thousands(c.totals.rows),
            c.totals.segments.to_string(),
            c.fingerprint.chars().take(16).collect(),
            match (&c.rollback_of, &c.accepted) {
                (Some(v), _) => match &c.rollback_reason {
                    Some(why) => format!("rollback to version {v}: {why}"),
                    None => format!("rollback to version {v}"),
                },
                (None, Some(a)) => format!("accepted: {}", a.reason),
                _ => String::new(),
            },
        ]);
    }
    table.render()
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<u8> {
    let commit = roll_back(&target(&args.target)?, args.to, &who(), &args.reason).await?;
    if args.json {
        print_json(&commit)?;
    } else {
        println!(
            "committed version {}: the segments of version {} ({} rows)",
            commit.version,
            args.to,
            thousands(commit.totals.rows)
        );
    }
    Ok(exit::SUCCESS)
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<u8> {
    let migrated = convert(&target(&args.target)?).await?;
    if args.json {
        print_json(&migrated)?;
    } else if migrated.already {
        println!(
            "{} is a Delta Lake table already: nothing to do",
            args.target
        );
    } else {
        println!(
            "{} is a Delta Lake table: versions 1 to {} of `_commits/` are Delta versions 1 to {} (version 0 creates the table)",
            args.target,
            migrated.versions.len(),
            migrated.versions.len()
        );
    }
    Ok(exit::SUCCESS)
}

pub async fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let target = target(&args.target)?;
    let commit = match args.version {
        Some(v) => commit_of(&target, v).await?,
        None => current(&target).await?.ok_or_else(|| {
            crate::exit::Coded::input(format!("no version committed in {}", args.target))
        })?,
    };
    let mut batches = Vec::new();
    let mut left = args.limit;
    // Segments are in shard then key order; the first rows of each shard's first segment
    // are what a reader sees first.
    for segment in &commit.segments {
        if left == 0 {
            break;
        }
        let bytes = target.get(&segment.path).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "version {} names {}, which is gone",
                commit.version,
                segment.path
            )
        })?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .with_batch_size(left.max(1))
            .build()?;
        for batch in reader {
            let batch = batch?;
            let take = batch.num_rows().min(left);
            batches.push(batch.slice(0, take));
            left -= take;
            if left == 0 {
                break;
            }
        }
    }
    if args.json {
        let mut rows = Vec::new();
        for b in &batches {
            for row in 0..b.num_rows() {
                let obj: serde_json::Map<String, serde_json::Value> = b
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        (
                            f.name().clone(),
                            replayfleet_replay::json_value(b.column(i), row),
                        )
                    })
                    .collect();
                rows.push(serde_json::Value::Object(obj));
            }
        }
        print_json(&rows)?;
    } else {
        println!(
            "version {} of {} ({} rows in all):",
            commit.version,
            commit.projection,
            thousands(commit.totals.rows)
        );
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    Ok(exit::SUCCESS)
}
