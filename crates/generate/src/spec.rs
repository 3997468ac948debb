//! What to generate: sizes, seed, and the edge-case switches.

use chrono::{DateTime, Utc};

use crate::{Error, Result};

/// The shape of a synthetic history.
///
/// `events` counts *original* events: every row that is not a resend. Duplicates and
/// conflicting duplicates are written on top of them, so an archive holds
/// `events + duplicates + conflicting_duplicates` rows (see [`GenerateSummary`](crate::GenerateSummary)).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSpec {
    /// Original events to write (resends come on top).
    pub events: u64,
    /// Archive partitions; streams are spread over them by an FNV-1a hash of their id.
    pub partitions: u32,
    /// Streams (accounts) `acc-000001`, `acc-000002`, ...; they open one after another
    /// over the history, so when `events < streams` only `events` of them appear.
    pub streams: u64,
    /// The seed: the same seed and spec give byte-identical files.
    pub seed: u64,
    /// Rows per segment; `None` cuts each partition into three segments (rows / 3 rounded up).
    pub segment_rows: Option<u64>,
    /// `occurred_at` of the first event; the history spans about three years from here.
    pub start_time: DateTime<Utc>,
    /// Which edge cases to mix in, and how often.
    pub edge: EdgeCases,
}

impl GenerateSpec {
    /// A spec with the default segment size, start time (2020-01-01T00:00:00Z) and no edge cases.
    pub fn new(events: u64, partitions: u32, streams: u64, seed: u64) -> Self {
        Self {
            events,
            partitions,
            streams,
            seed,
            segment_rows: None,
            start_time: default_start_time(),
            edge: EdgeCases::none(),
        }
    }

    /// The same spec with `edge` as its edge cases.
    pub fn with_edge_cases(mut self, edge: EdgeCases) -> Self {
        self.edge = edge;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidSpec(reason));
        if self.partitions == 0 || self.partitions > i32::MAX as u32 {
            return invalid(format!(
                "partitions must be between 1 and {}, got {}",
                i32::MAX,
                self.partitions
            ));
        }
        if self.streams == 0 || self.streams > u64::from(u32::MAX) {
            return invalid(format!(
                "streams must be between 1 and {}, got {}",
                u32::MAX,
                self.streams
            ));
        }
        if self.events > i64::MAX as u64 / 2 {
            return invalid(format!("events must be below {}", i64::MAX / 2));
        }
        if self.segment_rows == Some(0) {
            return invalid("segment_rows must be at least 1".into());
        }
        self.edge.validate()
    }
}

impl Default for GenerateSpec {
    /// 100,000 events over 8 partitions and 10,000 streams, seed 42, no edge cases.
    fn default() -> Self {
        Self::new(100_000, 8, 10_000, 42)
    }
}

/// 2020-01-01T00:00:00Z.
pub fn default_start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_577_836_800, 0).expect("a valid constant timestamp")
}

/// Edge-case switches: each is a rate in `0.0..=1.0`, `0.0` meaning off.
///
/// Rates apply per original event (per row of a segment for `out_of_order`), drawn
/// independently, so a small archive may get none of a rare case. The
/// [`EdgeCases::all()`] rates are the `DEFAULT_*` constants.
///
/// Which rows stay valid: only `invalid_payloads` produces payloads that fail their
/// version's schema, `unknown_types` produces types the catalog does not know and
/// `future_versions` versions it does not know. Neither of them, nor a conflicting
/// copy, moves a balance, so a replay that quarantines them gets a consistent
/// projection. `nulls`, `long_strings` and `unknown_fields` keep payloads valid.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EdgeCases {
    /// Originals resent as exact duplicates (same `event_id`, stream, type, version and
    /// payload) at a later `seq` of the same partition, with `"resent": true` in their
    /// metadata; about half land in the same segment, half later.
    pub duplicates: f64,
    /// Originals resent with the same `event_id` but a different payload (a `memo` of
    /// `"amended"`): the halt case. Not part of [`EdgeCases::all()`].
    pub conflicting_duplicates: f64,
    /// Per row of a segment: swapped with a neighbour up to three rows on, `seq` unchanged.
    pub out_of_order: f64,
    /// Originals whose metadata is a null (half) or has a null `correlation_id` (half).
    /// Payloads never get an explicit null from this switch: no schema of the example
    /// catalog admits one, so explicit payload nulls are an `invalid_payloads` flavour.
    pub nulls: f64,
    /// Deposits/withdrawals whose `memo` is a string of 100 KiB ([`LONG_STRING_CHARS`](crate::LONG_STRING_CHARS)).
    pub long_strings: f64,
    /// Valid events with an extra payload field `x_legacy_field` (schemas allow extra properties).
    pub unknown_fields: f64,
    /// Events of types the catalog does not know (`LoyaltyPointsAwarded`, `AddressChanged`).
    pub unknown_types: f64,
    /// Deposits/withdrawals whose payload fails its version's schema: a wrong type, a
    /// missing or null required field, a null `memo`, a broken constraint.
    pub invalid_payloads: f64,
    /// Deposits/withdrawals of version 3, newer than the catalog knows. Not part of
    /// [`EdgeCases::all()`].
    pub future_versions: f64,
}

impl EdgeCases {
    /// Default rate of [`EdgeCases::duplicates`] in [`EdgeCases::all()`].
    pub const DEFAULT_DUPLICATES: f64 = 0.01;
    /// Default rate of [`EdgeCases::conflicting_duplicates`] when switched on.
    pub const DEFAULT_CONFLICTING_DUPLICATES: f64 = 0.001;
    /// Default rate of [`EdgeCases::out_of_order`] in [`EdgeCases::all()`].
    pub const DEFAULT_OUT_OF_ORDER: f64 = 0.005;
    /// Default rate of [`EdgeCases::nulls`] in [`EdgeCases::all()`].
    pub const DEFAULT_NULLS: f64 = 0.005;
    /// Default rate of [`EdgeCases::long_strings`] in [`EdgeCases::all()`]: rarer than the
    /// others because each costs 100 KiB (0.02% of 1M events is 20 MB of memos).
    pub const DEFAULT_LONG_STRINGS: f64 = 0.0002;
    /// Default rate of [`EdgeCases::unknown_fields`] in [`EdgeCases::all()`].
    pub const DEFAULT_UNKNOWN_FIELDS: f64 = 0.005;
    /// Default rate of [`EdgeCases::unknown_types`] in [`EdgeCases::all()`].
    pub const DEFAULT_UNKNOWN_TYPES: f64 = 0.002;
    /// Default rate of [`EdgeCases::invalid_payloads`] in [`EdgeCases::all()`].
    pub const DEFAULT_INVALID_PAYLOADS: f64 = 0.002;
    /// Default rate of [`EdgeCases::future_versions`] when switched on.
    pub const DEFAULT_FUTURE_VERSIONS: f64 = 0.001;

    /// No edge cases: a clean history (the `Default`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every edge case a replay must survive without halting, at its default rate:
    /// duplicates, out-of-order rows, nulls, long strings, unknown fields, unknown types
    /// and invalid payloads. Conflicting duplicates and future versions stay off.
    pub fn all() -> Self {
        Self {
            duplicates: Self::DEFAULT_DUPLICATES,
            conflicting_duplicates: 0.0,
            out_of_order: Self::DEFAULT_OUT_OF_ORDER,
            nulls: Self::DEFAULT_NULLS,
            long_strings: Self::DEFAULT_LONG_STRINGS,
            unknown_fields: Self::DEFAULT_UNKNOWN_FIELDS,
            unknown_types: Self::DEFAULT_UNKNOWN_TYPES,
            invalid_payloads: Self::DEFAULT_INVALID_PAYLOADS,
            future_versions: 0.0,
        }
    }

    fn rates(&self) -> [(&'static str, f64); 9] {
        [
            ("duplicates", self.duplicates),
            ("conflicting_duplicates", self.conflicting_duplicates),
            ("out_of_order", self.out_of_order),
            ("nulls", self.nulls),
            ("long_strings", self.long_strings),
            ("unknown_fields", self.unknown_fields),
            ("unknown_types", self.unknown_types),
            ("invalid_payloads", self.invalid_payloads),
            ("future_versions", self.future_versions),
        ]
    }

    fn validate(&self) -> Result<()> {
        for (name, rate) in self.rates() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidSpec(format!(
                    "edge case rate `{name}` must be within 0..=1, got {rate}"
                )));
            }
        }
        // These draw from one roll each, so they share the unit interval.
        if self.duplicates + self.conflicting_duplicates > 1.0 {
            return Err(Error::InvalidSpec(
                "duplicates + conflicting_duplicates must not exceed 1".into(),
            ));
        }
        if self.unknown_types + self.invalid_payloads + self.future_versions > 1.0 {
            return Err(Error::InvalidSpec(
                "unknown_types + invalid_payloads + future_versions must not exceed 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_leaves_the_halting_cases_off() {
        let all = EdgeCases::all();
        assert_eq!(all.conflicting_duplicates, 0.0);
        assert_eq!(all.future_versions, 0.0);
        assert!(all.duplicates > 0.0 && all.invalid_payloads > 0.0);
        assert!(all.validate().is_ok());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut spec = GenerateSpec::new(10, 0, 1, 0);
        assert!(spec.validate().is_err());
        spec.partitions = 1;
        assert!(spec.validate().is_ok());
        spec.segment_rows = Some(0);
        assert!(spec.validate().is_err());
        spec.segment_rows = None;
        spec.edge.nulls = 1.5;
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("nulls"), "{err}");
        spec.edge = EdgeCases {
            unknown_types: 0.6,
            invalid_payloads: 0.6,
            ..EdgeCases::none()
        };
        assert!(spec.validate().is_err());
    }

    #[test]
    fn default_start_is_2020() {
        assert_eq!(
            default_start_time().to_rfc3339(),
            "2020-01-01T00:00:00+00:00"
        );
    }
}
