//! Functions that build values as large as their arguments ask, bounded per value.
//!
//! Most SQL functions build a value no larger than their inputs together, so a SQL step
//! or a projection can only hold what the batch it reads holds. A few multiply instead:
//! `repeat(s, n)` builds `len(s) × n` bytes, `replace` and `regexp_replace` up to the
//! length of the replacement for every character of the input, `lpad`/`rpad` and the
//! array functions `array_repeat`, `array_resize`, `range` and `generate_series` as
//! many characters or elements as asked, `array_replace_all` the replacement for every
//! element, and `encode` doubles its input (so nested, it doubles again). Nested, or over a large payload field, one event could ask for
//! gigabytes before DataFusion's memory pool (which accounts operators, not function
//! results) saw any of it. Here each of them is replaced, in every session replayfleet
//! plans SQL in, by the same function behind a guard that works out, before calling it,
//! how many bytes each row's result can take at most, and fails the call when one row
//! would exceed [`MAX_VALUE_BYTES`] (or the whole batch [`MAX_BATCH_BYTES`]). A SQL step
//! re-evaluates a failed batch row by row, so only the event asking too much fails
//! (`upcast_failed`, naming the function); a projection fails its shard with the same
//! message. With every result bounded, a function's time is bounded too (DataFusion's
//! regular expressions run in linear time).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most bytes one call of a growing function may build for one row.
pub const MAX_VALUE_BYTES: u64 = 16 * 1024 * 1024;

/// The most bytes one call of a growing function may build for a whole batch; past it
/// the call fails and a SQL step tries its rows one at a time.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `replace(s, from, to)`: `len(s)` plus `len(to)` per occurrence of `from` (per
    /// character when `from` is empty).
    Replace,
    /// `regexp_replace(s, pattern, replacement[, flags])`: a replacement per match (at
    /// most one per character, and one more), each as long as the replacement, or, when
    /// it refers to groups (`$1`, `${name}`), as long as the replacement and the input.
    RegexpReplace,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `array_resize(array, n[, value])`: `n` elements.
    ArrayResize,
    /// `array_replace_all(array, from, to)`: the replacement for every element.
    ArrayReplaceAll,
    /// `lpad(s, n[, fill])`, `rpad`: `n` characters (up to 4 bytes each). A SQL step
    /// takes only a literal `n`; a projection may pass a column.
    Pad,
    /// `encode(s, 'hex' | 'base64')`: twice the input at most; nested, it doubles.
    Encode,
    /// `range(stop)`, `range(start, stop[, step])`, `generate_series` as array
    /// functions: one element per step, over integers, or over dates and timestamps by
    /// an interval (a month counted as 28 days); refused in SQL steps.
    Range,
}

/// The guarded functions, by the name DataFusion registers them under.
const GUARDED: [(&str, Growth); 11] = [
    ("repeat", Growth::Repeat),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("array_replace_all", Growth::ArrayReplaceAll),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("encode", Growth::Encode),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
];

/// Replaces each growing function of `ctx` with the same function behind its guard.
pub fn bound_functions(ctx: &SessionContext) {
    let state = ctx.state();
    let functions = state.scalar_functions();
    for (name, growth) in GUARDED {
        if let Some(inner) = functions.get(name) {
            let inner = ScalarUDF::clone(inner);
            ctx.register_udf(ScalarUDF::new_from_impl(Guarded { inner, growth }));
        }
    }
}

/// A growing function behind its guard (see the module's documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Guarded {
    inner: ScalarUDF,
    growth: Growth,
}

impl Guarded {
    /// Fails when one row's result could exceed [`MAX_VALUE_BYTES`], or the batch's
    /// [`MAX_BATCH_BYTES`].
    fn check(&self, args: &[ColumnarValue], rows: usize) -> Result<()> {
        let args: Vec<Arg<'_>> = args.iter().map(Arg::new).collect();
        let mut total: u64 = 0;
        for row in 0..rows {
            let bound = self.bound(&args, row);
            if bound > MAX_VALUE_BYTES {
                return exec_err!(
                    "{} would build a value of up to {} for one row, more than the {} one call may build (docs/CONTRACTS.md, \"Bounds\")",
                    self.inner.name(),
                    bytes(bound),
                    bytes(MAX_VALUE_BYTES)
                );
            }
            total = total.saturating_add(bound);
        }
        if total > MAX_BATCH_BYTES {
            return exec_err!(
                "{} would build values of up to {} for a batch of {rows} rows, more than the {} one call may build",
                self.inner.name(),
                bytes(total),
                bytes(MAX_BATCH_BYTES)
            );
        }
        Ok(())
    }

    /// The most bytes the function's result can take for `row`.
    fn bound(&self, args: &[Arg<'_>], row: usize) -> u64 {
        let weight = |i: usize| args.get(i).map_or(0, |a| a.weight(row));
        let count = |i: usize| args.get(i).map_or(0, |a| a.count(row));
        let length = |i: usize| args.get(i).map_or(0, |a| a.integer(row));
        match self.growth {
            Growth::Repeat => weight(0).saturating_mul(length(1)),
            Growth::Replace => {
                // Counted exactly when both are text (the call scans the text anyway).
                let text = weight(0);
                let matches = match (args[0].text(row), args.get(1).and_then(|a| a.text(row))) {
                    (Some(t), Some("")) => t.chars().count() as u64 + 1,
                    (Some(t), Some(from)) => t.matches(from).count() as u64,
                    _ => text + 1,
                };
                text.saturating_add(matches.saturating_mul(weight(2)))
            }
            Growth::RegexpReplace => {
                // Matches do not overlap, so a group reference (`$1`, `${name}`, `\1`)
                // expands, over all matches together, to at most the text's length.
                let text = weight(0);
                let replacement = weight(2);
                let references = args.get(2).map_or(0, |a| a.group_references(row));
                // Without the `g` flag only the first match is replaced.
                let global = args
                    .get(3)
                    .and_then(|a| a.text(row))
                    .is_some_and(|flags| flags.contains('g'));
                let matches = if global { text + 1 } else { 1 };
                text.saturating_add(matches.saturating_mul(replacement))
                    .saturating_add(references.saturating_mul(text))
            }
            Growth::ArrayRepeat => weight(0).max(1).saturating_mul(length(1)),
            Growth::ArrayResize => {
                let element = if args.len() > 2 { weight(2) } else { 16 };
                let existing = weight(0);
                existing.saturating_add(element.max(1).saturating_mul(length(1)))
            }
            Growth::ArrayReplaceAll => weight(0).saturating_add(count(0).saturating_mul(weight(2))),
            Growth::Pad => length(1).saturating_mul(4),
            Growth::Encode => weight(0).saturating_mul(2).saturating_add(4),
            Growth::Range => {
                if let Some(start) = args.first().and_then(|a| a.instant_nanos(row)) {
                    // dates and timestamps, stepped by an interval
                    let stop = args
                        .get(1)
                        .and_then(|a| a.instant_nanos(row))
                        .unwrap_or(start);
                    let step = args
                        .get(2)
                        .and_then(|a| a.interval_nanos(row))
                        .unwrap_or(1)
                        .max(1);
                    let span = u64::try_from(stop.abs_diff(start) / step).unwrap_or(u64::MAX);
                    return span.saturating_add(1).saturating_mul(16);
                }
                let signed = |i: usize| args.get(i).map_or(0, |a| a.signed(row));
                let (start, stop, step) = match args.len() {
                    1 => (0, signed(0), 1),
                    2 => (signed(0), signed(1), 1),
                    _ => (signed(0), signed(1), signed(2)),
                };
                let span =
                    u64::try_from(i128::from(stop).abs_diff(i128::from(start))).unwrap_or(u64::MAX);
                (span / step.unsigned_abs().max(1))
                    .saturating_add(1)
                    .saturating_mul(16)
            }
        }
    }
}

/// One argument of a call: a column or a scalar, as an array.
struct Arg<'a> {
    array: std::borrow::Cow<'a, ArrayRef>,
    scalar: bool,
}

impl<'a> Arg<'a> {
    fn new(value: &'a ColumnarValue) -> Self {
        match value {
            ColumnarValue::Array(a) => Arg {
                array: std::borrow::Cow::Borrowed(a),
                scalar: false,
            },
            ColumnarValue::Scalar(s) => Arg {
                array: std::borrow::Cow::Owned(
                    s.to_array_of_size(1)
                        .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Null, 1)),
                ),
                scalar: true,
            },
        }
    }

    fn index(&self, row: usize) -> usize {
        if self.scalar { 0 } else { row }
    }

    /// The bytes the value of `row` takes (see [`weight`]).
    fn weight(&self, row: usize) -> u64 {
        weight(self.array.as_ref(), self.index(row))
    }

    /// The elements of the list in `row` (0 for what is not a list).
    fn count(&self, row: usize) -> u64 {
        let (array, row) = (self.array.as_ref(), self.index(row));
        if row >= array.len() || array.is_null(row) {
            return 0;
        }
        match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value(row).len() as u64,
            DataType::LargeList(_) => array.as_list::<i64>().value(row).len() as u64,
            DataType::FixedSizeList(_, n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    }

    /// The value of `row` as a non-negative integer (0 for null, negative or not a
    /// number).
    fn integer(&self, row: usize) -> u64 {
        u64::try_from(self.signed(row)).unwrap_or(0)
    }

    /// The value of `row` as an integer (0 for null or not a number).
    fn signed(&self, row: usize) -> i64 {
        let row = self.index(row);
        if row >= self.array.len() || !self.array.data_type().is_numeric() {
            return 0;
        }
        match ScalarValue::try_from_array(self.array.as_ref(), row)
            .and_then(|v| v.cast_to(&DataType::Int64))
        {
            Ok(ScalarValue::Int64(Some(n))) => n,
            _ => 0,
        }
    }

    /// The value of `row` as nanoseconds since the epoch, when the argument is a date or
    /// a timestamp and not null.
    fn instant_nanos(&self, row: usize) -> Option<i128> {
        let row = self.index(row);
        let array = self.array.as_ref();
        if row >= array.len() || array.is_null(row) {
            return None;
        }
        // (the value, nanoseconds per unit)
        let (value, per_unit): (i64, i128) = match ScalarValue::try_from_array(array, row).ok()? {
            ScalarValue::Date32(Some(days)) => (i64::from(days), 86_400_000_000_000),
            ScalarValue::Date64(Some(v)) | ScalarValue::TimestampMillisecond(Some(v), _) => {
                (v, 1_000_000)
            }
            ScalarValue::TimestampSecond(Some(v), _) => (v, 1_000_000_000),
            ScalarValue::TimestampMicrosecond(Some(v), _) => (v, 1_000),
            ScalarValue::TimestampNanosecond(Some(v), _) => (v, 1),
            _ => return None,
        };
        Some(i128::from(value) * per_unit)
    }

    /// The shortest time one step of the interval in `row` can advance, in nanoseconds
    /// (a month counts as 28 days); an interval whose parts differ in sign counts as one
    /// nanosecond, so the bound never undercounts. `None` when it is not an interval.
    fn interval_nanos(&self, row: usize) -> Option<u128> {
        const DAY: i128 = 86_400_000_000_000;
        let row = self.index(row);
        let array = self.array.as_ref();
        if row >= array.len() || array.is_null(row) {
            return None;
        }
        let parts: [i128; 3] = match ScalarValue::try_from_array(array, row).ok()? {
            ScalarValue::IntervalYearMonth(Some(months)) => [i128::from(months) * 28 * DAY, 0, 0],
            ScalarValue::IntervalDayTime(Some(v)) => [
                0,
                i128::from(v.days) * DAY,
                i128::from(v.milliseconds) * 1_000_000,
            ],
            ScalarValue::IntervalMonthDayNano(Some(v)) => [
                i128::from(v.months) * 28 * DAY,
                i128::from(v.days) * DAY,
                i128::from(v.nanoseconds),
            ],
            _ => return None,
        };
        let same_sign = parts.iter().all(|p| *p >= 0) || parts.iter().all(|p| *p <= 0);
        Some(if same_sign {
            parts.iter().sum::<i128>().unsigned_abs()
        } else {
            1
        })
    }

    /// The text of `row`, when the argument is text and not null.
    fn text(&self, row: usize) -> Option<&str> {
        let row = self.index(row);
        let array = self.array.as_ref();
        if row >= array.len() || array.is_null(row) {
            return None;
        }
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
            DataType::Utf8View => Some(array.as_string_view().value(row)),
            _ => None,
        }
    }

    /// How many capture-group references the text of `row` may hold (each `$` or `\\`
    /// counts as one); a replacement that is not text counts as one per byte.
    fn group_references(&self, row: usize) -> u64 {
        match self.text(row) {
            Some(t) => t.bytes().filter(|b| *b == b'$' || *b == b'\\').count() as u64,
            None => self.weight(row),
        }
    }
}

/// The bytes the value at `row` of `array` takes: the length of a string or binary
/// value, the sum of a list's elements, 16 for anything else (a number, a date), 0 for
/// null.
fn weight(array: &dyn Array, row: usize) -> u64 {
    if row >= array.len() || array.is_null(row) {
        return 0;
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).len() as u64,
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).len() as u64,
        DataType::Utf8View => array.as_string_view().value(row).len() as u64,
        DataType::Binary => array.as_binary::<i32>().value(row).len() as u64,
        DataType::LargeBinary => array.as_binary::<i64>().value(row).len() as u64,
        DataType::BinaryView => array.as_binary_view().value(row).len() as u64,
        DataType::List(_) => elements(&array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => elements(&array.as_list::<i64>().value(row)),
        DataType::FixedSizeList(..) => elements(&array.as_fixed_size_list().value(row)),
        _ => 16,
    }
}

/// The bytes of every element of `values`, at least 16 each.
fn elements(values: &ArrayRef) -> u64 {
    (0..values.len())
        .map(|i| weight(values.as_ref(), i).max(16))
        .fold(0, u64::saturating_add)
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= 1024 * MIB {
        format!("{:.1} GiB", n as f64 / (1024 * MIB) as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

// Delegates everything but `invoke_with_args` (and `simplify`: the guarded call must
// stay a call of the guard, not be rewritten into the inner function's simplified form).
impl ScalarUDFImpl for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs<'_>,
    ) -> Result<arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn eval(sql: &str) -> std::result::Result<Vec<ArrayRef>, String> {
        let ctx = SessionContext::new();
        bound_functions(&ctx);
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| Arc::clone(b.column(0))).collect())
    }

    #[tokio::test]
    async fn growing_functions_work_within_their_bound() {
        let cases = [
            "SELECT repeat('ab', 3)",
            "SELECT replace('banana', 'a', 'oo')",
            "SELECT regexp_replace('banana', 'a', '$0$0', 'g')",
            // group references over a long text stay linear in it: 60 KB in, ~120 KB out
            "SELECT length(regexp_replace(repeat('ab', 30000), '(a)', '${1}x', 'g'))",
            "SELECT array_repeat(1, 4)",
            "SELECT array_resize(make_array(1, 2), 5, 0)",
            "SELECT array_replace_all(make_array(1, 2, 1), 1, 9)",
            "SELECT lpad('7', 3, '0')",
            "SELECT encode('ab', 'hex')",
            "SELECT range(2, 5)",
            "SELECT cardinality(range(DATE '2000-01-01', DATE '2100-01-01', INTERVAL '1' DAY))",
        ];
        let expected = [
            "ababab",
            "boonoonoo",
            "baanaanaa",
            "90000",
            "[1, 1, 1, 1]",
            "[1, 2, 0, 0, 0]",
            "[9, 2, 9]",
            "007",
            "6162",
            "[2, 3, 4]",
            "36525",
        ];
        for (sql, want) in cases.iter().zip(expected) {
            let arrays = eval(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            let shown = arrow::util::display::array_value_to_string(&arrays[0], 0).unwrap();
            assert_eq!(shown, want, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_call_that_would_build_too_much_fails_naming_the_function() {
        // Each stays within the per-call literal limits a SQL step checks at load, and
        // multiplies past the per-value bound at run time.
        for (sql, function) in [
            ("SELECT repeat(repeat('x', 65536), 65536)", "repeat"),
            (
                "SELECT replace(repeat('a', 60000), 'a', repeat('b', 600))",
                "replace",
            ),
            (
                "SELECT regexp_replace(repeat('a', 60000), 'a', repeat('b', 600), 'g')",
                "regexp_replace",
            ),
            (
                "SELECT array_repeat(array_repeat('xxxxxxxx', 65536), 65536)",
                "array_repeat",
            ),
            (
                "SELECT array_resize(make_array(1), 2000000000)",
                "array_resize",
            ),
            // a century of seconds: 3.2 billion timestamps
            (
                "SELECT range(TIMESTAMP '2000-01-01 00:00:00', TIMESTAMP '2100-01-01 00:00:00', INTERVAL '1' SECOND)",
                "range",
            ),
            (
                "SELECT generate_series(DATE '0001-01-01', DATE '9999-01-01', INTERVAL '1 hour')",
                "generate_series",
            ),
        ] {
            let e = eval(sql).await.unwrap_err();
            assert!(
                e.contains(&format!("{function} would build a value of up to")),
                "{sql}: {e}"
            );
            assert!(e.contains("16.0 MiB"), "{sql}: {e}");
        }
    }

    #[tokio::test]
    async fn the_bound_holds_for_values_of_a_column() {
        let ctx = SessionContext::new();
        bound_functions(&ctx);
        ctx.sql("CREATE TABLE t (s VARCHAR, n BIGINT) AS VALUES ('ab', 2), ('xyz', 20000000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let ok = ctx
            .sql("SELECT repeat(s, n) FROM t WHERE n < 10")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ok[0].num_rows(), 1);
        let e = ctx
            .sql("SELECT repeat(s, n) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("repeat would build a value of up to"),
            "{e}"
        );
    }
}
