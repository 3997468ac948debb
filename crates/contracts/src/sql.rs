//! `sql` steps: computed fields evaluated with DataFusion over an Arrow batch of payloads.
//!
//! Each expression is planned once at load against a schema derived statically from the
//! contracts (the previous version's properties, then the earlier steps applied
//! symbolically); a column referenced but unknown is Utf8 holding the value's JSON text
//! (strings raw). Per batch, only the referenced columns are built. A value that does not
//! fit its column's type fails that event only; an expression error fails the batch, which
//! is then re-evaluated row by row so that only the failing events are blamed: an event's
//! result never depends on the events sharing its batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    RecordBatchOptions, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    UInt64Type,
};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DataFusionError, SchemaError};
pub(crate) use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::{Number, Value};

use crate::lite::{Lite, Obj};
use crate::schema::ColumnKind;
use crate::step::describe_lite;

/// The DataFusion session used to plan SQL steps at load. Identifiers are case-sensitive
/// (`amountCents` means the field `amountCents`), as JSON field names are.
pub(crate) fn planning_session() -> SessionState {
    let config =
        SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let ctx = SessionContext::new_with_config(config);
    crate::bound_functions(&ctx);
    ctx.state()
}

/// One input column of a SQL step.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    kind: ColumnKind,
}

/// One computed field.
#[derive(Debug, Clone)]
struct Output {
    field: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// A compiled `sql` step: every field's expression, over the union of their columns.
#[derive(Debug, Clone)]
pub(crate) struct SqlStep {
    inputs: Vec<Input>,
    schema: SchemaRef,
    outputs: Vec<Output>,
}

/// The outcome of a SQL step for one event: the computed values in the step's field
/// order, or why the event failed (tests).
#[cfg(test)]
pub(crate) type RowResult = Result<Vec<(String, Value)>, String>;

impl SqlStep {
    /// Plans every `field: expression` of a step. `known` is the statically derived type of
    /// each field of the payload before the step. Errors name the field.
    pub(crate) fn compile(
        session: &SessionState,
        fields: &[(String, String)],
        known: &BTreeMap<String, ColumnKind>,
    ) -> Result<(SqlStep, Vec<(String, ColumnKind)>), String> {
        // Pass 1: logical expressions against every known field (plus any unknown field
        // referenced, as Utf8), to learn which columns each expression reads.
        let mut logical = Vec::with_capacity(fields.len());
        let mut referenced: BTreeMap<String, ColumnKind> = BTreeMap::new();
        for (field, sql) in fields {
            let expr =
                plan_logical(session, sql, known).map_err(|e| format!("field {field}: {e}"))?;
            for column in expr.column_refs() {
                let kind = known.get(&column.name).copied().unwrap_or(ColumnKind::Json);
                referenced.insert(column.name.clone(), kind);
            }
            logical.push((field.clone(), sql.clone()));
        }
        // Pass 2: physical expressions against only the referenced columns.
        let inputs: Vec<Input> = referenced
            .into_iter()
            .map(|(name, kind)| Input { name, kind })
            .collect();
        let schema: SchemaRef = Arc::new(Schema::new(
            inputs
                .iter()
                .map(|i| Field::new(&i.name, i.kind.data_type(), true))
                .collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| e.to_string())?;
        // Simplified as a query's expressions are: some functions only exist in their
        // simplified form (`coalesce` becomes a CASE), and constant parts are folded.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(df_schema.clone()))
                .with_config_options(Arc::clone(session.config_options()))
                .build(),
        );
        let mut outputs = Vec::with_capacity(logical.len());
        let mut produced = Vec::with_capacity(logical.len());
        for (field, sql) in logical {
            let expr = session
                .create_logical_expr(&sql, &df_schema)
                .and_then(|e| simplifier.simplify(e))
                .map_err(|e| format!("field {field}: {}", message(&e)))?;
            let physical = session
                .create_physical_expr(expr, &df_schema)
                .map_err(|e| format!("field {field}: {}", message(&e)))?;
            let data_type = physical
                .data_type(&schema)
                .map_err(|e| format!("field {field}: {}", message(&e)))?;
            produced.push((field.clone(), kind_of_output(&data_type)));
            outputs.push(Output {
                field,
                expr: physical,
            });
        }
        Ok((
            SqlStep {
                inputs,
                schema,
                outputs,
            },
            produced,
        ))
    }

    /// The fields the step computes, in its order (the order of [`SqlValues::take`]).
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|o| o.field.as_str())
    }

    /// Evaluates the step over payloads (all of one type and version) as one batch: per
    /// payload, its fields' values or why it failed. The values are laid out flat, row
    /// after row, so a batch costs no allocation per event. The upcaster keeps batches
    /// small (its SQL chunks) so that their maps stay in the cache.
    pub(crate) fn eval_values(&self, payloads: &[&Obj<'_>]) -> SqlValues {
        let width = self.outputs.len();
        let mut out = SqlValues {
            width,
            values: vec![Lite::Null; payloads.len() * width],
            failed: vec![None; payloads.len()],
        };
        self.eval_into(payloads, &mut out.values, &mut out.failed);
        out
    }

    /// [`SqlStep::eval_values`] as one result per payload (tests).
    #[cfg(test)]
    pub(crate) fn eval(&self, payloads: &[&Obj<'_>]) -> Vec<RowResult> {
        let mut values = self.eval_values(payloads);
        (0..payloads.len())
            .map(|row| {
                values.take(row).map(|vs| {
                    self.fields()
                        .map(str::to_owned)
                        .zip(vs.map(|v| v.to_value()))
                        .collect()
                })
            })
            .collect()
    }

    fn eval_into(
        &self,
        payloads: &[&Obj<'_>],
        values: &mut [Lite<'static>],
        failed: &mut [Option<String>],
    ) {
        let rows = payloads.len();
        let width = self.outputs.len();
        let columns: Vec<ArrayRef> = self
            .inputs
            .iter()
            .map(|input| build_column(input, payloads, failed))
            .collect();
        let batch = match RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        ) {
            Ok(b) => b,
            Err(e) => {
                for f in failed.iter_mut() {
                    *f = Some(format!("cannot build batch: {e}"));
                }
                return;
            }
        };
        for (j, output) in self.outputs.iter().enumerate() {
            let array = evaluate(&output.expr, &batch);
            for row in 0..rows {
                if failed[row].is_some() {
                    continue;
                }
                let result = match &array {
                    Ok(array) => to_json(array, row),
                    // The batch failed: attribute the error to the failing rows only.
                    Err(_) => evaluate(&output.expr, &batch.slice(row, 1))
                        .map_err(|e| message(&e))
                        .and_then(|a| to_json(&a, 0)),
                }
                .map(Lite::from_value);
                match result {
                    Ok(v) => values[row * width + j] = v,
                    Err(e) => failed[row] = Some(format!("field {}: {e}", output.field)),
                }
            }
        }
    }
}

/// What a SQL step computed over a batch (see [`SqlStep::eval_values`]).
pub(crate) struct SqlValues {
    width: usize,
    values: Vec<Lite<'static>>,
    failed: Vec<Option<String>>,
}

impl SqlValues {
    /// Row `row`'s values in the step's field order (moved out), or why it failed.
    pub(crate) fn take(
        &mut self,
        row: usize,
    ) -> Result<impl Iterator<Item = Lite<'static>> + '_, String> {
        match self.failed[row].take() {
            Some(e) => Err(e),
            None => Ok(self.values[row * self.width..(row + 1) * self.width]
                .iter_mut()
                .map(|v| std::mem::replace(v, Lite::Null))),
        }
    }
}

fn evaluate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> datafusion::common::Result<ArrayRef> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

/// Plans `sql` against `known`, adding each unknown referenced column as Utf8 until it plans.
fn plan_logical(
    session: &SessionState,
    sql: &str,
    known: &BTreeMap<String, ColumnKind>,
) -> Result<Expr, String> {
    let mut fields: BTreeMap<String, ColumnKind> = known.clone();
    loop {
        let schema = Schema::new(
            fields
                .iter()
                .map(|(name, kind)| Field::new(name, kind.data_type(), true))
                .collect::<Vec<_>>(),
        );
        let df_schema = DFSchema::try_from(schema).map_err(|e| e.to_string())?;
        match session.create_logical_expr(sql, &df_schema) {
            Ok(expr) => {
                // What is not a per-row expression is refused before planning it physically,
                // so the message names the reason rather than a planner limitation.
                check_allowed(&expr)?;
                // Type-check now: a bad expression is a load error, not a per-event one.
                session
                    .create_physical_expr(expr.clone(), &df_schema)
                    .map_err(|e| message(&e))?;
                return Ok(expr);
            }
            Err(e) => match e.find_root() {
                DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
                    SchemaError::FieldNotFound { field, .. }
                        if field.relation.is_none() && !fields.contains_key(&field.name) =>
                    {
                        fields.insert(field.name.clone(), ColumnKind::Json);
                    }
                    _ => return Err(message(&e)),
                },
                _ => return Err(message(&e)),
            },
        }
    }
}

/// Rejects what is not a deterministic per-row expression.
fn check_allowed(expr: &Expr) -> Result<(), String> {
    let mut problem = None;
    expr.exists(|e| {
        problem = match e {
            Expr::AggregateFunction(f) => Some(format!(
                "aggregate function {} is not allowed (expressions are evaluated per event)",
                f.func.name()
            )),
            Expr::WindowFunction(_) => Some("window functions are not allowed".to_owned()),
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                Some("subqueries are not allowed".to_owned())
            }
            Expr::Placeholder(_) => Some("placeholders are not allowed".to_owned()),
            Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
                Some(format!(
                    "function {} is not deterministic and is not allowed (an event must upcast the same way on every replay)",
                    f.func.name()
                ))
            }
            Expr::ScalarFunction(f) => unbounded_size(f.func.name(), &f.args),
            _ => None,
        };
        Ok(problem.is_some())
    })
    .map_err(|e| message(&e))?;
    problem.map_or(Ok(()), Err)
}

/// The longest value a SQL step may ask a function to build (`repeat`, `lpad`, `rpad`,
/// `array_repeat`): one event must not be able to demand unbounded memory.
pub(crate) const MAX_BUILT_LENGTH: i64 = 65_536;

/// Why a call of a function that builds a value as long as an argument says is refused:
/// the length must be a literal of at most [`MAX_BUILT_LENGTH`] (`repeat('x',
/// 2000000000)` would allocate 2 GB for every event). Functions that build arrays from
/// ranges (`range`, `generate_series`) are refused outright.
fn unbounded_size(name: &str, args: &[Expr]) -> Option<String> {
    use datafusion::common::ScalarValue;
    let length_arg = match name {
        "repeat" | "lpad" | "rpad" | "array_repeat" => 1,
        "range" | "generate_series" => {
            return Some(format!(
                "function {name} is not allowed in a SQL step: it builds an array as long as its arguments ask, without a bound"
            ));
        }
        _ => return None,
    };
    // A literal of any numeric type, as the integer it says.
    let literal = match args.get(length_arg) {
        Some(Expr::Literal(value, _)) => match value.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(n)) => n,
            _ => None,
        },
        _ => None,
    };
    match literal {
        Some(n) if n <= MAX_BUILT_LENGTH => None,
        Some(n) => Some(format!(
            "{name}(…, {n}) would build a value of {n} elements for every event, more than the {MAX_BUILT_LENGTH} a SQL step may"
        )),
        None => Some(format!(
            "the length given to {name} must be a literal integer of at most {MAX_BUILT_LENGTH} (one event must not be able to demand unbounded memory)"
        )),
    }
}

/// DataFusion's message without its backtrace, on one line.
fn message(e: &DataFusionError) -> String {
    let text = e.find_root().to_string();
    let text = text.split("\n\nbacktrace").next().unwrap_or(&text);
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The static kind of a computed field, for the steps after it.
fn kind_of_output(t: &DataType) -> ColumnKind {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnKind::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnKind::Float64,
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) if *s <= 0 => ColumnKind::Int64,
        DataType::Decimal128(..) | DataType::Decimal256(..) => ColumnKind::Float64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Utf8,
        DataType::Boolean => ColumnKind::Boolean,
        DataType::Timestamp(..) => ColumnKind::Timestamp,
        _ => ColumnKind::Json,
    }
}

/// Builds one input column from the payloads; a value that does not fit marks its row failed.
fn build_column(input: &Input, payloads: &[&Obj<'_>], failed: &mut [Option<String>]) -> ArrayRef {
    let name = input.name.as_str();
    let mut mismatch = |row: usize, v: &Lite<'_>, expected: &str| {
        if failed[row].is_none() {
            failed[row] = Some(format!(
                "field {name}: expected {expected} for sql, found {}",
                describe_lite(v)
            ));
        }
    };
    match input.kind {
        ColumnKind::Int64 => {
            let mut b = Int64Builder::with_capacity(payloads.len());
            for (row, p) in payloads.iter().enumerate() {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(v @ Lite::Num(n)) => match n.as_i64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    }) {
                        Some(i) => b.append_value(i),
                        None => {
                            mismatch(row, v, "an integer");
                            b.append_null()
                        }
                    },
                    Some(v) => {
                        mismatch(row, v, "an integer");
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnKind::Float64 => {
            let mut b = Float64Builder::with_capacity(payloads.len());
            for (row, p) in payloads.iter().enumerate() {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(Lite::Num(n)) => b.append_option(n.as_f64()),
                    Some(v) => {
                        mismatch(row, v, "a number");
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnKind::Boolean => {
            let mut b = BooleanBuilder::with_capacity(payloads.len());
            for (row, p) in payloads.iter().enumerate() {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(Lite::Bool(v)) => b.append_value(*v),
                    Some(v) => {
                        mismatch(row, v, "a boolean");
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnKind::Utf8 => {
            let mut b = StringBuilder::with_capacity(payloads.len(), payloads.len() * 8);
            for (row, p) in payloads.iter().enumerate() {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(Lite::Str(s)) => b.append_value(s),
                    Some(v) => {
                        mismatch(row, v, "a string");
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnKind::Json => {
            let mut b = StringBuilder::with_capacity(payloads.len(), payloads.len() * 8);
            for p in payloads {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(Lite::Str(s)) => b.append_value(s),
                    Some(v) => b.append_value(v.to_json()),
                }
            }
            Arc::new(b.finish())
        }
        ColumnKind::Timestamp => {
            let mut b =
                TimestampMicrosecondBuilder::with_capacity(payloads.len()).with_timezone("UTC");
            for (row, p) in payloads.iter().enumerate() {
                match p.get(name) {
                    None | Some(Lite::Null) => b.append_null(),
                    Some(v @ Lite::Str(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
                        Ok(t) => b.append_value(t.timestamp_micros()),
                        Err(_) => {
                            mismatch(row, v, "an RFC 3339 date-time");
                            b.append_null()
                        }
                    },
                    Some(v) => {
                        mismatch(row, v, "an RFC 3339 date-time");
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// One value of a result array as JSON.
fn to_json(array: &ArrayRef, row: usize) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let cast =
        |to: &DataType| arrow::compute::cast(&array.slice(row, 1), to).map_err(|e| e.to_string());
    Ok(match array.data_type() {
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            Value::from(cast(&DataType::Int64)?.as_primitive::<Int64Type>().value(0))
        }
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row))?,
        DataType::Float16 | DataType::Float32 => float(
            cast(&DataType::Float64)?
                .as_primitive::<Float64Type>()
                .value(0),
        )?,
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) if *s <= 0 => {
            let a = cast(&DataType::Int64)?;
            if a.is_null(0) {
                return Err("decimal value out of the integer range".to_owned());
            }
            Value::from(a.as_primitive::<Int64Type>().value(0))
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) => float(
            cast(&DataType::Float64)?
                .as_primitive::<Float64Type>()
                .value(0),
        )?,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::Timestamp(..) => {
            let a = cast(&DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(0);
            let t = chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| format!("timestamp {micros} µs is out of range"))?;
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        DataType::Null => Value::Null,
        _ => {
            let formatter = arrow::util::display::ArrayFormatter::try_new(
                array.as_ref(),
                &arrow::util::display::FormatOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            Value::String(formatter.value(row).to_string())
        }
    })
}

fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("the expression yielded {f}, which JSON cannot hold"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(fields: &[(&str, &str)], known: &[(&str, ColumnKind)]) -> Result<SqlStep, String> {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(f, s)| (f.to_string(), s.to_string()))
            .collect();
        let known = known.iter().map(|(n, k)| (n.to_string(), *k)).collect();
        SqlStep::compile(&planning_session(), &fields, &known).map(|(s, _)| s)
    }

    fn maps(values: &[Value]) -> Vec<Obj<'static>> {
        values
            .iter()
            .map(|v| Obj::from_map(v.as_object().unwrap().clone()))
            .collect()
    }

    #[test]
    fn computes_fields_per_row() {
        let s = step(
            &[
                ("cents", "CAST(round(amount * 100) AS BIGINT)"),
                ("tag", "upper(memo)"),
            ],
            &[("amount", ColumnKind::Float64), ("memo", ColumnKind::Utf8)],
        )
        .unwrap();
        let input = maps(&[
            json!({"amount": 12.5, "memo": "x"}),
            json!({"amount": null}),
            json!({"amount": 3}),
        ]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(
            out[0].as_ref().unwrap(),
            &vec![("cents".into(), json!(1250)), ("tag".into(), json!("X"))]
        );
        assert_eq!(
            out[1].as_ref().unwrap(),
            &vec![("cents".into(), json!(null)), ("tag".into(), json!(null))]
        );
        assert_eq!(out[2].as_ref().unwrap()[0].1, json!(300));
    }

    #[test]
    fn a_value_of_the_wrong_type_fails_its_event_only() {
        let s = step(&[("c", "amount * 2")], &[("amount", ColumnKind::Float64)]).unwrap();
        let input = maps(&[
            json!({"amount": 1}),
            json!({"amount": "x"}),
            json!({"amount": 2}),
        ]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(out[0].as_ref().unwrap()[0].1, json!(2.0));
        let e = out[1].as_ref().unwrap_err();
        assert!(e.contains("field amount"), "{e}");
        assert_eq!(out[2].as_ref().unwrap()[0].1, json!(4.0));
    }

    #[test]
    fn functions_that_exist_only_simplified_work() {
        // `coalesce` and `nvl` are rewritten to CASE by the simplifier; without it they
        // failed every event with an internal error.
        let s = step(
            &[("m", "coalesce(memo, 'none')"), ("n", "nvl(memo, 'nil')")],
            &[("memo", ColumnKind::Utf8)],
        )
        .unwrap();
        let input = maps(&[json!({"memo": "coffee"}), json!({})]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(out[0].as_ref().unwrap()[0].1, json!("coffee"));
        assert_eq!(out[1].as_ref().unwrap()[0].1, json!("none"));
        assert_eq!(out[1].as_ref().unwrap()[1].1, json!("nil"));
    }

    #[test]
    fn a_value_too_large_to_build_fails_its_event_only() {
        // Each `repeat` is within the literal bound; over a long field it would build
        // 64 KiB times the field's length.
        let s = step(
            &[("big", "repeat(memo, 65536)")],
            &[("memo", ColumnKind::Utf8)],
        )
        .unwrap();
        let long = "x".repeat(1024);
        let input = maps(&[json!({"memo": "ab"}), json!({"memo": long}), json!({})]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(
            out[0].as_ref().unwrap()[0].1.as_str().map(str::len),
            Some(2 * 65536)
        );
        let e = out[1].as_ref().unwrap_err();
        assert!(
            e.contains("field big") && e.contains("repeat would build a value of up to 64.0 MiB"),
            "{e}"
        );
        assert_eq!(out[2].as_ref().unwrap()[0].1, json!(null));
    }

    #[test]
    fn an_expression_error_is_attributed_to_its_rows() {
        // Undeclared column: Utf8; the cast fails for "abc" only.
        let s = step(&[("n", "CAST(code AS BIGINT)")], &[]).unwrap();
        let input = maps(&[
            json!({"code": "12"}),
            json!({"code": "abc"}),
            json!({"code": 7}),
        ]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(out[0].as_ref().unwrap()[0].1, json!(12));
        assert!(out[1].is_err(), "{:?}", out[1]);
        assert_eq!(out[2].as_ref().unwrap()[0].1, json!(7));
    }

    #[test]
    fn rejects_non_row_expressions_and_type_errors() {
        let e = step(&[("x", "sum(a)")], &[("a", ColumnKind::Int64)]).unwrap_err();
        assert!(e.contains("field x") && e.contains("sum"), "{e}");
        let e = step(&[("x", "random()")], &[]).unwrap_err();
        assert!(e.contains("random"), "{e}");
        let e = step(&[("x", "now()")], &[]).unwrap_err();
        assert!(e.contains("now"), "{e}");
        let e = step(&[("x", "a +")], &[]).unwrap_err();
        assert!(e.starts_with("field x"), "{e}");
        let e = step(&[("x", "nosuchfunction(a)")], &[]).unwrap_err();
        assert!(e.contains("nosuchfunction"), "{e}");
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let s = step(
            &[("t", "at + INTERVAL '1 hour'")],
            &[("at", ColumnKind::Timestamp)],
        )
        .unwrap();
        let input = maps(&[json!({"at": "2021-03-04T05:06:07Z"})]);
        let refs: Vec<&Obj<'_>> = input.iter().collect();
        let out = s.eval(&refs);
        assert_eq!(out[0].as_ref().unwrap()[0].1, json!("2021-03-04T06:06:07Z"));
    }
}
