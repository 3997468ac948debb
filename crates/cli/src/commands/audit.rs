//! The audit commands: `verify`, `gc` and `explain`.

use replayfleet_audit::{
    Collected, ExplainOptions, Explanation, GcOptions, Verification, VerifyOptions,
    verify as verify_commit,
};
use replayfleet_config::store_options_from_env;

use crate::{
    cli::{ExplainArgs, GcArgs, VerifyArgs},
    commands::{finalize::who, history::target},
    exit,
    output::{Table, human_bytes, print_json, thousands},
};

pub async fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let target = target(&args.target)?;
    let options = VerifyOptions {
        version: args.version,
        sample: args.sample,
        seed: args.seed,
        by: who(),
    };
    let v = verify_commit(&target, &store_options_from_env("source"), &options).await?;
    if args.json {
        print_json(&serde_json::json!({
            "holds": v.holds(),
            "verification": &v,
        }))?;
    } else {
        print!("{}", render(&v));
    }
    for note in &v.notes {
        eprintln!("note: {note}");
    }
    if v.holds() {
        Ok(exit::SUCCESS)
    } else {
        for m in &v.mismatches {
            eprintln!("mismatch: {m}");
        }
        eprintln!(
            "version {} does not hold: {} mismatches",
            v.version,
            v.mismatches.len()
        );
        Ok(exit::REFUSED)
    }
}

fn render(v: &Verification) -> String {
    let failed = |check: &[&str]| {
        v.mismatches
            .iter()
            .filter(|m| check.contains(&m.check.as_str()))
            .count()
    };
    let result = |n: usize| if n == 0 { "ok" } else { "MISMATCH" }.to_owned();
    let mut table = Table::new(&["check", "result", "detail"]);
    let segments = failed(&["segment", "fingerprint"]);
    table.row(vec![
        "segments".into(),
        result(segments),
        format!("{} segments re-hashed, fingerprint recomputed", v.segments),
    ]);
    let lineage = failed(&["plan", "lineage", "anomalies"]);
    table.row(vec![
        "lineage".into(),
        result(lineage),
        format!("{} manifests name the committed segments", v.manifests),
    ]);
    table.row(vec![
        "inputs".into(),
        result(failed(&["input"])),
        format!("{} input segments re-hashed", v.inputs),
    ]);
    table.row(vec![
        "rerun".into(),
        result(failed(&["rerun"])),
        if v.rerun.is_empty() {
            "no shard replayed (--sample 0)".to_owned()
        } else {
            format!(
                "replayed {} (sample {}, seed {})",
                v.rerun.join(", "),
                v.sample,
                v.seed
            )
        },
    ]);
    let mut out = format!("version {} ({}, run {}):\n", v.version, v.kind, v.run_id);
    out.push_str(&table.render());
    if v.holds() {
        out.push_str(&format!("version {} holds\n", v.version));
    }
    out
}

pub async fn gc(args: GcArgs) -> anyhow::Result<u8> {
    let target = target(&args.target)?;
    let options = GcOptions {
        older_than: args.older_than,
        dry_run: args.dry_run,
        now: chrono::Utc::now(),
    };
    let collected = replayfleet_audit::gc(&target, &options).await?;
    if args.json {
        print_json(&collected)?;
    } else {
        print!("{}", render_gc(&collected));
    }
    Ok(exit::SUCCESS)
}

fn render_gc(c: &Collected) -> String {
    let verb = if c.dry_run { "would delete" } else { "deleted" };
    if c.removed.is_empty() {
        return format!(
            "nothing to delete: {} runs referenced by commits, {} newer than {}\n",
            c.referenced_runs.len(),
            c.recent_runs.len(),
            c.cutoff.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let mut table = Table::new(&["folder", "files", "size", "last modified", "why"]);
    for r in &c.removed {
        table.row(vec![
            r.path.clone(),
            r.files.to_string(),
            human_bytes(r.bytes),
            r.last_modified.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.reason.clone(),
        ]);
    }
    let files: u64 = c.removed.iter().map(|r| r.files).sum();
    let bytes: u64 = c.removed.iter().map(|r| r.bytes).sum();
    format!(
        "{}{verb} {} folders, {files} files, {}\n",
        table.render(),
        c.removed.len(),
        human_bytes(bytes)
    )
}

pub async fn explain(args: ExplainArgs) -> anyhow::Result<u8> {
    let target = target(&args.target)?;
    let options = ExplainOptions {
        version: args.version,
        key: args.key.clone(),
    };
    let e =
        replayfleet_audit::explain(&target, &store_options_from_env("source"), &options).await?;
    if args.json {
        print_json(&e)?;
    } else {
        print!("{}", render_explanation(&e, args.events));
    }
    for note in &e.notes {
        eprintln!("note: {note}");
    }
    Ok(exit::SUCCESS)
}

/// One line counting a row's events by what became of them.
fn explanation_summary(e: &Explanation) -> String {
    let (mut projected, mut duplicates) = (0u64, 0u64);
    let mut anomalies: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for ev in &e.events {
        match (&ev.anomaly, ev.status.as_str()) {
            (Some(a), _) => {
                *anomalies
                    .entry((a.kind.clone(), a.policy.clone()))
                    .or_default() += 1
            }
            (None, "duplicate") => duplicates += 1,
            (None, _) => projected += 1,
        }
    }
    let mut line = format!(
        "{} events of its stream read: {} projected (what the projection saw), {} exact \
         duplicates dropped",
        thousands(e.events.len() as u64),
        thousands(projected),
        thousands(duplicates)
    );
    if !anomalies.is_empty() {
        let listed: Vec<String> = anomalies
            .iter()
            .map(|((kind, policy), n)| format!("{kind} {} (policy {policy})", thousands(*n)))
            .collect();
        line.push_str(&format!(", anomalies: {}", listed.join(", ")));
    }
    line
}

fn render_explanation(e: &Explanation, shown: usize) -> String {
    let mut out = format!(
        "version {} (run {}), {} in {}:\n",
        e.version, e.run_id, e.shard, e.segment
    );
    let mut row = Table::new(&["column", "value"]);
    for (column, value) in &e.row {
        row.row(vec![column.clone(), compact(value)]);
    }
    out.push_str(&row.render());
    out.push_str(&format!(
        "\n{}\n(lineage {}; {} row groups read, {} skipped by statistics)\n",
        explanation_summary(e),
        e.lineage,
        e.row_groups_read,
        e.row_groups_skipped
    ));
    let shown = if shown == 0 { e.events.len() } else { shown };
    for ev in e.events.iter().take(shown) {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "\n{} seq {} partition {} · {} version {} · {}\n  segment {} row {}, occurred {}\n",
            or_dash(ev.event_id.clone()),
            or_dash(ev.seq.map(|s| s.to_string())),
            or_dash(ev.partition.map(|p| p.to_string())),
            or_dash(ev.event_type.clone()),
            or_dash(ev.schema_version.map(|v| v.to_string())),
            ev.status,
            ev.segment,
            ev.row,
            or_dash(ev.occurred_at.clone()),
        ));
        if let Some(a) = &ev.anomaly {
            out.push_str(&format!(
                "  anomaly {} (policy {}){}: {}\n",
                a.kind,
                a.policy,
                a.step
                    .as_ref()
                    .map(|s| format!(" at {s}"))
                    .unwrap_or_default(),
                a.message
            ));
        }
        out.push_str(&format!("  before: {}\n", compact(&ev.payload_before)));
        for step in &ev.upcast {
            out.push_str(&format!(
                "  upcast to version {} ({}): {}\n",
                step.version,
                step.steps.join(", "),
                match (&step.payload, &step.error) {
                    (Some(p), _) => compact(p),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "-".into(),
                }
            ));
        }
        if let Some(after) = &ev.payload_after {
            out.push_str(&format!("  after:  {}\n", compact(after)));
        }
    }
    if e.events.len() > shown {
        out.push_str(&format!(
            "\n… and {} more events (--events 0 prints them all; --json has every one)\n",
            thousands((e.events.len() - shown) as u64)
        ));
    }
    out
}

fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
