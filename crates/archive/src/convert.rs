//! Array conversions onto the envelope's types, checked value by value: a value that does
//! not convert names its row (relative to the batch; the caller adds the batch's offset).

use std::sync::Arc;

use arrow::{
    array::{
        Array, ArrayRef, AsArray, GenericBinaryArray, Int64Array, OffsetSizeTrait, PrimitiveArray,
        StringArray, StructArray,
    },
    compute::{cast, kernels::cast_utils::string_to_timestamp_nanos},
    datatypes::{
        ArrowPrimitiveType, ArrowTimestampType, DataType, Fields, Int8Type, Int16Type, Int32Type,
        Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
        UInt64Type,
    },
    error::ArrowError,
};
use replayfleet_config::EpochUnit;

/// Why a conversion failed.
pub(crate) enum ConvertError {
    /// One value does not convert: its row in the array, the value as text, and why.
    Value {
        row: usize,
        value: String,
        reason: String,
    },
    /// One value does not fit the target type: its row and the value as text.
    OutOfRange { row: usize, value: String },
    /// The array as a whole does not convert (a type the planner let through by mistake).
    Arrow(ArrowError),
}

impl From<ArrowError> for ConvertError {
    fn from(e: ArrowError) -> Self {
        ConvertError::Arrow(e)
    }
}

pub(crate) type Converted = Result<ArrayRef, ConvertError>;

fn value_error(row: usize, value: impl Into<String>, reason: impl Into<String>) -> ConvertError {
    ConvertError::Value {
        row,
        value: value.into(),
        reason: reason.into(),
    }
}

pub(crate) fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

pub(crate) fn is_binary(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// The value type of a dictionary, or the type itself.
pub(crate) fn unpacked(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, value) => value.as_ref(),
        other => other,
    }
}

/// A dictionary array unpacked into its values' type; anything else as it is.
fn undictionary(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::Dictionary(_, value) => cast(array, value),
        _ => Ok(Arc::clone(array)),
    }
}

/// Text of any string, binary (checked UTF-8) or integer array, as Utf8.
pub(crate) fn to_utf8(array: &ArrayRef) -> Converted {
    let array = undictionary(array)?;
    match array.data_type() {
        DataType::Utf8 => Ok(array),
        DataType::Binary => utf8_of_binary(array.as_binary::<i32>()),
        DataType::LargeBinary => utf8_of_binary(array.as_binary::<i64>()),
        DataType::BinaryView => utf8_of_binary(cast(&array, &DataType::Binary)?.as_binary::<i32>()),
        // Strings of other layouts and integers: arrow's cast cannot fail on them.
        _ => Ok(cast(&array, &DataType::Utf8)?),
    }
}

fn utf8_of_binary<O: OffsetSizeTrait>(array: &GenericBinaryArray<O>) -> Converted {
    let mut out = Vec::with_capacity(array.len());
    for (row, bytes) in array.iter().enumerate() {
        out.push(match bytes {
            None => None,
            Some(b) => Some(std::str::from_utf8(b).map_err(|e| {
                value_error(
                    row,
                    String::from_utf8_lossy(b).into_owned(),
                    format!("not UTF-8 text ({e})"),
                )
            })?),
        });
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// Any integer array, or text holding integers, into `D`, checked.
pub(crate) fn to_int<D>(array: &ArrayRef) -> Converted
where
    D: ArrowPrimitiveType,
    D::Native: TryFrom<i128>,
{
    if array.data_type() == &D::DATA_TYPE {
        return Ok(Arc::clone(array));
    }
    let array = undictionary(array)?;
    let dt = array.data_type();
    if is_string(dt) || is_binary(dt) {
        return parse_ints::<D>(to_utf8(&array)?.as_string::<i32>());
    }
    let narrowed = match dt {
        DataType::Int8 => narrow::<Int8Type, D>(&array),
        DataType::Int16 => narrow::<Int16Type, D>(&array),
        DataType::Int32 => narrow::<Int32Type, D>(&array),
        DataType::Int64 => narrow::<Int64Type, D>(&array),
        DataType::UInt8 => narrow::<UInt8Type, D>(&array),
        DataType::UInt16 => narrow::<UInt16Type, D>(&array),
        DataType::UInt32 => narrow::<UInt32Type, D>(&array),
        DataType::UInt64 => narrow::<UInt64Type, D>(&array),
        other => {
            return Err(ArrowError::CastError(format!("{other} is not an integer type")).into());
        }
    };
    narrowed
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|(row, value)| ConvertError::OutOfRange {
            row,
            value: value.to_string(),
        })
}

fn parse_ints<D>(text: &StringArray) -> Converted
where
    D: ArrowPrimitiveType,
    D::Native: TryFrom<i128>,
{
    let mut out = Vec::with_capacity(text.len());
    for (row, s) in text.iter().enumerate() {
        out.push(match s {
            None => None,
            Some(s) => {
                let wide: i128 = s
                    .trim()
                    .parse()
                    .map_err(|_| value_error(row, s, "is not an integer"))?;
                Some(
                    D::Native::try_from(wide).map_err(|_| ConvertError::OutOfRange {
                        row,
                        value: s.to_owned(),
                    })?,
                )
            }
        });
    }
    Ok(Arc::new(PrimitiveArray::<D>::from_iter(out)))
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

/// Any timestamp array, integers counted in `unit` since the epoch, or RFC 3339 text,
/// into microseconds, UTC. Nanoseconds are floored to the microsecond.
pub(crate) fn to_micros(array: &ArrayRef, unit: Option<EpochUnit>) -> Converted {
    let array = undictionary(array)?;
    let micros = match (array.data_type(), unit) {
        (DataType::Timestamp(unit, _), _) => timestamp_micros(&array, *unit)?,
        (dt, Some(unit)) if dt.is_integer() => {
            let wide = to_int::<Int64Type>(&array)?;
            let values = wide.as_primitive::<Int64Type>();
            match unit.micros_per_unit() {
                Some(factor) => values
                    .try_unary::<_, TimestampMicrosecondType, i64>(|v| {
                        v.checked_mul(factor).ok_or(v)
                    })
                    .map_err(|bad| ConvertError::OutOfRange {
                        row: first_row_with(values.iter(), bad),
                        value: format!("{bad} ({unit:?} since the epoch)"),
                    })?,
                None => values.unary(|v| v.div_euclid(1_000)),
            }
        }
        (dt, _) if is_string(dt) || is_binary(dt) => {
            let text = to_utf8(&array)?;
            let mut out = Vec::with_capacity(text.len());
            for (row, s) in text.as_string::<i32>().iter().enumerate() {
                out.push(match s {
                    None => None,
                    Some(s) => Some(
                        string_to_timestamp_nanos(s.trim())
                            .map_err(|e| value_error(row, s, format!("is not a timestamp ({e})")))?
                            .div_euclid(1_000),
                    ),
                });
            }
            PrimitiveArray::<TimestampMicrosecondType>::from_iter(out)
        }
        (other, _) => {
            return Err(ArrowError::CastError(format!("{other} is not a timestamp")).into());
        }
    };
    Ok(Arc::new(micros.with_timezone("UTC")))
}

fn timestamp_micros(
    array: &ArrayRef,
    unit: TimeUnit,
) -> Result<PrimitiveArray<TimestampMicrosecondType>, ConvertError> {
    match unit {
        TimeUnit::Second => rescale::<TimestampSecondType>(array, |v| v.checked_mul(1_000_000)),
        TimeUnit::Millisecond => {
            rescale::<TimestampMillisecondType>(array, |v| v.checked_mul(1_000))
        }
        TimeUnit::Microsecond => rescale::<TimestampMicrosecondType>(array, Some),
        TimeUnit::Nanosecond => {
            rescale::<TimestampNanosecondType>(array, |v| Some(v.div_euclid(1_000)))
        }
    }
    .map_err(|(row, value)| ConvertError::OutOfRange {
        row,
        value: format!("{value} ({unit:?})"),
    })
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

/// The fields of a map, or of a list of structs, that hold keys and values: `(key, value)`
/// indices into the entry struct's fields. Kafka headers are written both ways.
pub(crate) fn key_value_fields(dt: &DataType) -> Option<(Fields, usize, usize)> {
    let entries = match dt {
        DataType::Map(entries, _) => entries.data_type(),
        DataType::List(item) | DataType::LargeList(item) => item.data_type(),
        _ => return None,
    };
    let DataType::Struct(fields) = entries else {
        return None;
    };
    if let DataType::Map(..) = dt {
        return (fields.len() == 2).then(|| (fields.clone(), 0, 1));
    }
    let key = fields.iter().position(|f| f.name() == "key")?;
    let value = fields.iter().position(|f| f.name() == "value")?;
    Some((fields.clone(), key, value))
}

/// Entries of a map or key/value list array: per row the range of its entries, plus the
/// entries' keys (as text) and values.
pub(crate) struct KeyValues {
    pub(crate) offsets: Vec<(usize, usize)>,
    pub(crate) valid: Vec<bool>,
    pub(crate) keys: StringArray,
    pub(crate) values: ArrayRef,
}

impl KeyValues {
    pub(crate) fn of(array: &ArrayRef) -> Result<KeyValues, ConvertError> {
        let (_, key, value) = key_value_fields(array.data_type()).ok_or_else(|| {
            ArrowError::CastError(format!("{} holds no key/value entries", array.data_type()))
        })?;
        let (ranges, entries): (Vec<(usize, usize)>, StructArray) = match array.data_type() {
            DataType::Map(..) => {
                let map = array.as_map();
                (ranges(map.value_offsets()), map.entries().clone())
            }
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                (
                    ranges(list.value_offsets()),
                    list.values().as_struct().clone(),
                )
            }
            _ => {
                let list = array.as_list::<i64>();
                (
                    ranges(list.value_offsets()),
                    list.values().as_struct().clone(),
                )
            }
        };
        let keys = to_utf8(entries.column(key))?;
        Ok(KeyValues {
            offsets: ranges,
            valid: (0..array.len()).map(|i| array.is_valid(i)).collect(),
            keys: keys.as_string::<i32>().clone(),
            values: Arc::clone(entries.column(value)),
        })
    }

    /// Index of the last entry of `row` named `key` (a repeated key: the last one wins,
    /// as when a map is built from the list).
    pub(crate) fn find(&self, row: usize, key: &str) -> Option<usize> {
        if !self.valid[row] {
            return None;
        }
        let (start, end) = self.offsets[row];
        (start..end)
            .rev()
            .find(|&i| self.keys.is_valid(i) && self.keys.value(i) == key)
    }
}

fn ranges<O: OffsetSizeTrait>(offsets: &[O]) -> Vec<(usize, usize)> {
    offsets
        .windows(2)
        .map(|w| (w[0].as_usize(), w[1].as_usize()))
        .collect()
}

/// A map or key/value list as one JSON object per row, values as text (Kafka header
/// values are bytes; binary values must be UTF-8). A null value is an absent key.
pub(crate) fn key_values_to_json(array: &ArrayRef) -> Converted {
    let kv = KeyValues::of(array)?;
    let values = to_utf8(&kv.values)?;
    let values = values.as_string::<i32>();
    let mut out = Vec::with_capacity(array.len());
    for row in 0..array.len() {
        if !kv.valid[row] {
            out.push(None);
            continue;
        }
        let mut object = serde_json::Map::new();
        let (start, end) = kv.offsets[row];
        for i in start..end {
            if kv.keys.is_valid(i) && values.is_valid(i) {
                object.insert(
                    kv.keys.value(i).to_owned(),
                    serde_json::Value::String(values.value(i).to_owned()),
                );
            }
        }
        out.push(Some(serde_json::Value::Object(object).to_string()));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `base + first_row + i` for every row: a sequence from a start offset.
pub(crate) fn row_numbers(base: i64, first_row: u64, rows: usize) -> Converted {
    let start = i64::try_from(first_row)
        .ok()
        .and_then(|r| base.checked_add(r))
        .ok_or_else(|| ConvertError::OutOfRange {
            row: 0,
            value: format!("{base} + {first_row}"),
        })?;
    let end = start
        .checked_add(rows as i64)
        .ok_or_else(|| ConvertError::OutOfRange {
            row: 0,
            value: format!("{start} + {rows}"),
        })?;
    Ok(Arc::new(Int64Array::from_iter_values(start..end)))
}
