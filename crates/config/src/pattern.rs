//! Key patterns: which objects of an archive are segments (`source.segments`) and what
//! their keys say (`source.key_pattern`), in one small glob syntax with named captures.
//!
//! | pattern | matches |
//! |---|---|
//! | `{name}` | one or more characters other than `/`, captured as `name` |
//! | `{name:int}` | one or more digits, captured as `name` |
//! | `*` | any characters other than `/` (none too) |
//! | `**` | any characters, `/` included (`**/` also matches no folder at all) |
//! | `{{`, `}}` | a literal `{`, `}` |
//! | anything else | itself |
//!
//! A pattern is matched against a segment's path relative to `source.url`: it matches
//! when it matches the whole path, or a trailing part of it that starts right after a
//! `/`. So `{topic}+{partition:int}+{start_offset:int}.{codec}.parquet` describes the file
//! name wherever the file sits, and `year=*/month=*/**` pins the folders.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A compiled key pattern.
#[derive(Clone)]
pub struct KeyPattern {
    text: String,
    regex: Regex,
    captures: Vec<String>,
}

impl KeyPattern {
    /// Compiles `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<KeyPattern, String> {
        if text.trim().is_empty() {
            return Err("a pattern must not be empty".into());
        }
        if text.starts_with('/') {
            return Err(format!(
                "`{text}` starts with `/`: patterns match paths relative to source.url"
            ));
        }
        let mut regex = String::from("^(?:.*/)?");
        let mut captures: Vec<String> = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, n)| *n) == Some('{') => {
                    chars.next();
                    regex.push_str(r"\{");
                }
                '}' if chars.peek().map(|(_, n)| *n) == Some('}') => {
                    chars.next();
                    regex.push_str(r"\}");
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        format!("`{text}`: the `{{` at character {} is never closed", at + 1)
                    })?;
                    let inside = &rest[..end];
                    let (name, kind) = match inside.split_once(':') {
                        Some((name, kind)) => (name, Some(kind)),
                        None => (inside, None),
                    };
                    if !is_identifier(name) {
                        return Err(format!(
                            "`{text}`: `{{{inside}}}` must name its capture with letters, digits and `_` (not starting with a digit)"
                        ));
                    }
                    if captures.iter().any(|c| c == name) {
                        return Err(format!(
                            "`{text}`: the capture `{name}` appears twice (use `*` for the second)"
                        ));
                    }
                    let class = match kind {
                        None => "[^/]+",
                        Some("int") => "[0-9]+",
                        Some(other) => {
                            return Err(format!(
                                "`{text}`: `{{{inside}}}`: unknown capture kind `{other}` (only `int`)"
                            ));
                        }
                    };
                    regex.push_str(&format!("(?P<{name}>{class})"));
                    captures.push(name.to_owned());
                    for _ in 0..inside.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "`{text}`: unmatched `}}` at character {} (write `}}}}` for a literal one)",
                        at + 1
                    ));
                }
                '*' if chars.peek().map(|(_, n)| *n) == Some('*') => {
                    chars.next();
                    if chars.peek().map(|(_, n)| *n) == Some('/') {
                        chars.next();
                        regex.push_str("(?:.*/)?");
                    } else {
                        regex.push_str(".*");
                    }
                }
                '*' => regex.push_str("[^/]*"),
                other => regex.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
            }
        }
        regex.push('$');
        let regex = Regex::new(&regex).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(KeyPattern {
            text: text.to_owned(),
            regex,
            captures,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The names of its captures, in order.
    pub fn capture_names(&self) -> &[String] {
        &self.captures
    }

    /// Whether `path` (relative to the archive) matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// The captured values of `path`, by name in pattern order; `None` when it does not
    /// match.
    pub fn captures(&self, path: &str) -> Option<Vec<(String, String)>> {
        let found = self.regex.captures(path)?;
        Some(
            self.captures
                .iter()
                .map(|name| (name.clone(), found[name.as_str()].to_owned()))
                .collect(),
        )
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Debug for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPattern({:?})", self.text)
    }
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for KeyPattern {}

impl Serialize for KeyPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for KeyPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        KeyPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `source.key_pattern`: one pattern or a list of them, tried in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatterns(pub Vec<KeyPattern>);

impl KeyPatterns {
    /// No pattern: segment keys say nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, in order.
    pub fn iter(&self) -> impl Iterator<Item = &KeyPattern> {
        self.0.iter()
    }

    /// The captures of the first pattern `path` matches; `None` when none does.
    pub fn captures(&self, path: &str) -> Option<Vec<(String, String)>> {
        self.0.iter().find_map(|p| p.captures(path))
    }

    /// The patterns as written, separated by ` | ` (for messages).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl Serialize for KeyPatterns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KeyPatterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KeyPatterns;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pattern string or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<KeyPatterns, E> {
                KeyPattern::parse(text)
                    .map(|p| KeyPatterns(vec![p]))
                    .map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyPatterns, A::Error> {
                let mut patterns = Vec::new();
                while let Some(p) = seq.next_element::<KeyPattern>()? {
                    patterns.push(p);
                }
                Ok(KeyPatterns(patterns))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The default `source.segments`: every Parquet file.
pub const DEFAULT_SEGMENTS: &str = "*.parquet";

/// `source.segments`: which objects under `source.url` are segments (no captures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SegmentGlob(KeyPattern);

impl SegmentGlob {
    /// Compiles a segment pattern (captures are refused: they would mean nothing here).
    pub fn parse(text: &str) -> Result<SegmentGlob, String> {
        let pattern = KeyPattern::parse(text)?;
        if let Some(name) = pattern.capture_names().first() {
            return Err(format!(
                "`{text}` captures `{name}`: segment patterns select files, captures belong in source.key_pattern"
            ));
        }
        Ok(SegmentGlob(pattern))
    }

    /// Whether the object at `path` (relative to the archive) is a segment.
    pub fn is_match(&self, path: &str) -> bool {
        self.0.is_match(path)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Default for SegmentGlob {
    fn default() -> Self {
        SegmentGlob::parse(DEFAULT_SEGMENTS).expect("the default segment pattern compiles")
    }
}

impl<'de> Deserialize<'de> for SegmentGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SegmentGlob::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        KeyPattern::parse(pattern).unwrap().captures(path)
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn confluent_file_names_anywhere() {
        let p = "{topic}+{partition:int}+{start_offset:int}.{codec}.parquet";
        let want = pairs(&[
            ("topic", "orders"),
            ("partition", "3"),
            ("start_offset", "0000000042"),
            ("codec", "snappy"),
        ]);
        assert_eq!(caps(p, "orders+3+0000000042.snappy.parquet"), want);
        assert_eq!(
            caps(
                p,
                "year=2024/month=01/day=05/hour=13/orders+3+0000000042.snappy.parquet"
            ),
            want
        );
        // A match must start after a `/`, not in the middle of a name.
        assert_eq!(
            caps("b+{p:int}.parquet", "ab+1.parquet"),
            None,
            "no partial names"
        );
    }

    #[test]
    fn greedy_names_back_off_for_int_captures() {
        let p = "{topic}-{partition:int}-{start_offset:int}.parquet";
        assert_eq!(
            caps(p, "prefix/my-orders-0-0000000012.parquet"),
            pairs(&[
                ("topic", "my-orders"),
                ("partition", "0"),
                ("start_offset", "0000000012")
            ])
        );
    }

    #[test]
    fn folders_and_stars() {
        let p = "{topic}/partition={partition:int}/*.parquet";
        assert_eq!(
            caps(p, "orders/partition=7/x.parquet"),
            pairs(&[("topic", "orders"), ("partition", "7")])
        );
        assert_eq!(caps(p, "orders/partition=x/x.parquet"), None);
        let deep = KeyPattern::parse("**/data/*.parquet").unwrap();
        assert!(deep.is_match("data/a.parquet"));
        assert!(deep.is_match("a/b/data/a.parquet"));
        assert!(!deep.is_match("a/b/data/c/a.parquet"));
        let literal = KeyPattern::parse("{{x}}.parquet").unwrap();
        assert!(literal.is_match("{x}.parquet"));
        assert!(literal.capture_names().is_empty());
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, needle) in [
            ("", "empty"),
            ("/abs/*.parquet", "relative"),
            ("{topic", "never closed"),
            ("{1x}.parquet", "letters"),
            ("{a}-{a}.parquet", "twice"),
            ("{a:float}.parquet", "unknown capture kind"),
            ("a}.parquet", "unmatched"),
        ] {
            let err = KeyPattern::parse(p).unwrap_err();
            assert!(err.contains(needle), "{p}: {err}");
        }
        assert!(
            SegmentGlob::parse("{x}.parquet")
                .unwrap_err()
                .contains("captures")
        );
    }

    #[test]
    fn default_segments_are_parquet_files_at_any_depth() {
        let glob = SegmentGlob::default();
        assert!(glob.is_match("a.parquet"));
        assert!(glob.is_match("partition=1/a.parquet"));
        assert!(!glob.is_match("a.parquet.crc"));
    }

    #[test]
    fn key_patterns_are_one_or_many() {
        #[derive(Deserialize)]
        struct T {
            k: KeyPatterns,
        }
        let one: T = toml::from_str("k = \"{a}.parquet\"").unwrap();
        assert_eq!(one.k.0.len(), 1);
        let many: T = toml::from_str("k = [\"{a}.parquet\", \"x/{a}.parquet\"]").unwrap();
        assert_eq!(many.k.captures("x/q.parquet").unwrap()[0].1, "q");
        let err = toml::from_str::<T>("k = \"{a\"").err().unwrap().to_string();
        assert!(err.contains("never closed"), "{err}");
    }
}
