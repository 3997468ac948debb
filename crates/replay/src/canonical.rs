//! Canonical JSON for duplicate detection: "equal as parsed JSON" means equal after
//! sorting object keys, whatever the key order or whitespace of the archive's text.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` with object keys sorted, no whitespace.
pub(crate) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The identity of a row for duplicate detection: stream, type, version and payload
/// as parsed JSON (text that is not JSON counts as itself).
pub(crate) fn identity(
    stream_id: &str,
    event_type: Option<&str>,
    version: Option<i32>,
    payload: Option<&str>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(stream_id.as_bytes());
    h.update([0]);
    h.update(event_type.unwrap_or("\u{0}null").as_bytes());
    h.update([0]);
    h.update(version.map_or_else(|| "null".to_owned(), |v| v.to_string()));
    h.update([0]);
    match payload {
        None => h.update([0xff]),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let mut s = String::with_capacity(text.len());
                write_canonical(&v, &mut s);
                h.update([1]);
                h.update(s.as_bytes());
            }
            Err(_) => {
                h.update([2]);
                h.update(text.as_bytes());
            }
        },
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = identity("s", Some("T"), Some(1), Some(r#"{"a":1,"b":{"x":[1,2]}}"#));
        let b = identity(
            "s",
            Some("T"),
            Some(1),
            Some(r#"{ "b": {"x": [1, 2]}, "a": 1 }"#),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            identity("s", Some("T"), Some(2), Some(r#"{"a":1,"b":{"x":[1,2]}}"#))
        );
        assert_ne!(
            a,
            identity("s", Some("T"), Some(1), Some(r#"{"a":1,"b":{"x":[2,1]}}"#))
        );
    }
}
