//! A light JSON value for the upcast's hot path: strings borrowed from the payload's text
//! where it has no escapes, objects as a vector of members in insertion order (a small
//! payload's field is found faster by a scan than by hashing its name), numbers as
//! `serde_json::Number`.
//!
//! It behaves as `serde_json::Value` with `preserve_order` does wherever the upcast can
//! tell: parsing (same errors, a repeated key keeps its first place and its last value),
//! member order under insert and remove, and its JSON text (written through serde, so
//! byte for byte the same). JSON Schema validation runs on it directly: jsonschema's
//! validators are generic over the JSON representation, so the decisions and messages
//! are jsonschema's own.

use std::{borrow::Cow, collections::HashMap, fmt};

use jsonschema::{
    JsonType,
    json::{self, NodeIdentity},
};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One JSON value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Lite<'a> {
    /// `null`
    #[default]
    Null,
    /// `true`, `false`
    Bool(bool),
    /// A number, as serde_json holds it.
    Num(Number),
    /// A string, borrowed from the text it was parsed from when it had no escapes.
    Str(Cow<'a, str>),
    /// An array.
    Arr(Vec<Lite<'a>>),
    /// An object.
    Obj(Obj<'a>),
}

/// Objects with more members than this keep a hash index of their names.
const INDEXED: usize = 32;

/// A JSON object: its members in insertion order.
#[derive(Clone, Default)]
pub struct Obj<'a> {
    members: Vec<(Cow<'a, str>, Lite<'a>)>,
    /// Names to positions, once the object is large (so a hostile payload with many
    /// members cannot make parsing quadratic).
    index: Option<HashMap<String, usize>>,
}

impl PartialEq for Obj<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.members == other.members
    }
}

impl fmt::Debug for Obj<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.members.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<'a> Obj<'a> {
    /// An empty object with room for `capacity` members.
    pub fn with_capacity(capacity: usize) -> Self {
        Obj {
            members: Vec::with_capacity(capacity),
            index: None,
        }
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.members.iter().position(|(k, _)| k == name),
        }
    }

    /// A member's value.
    pub fn get(&self, name: &str) -> Option<&Lite<'a>> {
        self.position(name).map(|i| &self.members[i].1)
    }

    /// A member's value, to change it in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Lite<'a>> {
        self.position(name).map(|i| &mut self.members[i].1)
    }

    /// Sets a member: a name already present keeps its place and takes the new value, a
    /// new one goes last (as `IndexMap::insert`).
    pub fn insert(&mut self, name: Cow<'a, str>, value: Lite<'a>) {
        match self.position(&name) {
            Some(i) => self.members[i].1 = value,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(name.to_string(), self.members.len());
                } else if self.members.len() >= INDEXED {
                    let mut index: HashMap<String, usize> = self
                        .members
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.to_string(), i))
                        .collect();
                    index.insert(name.to_string(), self.members.len());
                    self.index = Some(index);
                }
                self.members.push((name, value));
            }
        }
    }

    /// Removes a member, keeping the others' order (as `IndexMap::shift_remove`).
    pub fn remove(&mut self, name: &str) -> Option<Lite<'a>> {
        let i = self.position(name)?;
        let (_, value) = self.members.remove(i);
        if let Some(index) = &mut self.index {
            index.remove(name);
            for slot in index.values_mut() {
                if *slot > i {
                    *slot -= 1;
                }
            }
        }
        Some(value)
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Lite<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The members, moved out, in order.
    pub fn into_members(self) -> impl Iterator<Item = (Cow<'a, str>, Lite<'a>)> {
        self.members.into_iter()
    }

    /// As a `serde_json` map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.members
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }

    /// Every string owned, so the object outlives the text it was parsed from.
    pub fn into_owned(self) -> Obj<'static> {
        Obj {
            members: self
                .members
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
            index: self.index,
        }
    }

    /// A copy that borrows this one's strings.
    pub fn reborrow(&self) -> Obj<'_> {
        Obj {
            members: self
                .members
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v.reborrow()))
                .collect(),
            index: self.index.clone(),
        }
    }

    /// A JSON object from a `serde_json` map.
    pub fn from_map(map: Map<String, Value>) -> Obj<'static> {
        let mut obj = Obj::with_capacity(map.len());
        for (k, v) in map {
            obj.insert(Cow::Owned(k), Lite::from_value(v));
        }
        obj
    }

    /// The compact JSON text, as `serde_json` writes the same map.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("JSON objects serialize")
    }
}

impl<'a> Lite<'a> {
    /// As a `serde_json` value.
    pub fn to_value(&self) -> Value {
        match self {
            Lite::Null => Value::Null,
            Lite::Bool(b) => Value::Bool(*b),
            Lite::Num(n) => Value::Number(n.clone()),
            Lite::Str(s) => Value::String(s.to_string()),
            Lite::Arr(items) => Value::Array(items.iter().map(Lite::to_value).collect()),
            Lite::Obj(obj) => Value::Object(obj.to_map()),
        }
    }

    /// A light value from a `serde_json` value.
    pub fn from_value(value: Value) -> Lite<'static> {
        match value {
            Value::Null => Lite::Null,
            Value::Bool(b) => Lite::Bool(b),
            Value::Number(n) => Lite::Num(n),
            Value::String(s) => Lite::Str(Cow::Owned(s)),
            Value::Array(items) => Lite::Arr(items.into_iter().map(Lite::from_value).collect()),
            Value::Object(map) => Lite::Obj(Obj::from_map(map)),
        }
    }

    /// Every string owned.
    pub fn into_owned(self) -> Lite<'static> {
        match self {
            Lite::Null => Lite::Null,
            Lite::Bool(b) => Lite::Bool(b),
            Lite::Num(n) => Lite::Num(n),
            Lite::Str(s) => Lite::Str(Cow::Owned(s.into_owned())),
            Lite::Arr(items) => Lite::Arr(items.into_iter().map(Lite::into_owned).collect()),
            Lite::Obj(obj) => Lite::Obj(obj.into_owned()),
        }
    }

    /// A copy that borrows this one's strings (cheap for scalars and strings).
    pub fn reborrow(&self) -> Lite<'_> {
        match self {
            Lite::Null => Lite::Null,
            Lite::Bool(b) => Lite::Bool(*b),
            Lite::Num(n) => Lite::Num(n.clone()),
            Lite::Str(s) => Lite::Str(Cow::Borrowed(s.as_ref())),
            Lite::Arr(items) => Lite::Arr(items.iter().map(Lite::reborrow).collect()),
            Lite::Obj(obj) => Lite::Obj(obj.reborrow()),
        }
    }

    /// `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Lite::Null)
    }

    /// As `Value::as_i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Lite::Num(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The value of an `Int64` typed column (a `type: integer` property): an integer
    /// that fits 64 bits, or an integral float below 9.2e18 in magnitude (JSON Schema
    /// counts `12.0` as an integer); `None` for anything else. The upcast refuses an
    /// event whose integer property has no such value, so a typed column is never null
    /// for a value that was there.
    pub fn as_int64(&self) -> Option<i64> {
        self.as_i64().or_else(|| {
            self.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        })
    }

    /// As `Value::as_f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Lite::Num(n) => n.as_f64(),
            _ => None,
        }
    }

    /// As `Value::as_bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Lite::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// As `Value::as_str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Lite::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The compact JSON text, as `serde_json` writes the same value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("JSON values serialize")
    }
}

impl fmt::Display for Lite<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl serde::Serialize for Lite<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lite::Null => s.serialize_unit(),
            Lite::Bool(b) => s.serialize_bool(*b),
            Lite::Num(n) => n.serialize(s),
            Lite::Str(v) => s.serialize_str(v),
            Lite::Arr(items) => s.collect_seq(items),
            Lite::Obj(obj) => obj.serialize(s),
        }
    }
}

impl serde::Serialize for Obj<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.members.iter().map(|(k, v)| (k.as_ref(), v)))
    }
}

/// Parses a payload's text into a JSON object with room for `capacity` members, or says
/// why it is not one (the messages of `catalog::parse_object`, which parses into a
/// `serde_json` map).
pub fn parse_object(text: &str, capacity: usize) -> Result<Obj<'_>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_map(&mut de, ObjVisitor(capacity))
        .and_then(|obj| de.end().map(|()| obj))
        .map_err(|e| {
            if e.is_data() {
                "payload is not a JSON object".to_owned()
            } else {
                format!("payload is not valid JSON: {e}")
            }
        })
}

struct LiteSeed;

impl<'de> DeserializeSeed<'de> for LiteSeed {
    type Value = Lite<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Lite<'de>, D::Error> {
        d.deserialize_any(LiteVisitor)
    }
}

struct LiteVisitor;

impl<'de> Visitor<'de> for LiteVisitor {
    type Value = Lite<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Lite<'de>, E> {
        Ok(Lite::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Lite<'de>, E> {
        Ok(Lite::Num(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Lite<'de>, E> {
        Ok(Lite::Num(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Lite<'de>, E> {
        Ok(Number::from_f64(v).map_or(Lite::Null, Lite::Num))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }

    fn visit_unit<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Lite<'de>, D::Error> {
        LiteSeed.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lite<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(LiteSeed)? {
            items.push(item);
        }
        Ok(Lite::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lite<'de>, A::Error> {
        ObjVisitor(0).visit_map(map).map(Lite::Obj)
    }
}

struct ObjVisitor(usize);

impl<'de> Visitor<'de> for ObjVisitor {
    type Value = Obj<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    // As `serde_json::Map`'s own visitor (should a deserializer offer a unit).
    fn visit_unit<E>(self) -> Result<Obj<'de>, E> {
        Ok(Obj::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj<'de>, A::Error> {
        let mut obj = Obj::with_capacity(self.0);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(LiteSeed)?;
            obj.insert(key, value);
        }
        Ok(obj)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// jsonschema's view of [`Lite`] values: validators built with
/// `jsonschema::options_for::<LiteJson>()` validate them without a conversion.
pub struct LiteJson;

impl json::Json for LiteJson {
    type Node<'a> = &'a Lite<'a>;
    type PreparedKey = String;
    type StringBuffer = Lite<'static>;

    // Members are a vector: scanning a few names beats building an index.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        buffer: &mut Lite<'static>,
        string: &str,
        f: impl FnOnce(<LiteJson as json::Json>::Node<'_>) -> T,
    ) -> T {
        match &mut *buffer {
            Lite::Str(Cow::Owned(s)) => {
                s.clear();
                s.push_str(string);
            }
            other => *other = Lite::Str(Cow::Owned(string.to_owned())),
        }
        f(buffer)
    }
}

impl<'a> json::Node<'a, LiteJson> for &'a Lite<'a> {
    type Object = &'a Obj<'a>;
    type Array = &'a [Lite<'a>];
    type Number = &'a Number;

    fn as_object(&self) -> Option<&'a Obj<'a>> {
        match self {
            Lite::Obj(obj) => Some(obj),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&'a [Lite<'a>]> {
        match self {
            Lite::Arr(items) => Some(items),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Lite::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self {
            Lite::Num(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        self.as_bool()
    }

    fn is_null(&self) -> bool {
        matches!(self, Lite::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            Lite::Null => JsonType::Null,
            Lite::Bool(_) => JsonType::Boolean,
            Lite::Num(_) => JsonType::Number,
            Lite::Str(_) => JsonType::String,
            Lite::Arr(_) => JsonType::Array,
            Lite::Obj(_) => JsonType::Object,
        }
    }

    fn string_length(&self) -> Option<u64> {
        match self {
            Lite::Str(s) => Some(s.chars().count() as u64),
            _ => None,
        }
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let Lite::Str(s) = self else {
            return None;
        };
        // A code point takes one to four bytes, so the count lies in `ceil(bytes / 4)..=bytes`.
        let bytes = s.len() as u64;
        let fewest = bytes.div_ceil(4);
        if bytes < min || fewest > max {
            return Some(false);
        }
        if min <= fewest && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(s.chars().count() as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (self, expected) {
            (Lite::Str(s), Value::String(e)) => s.as_ref() == e,
            (Lite::Bool(b), Value::Bool(e)) => b == e,
            (Lite::Null, Value::Null) => true,
            (Lite::Num(n), Value::Number(e)) => json::cmp::equal_numbers(n, e),
            (Lite::Arr(_), Value::Array(_)) | (Lite::Obj(_), Value::Object(_)) => {
                json::cmp::equal(&self.to_value(), expected)
            }
            _ => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Lite::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Lite<'a>>(*self) as usize
        ))
    }
}

/// The members of an object, as jsonschema walks them.
pub struct Members<'a>(std::slice::Iter<'a, (Cow<'a, str>, Lite<'a>)>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Lite<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<'a> json::Object<'a, LiteJson> for &'a Obj<'a> {
    type Node = &'a Lite<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.members.len()
    }

    fn get(&self, key: &String) -> Option<&'a Lite<'a>> {
        Obj::get(self, key)
    }

    fn members(&self) -> Members<'a> {
        Members(self.members.iter())
    }
}

impl<'a> json::Array<'a, LiteJson> for &'a [Lite<'a>] {
    type Node = &'a Lite<'a>;
    type ElementsIter = std::slice::Iter<'a, Lite<'a>>;

    fn len(&self) -> usize {
        <[Lite<'a>]>::len(self)
    }

    fn elements(&self) -> std::slice::Iter<'a, Lite<'a>> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_as_serde_json_does() {
        for text in [
            r#"{"b": 1, "a": [2, {"x": null}], "b": 3}"#,
            r#"{"s": "esc\"aped \u00e9", "n": -1.5e3, "u": 18446744073709551615, "i": -9}"#,
            "{}",
            r#"{"deep": {"a": {"b": [true, false]}}}"#,
        ] {
            let lite = parse_object(text, 4).unwrap();
            let serde: Map<String, Value> = serde_json::from_str(text).unwrap();
            assert_eq!(
                lite.to_json(),
                Value::Object(serde.clone()).to_string(),
                "{text}"
            );
            assert_eq!(lite.to_map(), serde, "{text}");
            assert_eq!(Obj::from_map(serde).to_json(), lite.to_json());
        }
        for bad in ["null", "[1]", "42", "\"s\""] {
            assert_eq!(
                parse_object(bad, 0).unwrap_err(),
                "payload is not a JSON object"
            );
        }
        for bad in ["", "{\"a\": 1", "{\"a\": 1} x"] {
            let e = parse_object(bad, 0).unwrap_err();
            let serde = serde_json::from_str::<Map<String, Value>>(bad).unwrap_err();
            assert_eq!(e, format!("payload is not valid JSON: {serde}"));
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"plain": "abc", "escaped": "a\nb"}"#;
        let obj = parse_object(text, 2).unwrap();
        assert!(matches!(
            obj.get("plain"),
            Some(Lite::Str(Cow::Borrowed(_)))
        ));
        assert!(matches!(obj.get("escaped"), Some(Lite::Str(Cow::Owned(_)))));
    }

    #[test]
    fn insert_and_remove_keep_index_map_order() {
        let mut obj = parse_object(r#"{"a": 1, "b": 2, "c": 3}"#, 3).unwrap();
        obj.insert("a".into(), Lite::Bool(true));
        obj.insert("d".into(), Lite::Null);
        assert_eq!(obj.remove("b"), Some(Lite::Num(2.into())));
        assert_eq!(obj.to_json(), r#"{"a":true,"c":3,"d":null}"#);
        // Large objects keep an index; order and lookups stay the same.
        let text = format!(
            "{{{}}}",
            (0..100)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut big = parse_object(&text, 0).unwrap();
        assert_eq!(big.get("k99"), Some(&Lite::Num(99.into())));
        big.remove("k0");
        big.insert("k1".into(), Lite::Null);
        big.insert("new".into(), Lite::Null);
        let mut serde: Map<String, Value> = serde_json::from_str(&text).unwrap();
        serde.shift_remove("k0");
        serde.insert("k1".into(), Value::Null);
        serde.insert("new".into(), Value::Null);
        assert_eq!(big.to_json(), Value::Object(serde).to_string());
        assert_eq!(big.get("k50"), Some(&Lite::Num(50.into())));
        assert_eq!(big.get("k0"), None);
    }

    #[test]
    fn jsonschema_validates_light_values_with_its_own_messages() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["amount_cents", "currency"],
            "properties": {
                "amount_cents": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "minLength": 3, "maxLength": 3, "enum": ["EUR", "USD"]},
                "at": {"type": "string", "format": "date-time"}
            }
        });
        let lite = jsonschema::options_for::<LiteJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let serde = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        for text in [
            r#"{"amount_cents": 5, "currency": "EUR"}"#,
            r#"{"amount_cents": 5.0, "currency": "USD", "at": "2021-01-01T00:00:00Z"}"#,
            r#"{"amount_cents": -5, "currency": "EUR"}"#,
            r#"{"amount_cents": 5, "currency": "GBP"}"#,
            r#"{"amount_cents": "5", "currency": "EUR"}"#,
            r#"{"currency": "EURO"}"#,
            r#"{"amount_cents": 5, "currency": "EUR", "at": "yesterday"}"#,
        ] {
            let obj = Lite::Obj(parse_object(text, 0).unwrap());
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(lite.is_valid(&obj), serde.is_valid(&value), "{text}");
            let mine: Vec<String> = lite.iter_errors(&obj).map(|e| e.to_string()).collect();
            let theirs: Vec<String> = serde.iter_errors(&value).map(|e| e.to_string()).collect();
            assert_eq!(mine, theirs, "{text}");
        }
    }
}
