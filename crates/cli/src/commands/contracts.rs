//! `replayfleet contracts check|test`.

use replayfleet_contracts::{Catalog, check as check_examples, test_matrix};
use serde_json::json;

use crate::{
    cli::ContractsArgs,
    exit::{self, Coded},
    output::{Table, print_json},
};

/// Loads the catalog (which runs every static check) and summarises it.
pub fn check(args: ContractsArgs) -> anyhow::Result<u8> {
    let catalog = Catalog::load(&args.dir)?;
    let findings = check_examples(&catalog);
    if !findings.is_empty() {
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        return Err(Coded::input(format!(
            "catalog `{}`: {} example(s) do not upcast to what they expect:\n  {}",
            args.dir.display(),
            findings.len(),
            lines.join("\n  ")
        )));
    }
    if args.json {
        let types: Vec<_> = catalog
            .event_types()
            .map(|c| {
                json!({
                    "event_type": c.event_type(),
                    "file": c.file(),
                    "versions": c.versions().iter().map(|v| v.version()).collect::<Vec<_>>(),
                    "target_version": c.target().version(),
                })
            })
            .collect();
        let columns: Vec<_> = catalog
            .typed_columns()
            .iter()
            .map(|c| json!({"name": c.name, "type": c.data_type.to_string(), "event_types": c.event_types}))
            .collect();
        print_json(&json!({
            "dir": args.dir,
            "ok": true,
            "sha256": catalog.sha256(),
            "event_types": types,
            "typed_columns": columns,
        }))?;
        return Ok(exit::SUCCESS);
    }
    let mut table = Table::new(&["event type", "file", "versions", "target"]);
    for c in catalog.event_types() {
        let versions: Vec<String> = c
            .versions()
            .iter()
            .map(|v| v.version().to_string())
            .collect();
        table.row(vec![
            c.event_type().to_owned(),
            c.file().to_owned(),
            versions.join(", "),
            c.target().version().to_string(),
        ]);
    }
    print!("{}", table.render());
    let mut columns = Table::new(&["typed column", "type", "from event types"]);
    for c in catalog.typed_columns() {
        columns.row(vec![
            c.name.clone(),
            c.data_type.to_string(),
            c.event_types.join(", "),
        ]);
    }
    println!();
    print!("{}", columns.render());
    println!(
        "\ncatalog {} is valid: {} event types, sha256 {}",
        args.dir.display(),
        catalog.event_types().count(),
        catalog.sha256()
    );
    Ok(exit::SUCCESS)
}

/// Runs the schema-upgrade matrix; any failing case fails the command (exit 2).
pub fn test(args: ContractsArgs) -> anyhow::Result<u8> {
    let catalog = Catalog::load(&args.dir)?;
    let rows = test_matrix(&catalog);
    let failed: usize = rows.iter().map(|r| r.cases - r.passed).sum();
    let total: usize = rows.iter().map(|r| r.cases).sum();
    if args.json {
        print_json(&json!({
            "dir": args.dir,
            "cases": total,
            "failed": failed,
            "rows": rows.iter().map(|r| json!({
                "event_type": r.event_type,
                "from_version": r.from_version,
                "cases": r.cases,
                "passed": r.passed,
                "failures": r.failures,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut table = Table::new(&["event type", "from", "cases", "passed", "result"]);
        for r in &rows {
            table.row(vec![
                r.event_type.clone(),
                format!("v{}", r.from_version),
                r.cases.to_string(),
                r.passed.to_string(),
                if r.passed == r.cases {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
            ]);
        }
        print!("{}", table.render());
        for r in rows.iter().filter(|r| !r.failures.is_empty()) {
            for f in &r.failures {
                println!("{} v{}: {f}", r.event_type, r.from_version);
            }
        }
        println!("\n{} of {total} cases passed", total - failed);
    }
    if failed > 0 {
        return Err(Coded::input(format!(
            "{failed} of {total} schema-upgrade cases failed in catalog `{}`",
            args.dir.display()
        )));
    }
    Ok(exit::SUCCESS)
}
