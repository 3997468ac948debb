//! The canonical envelope schema and the conversion of archive columns onto it.
//!
//! Conversions (SPEC section 1):
//! - integers of any width, signed or not, plain or dictionary-encoded, are checked into
//!   Int32/Int64: a value that does not fit is [`Error::ValueOutOfRange`] naming the
//!   segment, the column and the row;
//! - strings of any kind (Utf8, LargeUtf8, Utf8View, dictionaries of those) become Utf8;
//! - timestamps of any unit become microseconds in UTC; no time zone means UTC;
//!   nanoseconds (and Spark's INT96, which the Parquet reader yields as nanoseconds)
//!   are floored to the microsecond;
//! - `payload` and `metadata` are JSON object text: a string column as is, or a Struct
//!   column encoded row by row (a null field is an absent key, keys in field order);
//! - `metadata` may be absent from the archive: it is then null for every event.
//!
//! Every envelope field is nullable: nulls are carried through, never rejected here,
//! because what a null `event_id` or `seq` means is the replay's anomaly policy.

use std::sync::{Arc, LazyLock};

use arrow::{
    array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, new_null_array},
    compute::cast,
    datatypes::{
        ArrowPrimitiveType, ArrowTimestampType, DataType, Field, Int8Type, Int16Type, Int32Type,
        Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
        UInt64Type,
    },
    error::ArrowError,
    record_batch::RecordBatchOptions,
};
use replayfleet_config::{ColumnMapping, ENVELOPE_COLUMNS};

use crate::{Error, Result, json::struct_to_json};

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

    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string type (Utf8, LargeUtf8, Utf8View or a dictionary of strings)",
            Kind::Int32 | Kind::Int64 => {
                "an integer type (Int8..Int64, UInt8..UInt64 or a dictionary of integers)"
            }
            Kind::Timestamp => "a timestamp (any unit, with or without time zone, INT96)",
            Kind::Json => "a string type holding JSON, or a Struct",
        }
    }

    fn accepts(self, dt: &DataType) -> bool {
        let value = match dt {
            DataType::Dictionary(_, value) if self != Kind::Timestamp => value.as_ref(),
            other => other,
        };
        match self {
            Kind::Str => is_string(value),
            Kind::Int32 | Kind::Int64 => value.is_integer(),
            Kind::Timestamp => matches!(value, DataType::Timestamp(..)),
            Kind::Json => is_string(value) || matches!(value, DataType::Struct(_)),
        }
    }
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// One envelope column of a [`Plan`]: where it comes from in the segment.
#[derive(Debug, Clone)]
struct Source {
    envelope: &'static str,
    /// The archive column; `None` when an optional column is absent (all nulls).
    column: Option<String>,
    kind: Kind,
}

/// How one segment's columns become (some of) the envelope's, validated against its schema.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    segment: String,
    sources: Vec<Source>,
    roots: Vec<usize>,
    schema: SchemaRef,
}

impl Plan {
    /// Validates every mapped column of `mapping` against `file_schema` (presence and
    /// type) and plans the conversion of the envelope columns in `wanted`.
    pub(crate) fn new(
        segment: &str,
        file_schema: &Schema,
        mapping: &ColumnMapping,
        wanted: &[&'static str],
    ) -> Result<Self> {
        let mut sources = Vec::with_capacity(wanted.len());
        let mut roots = Vec::with_capacity(wanted.len());
        for (envelope, column) in mapping.pairs() {
            let kind = kind_of(envelope);
            let found = file_schema.index_of(column).ok();
            match found {
                None if envelope == "metadata" => {}
                None => {
                    return Err(Error::MissingColumn {
                        segment: segment.to_owned(),
                        column: column.to_owned(),
                        envelope_column: envelope,
                        available: file_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect(),
                    });
                }
                Some(index) => {
                    let found = file_schema.field(index).data_type();
                    if !kind.accepts(found) {
                        return Err(Error::WrongType {
                            segment: segment.to_owned(),
                            column: column.to_owned(),
                            envelope_column: envelope,
                            expected: kind.expected(),
                            found: found.to_string(),
                        });
                    }
                }
            }
            if wanted.contains(&envelope) {
                if let Some(index) = found {
                    roots.push(index);
                }
                sources.push(Source {
                    envelope,
                    column: found.map(|_| column.to_owned()),
                    kind,
                });
            }
        }
        roots.sort_unstable();
        roots.dedup();
        let envelope = envelope_schema();
        let schema = Arc::new(Schema::new(
            sources
                .iter()
                .map(|s| envelope.field_with_name(s.envelope).cloned())
                .collect::<Result<Vec<_>, _>>()
                .expect("envelope columns are in the envelope schema"),
        ));
        Ok(Self {
            segment: segment.to_owned(),
            sources,
            roots,
            schema,
        })
    }

    /// Indices of the segment's top-level columns this plan reads (for a projection mask).
    pub(crate) fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// Converts a batch read from the segment; `first_row` is its first row's number
    /// in the segment (for error messages).
    pub(crate) fn convert(&self, batch: &RecordBatch, first_row: u64) -> Result<RecordBatch> {
        let columns = self
            .sources
            .iter()
            .map(|source| self.convert_column(source, batch, first_row))
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| self.arrow_error(None, e))
    }

    fn convert_column(
        &self,
        source: &Source,
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<ArrayRef> {
        let Some(column) = &source.column else {
            return Ok(new_null_array(&source.kind.data_type(), batch.num_rows()));
        };
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| Error::MissingColumn {
                segment: self.segment.clone(),
                column: column.clone(),
                envelope_column: source.envelope,
                available: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })?;
        let out_of_range = |row: usize, value: String| Error::ValueOutOfRange {
            segment: self.segment.clone(),
            column: column.clone(),
            envelope_column: source.envelope,
            row: first_row + row as u64,
            value,
            target: source.kind.name(),
        };
        match source.kind {
            Kind::Str => to_utf8(array).map_err(|e| self.arrow_error(Some(column), e)),
            Kind::Json => match array.as_struct_opt() {
                Some(structs) => struct_to_json(structs)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| self.arrow_error(Some(column), e)),
                None => to_utf8(array).map_err(|e| self.arrow_error(Some(column), e)),
            },
            Kind::Int32 => {
                to_int::<Int32Type>(array).map_err(|e| self.int_error(column, e, &out_of_range))
            }
            Kind::Int64 => {
                to_int::<Int64Type>(array).map_err(|e| self.int_error(column, e, &out_of_range))
            }
            Kind::Timestamp => {
                to_micros(array).map_err(|e| self.int_error(column, e, &out_of_range))
            }
        }
    }

    fn int_error(
        &self,
        column: &str,
        err: IntError,
        out_of_range: &impl Fn(usize, String) -> Error,
    ) -> Error {
        match err {
            IntError::OutOfRange { row, value } => out_of_range(row, value),
            IntError::Arrow(e) => self.arrow_error(Some(column), e),
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

fn to_utf8(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == &DataType::Utf8 {
        return Ok(Arc::clone(array));
    }
    cast(array, &DataType::Utf8)
}

enum IntError {
    OutOfRange { row: usize, value: String },
    Arrow(ArrowError),
}

impl From<ArrowError> for IntError {
    fn from(e: ArrowError) -> Self {
        IntError::Arrow(e)
    }
}

/// Any integer array (dictionaries unpacked) into `D`, checked.
fn to_int<D>(array: &ArrayRef) -> Result<ArrayRef, IntError>
where
    D: ArrowPrimitiveType,
    D::Native: TryFrom<i128>,
{
    if array.data_type() == &D::DATA_TYPE {
        return Ok(Arc::clone(array));
    }
    let array = match array.data_type() {
        DataType::Dictionary(_, value) => cast(array, value)?,
        _ => Arc::clone(array),
    };
    let narrowed = match array.data_type() {
        DataType::Int8 => narrow::<Int8Type, D>(&array),
        DataType::Int16 => narrow::<Int16Type, D>(&array),
        DataType::Int32 => narrow::<Int32Type, D>(&array),
        DataType::Int64 => narrow::<Int64Type, D>(&array),
        DataType::UInt8 => narrow::<UInt8Type, D>(&array),
        DataType::UInt16 => narrow::<UInt16Type, D>(&array),
        DataType::UInt32 => narrow::<UInt32Type, D>(&array),
        DataType::UInt64 => narrow::<UInt64Type, D>(&array),
        other => {
            return Err(IntError::Arrow(ArrowError::CastError(format!(
                "{other} is not an integer type"
            ))));
        }
    };
    narrowed
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|(row, value)| IntError::OutOfRange {
            row,
            value: value.to_string(),
        })
}

/// `S` into `D`; on failure, the first offending row and its value.
fn narrow<S, D>(array: &dyn Array) -> Result<PrimitiveArray<D>, (usize, i128)>
where
    S: ArrowPrimitiveType,
    S::Native: Into<i128>,
    D: ArrowPrimitiveType,
    D::Native: TryFrom<i128>,
{
    let values = array.as_primitive::<S>();
    values
        .try_unary::<_, D, i128>(|v| {
            let wide: i128 = v.into();
            D::Native::try_from(wide).map_err(|_| wide)
        })
        .map_err(|bad| {
            (
                first_row_with(values.iter().map(|v| v.map(Into::into)), bad),
                bad,
            )
        })
}

fn first_row_with<T: PartialEq>(mut values: impl Iterator<Item = Option<T>>, bad: T) -> usize {
    values.position(|v| v.as_ref() == Some(&bad)).unwrap_or(0)
}

/// Any timestamp array into microseconds, UTC.
fn to_micros(array: &ArrayRef) -> Result<ArrayRef, IntError> {
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return Err(IntError::Arrow(ArrowError::CastError(format!(
            "{} is not a timestamp type",
            array.data_type()
        ))));
    };
    let micros = match unit {
        TimeUnit::Second => rescale::<TimestampSecondType>(array, |v| v.checked_mul(1_000_000)),
        TimeUnit::Millisecond => {
            rescale::<TimestampMillisecondType>(array, |v| v.checked_mul(1_000))
        }
        TimeUnit::Microsecond => rescale::<TimestampMicrosecondType>(array, Some),
        TimeUnit::Nanosecond => {
            rescale::<TimestampNanosecondType>(array, |v| Some(v.div_euclid(1_000)))
        }
    }
    .map_err(|(row, value)| IntError::OutOfRange {
        row,
        value: format!("{value} ({unit:?})"),
    })?;
    Ok(Arc::new(micros.with_timezone("UTC")))
}

fn rescale<S: ArrowTimestampType>(
    array: &dyn Array,
    to_micros: impl Fn(i64) -> Option<i64>,
) -> Result<PrimitiveArray<TimestampMicrosecondType>, (usize, i64)> {
    let values = array.as_primitive::<S>();
    values
        .try_unary::<_, TimestampMicrosecondType, i64>(|v| to_micros(v).ok_or(v))
        .map_err(|bad| (first_row_with(values.iter(), bad), bad))
}
