//! `replayfleet generate`: a synthetic history with switchable edge cases.

use std::collections::BTreeMap;

use replayfleet_archive::Location;
use replayfleet_generate::{EdgeCases, GenerateSpec, GenerateSummary, generate};

use crate::{
    cli::GenerateArgs,
    exit,
    output::{Table, print_json, thousands},
};

pub async fn run(args: GenerateArgs) -> anyhow::Result<u8> {
    let options: BTreeMap<String, String> = args.options.iter().cloned().collect();
    let out = Location::parse(&args.out, None, &options)?;
    let mut spec = GenerateSpec::new(args.events, args.partitions, args.streams, args.seed)
        .with_edge_cases(edge_cases(&args));
    spec.segment_rows = args.segment_rows;
    let summary = generate(&out, &spec).await?;
    if args.json {
        print_json(&summary)?;
    } else {
        print!("{}", render(&summary, out.url().as_str()));
    }
    Ok(exit::SUCCESS)
}

/// `--all-edge-cases` sets the defaults; each switch turns one on (at its default rate,
/// or the rate given) and wins over `--all-edge-cases`.
fn edge_cases(args: &GenerateArgs) -> EdgeCases {
    let mut edge = if args.all_edge_cases {
        EdgeCases::all()
    } else {
        EdgeCases::none()
    };
    let pick = |flag: Option<Option<f64>>, current: f64, default: f64| match flag {
        None => current,
        Some(None) => default,
        Some(Some(rate)) => rate,
    };
    edge.duplicates = pick(
        args.duplicates,
        edge.duplicates,
        EdgeCases::DEFAULT_DUPLICATES,
    );
    edge.conflicting_duplicates = pick(
        args.conflicting_duplicates,
        edge.conflicting_duplicates,
        EdgeCases::DEFAULT_CONFLICTING_DUPLICATES,
    );
    edge.out_of_order = pick(
        args.out_of_order,
        edge.out_of_order,
        EdgeCases::DEFAULT_OUT_OF_ORDER,
    );
    edge.nulls = pick(args.nulls, edge.nulls, EdgeCases::DEFAULT_NULLS);
    edge.long_strings = pick(
        args.long_strings,
        edge.long_strings,
        EdgeCases::DEFAULT_LONG_STRINGS,
    );
    edge.unknown_fields = pick(
        args.unknown_fields,
        edge.unknown_fields,
        EdgeCases::DEFAULT_UNKNOWN_FIELDS,
    );
    edge.unknown_types = pick(
        args.unknown_types,
        edge.unknown_types,
        EdgeCases::DEFAULT_UNKNOWN_TYPES,
    );
    edge.invalid_payloads = pick(
        args.invalid_payloads,
        edge.invalid_payloads,
        EdgeCases::DEFAULT_INVALID_PAYLOADS,
    );
    edge.future_versions = pick(
        args.future_versions,
        edge.future_versions,
        EdgeCases::DEFAULT_FUTURE_VERSIONS,
    );
    edge
}

fn render(s: &GenerateSummary, url: &str) -> String {
    let mut versions = Table::new(&["event type", "version", "rows"]);
    for v in &s.versions {
        versions.row(vec![
            v.event_type.clone(),
            v.schema_version.to_string(),
            thousands(v.rows),
        ]);
    }
    let e = &s.edge_cases;
    let mut edge = Table::new(&["edge case", "rows"]);
    for (name, n) in [
        ("duplicates", e.duplicates),
        ("conflicting duplicates", e.conflicting_duplicates),
        ("out of order", e.out_of_order),
        ("nulls", e.nulls),
        ("long strings", e.long_strings),
        ("unknown fields", e.unknown_fields),
        ("unknown types", e.unknown_types),
        ("invalid payloads", e.invalid_payloads),
        ("future versions", e.future_versions),
    ] {
        edge.row(vec![name.into(), thousands(n)]);
    }
    format!(
        "{}\n{}\nwrote {} rows ({} events) to {url}: {} segments in {} partitions, {} streams, seed {}\n",
        versions.render(),
        edge.render(),
        thousands(s.events_written),
        thousands(s.events),
        thousands(s.segments),
        s.partitions,
        thousands(s.streams),
        s.seed,
    )
}
