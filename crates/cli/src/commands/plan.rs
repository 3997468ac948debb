//! `replayfleet plan`: the dry run.

use replayfleet_config::Config;
use replayfleet_coordinator::{Planned, new_run_id, plan_run};

use crate::{
    cli::PlanArgs,
    exit,
    output::{Table, human_bytes, print_json, thousands},
};

pub async fn run(args: PlanArgs) -> anyhow::Result<u8> {
    let config = Config::load(&args.config)?;
    let planned = plan_run(&config, &new_run_id(&config.name), None).await?;
    if let Some(out) = &args.out {
        let bytes = replayfleet_replay::to_json_bytes(&planned.plan);
        std::fs::write(out, &bytes)
            .map_err(|e| anyhow::anyhow!("writing the plan to {}: {e}", out.display()))?;
    }
    if args.json {
        print_json(&serde_json::json!({
            "plan": planned.plan,
            "estimate": planned.estimate,
            "sample": planned.inventory.sample,
            "warnings": planned.warnings,
        }))?;
    } else {
        print!("{}", render(&planned));
    }
    for warning in &planned.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(exit::SUCCESS)
}

/// The plan for people: shards, coverage, estimate.
pub fn render(planned: &Planned) -> String {
    let plan = &planned.plan;
    let mut out = String::new();
    let mut shards = Table::new(&[
        "shard",
        "partitions",
        "streams",
        "segments",
        "rows",
        "bytes",
    ]);
    for s in &plan.shards {
        shards.row(vec![
            s.id.clone(),
            ranges(&s.partitions),
            // A sub-shard replays one share of its partition's streams (bucket/of).
            s.split
                .map_or_else(|| "all".to_owned(), |s| format!("bucket {s}")),
            s.segments.len().to_string(),
            thousands(s.rows),
            human_bytes(s.bytes),
        ]);
    }
    out.push_str(&shards.render());
    out.push('\n');
    let mut types = Table::new(&[
        "event type",
        "version",
        "events",
        "status",
        "chain",
        "policy",
    ]);
    for t in &plan.event_types {
        types.row(vec![
            t.event_type.clone().unwrap_or_else(|| "(null)".into()),
            t.schema_version
                .map_or_else(|| "(null)".into(), |v| v.to_string()),
            thousands(t.events),
            t.status.clone(),
            t.chain
                .iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(" → "),
            t.policy
                .map(|p| format!("{p:?}").to_lowercase())
                .unwrap_or_default(),
        ]);
    }
    out.push_str(&types.render());
    out.push('\n');
    if let Some(sample) = &planned.inventory.sample {
        out.push_str(&super::inventory::render_sample(sample));
        out.push('\n');
    }
    let e = &planned.estimate;
    out.push_str(&format!(
        "{} shards, {} events, {} to read; about {}s with one worker{}\n",
        e.shards,
        thousands(e.events),
        human_bytes(e.bytes),
        e.seconds_one_worker,
        if plan.window.is_windowed() {
            "; windowed: the run verifies and reports, never commits"
        } else {
            ""
        }
    ));
    out
}

/// `0-3, 7` for [0, 1, 2, 3, 7].
fn ranges(parts: &[i32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let start = parts[i];
        let mut end = start;
        while i + 1 < parts.len() && parts[i + 1] == end + 1 {
            i += 1;
            end = parts[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}
