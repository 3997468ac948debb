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
    let switches = [
        (
            args.duplicates,
            &mut edge.duplicates,
            EdgeCases::DEFAULT_DUPLICATES,
        ),
        (
            args.conflicting_duplicates,
            &mut edge.conflicting_duplicates,
            EdgeCases::DEFAULT_CONFLICTING_DUPLICATES,
        ),
        (
            args.out_of_order,
            &mut edge.out_of_order,
            EdgeCases::DEFAULT_OUT_OF_ORDER,
        ),
        (args.nulls, &mut edge.nulls, EdgeCases::DEFAULT_NULLS),
        (
            args.long_strings,
            &mut edge.long_strings,
            EdgeCases::DEFAULT_LONG_STRINGS,
        ),
        (
            args.unknown_fields,
            &mut edge.unknown_fields,
            EdgeCases::DEFAULT_UNKNOWN_FIELDS,
        ),
        (
            args.unknown_types,
            &mut edge.unknown_types,
            EdgeCases::DEFAULT_UNKNOWN_TYPES,
        ),
        (
            args.invalid_payloads,
            &mut edge.invalid_payloads,
            EdgeCases::DEFAULT_INVALID_PAYLOADS,
        ),
        (
            args.future_versions,
            &mut edge.future_versions,
            EdgeCases::DEFAULT_FUTURE_VERSIONS,
        ),
    ];
    for (flag, rate, default) in switches {
        match flag {
            None => {}
            Some(None) => *rate = default,
            Some(Some(given)) => *rate = given,
        }
    }
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
