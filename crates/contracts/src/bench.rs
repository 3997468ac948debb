//! The upcast benchmark behind `replayfleet-bench upcast` (figures in docs/PERFORMANCE.md).
//!
//! One run, one thread, on generated payloads of an old version, in batches of 8192 as the
//! replay engine sends them: the bare `serde_json` parse of the same payloads (the floor),
//! chain (a) `rename` + `default` + `cast`, chain (b) = (a) + one `sql` computed field,
//! chain (c) one `jq` step next to jaq's own cost (parse into jaq's value + run the same
//! program, nothing else), and events already at the target version next to the bare
//! parse of those payloads.

use std::hint::black_box;
use std::time::Instant;

use crate::catalog::{Catalog, CatalogFile};
use crate::jq::{self, JqProgram};

/// Events per `upcast_batch` call.
pub const BENCH_BATCH: usize = 8192;

/// The jq program of chain (c).
const JQ_PROGRAM: &str = r#"{holder: {name: .user, kind: (if (.user | startswith("corp-")) then "company" else "person" end)}, amount_text: .amount, currency: (.currency // "EUR")}"#;

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    /// What was measured, e.g. `(a) rename+default+cast`.
    pub name: String,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Events per second, one thread.
    pub events_per_sec: f64,
    /// The measurement this one is compared with, if any.
    pub baseline: Option<String>,
    /// Time relative to the baseline (2.0 = twice as slow).
    pub ratio: Option<f64>,
    /// The ratio the issue asks for at most.
    pub target_ratio: Option<f64>,
}

impl Measurement {
    /// Whether the ratio is within its target (true when there is no target).
    pub fn meets_target(&self) -> bool {
        match (self.ratio, self.target_ratio) {
            (Some(r), Some(t)) => r <= t,
            _ => true,
        }
    }
}

/// The benchmark's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Events per measurement.
    pub events: usize,
    /// Events per `upcast_batch` call.
    pub batch_size: usize,
    /// Rounds: every measurement ran this many times, interleaved; the best is reported.
    pub rounds: usize,
    /// `release` or `debug`: debug figures say little about production.
    pub profile: &'static str,
    /// Every measurement, floor first.
    pub measurements: Vec<Measurement>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "upcast benchmark: {} events, batches of {}, one thread, best of {} interleaved rounds, {} build",
            self.events, self.batch_size, self.rounds, self.profile
        )?;
        writeln!(
            f,
            "{:<36} {:>12} {:>10} {:>8} {:>7}  vs",
            "measurement", "events/s", "ns/event", "ratio", "target"
        )?;
        for m in &self.measurements {
            let ratio = m.ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"));
            let target = m.target_ratio.map_or("-".to_owned(), |t| {
                format!("{}{t:.1}x", if m.meets_target() { "≤" } else { "✗" })
            });
            writeln!(
                f,
                "{:<36} {:>12.0} {:>10.1} {:>8} {:>7}  {}",
                m.name,
                m.events_per_sec,
                1e9 / m.events_per_sec.max(1e-9),
                ratio,
                target,
                m.baseline.as_deref().unwrap_or("")
            )?;
        }
        Ok(())
    }
}

/// The in-memory catalog of the benchmark: three event types, one per chain.
pub fn bench_catalog() -> Catalog {
    let v1 = r#"
  - version: 1
    schema:
      type: object
      required: [amount, user]
      properties:
        amount: {type: string}
        user: {type: string}
        memo: {type: string}
        n: {type: integer}"#;
    let a = format!(
        r#"event_type: BenchA
versions:{v1}
  - version: 2
    schema:
      type: object
      required: [amount, user_id, currency]
      properties:
        amount: {{type: number}}
        user_id: {{type: string, minLength: 1}}
        currency: {{type: string, minLength: 3, maxLength: 3}}
        memo: {{type: string}}
        n: {{type: integer}}
    upcast:
      - rename: {{user: user_id}}
      - default: {{currency: EUR}}
      - cast: {{amount: number}}
"#
    );
    let b = format!(
        r#"event_type: BenchB
versions:{v1}
  - version: 2
    schema:
      type: object
      required: [amount, user_id, currency, amount_cents]
      properties:
        amount: {{type: number}}
        amount_cents: {{type: integer}}
        user_id: {{type: string, minLength: 1}}
        currency: {{type: string, minLength: 3, maxLength: 3}}
        memo: {{type: string}}
        n: {{type: integer}}
    upcast:
      - rename: {{user: user_id}}
      - default: {{currency: EUR}}
      - cast: {{amount: number}}
      - sql: {{amount_cents: "CAST(round(amount * 100) AS BIGINT)"}}
"#
    );
    let c = format!(
        r#"event_type: BenchC
versions:{v1}
  - version: 2
    schema:
      type: object
      required: [holder, amount_text, currency]
      properties:
        holder:
          type: object
          required: [name, kind]
          properties:
            name: {{type: string}}
            kind: {{type: string, enum: [person, company]}}
        amount_text: {{type: string}}
        currency: {{type: string, minLength: 3, maxLength: 3}}
    upcast:
      - jq: '{JQ_PROGRAM}'
"#
    );
    let files = [("a.yaml", a), ("b.yaml", b), ("c.yaml", c)]
        .into_iter()
        .map(|(path, text)| CatalogFile {
            path: path.to_owned(),
            bytes: text.into_bytes(),
        })
        .collect();
    Catalog::from_files(files).expect("the benchmark catalog is valid")
}

fn old_payloads(events: usize) -> Vec<String> {
    (0..events)
        .map(|i| {
            format!(
                r#"{{"amount":"{}.{:02}","user":"{}-{:06}","memo":"coffee and cake #{}","n":{}}}"#,
                i % 1000,
                i % 100,
                if i % 7 == 0 { "corp" } else { "user" },
                i % 100_000,
                i % 50,
                i
            )
        })
        .collect()
}

fn target_payloads(events: usize) -> Vec<String> {
    (0..events)
        .map(|i| {
            format!(
                r#"{{"amount":{}.{:02},"user_id":"user-{:06}","currency":"EUR","memo":"coffee and cake #{}","n":{}}}"#,
                i % 1000,
                i % 100 + 1,
                i % 100_000,
                i % 50,
                i
            )
        })
        .collect()
}

/// Seconds `f` takes.
fn time(f: impl Fn()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64().max(1e-9)
}

/// Runs the benchmark on `events` generated payloads per measurement (1,000,000 is the
/// figure of record), `rounds` times over (the best time of each measurement is kept),
/// and returns the figures. Takes about 30 s per million events and round in a release
/// build.
pub fn bench_upcast(events: usize, rounds: usize) -> BenchReport {
    let events = events.max(1);
    let catalog = bench_catalog();
    let upcaster = catalog.upcaster();
    let old = old_payloads(events);
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    let at_target = target_payloads(events);
    let at_target: Vec<&str> = at_target.iter().map(String::as_str).collect();
    let program = JqProgram::compile(JQ_PROGRAM).expect("the benchmark program compiles");

    // Sanity: every chain upcasts every generated event.
    for (t, v, p) in [
        ("BenchA", 1, &old),
        ("BenchB", 1, &old),
        ("BenchC", 1, &old),
        ("BenchA", 2, &at_target),
    ] {
        let sample = &p[..p.len().min(100)];
        for o in upcaster.upcast_batch(t, v, sample) {
            assert!(
                o.ok().is_some(),
                "benchmark payload of {t} v{v} did not upcast: {o:?}"
            );
        }
    }

    // As the replay consumes them (`upcast_lite`): each upcast payload is lent as it is
    // made, read (its first field, as the replay reads its typed columns) and dropped.
    let run = |t: &str, v: i32, payloads: &[&str]| {
        for chunk in payloads.chunks(BENCH_BATCH) {
            upcaster.upcast_lite(t, v, chunk, |i, outcome| {
                let _ = black_box((
                    i,
                    outcome.map(|obj| obj.iter().next().map(|(k, _)| k.len())),
                ));
            });
        }
    };
    let parse = |payloads: &[&str]| {
        for p in payloads {
            let _ = black_box(serde_json::from_str::<serde_json::Value>(black_box(p)));
        }
    };
    const FLOOR: &str = "(0) serde_json parse (floor)";
    const JAQ: &str = "jaq alone (parse to Val + run)";
    const TARGET_FLOOR: &str = "serde_json parse of target payloads";
    // (name, what it is compared with, target ratio, the work)
    type Work<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Option<&str>, Option<f64>, Work<'_>)> = vec![
        (FLOOR, None, None, Box::new(|| parse(&old))),
        (
            "(a) rename+default+cast",
            Some(FLOOR),
            Some(2.0),
            Box::new(|| run("BenchA", 1, &old)),
        ),
        (
            "(b) (a) + sql computed field",
            Some(FLOOR),
            Some(2.0),
            Box::new(|| run("BenchB", 1, &old)),
        ),
        (
            JAQ,
            Some(FLOOR),
            None,
            Box::new(|| {
                for p in &old {
                    if let Ok(v) = jq::parse_val(black_box(p)) {
                        let _ = black_box(program.run(v));
                    }
                }
            }),
        ),
        (
            "(c) jq step",
            Some(JAQ),
            Some(1.2),
            Box::new(|| run("BenchC", 1, &old)),
        ),
        (TARGET_FLOOR, None, None, Box::new(|| parse(&at_target))),
        (
            "at target (parse + validate)",
            Some(TARGET_FLOOR),
            Some(1.2),
            Box::new(|| run("BenchA", 2, &at_target)),
        ),
    ];
    // Every case once per round, rounds interleaved, the best time of each kept: a
    // measurement and its baseline see the same machine, and a passing load (another
    // build, a frequency change) inflates a round rather than a ratio.
    let mut best = vec![f64::INFINITY; cases.len()];
    for _ in 0..rounds.max(1) {
        for (i, (.., work)) in cases.iter().enumerate() {
            best[i] = best[i].min(time(work));
        }
    }
    let seconds_of = |name: &str| {
        cases
            .iter()
            .position(|c| c.0 == name)
            .map(|i| best[i])
            .expect("baselines are cases")
    };
    let measurements = cases
        .iter()
        .zip(&best)
        .map(|((name, baseline, target, _), &seconds)| Measurement {
            name: (*name).to_owned(),
            seconds,
            events_per_sec: events as f64 / seconds,
            baseline: baseline.map(str::to_owned),
            ratio: baseline.map(|b| seconds / seconds_of(b)),
            target_ratio: *target,
        })
        .collect();
    BenchReport {
        events,
        batch_size: BENCH_BATCH,
        rounds: rounds.max(1),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        measurements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_few_events() {
        let report = bench_upcast(300, 2);
        assert_eq!(report.measurements.len(), 7);
        assert!(report.to_string().contains("(c) jq step"));
    }

    /// `cargo test -p replayfleet-contracts --release -- --ignored --nocapture bench_report`
    #[test]
    #[ignore = "a benchmark: run by hand, preferably in release mode"]
    fn bench_report() {
        let events = std::env::var("BENCH_EVENTS")
            .ok()
            .and_then(|e| e.parse().ok())
            .unwrap_or(1_000_000);
        println!("{}", bench_upcast(events, 3));
    }
}
