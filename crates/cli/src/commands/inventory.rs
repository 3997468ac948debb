//! `replayfleet inventory`: what an archive holds, from Parquet footers.

use std::collections::BTreeMap;

use replayfleet_archive::{
    Inventory, InventoryOptions, Location, Sample, inventory_with, verify_pages,
};
use replayfleet_config::{Config, SourceMapping};

use crate::{
    cli::InventoryArgs,
    exit,
    output::{Table, human_bytes, print_json, thousands},
};

pub async fn run(args: InventoryArgs) -> anyhow::Result<u8> {
    let (url, mapping, mut options) = match &args.config {
        Some(path) => {
            let config = Config::load(path)?;
            let url = args.source.clone().unwrap_or(config.source.url);
            (url, config.source.mapping, config.source.options)
        }
        None => (
            args.source.clone().unwrap_or_default(),
            SourceMapping::canonical(),
            BTreeMap::new(),
        ),
    };
    options.extend(args.options.iter().cloned());
    let location = Location::parse(&url, None, &options)?;
    location.must_exist()?;
    let options = InventoryOptions {
        sample_rows: args.sample,
        ..InventoryOptions::for_location(&location)
    };
    let inv = inventory_with(&location, &mapping, options).await?;
    if args.verify {
        // Whole segments are held while their pages are decoded: as many at once as
        // footers on a local folder, not the many more requests object storage gets.
        let concurrency = InventoryOptions::default().concurrency;
        let done = verify_pages(&location, &inv, &mapping, concurrency).await?;
        eprintln!(
            "verified: every page of {} segments read, {} rows decoded",
            thousands(done.segments),
            thousands(done.rows)
        );
        if done.undecodable > 0 {
            eprintln!(
                "warning: {} values are not UTF-8; a run sets their rows aside as `undecodable` anomalies (policy `checks.anomalies.undecodable`):",
                thousands(done.undecodable)
            );
            for example in &done.undecodable_examples {
                eprintln!("  {example}");
            }
        }
    }
    if args.json {
        print_json(&inv)?;
    } else {
        print!("{}", render(&inv));
    }
    Ok(exit::SUCCESS)
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn render(inv: &Inventory) -> String {
    let mut out = String::new();
    let mut segments = Table::new(&[
        "segment",
        "rows",
        "partitions",
        "seq min",
        "seq max",
        "bytes",
        "etag",
    ]);
    for s in &inv.segments {
        let parts: Vec<String> = s
            .partitions
            .iter()
            .map(|p| p.partition.to_string())
            .collect();
        segments.row(vec![
            s.path.clone(),
            thousands(s.rows),
            parts.join(","),
            opt(s.seq_min),
            opt(s.seq_max),
            thousands(s.bytes),
            s.etag.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&segments.render());

    let mut partitions = Table::new(&["partition", "segments", "rows", "seq min", "seq max"]);
    for p in &inv.partitions {
        partitions.row(vec![
            p.partition.to_string(),
            thousands(p.segments),
            thousands(p.rows),
            opt(p.seq_min),
            opt(p.seq_max),
        ]);
    }
    out.push('\n');
    out.push_str(&partitions.render());

    if let Some(types) = &inv.event_types {
        let mut t = Table::new(&["event type", "version", "events"]);
        for c in types {
            t.row(vec![
                c.event_type.clone().unwrap_or_else(|| "(null)".into()),
                c.schema_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(null)".into()),
                thousands(c.events),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    let t = &inv.totals;
    out.push_str(&format!(
        "\n{}: {} segments, {} events, {} partitions, seq {}..{}, {}\n",
        inv.location,
        thousands(t.segments),
        thousands(t.rows),
        inv.partitions.len(),
        opt(t.seq_min),
        opt(t.seq_max),
        human_bytes(t.bytes),
    ));
    if let Some(sample) = &inv.sample {
        out.push('\n');
        out.push_str(&render_sample(sample));
    }
    if t.null_partition_rows > 0 {
        out.push_str(&format!(
            "warning: {} rows have a null partition\n",
            thousands(t.null_partition_rows)
        ));
    }
    out
}

/// The sample rows as the mapping makes them: one table row per event, long values cut.
pub fn render_sample(sample: &Sample) -> String {
    let columns = replayfleet_config::ENVELOPE_COLUMNS;
    let mut table = Table::new(&columns);
    for row in &sample.rows {
        table.row(
            columns
                .iter()
                .map(|c| match row.get(*c) {
                    None | Some(serde_json::Value::Null) => "(null)".to_owned(),
                    Some(serde_json::Value::String(s)) => cut(s),
                    Some(other) => cut(&other.to_string()),
                })
                .collect(),
        );
    }
    format!(
        "the first {} rows of `{}` as the envelope:\n{}",
        sample.rows.len(),
        sample.segment,
        table.render()
    )
}

fn cut(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}
