//! `replayfleet history` and `rollback`: the versions of a projection.

use replayfleet_archive::Location;
use replayfleet_config::store_options_from_env;
use replayfleet_finalizer::{Commit, history as commits, rollback as roll_back};
use replayfleet_replay::Target;

use crate::{
    cli::{HistoryArgs, RollbackArgs},
    commands::finalize::who,
    exit,
    output::{Table, print_json, thousands},
};

fn target(url: &str) -> anyhow::Result<Target> {
    Ok(Target::new(Location::parse(
        url,
        None,
        &store_options_from_env("target"),
    )?))
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
            c.committed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            c.committed_by.clone(),
            thousands(c.totals.rows),
            c.totals.segments.to_string(),
            c.fingerprint.chars().take(16).collect(),
            match (&c.rollback_of, &c.accepted) {
                (Some(v), _) => format!("rollback to version {v}"),
                (None, Some(a)) => format!("accepted: {}", a.reason),
                _ => String::new(),
            },
        ]);
    }
    table.render()
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<u8> {
    let commit = roll_back(&target(&args.target)?, args.to, &who()).await?;
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
