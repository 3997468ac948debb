//! `replayfleet run`: the embedded run — plan, replay, verify, commit in one process.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use replayfleet_config::Config;
use replayfleet_coordinator::{EmbeddedOptions, Progress, RunResult, run_embedded};
use replayfleet_finalizer::{Finalized, Report};

use crate::{
    cli::RunArgs,
    commands::finalize::{accept_hint, render_checks, report_outcome, who},
    exit::{self, Coded},
    output::{Table, print_json, thousands},
};

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let health = crate::serve::serve(args.metrics_addr)?;
    health.ready();
    let config = Config::load(&args.config)?;
    let terminal = std::io::stderr().is_terminal() && !args.json;
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} events \
                 ({per_sec}) · {msg} · ETA {eta}",
            )
            .expect("a valid template"),
        );
        // The first frame says what is happening before the first shard reports.
        bar.set_message("planning: listing segments and reading footers");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let progress = {
        let bar = bar.clone();
        move |p: &Progress| match &bar {
            Some(bar) => {
                bar.set_length(p.events_total);
                bar.set_position(p.events_done);
                bar.set_message(format!(
                    "shards {}/{} · anomalies {}",
                    p.shards_done, p.shards_total, p.anomalies
                ));
            }
            None if !args.json => eprintln!(
                "shards {}/{}, events {}/{}, anomalies {}",
                p.shards_done,
                p.shards_total,
                thousands(p.events_done),
                thousands(p.events_total),
                p.anomalies
            ),
            None => {}
        }
    };
    let options = EmbeddedOptions {
        workers: args.workers.max(1),
        by: who(),
    };
    let result = tokio::select! {
        result = run_embedded(&config, &options, &progress) => result,
        _ = tokio::signal::ctrl_c() => {
            if let Some(bar) = &bar { bar.abandon(); }
            return Err(anyhow::Error::new(Coded {
                code: exit::REFUSED,
                message: "interrupted: the run stopped before its commit; nothing was committed".into(),
            }));
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let result = result?;
    if args.json {
        let (outcome, version, report): (&str, Option<u64>, Option<&Report>) = match &result
            .finalized
        {
            Finalized::Committed { commit, report } => {
                ("committed", Some(commit.version), Some(report))
            }
            Finalized::AlreadyCommitted { version } => ("already_committed", Some(*version), None),
            Finalized::Verified { report } => ("verified", None, Some(report)),
            Finalized::Refused { report } => ("refused", None, Some(report)),
        };
        print_json(&serde_json::json!({
            "run_id": result.plan.run_id,
            "outcome": outcome,
            "version": version,
            "elapsed_seconds": result.elapsed.as_secs_f64(),
            "resumed": result.resumed,
            "shards_reused": result.shards_reused,
            "events_per_second": rate(&result, report),
            "report": report,
        }))?;
        return Ok(match &result.finalized {
            Finalized::Refused { report } => {
                eprintln!(
                    "refused: {}; nothing committed",
                    replayfleet_finalizer::summary(report)
                );
                if let Some(hint) = accept_hint(report, &result.plan.target) {
                    eprintln!("{hint}");
                }
                exit::REFUSED
            }
            _ => exit::SUCCESS,
        });
    }
    match &result.finalized {
        Finalized::Committed { report, .. } | Finalized::Verified { report } => {
            print!("{}", summary(&result, report, args.workers));
            report_outcome(&result.finalized, false, &result.plan.target)
        }
        Finalized::Refused { report } => {
            print!("{}", summary(&result, report, args.workers));
            report_outcome(&result.finalized, false, &result.plan.target)
        }
        Finalized::AlreadyCommitted { .. } => {
            report_outcome(&result.finalized, false, &result.plan.target)
        }
    }
}

fn rate(result: &RunResult, report: Option<&Report>) -> f64 {
    let events = report.map_or(0, |r| r.totals.events_read);
    events as f64 / result.elapsed.as_secs_f64().max(1e-9)
}

fn summary(result: &RunResult, report: &Report, workers: usize) -> String {
    let t = &report.totals;
    let mut table = Table::new(&["", ""]);
    table.row(vec!["run".into(), result.plan.run_id.clone()]);
    table.row(vec!["events read".into(), thousands(t.events_read)]);
    table.row(vec![
        "duplicates dropped".into(),
        thousands(t.duplicates_dropped),
    ]);
    table.row(vec![
        "events projected".into(),
        thousands(t.events_projected),
    ]);
    for (kind, n) in &t.anomalies {
        table.row(vec![format!("anomalies: {kind}"), thousands(*n)]);
    }
    table.row(vec!["quarantined".into(), thousands(t.quarantined)]);
    table.row(vec![
        "shards".into(),
        if result.shards_reused > 0 {
            format!(
                "{} ({} kept from an earlier, unfinished attempt at this run)",
                t.shards, result.shards_reused
            )
        } else {
            t.shards.to_string()
        },
    ]);
    let shards = result.plan.shards.len();
    if workers > shards {
        table.row(vec![
            "workers".into(),
            format!(
                "{workers} ({} idle: the plan has {shards} shard{}; each shard uses every \
                 thread, and a smaller shards.target_events makes more shards)",
                workers - shards,
                if shards == 1 { "" } else { "s" }
            ),
        ]);
    }
    table.row(vec!["projection rows".into(), thousands(t.rows)]);
    table.row(vec![
        "version committed".into(),
        report
            .version
            .map_or_else(|| "none".into(), |v| v.to_string()),
    ]);
    table.row(vec![
        "time".into(),
        format!("{:.2}s", result.elapsed.as_secs_f64()),
    ]);
    table.row(vec![
        "events/s".into(),
        thousands(rate(result, Some(report)) as u64),
    ]);
    let _ = render_checks;
    table.render()
}
