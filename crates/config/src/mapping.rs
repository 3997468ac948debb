//! How an archive becomes the canonical event envelope (docs/SOURCES.md).
//!
//! `[source.columns]` has one entry per envelope column. An entry is a column name (the
//! common case, and the default: the envelope's own name) or a table naming exactly one
//! origin:
//!
//! | entry | the value is |
//! |---|---|
//! | `"offset"`, `{ column = "metadata.offset" }` | a column, or a dotted path into a struct (and into a map or a list of `{key, value}` structs, such as Kafka headers) |
//! | `{ key = "partition" }` | a capture of `source.key_pattern` from the segment's path |
//! | `{ value = "OrderPlaced" }` | a constant |
//! | `{ footer = "parquet.avro.schema", pointer = "/name" }` | a key of the Parquet footer's key-value metadata, optionally a JSON pointer into it |
//! | `{ template = "{topic}-{partition}-{seq}" }` | text built from captures, other envelope columns and columns |
//! | `{ remaining = true }` | (payload) every column no other entry reads, as one object |
//!
//! with modifiers: `map` (a lookup table for a capture or footer value: an event type
//! per topic), `plus_row` (seq: the value plus the row's position in its segment, for a
//! start offset in a file name), `unit` (occurred_at: epoch unit of an integer column),
//! `exclude` (payload: fields left out) and `keep` (remaining: columns kept in the payload
//! although another entry reads them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pattern::{KeyPatterns, SegmentGlob};

/// The canonical envelope columns, in their canonical order.
pub const ENVELOPE_COLUMNS: [&str; 9] = [
    "event_id",
    "stream_id",
    "partition",
    "seq",
    "event_type",
    "schema_version",
    "occurred_at",
    "payload",
    "metadata",
];

/// What an envelope column holds, as far as its mapping is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// `event_id`, `stream_id`, `event_type`: text.
    Text,
    /// `partition`, `seq`, `schema_version`: integers.
    Integer,
    /// `occurred_at`.
    Timestamp,
    /// `payload`, `metadata`: JSON objects.
    Json,
}

impl EnvelopeKind {
    /// The kind of an envelope column (`None` for a name that is not one).
    pub fn of(envelope_column: &str) -> Option<EnvelopeKind> {
        Some(match envelope_column {
            "event_id" | "stream_id" | "event_type" => EnvelopeKind::Text,
            "partition" | "seq" | "schema_version" => EnvelopeKind::Integer,
            "occurred_at" => EnvelopeKind::Timestamp,
            "payload" | "metadata" => EnvelopeKind::Json,
            _ => return None,
        })
    }
}

/// A constant of `{ value = ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Constant {
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

impl fmt::Display for Constant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constant::Int(i) => write!(f, "{i}"),
            Constant::Str(s) => f.write_str(s),
        }
    }
}

/// Where an entry's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A column, or a dotted path into one (`metadata.offset`, `headers.event_type`).
    Column(String),
    /// A capture of `source.key_pattern`.
    Key(String),
    /// A constant.
    Value(Constant),
    /// A key of the Parquet footer's key-value metadata.
    Footer {
        /// The metadata key (`parquet.avro.schema`).
        key: String,
        /// A JSON pointer into its value, read as JSON (`/name`, `/connect.version`).
        pointer: Option<String>,
    },
    /// Text with `{placeholders}`: captures, envelope columns, columns.
    Template(String),
    /// Every column no other entry reads (payload only).
    Remaining,
}

/// The epoch unit of an integer `occurred_at` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl EpochUnit {
    /// Microseconds per unit, or `None` for nanoseconds (divided instead).
    pub fn micros_per_unit(self) -> Option<i64> {
        match self {
            EpochUnit::S => Some(1_000_000),
            EpochUnit::Ms => Some(1_000),
            EpochUnit::Us => Some(1),
            EpochUnit::Ns => None,
        }
    }
}

/// One entry of `[source.columns]`: where an envelope column's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The origin.
    pub origin: Origin,
    /// `map`: a lookup table applied to a capture or footer value.
    pub map: BTreeMap<String, String>,
    /// `plus_row`: add the row's position in its segment (from 0).
    pub plus_row: bool,
    /// `unit`: the epoch unit of an integer timestamp column.
    pub unit: Option<EpochUnit>,
    /// `exclude`: payload fields left out.
    pub exclude: Vec<String>,
    /// `keep`: columns another entry reads that the remaining-columns payload keeps.
    pub keep: Vec<String>,
}

impl Entry {
    /// A plain column entry.
    pub fn column(name: impl Into<String>) -> Entry {
        Entry::of(Origin::Column(name.into()))
    }

    /// An entry of `origin` without modifiers.
    pub fn of(origin: Origin) -> Entry {
        Entry {
            origin,
            map: BTreeMap::new(),
            plus_row: false,
            unit: None,
            exclude: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// The column, when the entry is a plain top-level column name (no path, no
    /// modifier): what Parquet statistics can answer for.
    pub fn plain_column(&self) -> Option<&str> {
        match &self.origin {
            Origin::Column(c) if self.is_plain() => Some(c),
            _ => None,
        }
    }

    fn is_plain(&self) -> bool {
        self.map.is_empty()
            && !self.plus_row
            && self.unit.is_none()
            && self.exclude.is_empty()
            && self.keep.is_empty()
    }

    /// The entry as written in `[source.columns]` (TOML inline table syntax), for messages.
    pub fn describe(&self) -> String {
        match (&self.origin, self.is_plain()) {
            (Origin::Column(c), true) => format!("\"{c}\""),
            _ => {
                let raw = RawEntry::from(self);
                // A toml Value prints a table inline: `{ key = "p", plus_row = true }`.
                toml::Value::try_from(&raw)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| format!("{:?}", self.origin))
            }
        }
    }

    /// The placeholders of a template entry, in order.
    pub fn template_fields(&self) -> Vec<&str> {
        match &self.origin {
            Origin::Template(t) => template_parts(t)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| match p {
                    TemplatePart::Field(f) => Some(f),
                    TemplatePart::Literal(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl From<&str> for Entry {
    fn from(column: &str) -> Self {
        Entry::column(column)
    }
}

impl From<String> for Entry {
    fn from(column: String) -> Self {
        Entry::column(column)
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart<'a> {
    /// Text as written (`{{` and `}}` already unescaped).
    Literal(String),
    /// A `{placeholder}`.
    Field(&'a str),
}

/// Splits a template into literal text and `{placeholders}`.
pub fn template_parts(template: &str) -> Result<Vec<TemplatePart<'_>>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            literal.push(c);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest
                .find('}')
                .ok_or_else(|| format!("template `{template}`: a `{{` is never closed"))?;
            let field = rest[1..end].trim();
            if field.is_empty() {
                return Err(format!("template `{template}`: an empty `{{}}`"));
            }
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Field(field));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(format!(
                "template `{template}`: unmatched `}}` (write `}}}}` for a literal one)"
            ));
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
        return Err(format!(
            "template `{template}` has no `{{placeholder}}`: use {{ value = ... }} for a constant"
        ));
    }
    Ok(parts)
}

/// The table form of an entry, as written.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Constant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    footer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remaining: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    map: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    plus_row: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<EpochUnit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keep: Vec<String>,
}

impl From<&Entry> for RawEntry {
    fn from(e: &Entry) -> Self {
        let mut raw = RawEntry {
            map: e.map.clone(),
            plus_row: e.plus_row,
            unit: e.unit,
            exclude: e.exclude.clone(),
            keep: e.keep.clone(),
            ..RawEntry::default()
        };
        match &e.origin {
            Origin::Column(c) => raw.column = Some(c.clone()),
            Origin::Key(k) => raw.key = Some(k.clone()),
            Origin::Value(v) => raw.value = Some(v.clone()),
            Origin::Footer { key, pointer } => {
                raw.footer = Some(key.clone());
                raw.pointer = pointer.clone();
            }
            Origin::Template(t) => raw.template = Some(t.clone()),
            Origin::Remaining => raw.remaining = Some(true),
        }
        raw
    }
}

impl TryFrom<RawEntry> for Entry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Entry, String> {
        let mut origins = Vec::new();
        if let Some(c) = raw.column {
            origins.push(Origin::Column(c));
        }
        if let Some(k) = raw.key {
            origins.push(Origin::Key(k));
        }
        if let Some(v) = raw.value {
            origins.push(Origin::Value(v));
        }
        if let Some(key) = raw.footer {
            origins.push(Origin::Footer {
                key,
                pointer: raw.pointer.clone(),
            });
        } else if raw.pointer.is_some() {
            return Err("`pointer` goes with `footer`".into());
        }
        if let Some(t) = raw.template {
            origins.push(Origin::Template(t));
        }
        match raw.remaining {
            Some(true) => origins.push(Origin::Remaining),
            Some(false) => return Err("`remaining` is either true or absent".into()),
            None => {}
        }
        if origins.len() != 1 {
            return Err(format!(
                "an entry takes exactly one of `column`, `key`, `value`, `footer`, `template` or `remaining` (found {})",
                origins.len()
            ));
        }
        let origin = origins.pop().expect("one origin");
        if let Origin::Footer {
            pointer: Some(p), ..
        } = &origin
            && !p.is_empty()
            && !p.starts_with('/')
        {
            return Err(format!(
                "`pointer` is a JSON pointer and starts with `/`: `/{p}`?"
            ));
        }
        if let Origin::Template(t) = &origin {
            template_parts(t)?;
        }
        if !raw.map.is_empty() && !matches!(origin, Origin::Key(_) | Origin::Footer { .. }) {
            return Err("`map` applies to a `key` or `footer` value".into());
        }
        if raw.plus_row
            && !matches!(
                origin,
                Origin::Key(_) | Origin::Value(_) | Origin::Footer { .. }
            )
        {
            return Err(
                "`plus_row` adds the row's position to a `key`, `value` or `footer` value".into(),
            );
        }
        if raw.unit.is_some() && !matches!(origin, Origin::Column(_)) {
            return Err("`unit` applies to an integer `column`".into());
        }
        if !raw.exclude.is_empty() && !matches!(origin, Origin::Column(_) | Origin::Remaining) {
            return Err("`exclude` applies to a `column` or `remaining` payload".into());
        }
        if !raw.keep.is_empty() && !matches!(origin, Origin::Remaining) {
            return Err("`keep` applies to `remaining`".into());
        }
        Ok(Entry {
            origin,
            map: raw.map,
            plus_row: raw.plus_row,
            unit: raw.unit,
            exclude: raw.exclude,
            keep: raw.keep,
        })
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.origin, self.is_plain()) {
            (Origin::Column(c), true) => s.serialize_str(c),
            _ => RawEntry::from(self).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name or a table such as { key = \"partition\" }")
            }

            fn visit_str<E: serde::de::Error>(self, column: &str) -> Result<Entry, E> {
                Ok(Entry::column(column))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                let raw = RawEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Entry::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where each envelope column comes from (`[source.columns]`).
///
/// Every entry defaults to the column of the envelope's own name. `metadata` is optional
/// in archives: when its column is absent, events carry no metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnMapping {
    /// The unique event id (the idempotency key).
    pub event_id: Entry,
    /// The entity/aggregate id.
    pub stream_id: Entry,
    /// The archive partition (any integer type, or digits).
    pub partition: Entry,
    /// The sequence, increasing within a partition (any integer type, or digits).
    pub seq: Entry,
    /// The event type name.
    pub event_type: Entry,
    /// The payload contract version (any integer type, or digits).
    pub schema_version: Entry,
    /// The event time (any timestamp unit, INT96, RFC 3339 text, or epoch integers with `unit`).
    pub occurred_at: Entry,
    /// The payload: JSON text, a Struct, or the remaining columns.
    pub payload: Entry,
    /// Metadata: JSON text, a Struct, a map or key/value list; optional in the archive.
    pub metadata: Entry,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            event_id: Entry::column("event_id"),
            stream_id: Entry::column("stream_id"),
            partition: Entry::column("partition"),
            seq: Entry::column("seq"),
            event_type: Entry::column("event_type"),
            schema_version: Entry::column("schema_version"),
            occurred_at: Entry::column("occurred_at"),
            payload: Entry::column("payload"),
            metadata: Entry::column("metadata"),
        }
    }
}

impl ColumnMapping {
    /// The entry of an envelope column, by envelope name.
    pub fn entry(&self, envelope_column: &str) -> Option<&Entry> {
        Some(match envelope_column {
            "event_id" => &self.event_id,
            "stream_id" => &self.stream_id,
            "partition" => &self.partition,
            "seq" => &self.seq,
            "event_type" => &self.event_type,
            "schema_version" => &self.schema_version,
            "occurred_at" => &self.occurred_at,
            "payload" => &self.payload,
            "metadata" => &self.metadata,
            _ => return None,
        })
    }

    /// `(envelope column, entry)` pairs in envelope order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &Entry)> {
        ENVELOPE_COLUMNS.iter().map(move |e| {
            (
                *e,
                self.entry(e).expect("every envelope column has an entry"),
            )
        })
    }
}

/// How to read an archive: which objects are segments, what their keys say, and where
/// every envelope column comes from. Part of every plan's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMapping {
    /// `[source.columns]`.
    #[serde(default)]
    pub columns: ColumnMapping,
    /// `source.key_pattern`: what segment paths say (captures for `{ key = ... }`).
    #[serde(default, skip_serializing_if = "KeyPatterns::is_empty")]
    pub key_pattern: KeyPatterns,
    /// `source.segments`: which objects are segments (default `*.parquet`).
    #[serde(default)]
    pub segments: SegmentGlob,
}

impl SourceMapping {
    /// The mapping of an archive in the canonical envelope (every column by its own name).
    pub fn canonical() -> Self {
        Self::default()
    }

    /// A mapping with these columns and no key pattern.
    pub fn with_columns(columns: ColumnMapping) -> Self {
        SourceMapping {
            columns,
            ..Self::default()
        }
    }

    /// Checks the entries against each other and the key pattern; the error is the
    /// offending key (`source.columns.partition`) and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err =
            |envelope: &str, message: String| Err((format!("source.columns.{envelope}"), message));
        for (envelope, entry) in self.columns.entries() {
            let kind = EnvelopeKind::of(envelope).expect("envelope column");
            match (&entry.origin, kind) {
                (Origin::Column(c), _) if c.trim().is_empty() => {
                    return err(envelope, "must name a column".into());
                }
                (Origin::Remaining, EnvelopeKind::Json) if envelope == "payload" => {}
                (Origin::Remaining, _) => {
                    return err(
                        envelope,
                        "`remaining` builds the payload; it maps nothing else".into(),
                    );
                }
                (Origin::Template(_), EnvelopeKind::Text) => {}
                (Origin::Template(_), _) => {
                    return err(
                        envelope,
                        "a `template` makes text: it maps event_id, stream_id or event_type".into(),
                    );
                }
                (
                    Origin::Key(_) | Origin::Value(_) | Origin::Footer { .. },
                    EnvelopeKind::Timestamp | EnvelopeKind::Json,
                ) => {
                    return err(
                        envelope,
                        format!("{envelope} varies per event: map it from a column"),
                    );
                }
                (Origin::Value(_), _) if envelope == "event_id" => {
                    return err(
                        envelope,
                        "a constant event id would make every event a duplicate of the first: use a column or a template".into(),
                    );
                }
                (Origin::Value(Constant::Str(s)), EnvelopeKind::Integer) => {
                    return err(envelope, format!("`{s}` is not an integer"));
                }
                _ => {}
            }
            if entry.plus_row && envelope != "seq" {
                return err(
                    envelope,
                    "`plus_row` numbers rows: it belongs to seq".into(),
                );
            }
            if entry.unit.is_some() && envelope != "occurred_at" {
                return err(envelope, "`unit` belongs to occurred_at".into());
            }
            if !entry.exclude.is_empty() && envelope != "payload" {
                return err(envelope, "`exclude` belongs to payload".into());
            }
            if let Origin::Key(capture) = &entry.origin {
                if self.key_pattern.is_empty() {
                    return err(
                        envelope,
                        format!(
                            "`{{ key = \"{capture}\" }}` needs source.key_pattern to capture `{capture}`"
                        ),
                    );
                }
                self.check_capture(envelope, capture)?;
            }
            if let Origin::Template(_) = &entry.origin {
                for field in entry.template_fields() {
                    if let Some(other) = self.columns.entry(field) {
                        let other_kind = EnvelopeKind::of(field).expect("envelope column");
                        if matches!(other.origin, Origin::Template(_)) {
                            return err(
                                envelope,
                                format!("the template uses `{{{field}}}`, itself a template"),
                            );
                        }
                        if !matches!(other_kind, EnvelopeKind::Text | EnvelopeKind::Integer) {
                            return err(
                                envelope,
                                format!(
                                    "the template uses `{{{field}}}`: only text and integer envelope columns fit in a template"
                                ),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_capture(&self, envelope: &str, capture: &str) -> Result<(), (String, String)> {
        for pattern in self.key_pattern.iter() {
            if !pattern.capture_names().iter().any(|c| c == capture) {
                return Err((
                    format!("source.columns.{envelope}"),
                    format!(
                        "source.key_pattern `{pattern}` has no capture `{capture}` (it captures: {})",
                        if pattern.capture_names().is_empty() {
                            "nothing".to_owned()
                        } else {
                            pattern.capture_names().join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The key pattern's captures of a segment path: empty without a pattern, `None` when
    /// there is one and the path does not match it.
    pub fn captures(&self, segment: &str) -> Option<Vec<(String, String)>> {
        if self.key_pattern.is_empty() {
            return Some(Vec::new());
        }
        self.key_pattern.captures(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_maps_every_envelope_column_to_itself() {
        let m = ColumnMapping::default();
        for (envelope, entry) in m.entries() {
            assert_eq!(entry.plain_column(), Some(envelope));
        }
    }

    #[test]
    fn partial_mapping_keeps_defaults_for_the_rest() {
        let m: ColumnMapping = toml::from_str("event_id = \"key\"\nseq = \"offset\"").unwrap();
        assert_eq!(m.event_id, Entry::column("key"));
        assert_eq!(m.seq.plain_column(), Some("offset"));
        assert_eq!(m.stream_id.plain_column(), Some("stream_id"));
        assert!(toml::from_str::<ColumnMapping>("nope = \"x\"").is_err());
    }

    #[test]
    fn tables_name_one_origin_and_round_trip() {
        let text = r#"
event_id = { template = "{topic}-{partition}-{seq}" }
partition = { key = "partition" }
seq = { key = "start_offset", plus_row = true }
event_type = { footer = "parquet.avro.schema", pointer = "/name" }
schema_version = { value = 2 }
occurred_at = { column = "ts", unit = "ms" }
payload = { remaining = true, exclude = ["x"], keep = ["account_id"] }
metadata = "headers"
"#;
        let m: ColumnMapping = toml::from_str(text).unwrap();
        assert_eq!(m.partition.origin, Origin::Key("partition".into()));
        assert!(m.seq.plus_row);
        assert_eq!(m.schema_version.origin, Origin::Value(Constant::Int(2)));
        assert_eq!(m.occurred_at.unit, Some(EpochUnit::Ms));
        assert_eq!(m.payload.origin, Origin::Remaining);
        assert_eq!(m.event_id.template_fields(), ["topic", "partition", "seq"]);
        // JSON (plan.json) round trip: plain columns stay strings.
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["metadata"], "headers");
        assert_eq!(json["seq"]["plus_row"], true);
        let back: ColumnMapping = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            m.seq.describe(),
            "{ key = \"start_offset\", plus_row = true }"
        );
    }

    #[test]
    fn bad_tables_say_why() {
        for (text, needle) in [
            ("seq = { key = \"a\", column = \"b\" }", "exactly one"),
            ("seq = {}", "exactly one"),
            ("seq = { colum = \"b\" }", "colum"),
            (
                "seq = { column = \"b\", map = { a = \"b\" } }",
                "`map` applies",
            ),
            ("seq = { column = \"b\", plus_row = true }", "plus_row"),
            ("occurred_at = { column = \"b\", unit = \"days\" }", "days"),
            ("event_type = { template = \"x\" }", "no `{placeholder}`"),
            (
                "event_type = { footer = \"k\", pointer = \"name\" }",
                "/name",
            ),
            ("payload = { remaining = false }", "true or absent"),
            ("payload = { value = 1, keep = [\"a\"] }", "`keep` applies"),
        ] {
            let err = toml::from_str::<ColumnMapping>(text)
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"))
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    fn validate(columns: &str, pattern: Option<&str>) -> Result<(), (String, String)> {
        let mut m = SourceMapping::with_columns(toml::from_str(columns).unwrap());
        if let Some(p) = pattern {
            m.key_pattern = KeyPatterns(vec![crate::KeyPattern::parse(p).unwrap()]);
        }
        m.validate()
    }

    #[test]
    fn entries_are_checked_against_their_envelope_column() {
        for (text, pattern, key, needle) in [
            (
                "stream_id = { remaining = true }",
                None,
                "stream_id",
                "payload",
            ),
            ("seq = { template = \"{a}\" }", None, "seq", "text"),
            ("occurred_at = { value = 1 }", None, "occurred_at", "varies"),
            (
                "event_id = { value = \"x\" }",
                None,
                "event_id",
                "duplicate",
            ),
            (
                "partition = { value = \"x\" }",
                None,
                "partition",
                "integer",
            ),
            (
                "partition = { key = \"p\" }",
                None,
                "partition",
                "key_pattern",
            ),
            (
                "partition = { key = \"p\" }",
                Some("{q}.parquet"),
                "partition",
                "no capture `p`",
            ),
            (
                "event_id = { template = \"{stream_id}\" }\nstream_id = { template = \"{x}\" }",
                None,
                "event_id",
                "itself a template",
            ),
            (
                "event_id = { template = \"{payload}\" }",
                None,
                "event_id",
                "only text and integer",
            ),
            (
                "partition = { value = 1, plus_row = true }",
                None,
                "partition",
                "seq",
            ),
        ] {
            let (k, message) = validate(text, pattern).unwrap_err();
            assert_eq!(k, format!("source.columns.{key}"), "{text}");
            assert!(message.contains(needle), "{text}: {message}");
        }
        validate(
            "partition = { key = \"p\" }\nevent_id = { template = \"{p}-{seq}\" }",
            Some("{p:int}.parquet"),
        )
        .unwrap();
    }
}
