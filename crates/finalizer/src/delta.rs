//! The Delta Lake commit log of a target (docs/FORMATS.md, "The commit log"): the actions
//! of one version, and the parse and checks of a version read back.
//!
//! ```text
//! _delta_log/00000000000000000000.json  commitInfo (CREATE TABLE), protocol, metaData
//! _delta_log/00000000000000000001.json  commitInfo {.., replayfleet: <commit>}, add × segments
//! _delta_log/00000000000000000002.json  commitInfo, [metaData], remove × v1's files, add × v2's
//! ```
//!
//! replayfleet's version N is Delta's version N: version 0 creates the table, empty, and
//! the first commit of a projection writes it just before version 1. Each later version
//! `remove`s every file of the one before and `add`s its own, so a Delta reader of any
//! version reads exactly that version's segments. replayfleet's own commit record rides
//! in `commitInfo.replayfleet`; that is what `history`, `show`, `verify`, `explain`, `gc`
//! and the baseline diff read.
//!
//! delta_kernel converts the Arrow schema into Delta's `schemaString`. The actions are
//! written here by hand, because delta_kernel's `Transaction` (0.30) lacks what a commit
//! needs: a committer that resolves a put-if-absent whose outcome is unknown by reading the
//! object back (its `Committer` is synchronous and its `FileSystemCommitter` does not),
//! replacing the schema (its builder only adds columns), and our own `commitInfo` fields.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType as ArrowType, Schema, TimeUnit};
use bytes::Bytes;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::schema::{StructField, StructType};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use replayfleet_replay::map_types;
use serde_json::{Map, Value, json};

use crate::{Commit, CommitSegment, Error, Result};

/// `engineInfo` of every commit.
pub(crate) const ENGINE_INFO: &str = concat!("replayfleet/", env!("CARGO_PKG_VERSION"));
/// The `metaData.configuration` key that marks a table replayfleet created (its value:
/// the projection's name).
pub(crate) const PROJECTION_CONF: &str = "replayfleet.projection";
/// The `metaData.configuration` key holding the projection's key columns (a JSON array).
pub(crate) const KEY_CONF: &str = "replayfleet.key";

/// Reader features replayfleet reads and writes (table features, protocol 3/7).
const READER_FEATURES: &[&str] = &["timestampNtz"];
/// Writer features replayfleet honours.
const WRITER_FEATURES: &[&str] = &["timestampNtz"];

/// Characters of a path escaped in an `add`/`remove` path (a relative URI).
const PATH_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b'=');

/// One version of the log, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The version.
    pub version: u64,
    /// replayfleet's commit record (every version but 0).
    pub commit: Option<Commit>,
    /// The `metaData` action, when this version has one.
    pub metadata: Option<Value>,
    /// The `protocol` action, when this version has one.
    pub protocol: Option<Value>,
    /// Its `add` and `remove` actions, in order.
    pub files: Vec<FileAction>,
}

/// An `add` or a `remove` of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    /// `true` for `add`.
    pub add: bool,
    /// The file, relative to the target (percent-decoded).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its `replayfleet.sha256` tag (an `add`'s).
    pub sha256: Option<String>,
    /// Its `stats` (an `add`'s), as written.
    pub stats: Option<String>,
}

/// The table's metadata and protocol to write in a version, when they change.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableChange {
    /// A new `metaData` action.
    pub metadata: Option<Value>,
    /// A new `protocol` action.
    pub protocol: Option<Value>,
}

/// Parses `_delta_log/<version>.json` (`path`, relative to the target, for messages).
pub(crate) fn parse(path: &str, version: u64, bytes: &[u8]) -> Result<Entry> {
    let text = std::str::from_utf8(bytes).map_err(|_| table(path, "not UTF-8 text"))?;
    let mut entry = Entry {
        version,
        commit: None,
        metadata: None,
        protocol: None,
        files: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let action: Map<String, Value> = serde_json::from_str(line)
            .map_err(|e| table(path, format!("line {}: not a JSON object: {e}", n + 1)))?;
        for (kind, body) in action {
            match kind.as_str() {
                "commitInfo" => {
                    if let Some(record) = body.get("replayfleet") {
                        let commit: Commit = serde_json::from_value(record.clone())
                            .map_err(|e| table(path, format!("commitInfo.replayfleet: {e}")))?;
                        if commit.version != version {
                            return Err(table(
                                path,
                                format!(
                                    "commitInfo.replayfleet says version {}, the file is version {version}",
                                    commit.version
                                ),
                            ));
                        }
                        entry.commit = Some(commit);
                    }
                }
                "metaData" => entry.metadata = Some(body),
                "add" | "remove" => {
                    let raw = body.get("path").and_then(Value::as_str).ok_or_else(|| {
                        table(path, format!("line {}: {kind} without a path", n + 1))
                    })?;
                    entry.files.push(FileAction {
                        add: kind == "add",
                        path: percent_decode_str(raw).decode_utf8_lossy().into_owned(),
                        size: body.get("size").and_then(Value::as_u64).unwrap_or(0),
                        sha256: body
                            .pointer("/tags/replayfleet.sha256")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        stats: body.get("stats").and_then(Value::as_str).map(str::to_owned),
                    });
                }
                "protocol" => {
                    check_protocol(path, &body)?;
                    entry.protocol = Some(body);
                }
                _ => {}
            }
        }
    }
    if let Some(metadata) = &entry.metadata {
        check_metadata(path, metadata)?;
    }
    if version == 0 && (entry.metadata.is_none() || entry.protocol.is_none()) {
        return Err(table(
            path,
            "version 0 of a Delta table must hold its protocol and metaData",
        ));
    }
    if version > 0 && entry.commit.is_none() {
        return Err(table(
            path,
            "not written by replayfleet (no commitInfo.replayfleet): another writer changed this table",
        ));
    }
    Ok(entry)
}

/// Refuses a protocol replayfleet cannot honour (a reader or writer version or feature it
/// does not know).
fn check_protocol(path: &str, protocol: &Value) -> Result<()> {
    let version = |key: &str| protocol.get(key).and_then(Value::as_u64);
    let features = |key: &str| -> Vec<String> {
        protocol
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (Some(reader), Some(writer)) = (version("minReaderVersion"), version("minWriterVersion"))
    else {
        return Err(table(
            path,
            "protocol without minReaderVersion and minWriterVersion",
        ));
    };
    let unknown = |have: Vec<String>, known: &[&str]| -> Vec<String> {
        have.into_iter()
            .filter(|f| !known.contains(&f.as_str()))
            .collect()
    };
    let reader_ok = reader == 1
        || (reader == 3 && unknown(features("readerFeatures"), READER_FEATURES).is_empty());
    let writer_ok = writer <= 2
        || (writer == 7 && unknown(features("writerFeatures"), WRITER_FEATURES).is_empty());
    if reader_ok && writer_ok {
        return Ok(());
    }
    let mut named = unknown(features("readerFeatures"), READER_FEATURES);
    named.extend(unknown(features("writerFeatures"), WRITER_FEATURES));
    named.dedup();
    Err(table(
        path,
        format!(
            "protocol reader version {reader}, writer version {writer}{} is newer than replayfleet supports (reader 1, or 3 with timestampNtz; writer 1 or 2, or 7 with timestampNtz)",
            if named.is_empty() {
                String::new()
            } else {
                format!(" with features {}", named.join(", "))
            }
        ),
    ))
}

/// Refuses a table replayfleet did not create.
fn check_metadata(path: &str, metadata: &Value) -> Result<()> {
    let projection = metadata
        .get("configuration")
        .and_then(|c| c.get(PROJECTION_CONF))
        .and_then(Value::as_str);
    if projection.is_none() {
        return Err(table(
            path,
            format!(
                "a Delta table replayfleet did not create (its metaData.configuration has no `{PROJECTION_CONF}`); give the projection a target of its own"
            ),
        ));
    }
    if !metadata
        .get("partitionColumns")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return Err(table(
            path,
            "a partitioned table: replayfleet writes unpartitioned tables",
        ));
    }
    Ok(())
}

/// The `metaData` (with table id `id`) and the `protocol` a table of `commit`'s projection
/// and `schema` needs: reader 1 / writer 1, or 3 / 7 with `timestampNtz` when a timestamp
/// has no time zone.
pub(crate) fn table_of(
    id: &str,
    commit: &Commit,
    schema: &Schema,
    created_ms: i64,
) -> Result<(Value, Value)> {
    let delta = delta_schema(schema)?;
    let schema_string = serde_json::to_string(&delta).map_err(|e| Error::Table {
        path: "metaData.schemaString".into(),
        message: e.to_string(),
    })?;
    let ntz = schema_string.contains("\"timestamp_ntz\"");
    let protocol = if ntz {
        json!({
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"],
            "writerFeatures": ["timestampNtz"],
        })
    } else {
        json!({"minReaderVersion": 1, "minWriterVersion": 1})
    };
    let metadata = json!({
        "id": id,
        "name": commit.projection,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string,
        "partitionColumns": [],
        "configuration": {
            PROJECTION_CONF: commit.projection,
            KEY_CONF: serde_json::to_string(&commit.key).unwrap_or_default(),
        },
        "createdTime": created_ms,
    });
    Ok((metadata, protocol))
}

/// Delta's schema of an Arrow schema, by delta_kernel, one field at a time (to name the
/// column it refuses). Timestamps are instants in Delta (`timestamp`, UTC, or
/// `timestamp_ntz`): any time zone maps to `timestamp` and any unit is written as Parquet
/// stores it (readers read its unit from the file).
fn delta_schema(schema: &Schema) -> Result<StructType> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let Ok(ty) = map_types(f.data_type(), &|t| {
                Ok::<_, std::convert::Infallible>(match t {
                    ArrowType::Timestamp(_, tz) => Some(ArrowType::Timestamp(
                        TimeUnit::Microsecond,
                        tz.as_ref().map(|_| "UTC".into()),
                    )),
                    _ => None,
                })
            });
            let field = f.as_ref().clone().with_data_type(ty);
            StructField::try_from_arrow(&field).map_err(|e| Error::Table {
                path: format!("column `{}`", field.name()),
                message: format!(
                    "its type {} cannot be a Delta Lake column ({e}); cast it in the projection SQL",
                    f.data_type()
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    StructType::try_new(fields).map_err(|e| Error::Table {
        path: "the projection's schema".into(),
        message: e.to_string(),
    })
}

/// The lines of version `commit.version`: `commitInfo` with the commit record, the table
/// change, a `remove` for each of `previous`, an `add` for each segment.
pub(crate) fn version_bytes(
    commit: &Commit,
    previous: &[CommitSegment],
    change: &TableChange,
    stats: &BTreeMap<String, String>,
) -> Bytes {
    let ms = commit.committed_at.timestamp_millis();
    let (operation, parameters) = if commit.kind == "rollback" {
        (
            "RESTORE",
            json!({"version": commit.rollback_of.unwrap_or_default().to_string()}),
        )
    } else {
        ("WRITE", json!({"mode": "Overwrite", "partitionBy": "[]"}))
    };
    let mut lines = vec![json!({"commitInfo": {
        "timestamp": ms,
        "operation": operation,
        "operationParameters": parameters,
        "engineInfo": ENGINE_INFO,
        "isBlindAppend": false,
        "replayfleet": commit,
    }})];
    if let Some(protocol) = &change.protocol {
        lines.push(json!({ "protocol": protocol }));
    }
    if let Some(metadata) = &change.metadata {
        lines.push(json!({ "metaData": metadata }));
    }
    // A file this version adds again (a rollback to a version whose files are current)
    // is not also removed: Delta allows one action per path and version.
    let kept: std::collections::BTreeSet<&str> =
        commit.segments.iter().map(|s| s.path.as_str()).collect();
    for segment in previous.iter().filter(|s| !kept.contains(s.path.as_str())) {
        lines.push(json!({"remove": {
            "path": uri(&segment.path),
            "deletionTimestamp": ms,
            "dataChange": true,
            "extendedFileMetadata": true,
            "partitionValues": {},
            "size": segment.bytes,
        }}));
    }
    let first_key = commit.key.first().and_then(|k| {
        commit
            .schema
            .iter()
            .find(|c| &c.name == k)
            .filter(|c| orderable(&c.data_type))
            .map(|c| c.name.clone())
    });
    for segment in &commit.segments {
        lines.push(json!({"add": {
            "path": uri(&segment.path),
            "partitionValues": {},
            "size": segment.bytes,
            "modificationTime": ms,
            "dataChange": true,
            "stats": stats
                .get(&segment.path)
                .cloned()
                .unwrap_or_else(|| key_range_stats(segment, first_key.as_deref())),
            "tags": tags(segment),
        }}));
    }
    lines_bytes(&lines)
}

/// Version 0: the table, empty.
pub(crate) fn create_bytes(metadata: &Value, protocol: &Value, created_ms: i64) -> Bytes {
    lines_bytes(&[
        json!({"commitInfo": {
            "timestamp": created_ms,
            "operation": "CREATE TABLE",
            "operationParameters": {"mode": "ErrorIfExists", "partitionBy": "[]"},
            "engineInfo": ENGINE_INFO,
            "isBlindAppend": true,
        }}),
        json!({ "protocol": protocol }),
        json!({ "metaData": metadata }),
    ])
}

/// One JSON document per line.
fn lines_bytes(lines: &[Value]) -> Bytes {
    let mut out = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut out, line).expect("plain data serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// A target-relative path as a relative URI.
fn uri(path: &str) -> String {
    utf8_percent_encode(path, PATH_ESCAPES).to_string()
}

/// Whether a key column of this Arrow type (as displayed) gets min/max statistics: the
/// integers and text, whose order in a segment (sorted by key) is the order readers compare
/// statistics in.
fn orderable(data_type: &str) -> bool {
    matches!(
        data_type,
        "Int8"
            | "Int16"
            | "Int32"
            | "Int64"
            | "UInt8"
            | "UInt16"
            | "UInt32"
            | "Utf8"
            | "LargeUtf8"
            | "Utf8View"
    )
}

/// `add.stats` from the commit record alone (`migrate`, and a segment not read back): the
/// row count, and the min/max of the first key column (a segment is sorted by key, so its
/// first and last rows hold them).
fn key_range_stats(segment: &CommitSegment, first_key: Option<&str>) -> String {
    let mut stats = json!({ "numRecords": segment.rows });
    let bound = |key: &Option<Vec<Value>>| {
        key.as_ref()
            .and_then(|k| k.first())
            .filter(|v| v.is_number() || v.is_string())
            .cloned()
    };
    if let (Some(column), Some(min), Some(max)) =
        (first_key, bound(&segment.key_min), bound(&segment.key_max))
    {
        stats["minValues"] = json!({ column: min });
        stats["maxValues"] = json!({ column: max });
    }
    stats.to_string()
}

/// `add.tags`: the segment's SHA-256, shard and key range, for auditors.
fn tags(segment: &CommitSegment) -> BTreeMap<&'static str, String> {
    let mut tags = BTreeMap::from([
        ("replayfleet.sha256", segment.sha256.clone()),
        ("replayfleet.shard", segment.shard.clone()),
    ]);
    if let Some(min) = &segment.key_min {
        tags.insert("replayfleet.keyMin", Value::from(min.clone()).to_string());
    }
    if let Some(max) = &segment.key_max {
        tags.insert("replayfleet.keyMax", Value::from(max.clone()).to_string());
    }
    tags
}

/// An error in the log file `path`.
fn table(path: &str, message: impl Into<String>) -> Error {
    Error::Table {
        path: path.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use chrono::Utc;
    use replayfleet_replay::{Build, Column, CommitTotals};

    fn commit(version: u64, segments: Vec<CommitSegment>) -> Commit {
        Commit {
            format_version: crate::COMMIT_FORMAT_VERSION,
            version,
            parent: (version > 1).then(|| version - 1),
            kind: "replay".into(),
            rollback_of: None,
            rollback_reason: None,
            run_id: format!("run-{version}"),
            committed_at: Utc::now(),
            committed_by: "me@here".into(),
            projection: "balances".into(),
            key: vec!["account".into()],
            schema: vec![Column {
                name: "account".into(),
                data_type: "Utf8".into(),
                nullable: false,
            }],
            sql_sha256: "0".repeat(64),
            catalog_sha256: "1".repeat(64),
            build: Build::current(),
            segments,
            totals: CommitTotals::default(),
            fingerprint: "2".repeat(64),
            report: None,
            accepted: None,
        }
    }

    fn segment(path: &str, min: &str, max: &str) -> CommitSegment {
        CommitSegment {
            path: path.into(),
            sha256: "3".repeat(64),
            rows: 7,
            bytes: 100,
            key_min: Some(vec![json!(min)]),
            key_max: Some(vec![json!(max)]),
            shard: "p0".into(),
        }
    }

    #[test]
    fn a_version_reads_back_as_it_was_written() {
        let old = segment("runs/a/shards/p0/x/part-00000.parquet", "a", "c");
        let new = segment("runs/b/shards/p 0/x/part-00000.parquet", "b", "d");
        let commit = commit(2, vec![new]);
        let bytes = version_bytes(&commit, &[old], &TableChange::default(), &BTreeMap::new());
        let entry = parse("_delta_log/2.json", 2, &bytes).unwrap();
        assert_eq!(entry.commit.as_ref(), Some(&commit));
        let files: Vec<(bool, &str)> = entry
            .files
            .iter()
            .map(|f| (f.add, f.path.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                (false, "runs/a/shards/p0/x/part-00000.parquet"),
                (true, "runs/b/shards/p 0/x/part-00000.parquet")
            ]
        );
        let lines: Vec<Value> = std::str::from_utf8(&bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            lines[0].get("commitInfo").is_some(),
            "commitInfo comes first"
        );
        assert_eq!(
            lines[1]["remove"]["path"],
            "runs/a/shards/p0/x/part-00000.parquet"
        );
        assert_eq!(
            lines[2]["add"]["path"],
            "runs/b/shards/p%200/x/part-00000.parquet"
        );
        let stats: Value =
            serde_json::from_str(lines[2]["add"]["stats"].as_str().unwrap()).unwrap();
        assert_eq!(
            stats,
            json!({"numRecords": 7, "minValues": {"account": "b"}, "maxValues": {"account": "d"}})
        );
        assert_eq!(lines[2]["add"]["tags"]["replayfleet.keyMin"], "[\"b\"]");
    }

    #[test]
    fn a_file_added_again_is_not_also_removed() {
        let same = segment("runs/a/shards/p0/x/part-00000.parquet", "a", "c");
        let gone = segment("runs/a/shards/p1/x/part-00000.parquet", "d", "f");
        let commit = commit(4, vec![same.clone()]);
        let bytes = version_bytes(
            &commit,
            &[same, gone],
            &TableChange::default(),
            &BTreeMap::new(),
        );
        let files = parse("_delta_log/4.json", 4, &bytes).unwrap().files;
        let actions: Vec<(bool, &str)> = files.iter().map(|f| (f.add, f.path.as_str())).collect();
        assert_eq!(
            actions,
            [
                (false, "runs/a/shards/p1/x/part-00000.parquet"),
                (true, "runs/a/shards/p0/x/part-00000.parquet")
            ]
        );
    }

    #[test]
    fn the_protocol_is_the_lowest_that_holds_the_schema() {
        let c = commit(1, Vec::new());
        let plain = Schema::new(vec![
            Field::new("account", ArrowType::Utf8, false),
            Field::new(
                "at",
                ArrowType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                true,
            ),
        ]);
        let (metadata, protocol) = table_of("id", &c, &plain, 0).unwrap();
        assert_eq!(
            protocol,
            json!({"minReaderVersion": 1, "minWriterVersion": 1})
        );
        let schema: Value =
            serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
        assert_eq!(schema["fields"][1]["type"], "timestamp");
        assert_eq!(metadata["configuration"][KEY_CONF], "[\"account\"]");

        let ntz = Schema::new(vec![Field::new(
            "at",
            ArrowType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]);
        let (_, protocol) = table_of("id", &c, &ntz, 0).unwrap();
        assert_eq!(protocol["minReaderVersion"], 3);
        assert_eq!(protocol["readerFeatures"], json!(["timestampNtz"]));
    }

    #[test]
    fn a_column_delta_cannot_hold_is_named() {
        let c = commit(1, Vec::new());
        let schema = Schema::new(vec![Field::new(
            "span",
            ArrowType::Duration(TimeUnit::Second),
            true,
        )]);
        let err = table_of("id", &c, &schema, 0).unwrap_err().to_string();
        assert!(err.contains("column `span`"), "{err}");
    }

    #[test]
    fn foreign_tables_and_newer_protocols_are_refused_naming_the_file() {
        let path = "_delta_log/00000000000000000000.json";
        let spark = concat!(
            r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#,
            "\n",
            r#"{"metaData":{"id":"x","format":{"provider":"parquet","options":{}},"schemaString":"{}","partitionColumns":[],"configuration":{},"createdTime":0}}"#
        );
        let err = parse(path, 0, spark.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains(path) && err.contains("did not create"),
            "{err}"
        );

        let newer = concat!(
            r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}"#,
            "\n",
            r#"{"metaData":{"id":"x","format":{"provider":"parquet","options":{}},"schemaString":"{}","partitionColumns":[],"configuration":{"replayfleet.projection":"p"},"createdTime":0}}"#
        );
        let err = parse(path, 0, newer.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("deletionVectors") && err.contains(path),
            "{err}"
        );

        let foreign_write = r#"{"commitInfo":{"operation":"WRITE"}}"#;
        let err = parse(
            "_delta_log/00000000000000000003.json",
            3,
            foreign_write.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("another writer"), "{err}");
    }
}
