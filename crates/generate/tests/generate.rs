//! Generates archives into temporary folders and checks them by reading the files back
//! with plain Parquet readers, the way the replay's tests will.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use arrow::{
    array::{Array, AsArray},
    datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType},
};
use parquet::{
    arrow::arrow_reader::ParquetRecordBatchReaderBuilder, file::reader::FileReader,
    file::serialized_reader::SerializedFileReader,
};
use replayfleet_archive::Location;
use replayfleet_generate::{
    EdgeCases, Error, GenerateSpec, GenerateSummary, LONG_STRING_CHARS, generate,
};
use serde_json::Value;

#[derive(Debug, Clone)]
struct Row {
    file: String,
    segment: usize,
    partition: i32,
    event_id: String,
    stream_id: String,
    seq: i64,
    event_type: String,
    version: i32,
    occurred_at: i64,
    payload: Value,
    metadata: Option<Value>,
}

struct Archive {
    summary: GenerateSummary,
    /// In file order (partition, segment), rows in file order.
    rows: Vec<Row>,
}

fn run(out: &Path, spec: &GenerateSpec) -> Result<GenerateSummary, Error> {
    let location = Location::parse(out.to_str().unwrap(), None, &BTreeMap::new()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(generate(&location, spec))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut partitions: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    partitions.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        name.strip_prefix("partition=")
            .unwrap()
            .parse::<u32>()
            .unwrap()
    });
    for partition in partitions {
        let mut parts: Vec<_> = fs::read_dir(&partition)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        parts.sort();
        files.extend(parts);
    }
    files
}

fn read(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for path in segment_files(dir) {
        let file = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
        let segment: usize = file
            .rsplit_once("part-")
            .unwrap()
            .1
            .trim_end_matches(".parquet")
            .parse()
            .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let s = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .clone()
            };
            let (event_id, stream_id, event_type, payload, metadata) = (
                s("event_id"),
                s("stream_id"),
                s("event_type"),
                s("payload"),
                s("metadata"),
            );
            let partition = batch
                .column_by_name("partition")
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone();
            let seq = batch
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let version = batch
                .column_by_name("schema_version")
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone();
            let occurred = batch.column_by_name("occurred_at").unwrap();
            assert_eq!(
                occurred.data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
            let occurred = occurred.as_primitive::<TimestampMicrosecondType>().clone();
            for i in 0..batch.num_rows() {
                rows.push(Row {
                    file: file.clone(),
                    segment,
                    partition: partition.value(i),
                    event_id: event_id.value(i).to_owned(),
                    stream_id: stream_id.value(i).to_owned(),
                    seq: seq.value(i),
                    event_type: event_type.value(i).to_owned(),
                    version: version.value(i),
                    occurred_at: occurred.value(i),
                    payload: serde_json::from_str(payload.value(i)).unwrap(),
                    metadata: (!metadata.is_null(i))
                        .then(|| serde_json::from_str(metadata.value(i)).unwrap()),
                });
            }
        }
    }
    rows
}

fn rich_spec() -> GenerateSpec {
    GenerateSpec::new(20_000, 4, 600, 2024).with_edge_cases(EdgeCases {
        duplicates: 0.03,
        conflicting_duplicates: 0.01,
        out_of_order: 0.01,
        nulls: 0.01,
        long_strings: 0.001,
        unknown_fields: 0.01,
        unknown_types: 0.01,
        invalid_payloads: 0.01,
        future_versions: 0.005,
    })
}

/// One archive with every edge case switched on, read once for all tests.
fn rich() -> &'static Archive {
    static ARCHIVE: OnceLock<Archive> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let summary = run(dir.path(), &rich_spec()).unwrap();
        Archive {
            summary,
            rows: read(dir.path()),
        }
    })
}

/// The originals: the copy of each event id with the lowest (partition, seq).
fn originals(rows: &[Row]) -> Vec<&Row> {
    let mut first: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in rows {
        let kept = first.entry(&row.event_id).or_insert(row);
        if (row.partition, row.seq) < (kept.partition, kept.seq) {
            *kept = row;
        }
    }
    let mut out: Vec<_> = first.into_values().collect();
    out.sort_by_key(|r| r.seq);
    out
}

struct Catalog(BTreeMap<(String, i32), jsonschema::Validator>);

impl Catalog {
    fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/accounts/contracts");
        let mut validators = BTreeMap::new();
        for entry in fs::read_dir(dir).unwrap() {
            let text = fs::read_to_string(entry.unwrap().path()).unwrap();
            let doc: Value = serde_saphyr::from_str(&text).unwrap();
            let event_type = doc["event_type"].as_str().unwrap().to_owned();
            for version in doc["versions"].as_array().unwrap() {
                let number = version["version"].as_i64().unwrap() as i32;
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&version["schema"])
                    .unwrap();
                validators.insert((event_type.clone(), number), validator);
            }
        }
        assert_eq!(validators.len(), 8, "four types, eight versions");
        Self(validators)
    }
}

fn cents_of(row: &Row) -> i64 {
    let p = &row.payload;
    match row.version {
        1 if row.event_type == "Deposited" => {
            (p["amount"].as_f64().unwrap() * 100.0).round() as i64
        }
        1 => (p["amt"].as_str().unwrap().parse::<f64>().unwrap() * 100.0).round() as i64,
        _ => p["amount_cents"].as_i64().unwrap(),
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes() {
    let spec = rich_spec();
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = run(a.path(), &spec).unwrap();
    let second = run(b.path(), &spec).unwrap();
    let other = run(
        c.path(),
        &GenerateSpec {
            seed: spec.seed + 1,
            ..spec.clone()
        },
    )
    .unwrap();
    assert_eq!(first, second);
    assert_ne!(first, other);
    let files_a = segment_files(a.path());
    assert_eq!(files_a.len(), first.files.len());
    for file in &first.files {
        let bytes_a = fs::read(a.path().join(file)).unwrap();
        let bytes_b = fs::read(b.path().join(file)).unwrap();
        assert!(
            bytes_a == bytes_b,
            "{file} differs between two runs of one seed"
        );
    }
    let differing = first
        .files
        .iter()
        .filter(|f| fs::read(a.path().join(f)).ok() != fs::read(c.path().join(f)).ok())
        .count();
    assert_eq!(
        differing,
        first.files.len(),
        "another seed gives other files"
    );
}

#[test]
fn rows_are_the_events_plus_the_resends() {
    let Archive { summary, rows } = rich();
    let edge = summary.edge_cases;
    assert_eq!(summary.events, 20_000);
    assert_eq!(
        summary.events_written,
        summary.events + edge.duplicates + edge.conflicting_duplicates
    );
    assert_eq!(rows.len() as u64, summary.events_written);
    assert_eq!(originals(rows).len() as u64, summary.events);
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=summary.events_written as i64).collect(),
        "seq is 1..=rows, once each"
    );
    for (name, n) in [
        ("duplicates", edge.duplicates),
        ("conflicting_duplicates", edge.conflicting_duplicates),
        ("out_of_order", edge.out_of_order),
        ("nulls", edge.nulls),
        ("long_strings", edge.long_strings),
        ("unknown_fields", edge.unknown_fields),
        ("unknown_types", edge.unknown_types),
        ("invalid_payloads", edge.invalid_payloads),
        ("future_versions", edge.future_versions),
    ] {
        assert!(n > 0, "{name} never happened");
    }

    let mut counted: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for row in rows.iter() {
        *counted
            .entry((row.event_type.clone(), row.version))
            .or_default() += 1;
    }
    let reported: BTreeMap<(String, i32), u64> = summary
        .versions
        .iter()
        .map(|v| ((v.event_type.clone(), v.schema_version), v.rows))
        .collect();
    assert_eq!(counted, reported);
    for (event_type, version) in [
        ("AccountOpened", 1),
        ("AccountOpened", 2),
        ("AccountOpened", 3),
        ("Deposited", 1),
        ("Deposited", 2),
        ("Withdrawn", 1),
        ("Withdrawn", 2),
        ("AccountClosed", 1),
    ] {
        assert!(
            reported.contains_key(&(event_type.to_owned(), version)),
            "{event_type} v{version} missing"
        );
    }
    let files: Vec<&str> = summary.files.iter().map(String::as_str).collect();
    let read_files: BTreeSet<&str> = rows.iter().map(|r| r.file.as_str()).collect();
    assert_eq!(files.iter().copied().collect::<BTreeSet<_>>(), read_files);
    assert_eq!(summary.segments as usize, files.len());
}

#[test]
fn streams_stay_in_one_partition_and_partitions_have_three_segments() {
    let Archive { summary, rows } = rich();
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    for row in rows {
        assert!(
            row.file
                .starts_with(&format!("partition={}/", row.partition))
        );
        let p = partition_of.entry(&row.stream_id).or_insert(row.partition);
        assert_eq!(*p, row.partition, "{} spans partitions", row.stream_id);
        assert!(row.stream_id.starts_with("acc-") && row.stream_id.len() == 10);
    }
    assert_eq!(partition_of.len() as u64, summary.streams);
    assert_eq!(summary.streams, 600);
    assert_eq!(summary.partitions, 4);
    let mut segments: BTreeMap<i32, BTreeSet<usize>> = BTreeMap::new();
    for row in rows {
        segments
            .entry(row.partition)
            .or_default()
            .insert(row.segment);
    }
    for (p, s) in segments {
        assert_eq!(s, BTreeSet::from([0, 1, 2]), "partition {p}");
    }
}

#[test]
fn seq_and_time_increase_within_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenerateSpec {
        segment_rows: Some(700),
        ..GenerateSpec::new(5_000, 3, 200, 11).with_edge_cases(EdgeCases {
            out_of_order: 0.0,
            ..EdgeCases::all()
        })
    };
    let summary = run(dir.path(), &spec).unwrap();
    let rows = read(dir.path());
    assert_eq!(summary.edge_cases.out_of_order, 0);
    for pair in rows.windows(2) {
        if pair[0].partition == pair[1].partition {
            assert!(
                pair[0].seq < pair[1].seq,
                "{} then {}",
                pair[0].seq,
                pair[1].seq
            );
        }
    }
    let mut per_file: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        *per_file.entry(&row.file).or_default() += 1;
    }
    assert!(per_file.values().all(|&n| n <= 700));
    // Originals occur in seq order; a resend carries its original's occurred_at.
    let originals = originals(&rows);
    assert!(
        originals
            .windows(2)
            .all(|w| w[0].occurred_at < w[1].occurred_at)
    );
    let start = replayfleet_generate::default_start_time().timestamp_micros();
    assert!(originals[0].occurred_at >= start);
}

#[test]
fn out_of_order_rows_stay_inside_their_segment() {
    let Archive { summary, rows } = rich();
    assert!(summary.edge_cases.out_of_order > 0);
    let mut by_file: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for row in rows {
        by_file.entry(&row.file).or_default().push(row.seq);
    }
    let unsorted = by_file
        .values()
        .filter(|seqs| seqs.windows(2).any(|w| w[0] > w[1]))
        .count();
    assert!(unsorted > 0, "some segment has rows out of order");
    // Segments of a partition still cover disjoint, increasing seq ranges.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (file, seqs) in &by_file {
        let partition = file.split('/').next().unwrap();
        let (min, max) = (seqs.iter().min().unwrap(), seqs.iter().max().unwrap());
        if let Some(previous) = last.insert(partition, *max) {
            assert!(previous < *min, "{file} overlaps the segment before it");
        }
    }
}

#[test]
fn payloads_validate_except_the_anomalies() {
    let Archive { summary, rows } = rich();
    let catalog = Catalog::load();
    let known_types: BTreeSet<&str> = catalog.0.keys().map(|(t, _)| t.as_str()).collect();
    let (mut invalid, mut unknown_types, mut future) = (0, 0, 0);
    for row in originals(rows) {
        if !known_types.contains(row.event_type.as_str()) {
            unknown_types += 1;
            continue;
        }
        let Some(validator) = catalog.0.get(&(row.event_type.clone(), row.version)) else {
            future += 1;
            continue;
        };
        if !validator.is_valid(&row.payload) {
            invalid += 1;
        }
    }
    let edge = summary.edge_cases;
    assert_eq!(invalid, edge.invalid_payloads);
    assert_eq!(unknown_types, edge.unknown_types);
    assert_eq!(future, edge.future_versions);
    // Every copy of a valid original is valid too (conflicting copies only change the memo).
    for row in rows {
        if let Some(validator) = catalog.0.get(&(row.event_type.clone(), row.version)) {
            let is_resend = row.metadata.as_ref().is_some_and(|m| m["resent"] == true);
            if is_resend && row.payload["memo"] == "amended" {
                let mut original = row.payload.clone();
                original.as_object_mut().unwrap().remove("memo");
                if validator.is_valid(&original) {
                    assert!(validator.is_valid(&row.payload));
                }
            }
        }
    }
}

#[test]
fn resends_copy_their_original_later_in_the_same_partition() {
    let Archive { summary, rows } = rich();
    let mut by_id: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        by_id.entry(&row.event_id).or_default().push(row);
    }
    let (mut exact, mut conflicting, mut same_segment, mut later_segment) = (0, 0, 0, 0);
    for copies in by_id.values_mut() {
        if copies.len() == 1 {
            continue;
        }
        assert_eq!(copies.len(), 2, "one resend at most");
        copies.sort_by_key(|r| r.seq);
        let (original, resend) = (copies[0], copies[1]);
        assert_eq!(original.partition, resend.partition);
        assert_eq!(original.stream_id, resend.stream_id);
        assert_eq!(original.event_type, resend.event_type);
        assert_eq!(original.version, resend.version);
        assert_eq!(original.occurred_at, resend.occurred_at);
        assert_eq!(resend.metadata.as_ref().unwrap()["resent"], true);
        if original.payload == resend.payload {
            exact += 1;
        } else {
            assert_eq!(resend.payload["memo"], "amended");
            conflicting += 1;
        }
        if original.segment == resend.segment {
            same_segment += 1;
        } else {
            assert!(original.segment < resend.segment);
            later_segment += 1;
        }
    }
    assert_eq!(exact, summary.edge_cases.duplicates);
    assert_eq!(conflicting, summary.edge_cases.conflicting_duplicates);
    assert!(
        same_segment > 0 && later_segment > 0,
        "{same_segment} / {later_segment}"
    );
}

#[test]
fn balances_never_go_negative_and_streams_live_a_whole_life() {
    let Archive { summary, rows } = rich();
    let catalog = Catalog::load();
    let mut streams: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in originals(rows) {
        let valid = catalog
            .0
            .get(&(row.event_type.clone(), row.version))
            .is_some_and(|v| v.is_valid(&row.payload));
        if valid {
            streams.entry(&row.stream_id).or_default().push(row);
        }
    }
    let mut closed = 0;
    let mut withdrawals_to_zero = 0;
    for (stream, events) in &streams {
        assert_eq!(events[0].event_type, "AccountOpened", "{stream}");
        let mut balance = 0_i64;
        for (i, event) in events.iter().enumerate() {
            match event.event_type.as_str() {
                "Deposited" => balance += cents_of(event),
                "Withdrawn" => {
                    balance -= cents_of(event);
                    withdrawals_to_zero += usize::from(balance == 0);
                }
                "AccountClosed" => {
                    assert_eq!(i, events.len() - 1, "{stream} has events after closing");
                    closed += 1;
                }
                "AccountOpened" => assert_eq!(i, 0, "{stream} opened twice"),
                other => panic!("unexpected {other}"),
            }
            assert!(balance >= 0, "{stream} goes negative at seq {}", event.seq);
        }
    }
    assert_eq!(closed, summary.closed_streams);
    assert!(closed > 0 && withdrawals_to_zero > 0);
}

#[test]
fn edge_case_rows_are_as_counted() {
    let Archive { summary, rows } = rich();
    let originals = originals(rows);
    let long = originals
        .iter()
        .filter(|r| {
            r.payload["memo"]
                .as_str()
                .is_some_and(|m| m.len() == LONG_STRING_CHARS)
        })
        .count() as u64;
    assert_eq!(LONG_STRING_CHARS, 100 * 1024);
    assert_eq!(long, summary.edge_cases.long_strings);
    let legacy = originals
        .iter()
        .filter(|r| r.payload.get("x_legacy_field").is_some())
        .count() as u64;
    assert_eq!(legacy, summary.edge_cases.unknown_fields);
    let nulls = originals
        .iter()
        .filter(|r| {
            r.metadata
                .as_ref()
                .is_none_or(|m| m["correlation_id"].is_null())
        })
        .count() as u64;
    assert_eq!(nulls, summary.edge_cases.nulls);
    assert!(originals.iter().any(|r| r.metadata.is_none()));
    for row in originals.iter().filter(|r| r.metadata.is_some()) {
        let producer = row.metadata.as_ref().unwrap()["producer"].as_str().unwrap();
        assert!(producer.starts_with("ledger-svc@"));
    }
    let types: BTreeSet<&str> = originals.iter().map(|r| r.event_type.as_str()).collect();
    assert!(types.contains("LoyaltyPointsAwarded") || types.contains("AddressChanged"));
}

#[test]
fn segments_carry_statistics_and_a_fixed_writer_name() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), &GenerateSpec::new(1_000, 2, 50, 3)).unwrap();
    for file in &summary.files {
        let reader =
            SerializedFileReader::new(fs::File::open(dir.path().join(file)).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(
            meta.file_metadata().created_by(),
            Some(concat!("replayfleet-generate ", env!("CARGO_PKG_VERSION")))
        );
        for group in meta.row_groups() {
            let seq = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == "seq")
                .unwrap();
            assert!(
                seq.statistics()
                    .is_some_and(|s| s.min_bytes_opt().is_some())
            );
        }
    }
}

#[test]
fn a_location_that_holds_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("stray.txt"), b"x").unwrap();
    let err = run(dir.path(), &GenerateSpec::new(10, 1, 2, 0)).unwrap_err();
    assert!(err.is_input());
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn tiny_and_empty_histories_work() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), &GenerateSpec::new(0, 3, 5, 0)).unwrap();
    assert_eq!((summary.events_written, summary.segments), (0, 0));
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), &GenerateSpec::new(2, 8, 5, 0)).unwrap();
    let rows = read(dir.path());
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.event_type == "AccountOpened"));
    assert_eq!(summary.streams, 2);
}
