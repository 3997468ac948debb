//! The canonical envelope schema and how one segment becomes it (docs/SOURCES.md, "The
//! canonical envelope" and "The mapping, key by key").
//!
//! A [`Plan`] is made per segment from its path, its footer and the [`SourceMapping`]:
//! every entry of `[source.columns]` is resolved there, once, so a mapping that names a
//! missing column, a path the key pattern does not match or an absent footer key fails
//! before any row is read, naming the segment and the entry. Captures, footer values
//! and constants become per-segment constants; columns and dotted paths become reads.
//!
//! Conversions (docs/SOURCES.md, "Types accepted, per envelope column"):
//! - integers of any width, signed or not, plain or dictionary-encoded, and text holding
//!   integers are checked into Int32/Int64: a value that does not fit or parse is an error
//!   naming the segment, the column and the row;
//! - strings of any kind (Utf8, LargeUtf8, Utf8View, dictionaries of those), UTF-8 binary
//!   (Kafka header values) and integers become Utf8;
//! - timestamps of any unit become microseconds in UTC; no time zone means UTC;
//!   nanoseconds (and Spark's INT96, which the Parquet reader yields as nanoseconds)
//!   are floored to the microsecond; integers with a `unit` count from the epoch; text is
//!   parsed as RFC 3339 (no zone: UTC);
//! - `payload` and `metadata` are JSON object text: a string column as is, a Struct column
//!   (or the remaining columns) encoded row by row (a null field is an absent key, keys in
//!   field order), a map or key/value list as an object of text values;
//! - `metadata` may be absent from the archive: it is then null for every event.
//!
//! Every envelope field is nullable: nulls are carried through, never rejected here,
//! because what a null `event_id` or `seq` means is the replay's anomaly policy.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, LazyLock},
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
        UInt32Array, new_null_array,
    },
    buffer::NullBuffer,
    compute::take,
    datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit},
    error::ArrowError,
    record_batch::RecordBatchOptions,
};
use parquet::file::metadata::KeyValue;
use replayfleet_config::{
    ENVELOPE_COLUMNS, Entry, EpochUnit, Origin, SourceMapping, TemplatePart, template_parts,
};

use crate::{
    Error, Result,
    convert::{
        ConvertError, KeyValues, is_binary, is_string, key_value_fields, key_values_to_json,
        row_numbers, to_int, to_micros, to_utf8, unpacked,
    },
    json::struct_to_json,
};

static ENVELOPE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        ENVELOPE_COLUMNS
            .iter()
            .map(|name| Field::new(*name, kind_of(name).data_type(), true))
            .collect::<Vec<_>>(),
    ))
});

/// The canonical envelope every segment is read as: `event_id` Utf8, `stream_id` Utf8,
/// `partition` Int32, `seq` Int64, `event_type` Utf8, `schema_version` Int32,
/// `occurred_at` Timestamp(µs, "UTC"), `payload` Utf8 (JSON object text), `metadata` Utf8.
///
/// Every field is nullable: nulls in the archive are carried through for the replay's
/// anomaly policy to judge.
pub fn envelope_schema() -> SchemaRef {
    Arc::clone(&ENVELOPE_SCHEMA)
}

/// What an envelope column accepts and becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int32,
    Int64,
    Timestamp,
    Json,
}

fn kind_of(envelope_column: &str) -> Kind {
    match envelope_column {
        "partition" | "schema_version" => Kind::Int32,
        "seq" => Kind::Int64,
        "occurred_at" => Kind::Timestamp,
        "payload" | "metadata" => Kind::Json,
        _ => Kind::Str,
    }
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str | Kind::Json => "Utf8",
            Kind::Int32 => "Int32",
            Kind::Int64 => "Int64",
            Kind::Timestamp => "Timestamp(µs, UTC)",
        }
    }

    fn expected(self, unit: Option<EpochUnit>) -> &'static str {
        match self {
            Kind::Str => {
                "a string type (Utf8, LargeUtf8, Utf8View, a dictionary of strings), UTF-8 binary, or an integer"
            }
            Kind::Int32 | Kind::Int64 => {
                "an integer type (Int8..Int64, UInt8..UInt64, a dictionary of integers) or text holding integers"
            }
            Kind::Timestamp if unit.is_some() => "an integer (with `unit`, counted from the epoch)",
            Kind::Timestamp => {
                "a timestamp (any unit, with or without time zone, INT96), RFC 3339 text, or an integer with `unit = \"ms\"` (or s, us, ns)"
            }
            Kind::Json => {
                "a string type holding JSON, a Struct, or a map or list of {key, value} structs"
            }
        }
    }

    fn accepts(self, dt: &DataType, unit: Option<EpochUnit>) -> bool {
        let value = unpacked(dt);
        let text = is_string(value) || is_binary(value);
        match self {
            Kind::Str => text || value.is_integer(),
            Kind::Int32 | Kind::Int64 => text || value.is_integer(),
            Kind::Timestamp if unit.is_some() => value.is_integer(),
            Kind::Timestamp => matches!(value, DataType::Timestamp(..)) || text,
            Kind::Json => {
                text || matches!(value, DataType::Struct(_)) || key_value_fields(value).is_some()
            }
        }
    }
}

/// One step of a dotted path below its top-level column.
#[derive(Debug, Clone)]
enum Step {
    /// A struct's field.
    Field(String),
    /// The value of a map's (or key/value list's) entry with this key.
    Lookup(String),
}

/// A column, or a dotted path into one, resolved against a segment's schema.
#[derive(Debug, Clone)]
struct ColumnPath {
    /// As written in the entry (for messages).
    written: String,
    /// The top-level column's name and index.
    root: String,
    root_index: usize,
    steps: Vec<Step>,
    /// The type at the end of the path.
    data_type: DataType,
}

impl ColumnPath {
    /// Resolves `written` against `schema`: the top-level column of that exact name, or
    /// else a top-level column followed by struct fields and at most one key lookup in a
    /// map or key/value list (the rest of the path being the key: keys may hold dots).
    fn resolve(schema: &Schema, written: &str) -> Option<ColumnPath> {
        if let Ok(index) = schema.index_of(written) {
            return Some(ColumnPath {
                written: written.to_owned(),
                root: written.to_owned(),
                root_index: index,
                steps: Vec::new(),
                data_type: schema.field(index).data_type().clone(),
            });
        }
        let parts: Vec<&str> = written.split('.').collect();
        (1..parts.len()).find_map(|split| {
            let root = parts[..split].join(".");
            let index = schema.index_of(&root).ok()?;
            let (steps, data_type) = walk(schema.field(index).data_type(), &parts[split..])?;
            Some(ColumnPath {
                written: written.to_owned(),
                root,
                root_index: index,
                steps,
                data_type,
            })
        })
    }

    /// The values at the end of the path, one per row of `batch` (which holds the root).
    fn read(&self, batch: &RecordBatch) -> std::result::Result<ArrayRef, ConvertError> {
        let mut array = batch
            .column_by_name(&self.root)
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {} not read", self.root)))?;
        for step in &self.steps {
            array = match step {
                Step::Field(name) => {
                    let parent = array.as_struct();
                    let child = parent.column_by_name(name).cloned().ok_or_else(|| {
                        ArrowError::SchemaError(format!("field {name} not in {}", self.written))
                    })?;
                    // A null struct's fields are null, whatever its child arrays hold.
                    with_nulls(child, parent.nulls())?
                }
                Step::Lookup(key) => {
                    let kv = KeyValues::of(&array)?;
                    let indices: UInt32Array = (0..array.len())
                        .map(|row| kv.find(row, key).map(|i| i as u32))
                        .collect();
                    take(kv.values.as_ref(), &indices, None)?
                }
            };
        }
        Ok(array)
    }
}

fn walk(dt: &DataType, rest: &[&str]) -> Option<(Vec<Step>, DataType)> {
    if rest.is_empty() {
        return Some((Vec::new(), dt.clone()));
    }
    match dt {
        DataType::Struct(fields) => (1..=rest.len()).rev().find_map(|take| {
            let name = rest[..take].join(".");
            let field = fields.iter().find(|f| *f.name() == name)?;
            let (mut steps, end) = walk(field.data_type(), &rest[take..])?;
            steps.insert(0, Step::Field(name));
            Some((steps, end))
        }),
        _ => {
            let (fields, _, value) = key_value_fields(dt)?;
            Some((
                vec![Step::Lookup(rest.join("."))],
                fields[value].data_type().clone(),
            ))
        }
    }
}

fn with_nulls(
    array: ArrayRef,
    parent: Option<&NullBuffer>,
) -> std::result::Result<ArrayRef, ArrowError> {
    let Some(parent) = parent else {
        return Ok(array);
    };
    let nulls = NullBuffer::union(Some(parent), array.nulls());
    let data = array.to_data().into_builder().nulls(nulls).build()?;
    Ok(arrow::array::make_array(data))
}

/// A value fixed for the whole segment.
#[derive(Debug, Clone)]
enum Scalar {
    Int(i64),
    Str(String),
}

/// A template's piece, resolved.
#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Envelope(&'static str),
    Column(ColumnPath),
}

/// Where one envelope column's values come from in this segment.
#[derive(Debug, Clone)]
enum Feed {
    Column {
        path: ColumnPath,
        unit: Option<EpochUnit>,
        exclude: Vec<String>,
    },
    /// An optional column (metadata) the segment does not have: nulls.
    Absent,
    Constant(Scalar),
    /// `base + row position in the segment`.
    RowNumber(i64),
    Template(Vec<Piece>),
    /// These top-level columns, as one object per row.
    Remaining(Vec<String>),
}

/// One envelope column of a [`Plan`].
#[derive(Debug, Clone)]
struct Source {
    envelope: &'static str,
    kind: Kind,
    feed: Feed,
}

/// How one segment's columns become (some of) the envelope's, validated against its
/// schema, path and footer.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    segment: String,
    /// Every source the wanted columns need, templates last (they read the others).
    sources: Vec<Source>,
    /// The wanted envelope columns, in envelope order.
    output: Vec<&'static str>,
    roots: Vec<usize>,
    schema: SchemaRef,
}

/// The key of an entry, with the entry as written, for messages.
fn entry_name(envelope: &str, entry: &Entry) -> String {
    format!("source.columns.{envelope} = {}", entry.describe())
}

/// What an entry of the mapping is resolved against: the segment's path (and the key
/// pattern's captures of it), its schema and its footer.
struct Resolving<'a> {
    segment: &'a str,
    file_schema: &'a Schema,
    footer: Option<&'a [KeyValue]>,
    mapping: &'a SourceMapping,
    captures: &'a BTreeMap<String, String>,
}

impl Resolving<'_> {
    fn mapping_error(&self, entry: String, reason: String) -> Error {
        Error::Mapping {
            segment: self.segment.to_owned(),
            entry,
            reason,
        }
    }

    /// Where envelope column `envelope` comes from, by its `entry`, in this segment.
    fn feed(&self, envelope: &'static str, entry: &Entry) -> Result<Feed> {
        let (segment, file_schema, footer, mapping, captures) = (
            self.segment,
            self.file_schema,
            self.footer,
            self.mapping,
            self.captures,
        );
        let mapping_error = |entry: String, reason: String| self.mapping_error(entry, reason);
        let kind = kind_of(envelope);
        let name = || entry_name(envelope, entry);
        Ok(match &entry.origin {
            Origin::Column(written) => match ColumnPath::resolve(file_schema, written) {
                None if envelope == "metadata" => Feed::Absent,
                None => {
                    return Err(Error::MissingColumn {
                        segment: segment.to_owned(),
                        column: written.clone(),
                        envelope_column: envelope,
                        available: file_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect(),
                    });
                }
                Some(path) => {
                    if !kind.accepts(&path.data_type, entry.unit) {
                        return Err(Error::WrongType {
                            segment: segment.to_owned(),
                            column: written.clone(),
                            envelope_column: envelope,
                            expected: kind.expected(entry.unit),
                            found: path.data_type.to_string(),
                        });
                    }
                    if !entry.exclude.is_empty()
                        && !matches!(unpacked(&path.data_type), DataType::Struct(_))
                    {
                        return Err(mapping_error(
                            name(),
                            format!(
                                "`exclude` leaves fields out of a Struct, and `{written}` is {}",
                                path.data_type
                            ),
                        ));
                    }
                    Feed::Column {
                        path,
                        unit: entry.unit,
                        exclude: entry.exclude.clone(),
                    }
                }
            },
            Origin::Key(capture) => {
                let text = captures.get(capture).ok_or_else(|| {
                    mapping_error(
                        name(),
                        format!(
                            "source.key_pattern {} captures no `{capture}`",
                            mapping.key_pattern.describe()
                        ),
                    )
                })?;
                let text = apply_map(entry, text).map_err(|r| mapping_error(name(), r))?;
                constant_feed(entry, kind, &text).map_err(|r| mapping_error(name(), r))?
            }
            Origin::Value(constant) => {
                let text = constant.to_string();
                constant_feed(entry, kind, &text).map_err(|r| mapping_error(name(), r))?
            }
            Origin::Footer { key, pointer } => {
                let text = footer_value(footer, key, pointer.as_deref())
                    .map_err(|r| mapping_error(name(), r))?;
                let text = apply_map(entry, &text).map_err(|r| mapping_error(name(), r))?;
                constant_feed(entry, kind, &text).map_err(|r| mapping_error(name(), r))?
            }
            Origin::Template(template) => {
                let parts = template_parts(template).map_err(|r| mapping_error(name(), r))?;
                let mut pieces = Vec::with_capacity(parts.len());
                for part in parts {
                    pieces.push(match part {
                    TemplatePart::Literal(text) => Piece::Literal(text),
                    TemplatePart::Field(field) => {
                        if let Some(e) = ENVELOPE_COLUMNS.iter().find(|e| **e == field) {
                            Piece::Envelope(e)
                        } else if let Some(value) = captures.get(field) {
                            Piece::Literal(value.clone())
                        } else {
                            let path = ColumnPath::resolve(file_schema, field)
                                .ok_or_else(|| {
                                    mapping_error(
                                        name(),
                                        format!(
                                            "`{{{field}}}` is neither an envelope column, a capture of source.key_pattern nor a column of the segment"
                                        ),
                                    )
                                })?;
                            if !Kind::Str.accepts(&path.data_type, None) {
                                return Err(mapping_error(
                                    name(),
                                    format!(
                                        "`{{{field}}}` is {}, which has no text form",
                                        path.data_type
                                    ),
                                ));
                            }
                            Piece::Column(path)
                        }
                    }
                });
                }
                Feed::Template(pieces)
            }
            // Filled in below, once every other entry's columns are known.
            Origin::Remaining => Feed::Remaining(Vec::new()),
        })
    }
}

impl Plan {
    /// Resolves every entry of `mapping` against the segment (its path, schema and footer
    /// key-value metadata) and plans the conversion of the envelope columns in `wanted`.
    pub(crate) fn new(
        segment: &str,
        file_schema: &Schema,
        footer: Option<&[KeyValue]>,
        mapping: &SourceMapping,
        wanted: &[&'static str],
    ) -> Result<Self> {
        let captures: BTreeMap<String, String> = mapping
            .captures(segment)
            .ok_or_else(|| Error::Mapping {
                segment: segment.to_owned(),
                entry: format!("source.key_pattern = {}", mapping.key_pattern.describe()),
                reason: "the segment's path does not match it".into(),
            })?
            .into_iter()
            .collect();
        let resolving = Resolving {
            segment,
            file_schema,
            footer,
            mapping,
            captures: &captures,
        };

        let mut resolved: Vec<Source> = Vec::with_capacity(ENVELOPE_COLUMNS.len());
        for (envelope, entry) in mapping.columns.entries() {
            let kind = kind_of(envelope);
            let feed = resolving.feed(envelope, entry)?;
            resolved.push(Source {
                envelope,
                kind,
                feed,
            });
        }

        // The remaining columns: every top-level column no other entry reads.
        let mut read: BTreeSet<String> = BTreeSet::new();
        for source in &resolved {
            match &source.feed {
                Feed::Column { path, .. } => {
                    read.insert(path.root.clone());
                }
                Feed::Template(pieces) => {
                    for piece in pieces {
                        if let Piece::Column(path) = piece {
                            read.insert(path.root.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let payload = &mapping.columns.payload;
        for source in &mut resolved {
            if let Feed::Remaining(columns) = &mut source.feed {
                *columns = file_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|c| !read.contains(c) || payload.keep.contains(c))
                    .filter(|c| !payload.exclude.contains(c))
                    .collect();
            }
        }

        // What the wanted columns need: themselves and what their templates read.
        let mut needed: BTreeSet<&'static str> = wanted.iter().copied().collect();
        for source in &resolved {
            if let (true, Feed::Template(pieces)) =
                (wanted.contains(&source.envelope), &source.feed)
            {
                for piece in pieces {
                    if let Piece::Envelope(e) = piece {
                        needed.insert(e);
                    }
                }
            }
        }
        let mut sources: Vec<Source> = resolved
            .into_iter()
            .filter(|s| needed.contains(s.envelope))
            .collect();
        sources.sort_by_key(|s| matches!(s.feed, Feed::Template(_)));

        let mut roots: Vec<usize> = Vec::new();
        for source in &sources {
            match &source.feed {
                Feed::Column { path, .. } => roots.push(path.root_index),
                Feed::Template(pieces) => roots.extend(pieces.iter().filter_map(|p| match p {
                    Piece::Column(path) => Some(path.root_index),
                    _ => None,
                })),
                Feed::Remaining(columns) => {
                    roots.extend(columns.iter().filter_map(|c| file_schema.index_of(c).ok()))
                }
                Feed::Absent | Feed::Constant(_) | Feed::RowNumber(_) => {}
            }
        }
        roots.sort_unstable();
        roots.dedup();
        let output: Vec<&'static str> = ENVELOPE_COLUMNS
            .iter()
            .copied()
            .filter(|e| wanted.contains(e))
            .collect();
        let envelope = envelope_schema();
        let schema = Arc::new(Schema::new(
            output
                .iter()
                .map(|e| envelope.field_with_name(e).cloned())
                .collect::<Result<Vec<_>, _>>()
                .expect("envelope columns are in the envelope schema"),
        ));
        Ok(Self {
            segment: segment.to_owned(),
            sources,
            output,
            roots,
            schema,
        })
    }

    /// Indices of the segment's top-level columns this plan reads (for a projection mask).
    pub(crate) fn roots(&self) -> &[usize] {
        &self.roots
    }

    fn source(&self, envelope: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.envelope == envelope)
    }

    /// The value of an integer envelope column when it is the same for every row of the
    /// segment (a capture, constant or footer value), if it is among the planned ones.
    pub(crate) fn constant_int(&self, envelope: &str) -> Option<i64> {
        match &self.source(envelope)?.feed {
            Feed::Constant(Scalar::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// The text of a text envelope column that is the same for every row of the segment.
    pub(crate) fn constant_text(&self, envelope: &str) -> Option<&str> {
        match &self.source(envelope)?.feed {
            Feed::Constant(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The first value of an envelope column numbered by row (`plus_row`).
    pub(crate) fn row_number_base(&self, envelope: &str) -> Option<i64> {
        match &self.source(envelope)?.feed {
            Feed::RowNumber(base) => Some(*base),
            _ => None,
        }
    }

    /// The top-level column an envelope column is read from as it is (no path, no
    /// unit): what column statistics can answer for.
    pub(crate) fn plain_column(&self, envelope: &str) -> Option<&str> {
        match &self.source(envelope)?.feed {
            Feed::Column {
                path, unit: None, ..
            } if path.steps.is_empty() => Some(&path.root),
            _ => None,
        }
    }

    /// Converts a batch read from the segment; `first_row` is its first row's number
    /// in the segment (for row numbers and error messages).
    pub(crate) fn convert(&self, batch: &RecordBatch, first_row: u64) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut arrays: HashMap<&'static str, ArrayRef> = HashMap::new();
        for source in &self.sources {
            let array = self.convert_source(source, batch, first_row, &arrays)?;
            arrays.insert(source.envelope, array);
        }
        let columns = self.output.iter().map(|e| Arc::clone(&arrays[e])).collect();
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| self.arrow_error(None, e))
    }

    fn convert_source(
        &self,
        source: &Source,
        batch: &RecordBatch,
        first_row: u64,
        done: &HashMap<&'static str, ArrayRef>,
    ) -> Result<ArrayRef> {
        let rows = batch.num_rows();
        let fail = |column: &str, e: ConvertError| self.convert_error(source, column, first_row, e);
        match &source.feed {
            Feed::Absent => Ok(new_null_array(&source.kind.data_type(), rows)),
            Feed::Constant(scalar) => Ok(repeat(scalar, source.kind, rows)),
            Feed::RowNumber(base) => {
                row_numbers(*base, first_row, rows).map_err(|e| fail("(row number)", e))
            }
            Feed::Column {
                path,
                unit,
                exclude,
            } => {
                let raw = path.read(batch).map_err(|e| fail(&path.written, e))?;
                to_kind(&raw, source.kind, *unit, exclude).map_err(|e| fail(&path.written, e))
            }
            Feed::Remaining(columns) => {
                let fields: Vec<_> = columns
                    .iter()
                    .filter_map(|c| {
                        let array = batch.column_by_name(c)?;
                        Some((
                            Arc::new(Field::new(c, array.data_type().clone(), true)),
                            Arc::clone(array),
                        ))
                    })
                    .collect();
                let structs = if fields.is_empty() {
                    StructArray::new_empty_fields(rows, None)
                } else {
                    StructArray::from(fields)
                };
                struct_to_json(&structs)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| self.arrow_error(Some("(remaining columns)"), e))
            }
            Feed::Template(pieces) => {
                let mut texts: Vec<Option<ArrayRef>> = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    texts.push(match piece {
                        Piece::Literal(_) => None,
                        Piece::Envelope(e) => {
                            Some(to_utf8(&done[e]).map_err(|err| fail(&format!("{{{e}}}"), err))?)
                        }
                        Piece::Column(path) => {
                            let raw = path.read(batch).map_err(|e| fail(&path.written, e))?;
                            Some(to_utf8(&raw).map_err(|e| fail(&path.written, e))?)
                        }
                    });
                }
                let out: StringArray = (0..rows)
                    .map(|row| {
                        let mut text = String::new();
                        for (piece, array) in pieces.iter().zip(&texts) {
                            match (piece, array) {
                                (Piece::Literal(l), _) => text.push_str(l),
                                (_, Some(array)) => {
                                    let array = array.as_string::<i32>();
                                    if array.is_null(row) {
                                        return None;
                                    }
                                    text.push_str(array.value(row));
                                }
                                (_, None) => unreachable!("non-literal pieces have arrays"),
                            }
                        }
                        Some(text)
                    })
                    .collect();
                Ok(Arc::new(out))
            }
        }
    }

    fn convert_error(
        &self,
        source: &Source,
        column: &str,
        first_row: u64,
        err: ConvertError,
    ) -> Error {
        match err {
            ConvertError::Value { row, value, reason } => Error::BadValue {
                segment: self.segment.clone(),
                column: column.to_owned(),
                envelope_column: source.envelope,
                row: first_row + row as u64,
                value: truncate(&value),
                reason,
            },
            ConvertError::OutOfRange { row, value } => Error::ValueOutOfRange {
                segment: self.segment.clone(),
                column: column.to_owned(),
                envelope_column: source.envelope,
                row: first_row + row as u64,
                value,
                target: source.kind.name(),
            },
            ConvertError::Arrow(e) => self.arrow_error(Some(column), e),
        }
    }

    fn arrow_error(&self, column: Option<&str>, err: ArrowError) -> Error {
        Error::BadSegment {
            segment: self.segment.clone(),
            reason: match column {
                Some(c) => format!("column `{c}`: {err}"),
                None => err.to_string(),
            },
        }
    }
}

fn truncate(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// Converts one read column onto an envelope kind.
fn to_kind(
    raw: &ArrayRef,
    kind: Kind,
    unit: Option<EpochUnit>,
    exclude: &[String],
) -> std::result::Result<ArrayRef, ConvertError> {
    match kind {
        Kind::Str => to_utf8(raw),
        Kind::Int32 => to_int::<Int32Type>(raw),
        Kind::Int64 => to_int::<Int64Type>(raw),
        Kind::Timestamp => to_micros(raw, unit),
        Kind::Json => {
            if let Some(structs) = raw.as_struct_opt() {
                let structs = without_fields(structs, exclude)?;
                Ok(Arc::new(struct_to_json(&structs)?))
            } else if key_value_fields(raw.data_type()).is_some() {
                key_values_to_json(raw)
            } else {
                to_utf8(raw)
            }
        }
    }
}

fn without_fields(
    structs: &StructArray,
    exclude: &[String],
) -> std::result::Result<StructArray, ArrowError> {
    if exclude.is_empty() {
        return Ok(structs.clone());
    }
    let (fields, columns, nulls) = structs.clone().into_parts();
    let (fields, columns): (Vec<_>, Vec<_>) = fields
        .iter()
        .zip(columns)
        .filter(|(f, _)| !exclude.contains(f.name()))
        .map(|(f, c)| (Arc::clone(f), c))
        .unzip();
    if fields.is_empty() {
        return Ok(StructArray::new_empty_fields(structs.len(), nulls));
    }
    StructArray::try_new(fields.into(), columns, nulls)
}

fn repeat(scalar: &Scalar, kind: Kind, rows: usize) -> ArrayRef {
    match (scalar, kind) {
        (Scalar::Int(i), Kind::Int32) => Arc::new(Int32Array::from(vec![*i as i32; rows])),
        (Scalar::Int(i), Kind::Int64) => Arc::new(Int64Array::from(vec![*i; rows])),
        (Scalar::Int(i), _) => Arc::new(StringArray::from(vec![i.to_string(); rows])),
        (Scalar::Str(s), _) => Arc::new(StringArray::from(vec![s.as_str(); rows])),
    }
}

/// A capture or footer value through the entry's `map`, when it has one.
fn apply_map(entry: &Entry, text: &str) -> std::result::Result<String, String> {
    if entry.map.is_empty() {
        return Ok(text.to_owned());
    }
    entry.map.get(text).cloned().ok_or_else(|| {
        format!(
            "`{text}` is not in its map (which has: {})",
            entry.map.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// A per-segment value as the envelope column's constant (or, with `plus_row`, the first
/// of its row numbers).
fn constant_feed(entry: &Entry, kind: Kind, text: &str) -> std::result::Result<Feed, String> {
    let integer = |range: std::ops::RangeInclusive<i64>| {
        text.trim()
            .parse::<i64>()
            .ok()
            .filter(|i| range.contains(i))
            .ok_or_else(|| format!("`{text}` is not an integer that fits {}", kind.name()))
    };
    let scalar = match kind {
        Kind::Int32 => Scalar::Int(integer(i32::MIN as i64..=i32::MAX as i64)?),
        Kind::Int64 => Scalar::Int(integer(i64::MIN..=i64::MAX)?),
        Kind::Str => Scalar::Str(text.to_owned()),
        Kind::Timestamp | Kind::Json => {
            return Err("this envelope column varies per event: map it from a column".into());
        }
    };
    Ok(match (entry.plus_row, scalar) {
        (true, Scalar::Int(base)) => Feed::RowNumber(base),
        (_, scalar) => Feed::Constant(scalar),
    })
}

/// A footer key-value entry, or a JSON pointer into it, as text.
fn footer_value(
    footer: Option<&[KeyValue]>,
    key: &str,
    pointer: Option<&str>,
) -> std::result::Result<String, String> {
    let entries = footer.unwrap_or_default();
    let value = entries
        .iter()
        .find(|kv| kv.key == key)
        .ok_or_else(|| {
            let keys: Vec<&str> = entries.iter().map(|kv| kv.key.as_str()).collect();
            format!(
                "the footer has no key `{key}` (it has: {})",
                if keys.is_empty() {
                    "no key-value metadata".to_owned()
                } else {
                    keys.join(", ")
                }
            )
        })?
        .value
        .as_deref()
        .ok_or_else(|| format!("the footer's `{key}` has no value"))?;
    let Some(pointer) = pointer else {
        return Ok(value.to_owned());
    };
    let json: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        format!("the footer's `{key}` is not JSON ({e}), so `{pointer}` cannot point into it")
    })?;
    match json.pointer(pointer) {
        None => Err(format!("the footer's `{key}` has nothing at `{pointer}`")),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(format!(
            "the footer's `{key}` holds {other} at `{pointer}`: expected a string or an integer"
        )),
    }
}

#[cfg(test)]
mod tests {
    use arrow::{
        array::{BinaryArray, Int8Array, ListArray, MapArray, MapBuilder, StringBuilder},
        buffer::OffsetBuffer,
        datatypes::Fields,
    };
    use replayfleet_config::{KeyPattern, KeyPatterns};

    use super::*;
    use crate::{read_segment, testing::*};

    /// Reads `columns` written at `path` (with `footer`) through `mapping` (TOML of
    /// `[source.columns]`) and the key pattern, as one envelope batch.
    async fn read_mapped(
        path: &str,
        columns: Vec<(&str, ArrayRef)>,
        footer: Vec<(&str, &str)>,
        entries: &str,
        pattern: Option<&str>,
    ) -> Result<RecordBatch> {
        let location = memory();
        put(&location, path, parquet_with_footer(columns, 2, footer)).await;
        let mut mapping = SourceMapping::with_columns(toml::from_str(entries).unwrap());
        if let Some(p) = pattern {
            mapping.key_pattern = KeyPatterns(vec![KeyPattern::parse(p).unwrap()]);
        }
        mapping.validate().unwrap();
        let segment = segment(&location, path).await;
        let batches = read_segment(&location, &segment, &mapping).await?;
        Ok(arrow::compute::concat_batches(&envelope_schema(), &batches).unwrap())
    }

    fn text(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        batch
            .column_by_name(column)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
        let array = batch.column_by_name(column).unwrap();
        let wide = arrow::compute::cast(array, &DataType::Int64).unwrap();
        wide.as_primitive::<Int64Type>().iter().collect()
    }

    /// A Kafka-sink-like segment: value fields, no envelope names at all.
    fn sink_columns() -> Vec<(&'static str, ArrayRef)> {
        vec![
            (
                "account_id",
                Arc::new(StringArray::from(vec!["a", "b", "a"])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Int64Array::from(vec![Some(5), None, Some(7)])),
            ),
            (
                "ts",
                Arc::new(Int64Array::from(vec![
                    1_700_000_000_000,
                    1_700_000_000_001,
                    1_700_000_000_002,
                ])),
            ),
        ]
    }

    const AVRO: &str = r#"{"type":"record","name":"Deposited","connect.version":2,"fields":[]}"#;

    #[tokio::test]
    async fn captures_footer_values_row_numbers_templates_and_remaining_columns() {
        let batch = read_mapped(
            "topics/accounts/partition=4/accounts+4+0000000100.snappy.parquet",
            sink_columns(),
            vec![("parquet.avro.schema", AVRO)],
            r#"
event_id = { template = "{topic}-{partition}-{seq}" }
stream_id = "account_id"
partition = { key = "partition" }
seq = { key = "start", plus_row = true }
event_type = { footer = "parquet.avro.schema", pointer = "/name" }
schema_version = { footer = "parquet.avro.schema", pointer = "/connect.version" }
occurred_at = { column = "ts", unit = "ms" }
payload = { remaining = true }
"#,
            Some("{topic}/partition={partition:int}/*+*+{start:int}.{codec}.parquet"),
        )
        .await
        .unwrap();
        assert_eq!(ints(&batch, "partition"), [Some(4); 3]);
        // Row groups of 2: the third row's number still counts from the segment's start.
        assert_eq!(ints(&batch, "seq"), [Some(100), Some(101), Some(102)]);
        assert_eq!(
            text(&batch, "event_id"),
            [
                Some("accounts-4-100".into()),
                Some("accounts-4-101".into()),
                Some("accounts-4-102".into())
            ]
        );
        assert_eq!(
            text(&batch, "event_type"),
            vec![Some("Deposited".to_owned()); 3]
        );
        assert_eq!(ints(&batch, "schema_version"), [Some(2); 3]);
        assert_eq!(
            ints(&batch, "occurred_at"),
            [
                Some(1_700_000_000_000_000),
                Some(1_700_000_000_001_000),
                Some(1_700_000_000_002_000)
            ]
        );
        // account_id and ts are read by other entries: the payload is what remains.
        assert_eq!(
            text(&batch, "payload"),
            [
                Some(r#"{"amount":5}"#.into()),
                Some("{}".into()),
                Some(r#"{"amount":7}"#.into())
            ]
        );
        assert_eq!(batch.column_by_name("metadata").unwrap().null_count(), 3);
    }

    #[tokio::test]
    async fn struct_paths_header_lists_maps_and_text_values() {
        let meta = StructArray::from(vec![
            (
                Arc::new(Field::new("offset", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![10, 11])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("partition", DataType::Int8, true)),
                Arc::new(Int8Array::from(vec![1, 1])),
            ),
        ]);
        // Headers as Aiven writes them: a list of {key, value} with byte values.
        let entry = Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Binary, true),
        ]);
        let entries = StructArray::new(
            entry.clone(),
            vec![
                Arc::new(StringArray::from(vec!["type", "v", "type", "v", "type"])),
                Arc::new(BinaryArray::from_vec(vec![b"A", b"1", b"B", b"2", b"C"])),
            ],
            None,
        );
        let headers = ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(entry), false)),
            // The second row repeats `type`: the last one wins.
            OffsetBuffer::from_lengths([2, 3]),
            Arc::new(entries),
            None,
        );
        // The same as a map column, for metadata.
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value("trace");
        map.values().append_value("t-1");
        map.append(true).unwrap();
        map.append(false).unwrap();
        let map: MapArray = map.finish();
        let value = StructArray::from(vec![
            (
                Arc::new(Field::new("id", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("kind", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["k", "k"])),
            ),
        ]);
        let batch = read_mapped(
            "a.parquet",
            vec![
                ("meta", Arc::new(meta) as ArrayRef),
                ("headers", Arc::new(headers)),
                ("props", Arc::new(map)),
                ("value", Arc::new(value)),
                (
                    "when",
                    Arc::new(StringArray::from(vec![
                        "2024-01-05T13:00:00.5Z",
                        "2024-01-05 13:00:01",
                    ])),
                ),
            ],
            vec![],
            r#"
event_id = "value.id"
stream_id = { value = "s" }
partition = "meta.partition"
seq = "meta.offset"
event_type = "headers.type"
schema_version = "headers.v"
occurred_at = "when"
payload = { column = "value", exclude = ["id"] }
metadata = "props"
"#,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            text(&batch, "event_id"),
            [Some("x".into()), Some("y".into())]
        );
        assert_eq!(ints(&batch, "partition"), [Some(1), Some(1)]);
        assert_eq!(ints(&batch, "seq"), [Some(10), Some(11)]);
        assert_eq!(
            text(&batch, "event_type"),
            [Some("A".into()), Some("C".into())]
        );
        assert_eq!(ints(&batch, "schema_version"), [Some(1), Some(2)]);
        assert_eq!(
            ints(&batch, "occurred_at"),
            [Some(1_704_459_600_500_000), Some(1_704_459_601_000_000)]
        );
        assert_eq!(
            text(&batch, "payload"),
            [
                Some(r#"{"kind":"k"}"#.into()),
                Some(r#"{"kind":"k"}"#.into())
            ]
        );
        assert_eq!(
            text(&batch, "metadata"),
            [Some(r#"{"trace":"t-1"}"#.into()), None]
        );
    }

    #[tokio::test]
    async fn entries_that_do_not_apply_name_the_segment_and_the_entry() {
        let mapped = |entries: &'static str, pattern: Option<&'static str>| async move {
            read_mapped(
                "p=1/f.parquet",
                sink_columns(),
                vec![("parquet.avro.schema", AVRO)],
                &format!("stream_id = \"account_id\"\noccurred_at = {{ column = \"ts\", unit = \"ms\" }}\npayload = {{ remaining = true }}\nevent_id = \"account_id\"\nseq = \"amount\"\n{entries}"),
                pattern,
            )
            .await
            .unwrap_err()
            .to_string()
        };
        for (entries, pattern, needles) in [
            (
                "partition = { key = \"p\" }\nschema_version = { value = 1 }\nevent_type = { value = \"T\" }",
                Some("q={p:int}/*.parquet"),
                vec![
                    "segment `p=1/f.parquet`",
                    "source.key_pattern = `q={p:int}/*.parquet`",
                    "does not match",
                ],
            ),
            (
                "partition = { value = 1 }\nschema_version = { value = 1 }\nevent_type = { footer = \"nope\" }",
                None,
                vec![
                    "source.columns.event_type = { footer = \"nope\" }",
                    "no key `nope`",
                    "parquet.avro.schema",
                ],
            ),
            (
                "partition = { value = 1 }\nschema_version = { footer = \"parquet.avro.schema\", pointer = \"/name\" }\nevent_type = { value = \"T\" }",
                None,
                vec![
                    "source.columns.schema_version",
                    "`Deposited` is not an integer",
                ],
            ),
            (
                "partition = { key = \"p\", map = { \"2\" = \"7\" } }\nschema_version = { value = 1 }\nevent_type = { value = \"T\" }",
                Some("p={p:int}/*.parquet"),
                vec!["source.columns.partition", "`1` is not in its map"],
            ),
            (
                "partition = { value = 1 }\nschema_version = { value = 1 }\nevent_type = \"x\"",
                None,
                vec!["column `x`", "envelope `event_type`"],
            ),
        ] {
            let err = mapped(entries, pattern).await;
            for n in needles {
                assert!(err.contains(n), "{entries}: `{n}` not in: {err}");
            }
        }
    }

    #[tokio::test]
    async fn values_that_do_not_convert_name_their_row() {
        let err = read_mapped(
            "f.parquet",
            vec![
                ("id", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
                ("v", Arc::new(StringArray::from(vec!["1", "2", "two"]))),
                ("t", Arc::new(StringArray::from(vec!["2024-01-01T00:00:00Z"; 3]))),
            ],
            vec![],
            "event_id = \"id\"\nstream_id = \"id\"\npartition = { value = 0 }\nseq = \"v\"\nevent_type = { value = \"T\" }\nschema_version = { value = 1 }\noccurred_at = \"t\"\npayload = { remaining = true }",
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        // Rows are read two at a time: the third row's number is its row in the segment.
        assert!(err.contains("column `v` row 2"), "{err}");
        assert!(err.contains("`two` is not an integer"), "{err}");
        assert!(err.contains("envelope `seq`"), "{err}");
    }

    #[test]
    fn the_canonical_mapping_plans_without_a_footer() {
        let schema = Schema::new(vec![Field::new("event_id", DataType::Utf8, true)]);
        let err = Plan::new("s", &schema, None, &SourceMapping::default(), &["event_id"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `stream_id`"), "{err}");
    }
}
