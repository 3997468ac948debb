//! JSON Schema: compiling validators and mapping properties onto Arrow column types.

use arrow::datatypes::{DataType, TimeUnit};
use jsonschema::{Draft, Validator};
use serde_json::Value;

use crate::lite::{Lite, LiteJson};

/// The only `$schema` accepted: the catalog is JSON Schema 2020-12, always.
pub(crate) const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// How a top-level property is typed, both as a typed column of the `events` table and as
/// an input column of a SQL step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColumnKind {
    /// `type: integer`
    Int64,
    /// `type: number`
    Float64,
    /// `type: string`
    Utf8,
    /// `type: boolean`
    Boolean,
    /// `type: string, format: date-time`
    Timestamp,
    /// Anything else (object, array, several types, no type): the value's JSON text.
    Json,
}

impl ColumnKind {
    /// The kind of a property's schema. `type: [T, "null"]` counts as `T` (the column is
    /// nullable anyway).
    pub(crate) fn of_property(property: &Value) -> ColumnKind {
        let ty = match property.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(types)) => {
                let non_null: Vec<&str> = types
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "null")
                    .collect();
                match non_null.as_slice() {
                    [t] if types.len() <= 2 => Some(*t),
                    _ => None,
                }
            }
            _ => None,
        };
        match ty {
            Some("integer") => ColumnKind::Int64,
            Some("number") => ColumnKind::Float64,
            Some("boolean") => ColumnKind::Boolean,
            Some("string") => {
                if property.get("format").and_then(Value::as_str) == Some("date-time") {
                    ColumnKind::Timestamp
                } else {
                    ColumnKind::Utf8
                }
            }
            _ => ColumnKind::Json,
        }
    }

    /// The Arrow type of the column.
    pub(crate) fn data_type(self) -> DataType {
        match self {
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float64 => DataType::Float64,
            ColumnKind::Utf8 | ColumnKind::Json => DataType::Utf8,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// The top-level properties of an object schema, in declaration order.
pub(crate) fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.iter())
}

/// Compiles a schema as JSON Schema 2020-12 with `format` assertions on. A `$schema` other
/// than 2020-12 is refused rather than silently reinterpreted.
pub(crate) fn compile(schema: &Value) -> Result<Validator<LiteJson>, String> {
    if let Some(declared) = schema.get("$schema") {
        let ok = declared
            .as_str()
            .is_some_and(|s| s.trim_end_matches('#') == DRAFT_2020_12);
        if !ok {
            return Err(format!(
                "$schema must be {DRAFT_2020_12} (or absent), found {declared}"
            ));
        }
    }
    jsonschema::options_for::<LiteJson>()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| describe(&e))
}

/// The first validation error of an instance, as `at <instance path>: <message>`, or `None`
/// when it is valid. `is_valid` first: it is the cheap path.
pub(crate) fn first_error(validator: &Validator<LiteJson>, instance: &Lite<'_>) -> Option<String> {
    if validator.is_valid(instance) {
        return None;
    }
    validator.iter_errors(instance).next().map(|e| describe(&e))
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().as_str();
    let path = if path.is_empty() { "/" } else { path };
    format!("at {path}: {e}")
}
