//! `jq` steps through jaq 3: programs compiled once at load, run per event.
//!
//! jaq works on its own value type, [`jaq_json::Val`]. jaq-json's `serde` feature only
//! deserializes `Val` (no conversion from or to `serde_json::Value`), so the conversions
//! here are written by hand, consuming their input (strings move into `Bytes` without a
//! copy, uniquely owned `Rc`s are unwrapped without a clone). The upcaster converts once
//! around a run of consecutive jq steps, and parses payload text straight into `Val` when
//! a chain starts with jq.

use jaq_core::data::JustLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use std::borrow::Cow;

use jaq_json::{Num, Rc, Val};
#[cfg(test)]
use serde_json::Map;
use serde_json::{Number, Value};

use crate::lite::{Lite, Obj};

type Filter = jaq_core::Filter<JustLut<Val>>;

/// A compiled jq program.
pub(crate) struct JqProgram {
    // jaq's compiled filter is not `Clone`; the catalog is, so share it.
    filter: std::sync::Arc<Filter>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqProgram")
    }
}

impl JqProgram {
    /// Parses and compiles `code` with jaq's core, std and json definitions.
    pub(crate) fn compile(code: &str) -> Result<JqProgram, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let mut messages = Vec::new();
                for (_file, err) in errs {
                    match err {
                        jaq_core::load::Error::Io(io) => {
                            messages.extend(io.into_iter().map(|(path, e)| format!("{path}: {e}")))
                        }
                        jaq_core::load::Error::Lex(lex) => messages.extend(
                            lex.into_iter()
                                .map(|(expect, at)| syntax(code, expect.as_str(), at)),
                        ),
                        jaq_core::load::Error::Parse(parse) => messages.extend(
                            parse
                                .into_iter()
                                .map(|(expect, at)| syntax(code, expect.as_str(), at)),
                        ),
                    }
                }
                format!("jq syntax error: {}", messages.join("; "))
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let undefined: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_file, errs)| errs)
                    .map(|(name, kind)| format!("undefined {} {name}", kind.as_str()))
                    .collect();
                format!("jq compile error: {}", undefined.join("; "))
            })?;
        Ok(JqProgram {
            filter: std::sync::Arc::new(filter),
        })
    }

    /// Runs the program on one value: exactly one output, else an error message.
    pub(crate) fn run(&self, input: Val) -> Result<Val, String> {
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err("jq program yielded no value".to_owned()),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(exception(e)),
        };
        match outputs.next() {
            None => Ok(first),
            Some(Ok(_)) => Err("jq program yielded several values".to_owned()),
            Some(Err(e)) => Err(exception(e)),
        }
    }
}

fn exception(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(err) => format!("jq error: {err}"),
        Err(_) => "jq program halted".to_owned(),
    }
}

/// "expected X at column N, found `...`"; `at` is a slice of `code` (or empty at the end).
fn syntax(code: &str, expected: &str, at: &str) -> String {
    let offset = (at.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
    let found: String = at.chars().take(20).collect();
    if offset <= code.len() {
        let column = code[..offset].chars().count() + 1;
        if found.is_empty() {
            format!("expected {expected} at column {column}, found end of program")
        } else {
            format!("expected {expected} at column {column}, found `{found}`")
        }
    } else {
        format!("expected {expected}, found `{found}`")
    }
}

/// Parses payload text straight into a jaq value (no `serde_json::Value` in between).
pub(crate) fn parse_val(text: &str) -> Result<Val, serde_json::Error> {
    serde_json::from_str::<Val>(text)
}

/// Moves a light JSON object into a jaq object.
pub(crate) fn obj_to_val(obj: Obj<'_>) -> Val {
    let mut map = jaq_json::Map::with_capacity_and_hasher(obj.len(), Default::default());
    for (k, v) in obj.into_members() {
        map.insert(Val::utf8_str(k.into_owned().into_bytes()), lite_to_val(v));
    }
    Val::obj(map)
}

/// Moves a light JSON value into a jaq value.
pub(crate) fn lite_to_val(value: Lite<'_>) -> Val {
    match value {
        Lite::Null => Val::Null,
        Lite::Bool(b) => Val::Bool(b),
        Lite::Num(n) => Val::Num(number_to_num(&n)),
        Lite::Str(s) => Val::utf8_str(s.into_owned().into_bytes()),
        Lite::Arr(items) => Val::Arr(Rc::new(items.into_iter().map(lite_to_val).collect())),
        Lite::Obj(obj) => obj_to_val(obj),
    }
}

fn number_to_num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::from_integral(i)
    } else if let Some(u) = n.as_u64() {
        Num::from_integral(u)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Moves a jaq value that must be an object into a light JSON object.
pub(crate) fn val_into_obj(val: Val) -> Result<Obj<'static>, String> {
    match val {
        Val::Obj(obj) => {
            let obj = unwrap_rc(obj);
            let mut out = Obj::with_capacity(obj.len());
            for (k, v) in obj {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => bytes_to_string(*b),
                    other => {
                        return Err(format!(
                            "jq program yielded an object key that is {}",
                            kind_of(&other)
                        ));
                    }
                };
                out.insert(Cow::Owned(key), val_into_lite(v)?);
            }
            Ok(out)
        }
        other => Err(format!(
            "jq program yielded {}, not an object",
            kind_of(&other)
        )),
    }
}

/// Moves a jaq value into a light JSON value. Non-finite floats become `null`, as jq
/// prints them.
pub(crate) fn val_into_lite(val: Val) -> Result<Lite<'static>, String> {
    Ok(match val {
        Val::Null => Lite::Null,
        Val::Bool(b) => Lite::Bool(b),
        Val::Num(n) => match num_to_value(n) {
            Value::Number(n) => Lite::Num(n),
            _ => Lite::Null,
        },
        Val::TStr(b) | Val::BStr(b) => Lite::Str(Cow::Owned(bytes_to_string(*b))),
        Val::Arr(items) => Lite::Arr(
            unwrap_rc(items)
                .into_iter()
                .map(val_into_lite)
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(_) => Lite::Obj(val_into_obj(val)?),
    })
}

/// Moves a JSON object into a jaq object.
#[cfg(test)]
pub(crate) fn map_to_val(map: Map<String, Value>) -> Val {
    let mut obj = jaq_json::Map::with_capacity_and_hasher(map.len(), Default::default());
    for (k, v) in map {
        obj.insert(Val::utf8_str(k.into_bytes()), value_to_val(v));
    }
    Val::obj(obj)
}

/// Moves a JSON value into a jaq value.
#[cfg(test)]
pub(crate) fn value_to_val(value: Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.into_bytes()),
        Value::Array(items) => Val::Arr(Rc::new(items.into_iter().map(value_to_val).collect())),
        Value::Object(map) => map_to_val(map),
    }
}

#[cfg(test)]
fn obj_into_map(obj: jaq_json::Map) -> Result<Map<String, Value>, String> {
    let mut map = Map::with_capacity(obj.len());
    for (k, v) in obj {
        let key = match k {
            Val::TStr(b) | Val::BStr(b) => bytes_to_string(*b),
            other => {
                return Err(format!(
                    "jq program yielded an object key that is {}",
                    kind_of(&other)
                ));
            }
        };
        map.insert(key, val_into_value(v)?);
    }
    Ok(map)
}

/// Moves a jaq value into a JSON value. Non-finite floats become `null`, as jq prints them.
#[cfg(test)]
pub(crate) fn val_into_value(val: Val) -> Result<Value, String> {
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Num(n) => num_to_value(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(bytes_to_string(*b)),
        Val::Arr(items) => Value::Array(
            unwrap_rc(items)
                .into_iter()
                .map(val_into_value)
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(obj) => Value::Object(obj_into_map(unwrap_rc(obj))?),
    })
}

fn num_to_value(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::from(i as i64),
        Num::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Num::BigInt(b) => {
            let text = b.to_string();
            text.parse::<Number>()
                .ok()
                .filter(|n| !n.is_f64())
                .map(Value::Number)
                .unwrap_or_else(|| {
                    Number::from_f64(text.parse::<f64>().unwrap_or(f64::NAN))
                        .map_or(Value::Null, Value::Number)
                })
        }
        Num::Dec(text) => text
            .parse::<Number>()
            .ok()
            .map(Value::Number)
            .unwrap_or(Value::Null),
    }
}

fn bytes_to_string(b: bytes::Bytes) -> String {
    match String::from_utf8(Vec::from(b)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn unwrap_rc<T: Clone>(rc: Rc<T>) -> T {
    Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone())
}

fn kind_of(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) | Val::BStr(_) => "a string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Value, String> {
        let p = JqProgram::compile(code)?;
        p.run(value_to_val(input)).and_then(val_into_value)
    }

    #[test]
    fn runs_a_program() {
        assert_eq!(
            run("{b: (.a + 1)}", json!({"a": 1})).unwrap(),
            json!({"b": 2})
        );
        assert_eq!(
            run(". + {s: \"x\"}", json!({"a": [1.5, null, true]})).unwrap(),
            json!({"a": [1.5, null, true], "s": "x"})
        );
    }

    #[test]
    fn zero_or_several_outputs_are_errors() {
        assert!(run("empty", json!({})).unwrap_err().contains("no value"));
        assert!(run(".a, .b", json!({})).unwrap_err().contains("several"));
        assert!(
            run("error(\"boom\")", json!({}))
                .unwrap_err()
                .contains("boom")
        );
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let e = JqProgram::compile("{a: .b").unwrap_err();
        assert!(e.starts_with("jq syntax error"), "{e}");
        let e = JqProgram::compile("nosuchfilter(1)").unwrap_err();
        assert!(e.contains("undefined filter nosuchfilter"), "{e}");
    }

    #[test]
    fn round_trips_values() {
        let v = json!({"a": {"b": [1, -2, 2.5, "s", null, false]}, "big": 18446744073709551615u64});
        let back = val_into_value(value_to_val(v.clone())).unwrap();
        assert_eq!(back, v);
        let parsed = parse_val(&v.to_string()).unwrap();
        assert_eq!(val_into_value(parsed).unwrap(), v);
    }
}
