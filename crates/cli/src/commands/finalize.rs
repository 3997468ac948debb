//! `replayfleet finalize`: verify and commit a run by hand.

use replayfleet_archive::Location;
use replayfleet_config::store_options_from_env;
use replayfleet_finalizer::{FinalizeOptions, Finalized, Report, finalize};
use replayfleet_replay::{Plan, Target};

use crate::{
    cli::FinalizeArgs,
    exit::{self, Coded},
    output::{Table, print_json, thousands},
};

pub async fn run(args: FinalizeArgs) -> anyhow::Result<u8> {
    let target = Target::new(Location::parse(
        &args.target,
        None,
        &store_options_from_env("target"),
    )?);
    let plan_path = Target::plan_path(&args.run);
    let plan_bytes = target.get(&plan_path).await?.ok_or_else(|| {
        Coded::input(format!(
            "no run `{}` in `{}`: `{plan_path}` does not exist",
            args.run, args.target
        ))
    })?;
    let plan = Plan::from_json(&plan_path, &plan_bytes)?;
    let source = Location::parse(&plan.source.url, None, &store_options_from_env("source"))?;
    let finalized = finalize(
        &target,
        &source,
        &args.run,
        &FinalizeOptions {
            accept: args.accept.clone(),
            by: who(),
        },
        None,
    )
    .await?;
    report_outcome(&finalized, args.json, &args.target)
}

/// Prints how a finalize ended and returns its exit code.
pub fn report_outcome(finalized: &Finalized, json: bool, target: &str) -> anyhow::Result<u8> {
    match finalized {
        Finalized::AlreadyCommitted { version } => {
            if json {
                print_json(
                    &serde_json::json!({"outcome": "already_committed", "version": version}),
                )?;
            } else {
                println!("already committed as version {version}");
            }
            Ok(exit::SUCCESS)
        }
        Finalized::Committed { commit, report } => {
            if json {
                print_json(
                    &serde_json::json!({"outcome": "committed", "commit": commit, "report": report}),
                )?;
            } else {
                print!("{}", render_checks(report));
                println!(
                    "committed version {} ({} rows in {} segments, fingerprint {}){}",
                    commit.version,
                    thousands(commit.totals.rows),
                    commit.totals.segments,
                    &commit.fingerprint[..16],
                    commit
                        .accepted
                        .as_ref()
                        .map(|a| format!("; accepted by {}: {}", a.by, a.reason))
                        .unwrap_or_default()
                );
            }
            Ok(exit::SUCCESS)
        }
        Finalized::Verified { report } => {
            if json {
                print_json(&serde_json::json!({"outcome": "verified", "report": report}))?;
            } else {
                print!("{}", render_checks(report));
                println!(
                    "window run: verified and reported in runs/{}/report.json; nothing committed",
                    report.run_id
                );
            }
            Ok(exit::SUCCESS)
        }
        Finalized::Refused { report } => {
            if json {
                print_json(&serde_json::json!({"outcome": "refused", "report": report}))?;
            } else {
                print!("{}", render_checks(report));
            }
            eprintln!(
                "refused: {}; nothing committed (report: runs/{}/report.json)",
                replayfleet_finalizer::summary(report),
                report.run_id
            );
            if let Some(hint) = accept_hint(report, target) {
                eprintln!("{hint}");
            }
            Ok(exit::REFUSED)
        }
    }
}

/// When only discrepancy checks failed (integrity failures are never accepted): the
/// command that commits the run anyway, once someone has read the report and says why.
pub fn accept_hint(report: &Report, target: &str) -> Option<String> {
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    if failed.is_empty() || failed.iter().any(|c| c.class != "discrepancy") {
        return None;
    }
    Some(format!(
        "to commit it anyway, after reading the report: replayfleet finalize --target {target} \
         --run {} --accept \"<why these differences are expected>\"",
        report.run_id
    ))
}

/// The checks of a report, with a few samples of each failure.
pub fn render_checks(report: &Report) -> String {
    let mut table = Table::new(&["check", "class", "result", "detail"]);
    for c in &report.checks {
        table.row(vec![
            c.name.clone(),
            c.class.clone(),
            if c.passed { "ok" } else { "FAILED" }.into(),
            c.detail.clone(),
        ]);
    }
    let mut out = table.render();
    for c in report
        .checks
        .iter()
        .filter(|c| !c.passed && !c.samples.is_empty())
    {
        out.push_str(&format!("{} samples:\n", c.name));
        for s in c.samples.iter().take(5) {
            out.push_str(&format!("  {s}\n"));
        }
    }
    out
}

/// Who commits, from `--by` / `REPLAYFLEET_BY` (set once by `main`).
pub static BY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Who commits: `--by` / `REPLAYFLEET_BY`, else `$USER@host`.
pub fn who() -> String {
    if let Some(by) = BY.get().filter(|b| !b.trim().is_empty()) {
        return by.trim().to_owned();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", replayfleet_coordinator::hostname())
}
