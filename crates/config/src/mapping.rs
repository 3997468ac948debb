//! How an archive's columns map onto the canonical event envelope (SPEC section 1).

use serde::{Deserialize, Serialize};

/// The canonical envelope columns, in their canonical order.
pub const ENVELOPE_COLUMNS: [&str; 9] = [
    "event_id",
    "stream_id",
    "partition",
    "seq",
    "event_type",
    "schema_version",
    "occurred_at",
    "payload",
    "metadata",
];

/// Which archive column feeds each envelope column (`[source.columns]`).
///
/// Every field defaults to the envelope's own name. `metadata` is optional in
/// archives: when the mapped column is absent, events carry no metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnMapping {
    /// Column holding the unique event id (the idempotency key).
    pub event_id: String,
    /// Column holding the entity/aggregate id.
    pub stream_id: String,
    /// Column holding the archive partition (any integer type).
    pub partition: String,
    /// Column holding the sequence, increasing within a partition (any integer type).
    pub seq: String,
    /// Column holding the event type name.
    pub event_type: String,
    /// Column holding the payload contract version (any integer type).
    pub schema_version: String,
    /// Column holding the event time (any timestamp unit, INT96 too).
    pub occurred_at: String,
    /// Column holding the payload: a JSON string or a Struct.
    pub payload: String,
    /// Column holding metadata as a JSON string; optional in the archive.
    pub metadata: String,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            event_id: "event_id".into(),
            stream_id: "stream_id".into(),
            partition: "partition".into(),
            seq: "seq".into(),
            event_type: "event_type".into(),
            schema_version: "schema_version".into(),
            occurred_at: "occurred_at".into(),
            payload: "payload".into(),
            metadata: "metadata".into(),
        }
    }
}

impl ColumnMapping {
    /// The archive column mapped to an envelope column, by envelope name.
    pub fn archive_column(&self, envelope_column: &str) -> Option<&str> {
        Some(match envelope_column {
            "event_id" => &self.event_id,
            "stream_id" => &self.stream_id,
            "partition" => &self.partition,
            "seq" => &self.seq,
            "event_type" => &self.event_type,
            "schema_version" => &self.schema_version,
            "occurred_at" => &self.occurred_at,
            "payload" => &self.payload,
            "metadata" => &self.metadata,
            _ => return None,
        })
    }

    /// `(envelope column, archive column)` pairs in envelope order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        ENVELOPE_COLUMNS
            .iter()
            .map(move |e| (*e, self.archive_column(e).unwrap_or(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_maps_every_envelope_column_to_itself() {
        let m = ColumnMapping::default();
        for (envelope, archive) in m.pairs() {
            assert_eq!(envelope, archive);
        }
    }

    #[test]
    fn partial_mapping_keeps_defaults_for_the_rest() {
        let m: ColumnMapping = toml::from_str("event_id = \"key\"\nseq = \"offset\"").unwrap();
        assert_eq!(m.event_id, "key");
        assert_eq!(m.seq, "offset");
        assert_eq!(m.stream_id, "stream_id");
        assert!(toml::from_str::<ColumnMapping>("nope = \"x\"").is_err());
    }
}
