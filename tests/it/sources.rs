//! Source adapters (docs/SOURCES.md): archives in the layouts real pipelines write (the
//! Confluent, Aiven and Lenses S3 sinks, Firehose's Parquet conversion) replay to the
//! same content fingerprint as the canonical archive of the same events, with nothing
//! but a `[source]` block; a mapping that does not apply names the segment and the entry.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow::array::AsArray;
use arrow::{
    array::{
        ArrayRef, BinaryArray, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
        StructArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    },
    buffer::OffsetBuffer,
    datatypes::{DataType, Field, Fields, Int32Type, Int64Type, Schema},
};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{metadata::KeyValue, properties::WriterProperties},
};
use replayfleet_archive::{Location, list_segments, read_segment};
use replayfleet_config::SourceMapping;
use serde_json::{Map, Value, json};

use crate::{
    replay::SQL,
    support::{Run, copy_example_contracts, replayfleet},
};

const TOPIC: &str = "accounts";
/// Rows per file at most: sinks rotate on a record count (and on a schema change).
const FLUSH_SIZE: usize = 40;

/// One event of the history, with the Kafka offset it got in its partition.
#[derive(Debug, Clone)]
struct Event {
    stream_id: String,
    partition: i32,
    offset: i64,
    event_type: String,
    version: i32,
    /// Whole milliseconds: Kafka timestamps have no finer unit.
    occurred_at_ms: i64,
    payload: Map<String, Value>,
}

impl Event {
    /// The id a Kafka archive without event ids derives: topic, partition and offset.
    fn derived_id(&self) -> String {
        format!("{TOPIC}-{}-{}", self.partition, self.offset)
    }
}

/// A generated history (with events of unknown types among the accounts' events), in
/// commit order per partition, offsets numbered from 0 in each partition.
fn history(dir: &Path) -> Vec<Event> {
    let out = dir.join("generated");
    replayfleet(&[
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--events",
        "360",
        "--partitions",
        "3",
        "--streams",
        "24",
        "--seed",
        "11",
        "--unknown-types",
        "0.03",
        "--long-strings",
        "0.01",
    ])
    .expect_code(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = runtime.block_on(async {
        let location = Location::parse(out.to_str().unwrap(), None, &BTreeMap::new()).unwrap();
        let mut rows = Vec::new();
        for segment in list_segments(&location).await.unwrap() {
            for batch in read_segment(&location, &segment, &SourceMapping::canonical())
                .await
                .unwrap()
            {
                let text = |c: &str| batch.column_by_name(c).unwrap().as_string::<i32>().clone();
                let (streams, types, payloads) =
                    (text("stream_id"), text("event_type"), text("payload"));
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
                let at = batch
                    .column_by_name("occurred_at")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap()
                    .clone();
                for i in 0..batch.num_rows() {
                    let payload: Value = serde_json::from_str(payloads.value(i)).unwrap();
                    rows.push((
                        seq.value(i),
                        Event {
                            stream_id: streams.value(i).to_owned(),
                            partition: partition.value(i),
                            offset: 0,
                            event_type: types.value(i).to_owned(),
                            version: version.value(i),
                            occurred_at_ms: at.value(i).div_euclid(1000),
                            payload: payload.as_object().unwrap().clone(),
                        },
                    ));
                }
            }
        }
        rows
    });
    rows.sort_by_key(|(seq, e)| (e.partition, *seq));
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    rows.into_iter()
        .map(|(_, mut e)| {
            let offset = next.entry(e.partition).or_default();
            e.offset = *offset;
            *offset += 1;
            e
        })
        .collect()
}

/// Consecutive events of one partition in files the way a sink rotates them: at most
/// [`FLUSH_SIZE`] records, and a new file whenever the record schema (type, version)
/// changes when `per_schema`.
fn files(events: &[Event], per_schema: bool) -> Vec<&[Event]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        let end = i == events.len()
            || events[i].partition != events[start].partition
            || i - start == FLUSH_SIZE
            || (per_schema
                && (events[i].event_type != events[start].event_type
                    || events[i].version != events[start].version));
        if end {
            out.push(&events[start..i]);
            start = i;
        }
    }
    out
}

/// The payloads as Arrow columns, typed the way a sink's converter would type them.
fn payload_struct(events: &[Event]) -> StructArray {
    let values: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(e.payload.clone()))
        .collect();
    let schema =
        arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(|v| Ok(v.clone())))
            .unwrap();
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema))
        .build_decoder()
        .unwrap();
    decoder.serialize(&values).unwrap();
    let batch = decoder.flush().unwrap().unwrap();
    StructArray::from(batch)
}

fn strings(values: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn millis(events: &[Event]) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from_iter_values(events.iter().map(|e| e.occurred_at_ms))
            .with_timezone("UTC"),
    )
}

fn write(path: &Path, columns: Vec<(String, ArrayRef)>, footer: Vec<KeyValue>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata((!footer.is_empty()).then_some(footer))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The payload struct's fields as top-level columns.
fn value_columns(events: &[Event]) -> Vec<(String, ArrayRef)> {
    let value = payload_struct(events);
    value
        .fields()
        .iter()
        .zip(value.columns())
        .map(|(f, c)| (f.name().clone(), Arc::clone(c)))
        .collect()
}

/// The canonical envelope, one segment per partition, ids derived as a Kafka archive
/// without ids would derive them, seq the Kafka offset.
fn write_canonical(root: &Path, events: &[Event]) {
    for part in files(events, false) {
        let p = part[0].partition;
        let columns: Vec<(String, ArrayRef)> = vec![
            (
                "event_id".into(),
                strings(part.iter().map(Event::derived_id)),
            ),
            (
                "stream_id".into(),
                strings(part.iter().map(|e| e.stream_id.clone())),
            ),
            (
                "partition".into(),
                Arc::new(Int32Array::from_iter_values(
                    part.iter().map(|e| e.partition),
                )),
            ),
            (
                "seq".into(),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|e| e.offset))),
            ),
            (
                "event_type".into(),
                strings(part.iter().map(|e| e.event_type.clone())),
            ),
            (
                "schema_version".into(),
                Arc::new(Int32Array::from_iter_values(part.iter().map(|e| e.version))),
            ),
            (
                "occurred_at".into(),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        part.iter().map(|e| e.occurred_at_ms * 1000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "payload".into(),
                strings(
                    part.iter()
                        .map(|e| Value::Object(e.payload.clone()).to_string()),
                ),
            ),
        ];
        let name = format!("partition={p}/part-{:05}.parquet", part[0].offset);
        write(&root.join(name), columns, Vec::new());
    }
}

/// The Avro schema Confluent's ParquetFormat keeps in the footer: the record name is the
/// event type, `connect.version` its version.
fn avro_footer(event: &Event) -> Vec<KeyValue> {
    let schema = json!({
        "type": "record",
        "name": event.event_type,
        "namespace": "com.acme.accounts",
        "fields": [],
        "connect.version": event.version,
        "connect.name": format!("com.acme.accounts.{}", event.event_type),
    });
    vec![KeyValue::new(
        "parquet.avro.schema".into(),
        schema.to_string(),
    )]
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `topics/<topic>/partition=<p>/<topic>+<p>+<start>.<codec>.parquet`, offset and
    /// timestamp added by InsertField, type from the footer's Avro record name.
    ConfluentOffsets,
    /// Time-based folders mixing partitions, no offset column: seq = start offset + row.
    ConfluentHourly,
    /// `<topic>-<partition>-<start>.parquet`, `key, offset, timestamp, headers, value`.
    Aiven,
    /// `key, value, headers, metadata{offset, partition, timestamp, topic}`.
    Lenses,
    /// Glue-typed columns in `YYYY/MM/dd/HH/` folders, objects without an extension.
    Firehose,
}

impl Layout {
    /// Writes the events under `root` in this layout.
    fn write(self, root: &Path, events: &[Event]) {
        match self {
            Layout::ConfluentOffsets => {
                for file in files(events, true) {
                    let (first, p) = (&file[0], file[0].partition);
                    let mut columns = vec![(
                        "account_id".to_owned(),
                        strings(file.iter().map(|e| e.stream_id.clone())),
                    )];
                    columns.extend(value_columns(file));
                    columns.push((
                        "kafka_offset".into(),
                        Arc::new(Int64Array::from_iter_values(file.iter().map(|e| e.offset))),
                    ));
                    columns.push((
                        "kafka_partition".into(),
                        Arc::new(Int32Array::from_iter_values(
                            file.iter().map(|e| e.partition),
                        )),
                    ));
                    columns.push(("kafka_timestamp".into(), millis(file)));
                    let name = format!(
                        "topics/{TOPIC}/partition={p}/{TOPIC}+{p}+{:010}.snappy.parquet",
                        first.offset
                    );
                    write(&root.join(name), columns, avro_footer(first));
                }
            }
            Layout::ConfluentHourly => {
                for file in files(events, true) {
                    let (first, p) = (&file[0], file[0].partition);
                    let mut columns = vec![(
                        "account_id".to_owned(),
                        strings(file.iter().map(|e| e.stream_id.clone())),
                    )];
                    columns.extend(value_columns(file));
                    columns.push(("kafka_timestamp".into(), millis(file)));
                    let hour = chrono::DateTime::from_timestamp_millis(first.occurred_at_ms)
                        .unwrap()
                        .format("year=%Y/month=%m/day=%d/hour=%H");
                    let name = format!(
                        "topics/{TOPIC}/{hour}/{TOPIC}+{p}+{:010}.snappy.parquet",
                        first.offset
                    );
                    write(&root.join(name), columns, avro_footer(first));
                }
            }
            Layout::Aiven => {
                for file in files(events, true) {
                    let (first, p) = (&file[0], file[0].partition);
                    let columns = vec![
                        (
                            "key".to_owned(),
                            strings(file.iter().map(|e| e.stream_id.clone())),
                        ),
                        (
                            "offset".into(),
                            Arc::new(Int64Array::from_iter_values(file.iter().map(|e| e.offset))),
                        ),
                        (
                            "timestamp".into(),
                            Arc::new(Int64Array::from_iter_values(
                                file.iter().map(|e| e.occurred_at_ms),
                            )),
                        ),
                        ("headers".into(), header_list(file)),
                        ("value".into(), Arc::new(payload_struct(file))),
                    ];
                    let name = format!("aiven/{TOPIC}-{p}-{:020}.parquet", first.offset);
                    write(&root.join(name), columns, Vec::new());
                }
            }
            Layout::Lenses => {
                for file in files(events, false) {
                    let (first, p) = (&file[0], file[0].partition);
                    let headers = StructArray::from(vec![
                        (
                            Arc::new(Field::new("event_type", DataType::Utf8, true)),
                            strings(file.iter().map(|e| e.event_type.clone())),
                        ),
                        (
                            Arc::new(Field::new("schema_version", DataType::Utf8, true)),
                            strings(file.iter().map(|e| e.version.to_string())),
                        ),
                    ]);
                    let metadata = StructArray::from(vec![
                        (
                            Arc::new(Field::new("offset", DataType::Int64, true)),
                            Arc::new(Int64Array::from_iter_values(file.iter().map(|e| e.offset)))
                                as ArrayRef,
                        ),
                        (
                            Arc::new(Field::new("partition", DataType::Int32, true)),
                            Arc::new(Int32Array::from_iter_values(
                                file.iter().map(|e| e.partition),
                            )),
                        ),
                        (
                            Arc::new(Field::new("timestamp", DataType::Int64, true)),
                            Arc::new(Int64Array::from_iter_values(
                                file.iter().map(|e| e.occurred_at_ms),
                            )),
                        ),
                        (
                            Arc::new(Field::new("topic", DataType::Utf8, true)),
                            strings(file.iter().map(|_| TOPIC.to_owned())),
                        ),
                    ]);
                    let columns = vec![
                        (
                            "key".to_owned(),
                            strings(file.iter().map(|e| e.stream_id.clone())),
                        ),
                        ("value".into(), Arc::new(payload_struct(file)) as ArrayRef),
                        ("headers".into(), Arc::new(headers)),
                        ("metadata".into(), Arc::new(metadata)),
                    ];
                    let name = format!(
                        "lenses/{TOPIC}/{p}/{TOPIC}-{p}-{:012}.parquet",
                        first.offset
                    );
                    write(&root.join(name), columns, Vec::new());
                }
            }
            Layout::Firehose => {
                // A Glue table has one schema: the union of every event's fields.
                let all = payload_struct(events);
                let mut start = 0;
                for (n, file) in files(events, false).into_iter().enumerate() {
                    let rows = all.slice(start, file.len());
                    start += file.len();
                    let mut columns: Vec<(String, ArrayRef)> = vec![
                        (
                            "event_id".into(),
                            strings(file.iter().map(Event::derived_id)),
                        ),
                        (
                            "account_id".into(),
                            strings(file.iter().map(|e| e.stream_id.clone())),
                        ),
                        (
                            "event_type".into(),
                            strings(file.iter().map(|e| e.event_type.clone())),
                        ),
                        (
                            "schema_version".into(),
                            Arc::new(Int32Array::from_iter_values(file.iter().map(|e| e.version))),
                        ),
                        (
                            "occurred_at".into(),
                            strings(file.iter().map(|e| {
                                chrono::DateTime::from_timestamp_millis(e.occurred_at_ms)
                                    .unwrap()
                                    .format("%Y-%m-%d %H:%M:%S%.3f")
                                    .to_string()
                            })),
                        ),
                        (
                            "shard".into(),
                            Arc::new(Int32Array::from_iter_values(
                                file.iter().map(|e| e.partition),
                            )),
                        ),
                        (
                            "sequence_number".into(),
                            Arc::new(Int64Array::from_iter_values(file.iter().map(|e| e.offset))),
                        ),
                    ];
                    columns.extend(
                        rows.fields()
                            .iter()
                            .zip(rows.columns())
                            .map(|(f, c)| (f.name().clone(), Arc::clone(c))),
                    );
                    let at =
                        chrono::DateTime::from_timestamp_millis(file[0].occurred_at_ms).unwrap();
                    let name = format!(
                        "firehose/{}/accounts-stream-1-{}-{n:08x}",
                        at.format("%Y/%m/%d/%H"),
                        at.format("%Y-%m-%d-%H-%M-%S")
                    );
                    write(&root.join(name), columns, Vec::new());
                }
            }
        }
    }

    /// The `[source]` block (but `url`) that reads this layout.
    fn source(self) -> &'static str {
        match self {
            Layout::ConfluentOffsets => {
                r#"
key_pattern = "{topic}/partition={partition:int}/*+*+{start_offset:int}.{codec}.parquet"

[source.columns]
event_id = { template = "{topic}-{partition}-{seq}" }
stream_id = "account_id"
partition = { key = "partition" }
seq = "kafka_offset"
event_type = { footer = "parquet.avro.schema", pointer = "/name" }
schema_version = { footer = "parquet.avro.schema", pointer = "/connect.version" }
occurred_at = "kafka_timestamp"
payload = { remaining = true, exclude = ["kafka_partition"] }
"#
            }
            Layout::ConfluentHourly => {
                r#"
key_pattern = "{topic}/year=*/month=*/day=*/hour=*/*+{partition:int}+{start_offset:int}.{codec}.parquet"

[source.columns]
event_id = { template = "{topic}-{partition}-{seq}" }
stream_id = "account_id"
partition = { key = "partition" }
seq = { key = "start_offset", plus_row = true }
event_type = { footer = "parquet.avro.schema", pointer = "/name" }
schema_version = { footer = "parquet.avro.schema", pointer = "/connect.version" }
occurred_at = "kafka_timestamp"
payload = { remaining = true }
"#
            }
            Layout::Aiven => {
                r#"
key_pattern = "{topic}-{partition:int}-{start_offset:int}.parquet"

[source.columns]
event_id = { template = "{topic}-{partition}-{seq}" }
stream_id = "key"
partition = { key = "partition" }
seq = "offset"
event_type = "headers.event_type"
schema_version = "headers.schema_version"
occurred_at = { column = "timestamp", unit = "ms" }
payload = "value"
metadata = "headers"
"#
            }
            Layout::Lenses => {
                r#"
[source.columns]
event_id = { template = "{metadata.topic}-{partition}-{seq}" }
stream_id = "key"
partition = "metadata.partition"
seq = "metadata.offset"
event_type = "headers.event_type"
schema_version = "headers.schema_version"
occurred_at = { column = "metadata.timestamp", unit = "ms" }
payload = "value"
metadata = "headers"
"#
            }
            Layout::Firehose => {
                r#"
segments = "*/*/*/*/accounts-stream-*"

[source.columns]
stream_id = "account_id"
partition = "shard"
seq = "sequence_number"
payload = { remaining = true }
"#
            }
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Layout::ConfluentOffsets | Layout::ConfluentHourly => "topics",
            Layout::Aiven => "aiven",
            Layout::Lenses => "lenses",
            Layout::Firehose => "firehose",
        }
    }
}

/// Kafka headers as Aiven writes them: a list of `{key, value}` with byte values.
fn header_list(events: &[Event]) -> ArrayRef {
    let entry = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ]);
    let mut keys = Vec::new();
    let mut values: Vec<Vec<u8>> = Vec::new();
    for e in events {
        keys.extend(["event_type", "schema_version"]);
        values.push(e.event_type.clone().into_bytes());
        values.push(e.version.to_string().into_bytes());
    }
    let entries = StructArray::new(
        entry.clone(),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(BinaryArray::from_iter_values(values.iter())),
        ],
        None,
    );
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(entry), false)),
        OffsetBuffer::from_lengths(events.iter().map(|_| 2)),
        Arc::new(entries),
        None,
    ))
}

/// A backfill of the example projection over the archive at `url` read with `source`.
fn backfill(dir: &Path, name: &str, url: &str, source: &str) -> PathBuf {
    let text = format!(
        r#"[run]
name = "{name}"

[source]
url = "{url}"
{source}
[contracts]
dir = "contracts"

[projection]
name = "account_balances"
key = ["account_id"]
sql = """{SQL}"""

[target]
url = "{name}-target"

[shards]
target_events = 150

[checks.anomalies]
unknown_type = "quarantine"
max_quarantined_ratio = 0.2
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &Path) -> Run {
    let out = replayfleet(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--workers",
        "2",
        "--json",
    ]);
    out.expect_code(0);
    out
}

fn replays_like_the_canonical_archive(layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    copy_example_contracts(dir.path());
    let events = history(dir.path());
    write_canonical(&dir.path().join("canonical"), &events);
    layout.write(&dir.path().join("layout"), &events);
    let source = layout.source();
    let url = format!("layout/{}", layout.folder());

    let canonical = run(&backfill(dir.path(), "canonical", "canonical", ""));
    let mapped_config = backfill(dir.path(), "mapped", &url, source);

    // The mapping can be checked before a run: inventory shows the mapped envelope.
    let inventory = replayfleet(&[
        "inventory",
        "--config",
        mapped_config.to_str().unwrap(),
        "--json",
    ]);
    inventory.expect_code(0);
    let inventory = inventory.json();
    assert_eq!(inventory["totals"]["rows"], events.len() as u64);
    let first_segment = inventory["sample"]["segment"].as_str().unwrap().to_owned();
    let sample = inventory["sample"]["rows"].as_array().unwrap();
    assert_eq!(sample.len(), 3, "{}", inventory["sample"]);
    let first = &sample[0];
    let event = events
        .iter()
        .find(|e| e.derived_id() == first["event_id"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("no event has the sample's id: {first}"));
    assert_eq!(first["stream_id"], event.stream_id.as_str(), "{first}");
    assert_eq!(first["seq"], event.offset, "{first}");
    assert_eq!(first["partition"], event.partition, "{first}");
    assert_eq!(first["event_type"], event.event_type.as_str(), "{first}");
    assert_eq!(first["schema_version"], event.version, "{first}");
    let at = chrono::DateTime::from_timestamp_millis(event.occurred_at_ms).unwrap();
    assert_eq!(
        first["occurred_at"],
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "{first}"
    );
    assert!(
        same_json(&first["payload"], &Value::Object(event.payload.clone())),
        "{first}\n{:?}",
        event.payload
    );
    assert!(!first_segment.is_empty());
    // Segments carry their partition in the key: the inventory needs no data page.
    assert_eq!(
        inventory["partitions"].as_array().unwrap().len(),
        3,
        "{}",
        inventory["partitions"]
    );

    let plan = replayfleet(&["plan", "--config", mapped_config.to_str().unwrap()]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("as the envelope"), "{}", plan.stdout);

    let mapped = run(&mapped_config);
    let (a, b) = (canonical.json(), mapped.json());
    assert_eq!(
        b["report"]["fingerprint"], a["report"]["fingerprint"],
        "{layout:?}: the mapped archive replays to another projection\n--- canonical\n{a}\n--- mapped\n{b}"
    );
    for figure in [
        "events_read",
        "events_projected",
        "quarantined",
        "rows",
        "anomalies",
    ] {
        assert_eq!(
            b["report"]["totals"][figure], a["report"]["totals"][figure],
            "{layout:?}: {figure}\n--- canonical\n{a}\n--- mapped\n{b}"
        );
    }
}

#[test]
fn confluent_sink_with_offset_columns_replays_like_the_canonical_archive() {
    replays_like_the_canonical_archive(Layout::ConfluentOffsets);
}

#[test]
fn confluent_sink_in_hourly_folders_numbers_rows_from_the_start_offset() {
    replays_like_the_canonical_archive(Layout::ConfluentHourly);
}

#[test]
fn aiven_sink_with_headers_replays_like_the_canonical_archive() {
    replays_like_the_canonical_archive(Layout::Aiven);
}

#[test]
fn lenses_sink_envelope_replays_like_the_canonical_archive() {
    replays_like_the_canonical_archive(Layout::Lenses);
}

#[test]
fn firehose_parquet_conversion_replays_like_the_canonical_archive() {
    replays_like_the_canonical_archive(Layout::Firehose);
}

/// A small Confluent-shaped archive and the config that reads it, for the error cases.
fn confluent(dir: &Path) -> (Vec<Event>, &'static str) {
    copy_example_contracts(dir);
    let events = history(dir);
    Layout::ConfluentOffsets.write(&dir.join("layout"), &events);
    (events, Layout::ConfluentOffsets.source())
}

fn plan_fails(dir: &Path, source: &str) -> Run {
    let config = backfill(dir, "bad", "layout/topics", source);
    let out = replayfleet(&["plan", "--config", config.to_str().unwrap()]);
    out.expect_code(2);
    out
}

#[test]
fn a_mapping_that_does_not_apply_names_the_segment_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_, source) = confluent(dir.path());

    // A column no segment has.
    let missing = source.replace("seq = \"kafka_offset\"", "seq = \"offset\"");
    plan_fails(dir.path(), &missing).stderr_names(&[
        "segment `accounts/partition=0/accounts+0+0000000000.snappy.parquet`",
        "column `offset`",
        "envelope `seq`",
        "kafka_offset",
    ]);

    // A dotted path into a struct that is not there.
    let path = source.replace("seq = \"kafka_offset\"", "seq = \"metadata.offset\"");
    plan_fails(dir.path(), &path).stderr_names(&["column `metadata.offset`", "envelope `seq`"]);

    // A key pattern that does not match a segment's path.
    let pattern = source.replace(
        "{topic}/partition={partition:int}/*+*+{start_offset:int}.{codec}.parquet",
        "{topic}/part={partition:int}/*+*+{start_offset:int}.{codec}.parquet",
    );
    plan_fails(dir.path(), &pattern).stderr_names(&[
        "segment `accounts/partition=0/accounts+0+0000000000.snappy.parquet`",
        "source.key_pattern = `{topic}/part={partition:int}",
        "does not match",
    ]);

    // A footer key that is absent, and a pointer to nothing.
    let footer = source.replace(
        "event_type = { footer = \"parquet.avro.schema\", pointer = \"/name\" }",
        "event_type = { footer = \"avro.schema\", pointer = \"/name\" }",
    );
    plan_fails(dir.path(), &footer).stderr_names(&[
        "segment `accounts/partition=0/accounts+0+0000000000.snappy.parquet`",
        "source.columns.event_type = { footer = \"avro.schema\", pointer = \"/name\" }",
        "no key `avro.schema`",
        "parquet.avro.schema",
    ]);
    let pointer = source.replace("/connect.version", "/version");
    plan_fails(dir.path(), &pointer)
        .stderr_names(&["source.columns.schema_version", "nothing at `/version`"]);

    // A capture the pattern does not have is caught in the config itself.
    let capture = source.replace(
        "partition = { key = \"partition\" }",
        "partition = { key = \"kafka_partition\" }",
    );
    plan_fails(dir.path(), &capture).stderr_names(&[
        "bad.toml",
        "source.columns.partition",
        "no capture `kafka_partition`",
    ]);

    // A captured value that is not in the entry's map.
    let map = source.replace(
        "event_type = { footer = \"parquet.avro.schema\", pointer = \"/name\" }",
        "event_type = { footer = \"parquet.avro.schema\", pointer = \"/name\", map = { Deposited = \"MoneyIn\" } }",
    );
    plan_fails(dir.path(), &map).stderr_names(&["source.columns.event_type", "is not in its map"]);
}

#[test]
fn a_value_that_does_not_convert_names_segment_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_contracts(dir.path());
    let events = history(dir.path());
    // Lenses headers carry the version as text: one header that is not a number.
    Layout::Lenses.write(&dir.path().join("layout"), &events);
    let file = std::fs::read_dir(dir.path().join("layout/lenses/accounts/0"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Rewrite the first file with a header value "two" in row 1.
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.map(|b| b.unwrap()).next().unwrap();
    let headers = batch.column_by_name("headers").unwrap().as_struct();
    let mut versions: Vec<String> = headers
        .column_by_name("schema_version")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap().to_owned())
        .collect();
    versions[1] = "two".into();
    let headers = StructArray::from(vec![
        (
            Arc::new(Field::new("event_type", DataType::Utf8, true)),
            Arc::clone(headers.column_by_name("event_type").unwrap()),
        ),
        (
            Arc::new(Field::new("schema_version", DataType::Utf8, true)),
            strings(versions),
        ),
    ]);
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let c = if f.name() == "headers" {
                Arc::new(headers.clone()) as ArrayRef
            } else {
                Arc::clone(c)
            };
            (f.name().clone(), c)
        })
        .collect();
    write(&file, columns, Vec::new());
    let segment = file
        .strip_prefix(dir.path().join("layout/lenses"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let config = backfill(dir.path(), "bad", "layout/lenses", Layout::Lenses.source());
    let out = replayfleet(&["plan", "--config", config.to_str().unwrap()]);
    out.expect_code(2).stderr_names(&[
        &format!("segment `{segment}`"),
        "column `headers.schema_version` row 1",
        "`two` is not an integer",
        "envelope `schema_version`",
    ]);
}

#[test]
fn timestamp_units_are_required_for_integer_times() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_contracts(dir.path());
    let events = history(dir.path());
    Layout::Aiven.write(&dir.path().join("layout"), &events);
    let config = backfill(
        dir.path(),
        "bad",
        "layout/aiven",
        &Layout::Aiven
            .source()
            .replace("{ column = \"timestamp\", unit = \"ms\" }", "\"timestamp\""),
    );
    replayfleet(&["inventory", "--config", config.to_str().unwrap()])
        .expect_code(2)
        .stderr_names(&["column `timestamp`", "envelope `occurred_at`", "unit"]);
}

#[test]
fn key_patterns_and_mappings_work_on_s3() {
    let server = replayfleet_testkit::S3Server::start();
    let bucket = server.create_bucket();
    let dir = tempfile::tempdir().unwrap();
    copy_example_contracts(dir.path());
    let events = history(dir.path());
    let local = dir.path().join("layout");
    Layout::ConfluentHourly.write(&local, &events);
    let source = Layout::ConfluentHourly.source();
    // Upload the layout as it is.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("s3://{bucket}/archive/topics");
    runtime.block_on(async {
        let location = Location::parse(&url, None, &server.options()).unwrap();
        for file in walk(&local.join("topics")) {
            let rel = file
                .strip_prefix(local.join("topics"))
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let bytes = std::fs::read(&file).unwrap();
            object_store::ObjectStoreExt::put(
                location.store().as_ref(),
                &location.child(&rel),
                bytes.into(),
            )
            .await
            .unwrap();
        }
    });
    let config = backfill(dir.path(), "s3", &url, source);
    let out = crate::support::replayfleet_env(
        &["inventory", "--config", config.to_str().unwrap(), "--json"],
        &server.env(),
    );
    out.expect_code(0);
    let inventory = out.json();
    assert_eq!(inventory["totals"]["rows"], events.len() as u64);
    assert!(
        inventory["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["stats"] == "footer"),
        "every figure comes from the key and footer: {inventory}"
    );
    assert_eq!(inventory["sample"]["rows"].as_array().unwrap().len(), 3);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// JSON equality with numbers compared by value (`12` and `12.0` are one number: a
/// sink's Parquet column and the canonical JSON text may spell it either way).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w))
        }
        _ => a == b,
    }
}

/// `path` rewritten uncompressed, without dictionaries or statistics, with the first
/// value of the first text field of the struct column `value` made bytes that are not
/// UTF-8; returns that field's name.
fn corrupt_a_nested_string(path: &Path) -> String {
    use arrow::array::Array;
    use parquet::file::properties::EnabledStatistics;
    let batch = crate::support::read_parquet_batch(path);
    let schema = batch.schema();
    let at = schema.index_of("value").unwrap();
    let value = batch.column(at).as_struct();
    let (field, text) = value
        .fields()
        .iter()
        .zip(value.columns())
        .find(|(f, c)| *f.data_type() == DataType::Utf8 && c.is_valid(0))
        .expect("a text field");
    let name = field.name().clone();
    let marker = "@@NOT-TEXT@@";
    let text = text.as_string::<i32>();
    let changed: StringArray = (0..text.len())
        .map(|i| match i {
            0 => Some(marker.to_owned()),
            _ => text.is_valid(i).then(|| text.value(i).to_owned()),
        })
        .collect();
    let mut children = value.columns().to_vec();
    let index = value
        .fields()
        .iter()
        .position(|f| *f.name() == name)
        .unwrap();
    children[index] = Arc::new(changed);
    let value = StructArray::new(value.fields().clone(), children, value.nulls().cloned());
    let mut columns = batch.columns().to_vec();
    columns[at] = Arc::new(value);
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the marker is written as is");
    bytes[at] = 0xC3; // a lead byte followed by `@`: not UTF-8
    std::fs::write(path, bytes).unwrap();
    name
}

#[test]
fn a_string_nested_in_a_struct_that_is_not_utf8_is_an_undecodable_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_contracts(dir.path());
    let events = history(dir.path());
    let layout = Layout::Aiven;
    layout.write(&dir.path().join("layout"), &events);
    let mut segments: Vec<PathBuf> = walk(&dir.path().join("layout"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    segments.sort();
    let field = corrupt_a_nested_string(&segments[0]);
    let url = format!("layout/{}", layout.folder());
    let config = backfill(dir.path(), "nested", &url, layout.source());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("undecodable = \"quarantine\"\n");
    std::fs::write(&config, text).unwrap();

    // Before, the whole segment failed (exit 2); now the row is set aside, the rest runs.
    let run = run(&config);
    let report = run.json()["report"].clone();
    assert_eq!(
        report["totals"]["events_read"],
        events.len() as u64,
        "{report}"
    );
    assert_eq!(report["totals"]["anomalies"]["undecodable"], 1, "{report}");
    let anomalies: Vec<PathBuf> = walk(&dir.path().join("nested-target"))
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("anomal") && p.extension().is_some_and(|e| e == "parquet")
        })
        .collect();
    let rows: Vec<Value> = anomalies
        .iter()
        .flat_map(|p| read_segment_rows(p))
        .filter(|r| r["kind"] == "undecodable")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let message = row["message"].as_str().unwrap();
    assert!(
        message.contains("column `value`") && message.contains("inside the value"),
        "{message} (field `{field}`)"
    );
}

/// The rows of a Parquet file as JSON objects.
fn read_segment_rows(path: &Path) -> Vec<Value> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer
        .write(&crate::support::read_parquet_batch(path))
        .unwrap();
    writer.finish().unwrap();
    serde_json::from_slice(&writer.into_inner()).unwrap()
}
