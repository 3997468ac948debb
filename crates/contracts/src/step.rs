//! Upcast steps: parsing them from the catalog and applying the native ones
//! (`rename`, `default`, `drop`, `cast`) to one payload.

use std::borrow::Cow;

use serde_json::{Number, Value};

use crate::jq::JqProgram;
use crate::lite::{Lite, Obj};
use crate::sql::SqlStep;

/// The step kinds a catalog may use, in the order the error message lists them.
pub(crate) const STEP_KINDS: [&str; 6] = ["rename", "default", "drop", "cast", "sql", "jq"];

/// One compiled step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// `rename: {old: new}`: moves a field; a missing field is left alone.
    Rename(Vec<(String, String)>),
    /// `default: {field: value}`: sets a field that is missing or null.
    Default(Vec<(String, Lite<'static>)>),
    /// `drop: [field]`: removes fields.
    Drop(Vec<String>),
    /// `cast: {field: type}`: converts a field's value.
    Cast(Vec<(String, CastTo)>),
    /// `sql: {field: expression}`: computed fields, evaluated over a batch.
    Sql(Box<SqlStep>),
    /// `jq: program`: reshapes the payload.
    Jq(std::sync::Arc<JqProgram>),
}

impl Step {
    /// The step's kind as written in the catalog.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Step::Rename(_) => "rename",
            Step::Default(_) => "default",
            Step::Drop(_) => "drop",
            Step::Cast(_) => "cast",
            Step::Sql(_) => "sql",
            Step::Jq(_) => "jq",
        }
    }

    /// Applies a native step to one payload. SQL and jq steps are run by the upcaster.
    pub(crate) fn apply_native<'a>(&'a self, obj: &mut Obj<'a>) -> Result<(), String> {
        match self {
            Step::Rename(pairs) => {
                for (old, new) in pairs {
                    if let Some(v) = obj.remove(old) {
                        obj.insert(Cow::Borrowed(new), v);
                    }
                }
            }
            Step::Default(pairs) => {
                for (field, value) in pairs {
                    match obj.get_mut(field) {
                        Some(slot @ Lite::Null) => *slot = value.reborrow(),
                        Some(_) => {}
                        None => obj.insert(Cow::Borrowed(field), value.reborrow()),
                    }
                }
            }
            Step::Drop(fields) => {
                for field in fields {
                    obj.remove(field);
                }
            }
            Step::Cast(pairs) => {
                for (field, to) in pairs {
                    if let Some(slot) = obj.get_mut(field) {
                        let cast = to.cast(slot).ok_or_else(|| {
                            format!(
                                "cannot cast field {field} ({}) to {}",
                                describe_lite(slot),
                                to.as_str()
                            )
                        })?;
                        if let Some(v) = cast {
                            *slot = v;
                        }
                    }
                }
            }
            Step::Sql(_) | Step::Jq(_) => {}
        }
        Ok(())
    }
}

/// Target types of `cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    Integer,
    Number,
    String,
    Boolean,
}

impl CastTo {
    pub(crate) fn parse(s: &str) -> Option<CastTo> {
        Some(match s {
            "integer" => CastTo::Integer,
            "number" => CastTo::Number,
            "string" => CastTo::String,
            "boolean" => CastTo::Boolean,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CastTo::Integer => "integer",
            CastTo::Number => "number",
            CastTo::String => "string",
            CastTo::Boolean => "boolean",
        }
    }

    /// `None`: cannot convert; `Some(None)`: already fine, keep it; `Some(Some(v))`: replace.
    fn cast(self, v: &Lite<'_>) -> Option<Option<Lite<'static>>> {
        if v.is_null() {
            return Some(None);
        }
        let num = |n: Number| Some(Some(Lite::Num(n)));
        match self {
            CastTo::Integer => match v {
                Lite::Num(n) if n.is_i64() || n.is_u64() => Some(None),
                Lite::Num(n) => integral(n.as_f64()?).map(Some),
                Lite::Str(s) => {
                    let s = s.trim();
                    if let Ok(i) = s.parse::<i64>() {
                        num(i.into())
                    } else if let Ok(u) = s.parse::<u64>() {
                        num(u.into())
                    } else {
                        integral(s.parse::<f64>().ok()?).map(Some)
                    }
                }
                _ => None,
            },
            CastTo::Number => match v {
                Lite::Num(_) => Some(None),
                Lite::Str(s) => {
                    // As JSON would read the text: "3" → 3, "7.25" → 7.25.
                    let s = s.trim();
                    if let Ok(i) = s.parse::<i64>() {
                        return num(i.into());
                    }
                    let f = s.parse::<f64>().ok()?;
                    Number::from_f64(f).and_then(num)
                }
                _ => None,
            },
            CastTo::String => match v {
                Lite::Str(_) => Some(None),
                Lite::Num(n) => Some(Some(Lite::Str(Cow::Owned(n.to_string())))),
                Lite::Bool(b) => Some(Some(Lite::Str(Cow::Owned(b.to_string())))),
                _ => None,
            },
            CastTo::Boolean => match v {
                Lite::Bool(_) => Some(None),
                Lite::Str(s) => match s.as_ref() {
                    "true" => Some(Some(Lite::Bool(true))),
                    "false" => Some(Some(Lite::Bool(false))),
                    _ => None,
                },
                Lite::Num(n) => match n.as_f64() {
                    Some(0.0) => Some(Some(Lite::Bool(false))),
                    Some(1.0) => Some(Some(Lite::Bool(true))),
                    _ => None,
                },
                _ => None,
            },
        }
    }
}

/// An integral, in-range float as a JSON integer.
fn integral(f: f64) -> Option<Lite<'static>> {
    // 2^63 is exactly representable; anything at or above it does not fit an i64.
    (f.is_finite()
        && f.fract() == 0.0
        && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f))
    .then(|| Lite::Num((f as i64).into()))
}

/// A short description of a value for error messages: its JSON type and (truncated) text.
pub(crate) fn describe_value(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    describe(kind, v.to_string())
}

/// [`describe_value`] of a light value.
pub(crate) fn describe_lite(v: &Lite<'_>) -> String {
    let kind = match v {
        Lite::Null => "null",
        Lite::Bool(_) => "boolean",
        Lite::Num(_) => "number",
        Lite::Str(_) => "string",
        Lite::Arr(_) => "array",
        Lite::Obj(_) => "object",
    };
    describe(kind, v.to_json())
}

fn describe(kind: &str, mut text: String) -> String {
    if text.len() > 40 {
        let mut end = 40;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    format!("{kind} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(step: Step, input: Value) -> Result<Value, String> {
        let Value::Object(map) = input else {
            panic!("object expected")
        };
        let mut obj = Obj::from_map(map);
        step.apply_native(&mut obj)?;
        Ok(Value::Object(obj.to_map()))
    }

    fn cast(field: &str, to: &str) -> Step {
        Step::Cast(vec![(field.to_owned(), CastTo::parse(to).unwrap())])
    }

    #[test]
    fn rename_moves_and_ignores_missing() {
        let s = || Step::Rename(vec![("a".into(), "b".into())]);
        assert_eq!(
            apply(s(), json!({"a": 1, "c": 2})).unwrap(),
            json!({"b": 1, "c": 2})
        );
        assert_eq!(apply(s(), json!({"c": 2})).unwrap(), json!({"c": 2}));
    }

    #[test]
    fn default_sets_missing_or_null() {
        let s = || Step::Default(vec![("c".into(), Lite::from_value(json!("EUR")))]);
        assert_eq!(apply(s(), json!({})).unwrap(), json!({"c": "EUR"}));
        assert_eq!(apply(s(), json!({"c": null})).unwrap(), json!({"c": "EUR"}));
        assert_eq!(
            apply(s(), json!({"c": "USD"})).unwrap(),
            json!({"c": "USD"})
        );
    }

    #[test]
    fn drop_removes() {
        let s = Step::Drop(vec!["a".into(), "zz".into()]);
        assert_eq!(apply(s, json!({"a": 1, "b": 2})).unwrap(), json!({"b": 2}));
    }

    #[test]
    fn cast_integer() {
        for (input, out) in [
            (json!(12), json!(12)),
            (json!(12.0), json!(12)),
            (json!("12"), json!(12)),
            (json!(" 12.0 "), json!(12)),
            (json!(null), json!(null)),
        ] {
            assert_eq!(
                apply(cast("a", "integer"), json!({"a": input})).unwrap(),
                json!({"a": out})
            );
        }
        for bad in [
            json!(12.5),
            json!("x"),
            json!(true),
            json!([1]),
            json!(1e300),
        ] {
            let e = apply(cast("a", "integer"), json!({"a": bad})).unwrap_err();
            assert!(e.contains("cannot cast field a"), "{e}");
        }
        assert_eq!(apply(cast("a", "integer"), json!({})).unwrap(), json!({}));
    }

    #[test]
    fn cast_number_string_boolean() {
        assert_eq!(
            apply(cast("a", "number"), json!({"a": "7.25"})).unwrap(),
            json!({"a": 7.25})
        );
        assert_eq!(
            apply(cast("a", "number"), json!({"a": "3"})).unwrap(),
            json!({"a": 3})
        );
        assert!(apply(cast("a", "number"), json!({"a": "NaN"})).is_err());
        assert!(apply(cast("a", "number"), json!({"a": {}})).is_err());
        assert_eq!(
            apply(cast("a", "string"), json!({"a": 1.5})).unwrap(),
            json!({"a": "1.5"})
        );
        assert_eq!(
            apply(cast("a", "string"), json!({"a": false})).unwrap(),
            json!({"a": "false"})
        );
        assert!(apply(cast("a", "string"), json!({"a": [1]})).is_err());
        assert_eq!(
            apply(cast("a", "boolean"), json!({"a": "true"})).unwrap(),
            json!({"a": true})
        );
        assert_eq!(
            apply(cast("a", "boolean"), json!({"a": 0})).unwrap(),
            json!({"a": false})
        );
        assert_eq!(
            apply(cast("a", "boolean"), json!({"a": 1})).unwrap(),
            json!({"a": true})
        );
        assert!(apply(cast("a", "boolean"), json!({"a": 2})).is_err());
        assert!(apply(cast("a", "boolean"), json!({"a": "yes"})).is_err());
    }
}
