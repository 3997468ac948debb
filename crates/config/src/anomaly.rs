//! Anomaly kinds and the policies that handle them (docs/CONFIG.md, "Anomaly policies").

use serde::{Deserialize, Serialize};

/// Every kind of anomaly an event can raise, each with its own policy key
/// under `[checks.anomalies]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// The event's version is older than the catalog's first, or between declared versions.
    NoUpcastPath,
    /// The event type is not in the catalog.
    UnknownType,
    /// The event's version is newer than the catalog's newest.
    UnknownVersion,
    /// The payload is not a JSON object, or fails the target schema after upcasting.
    InvalidPayload,
    /// An upcast step failed on this event (cast, SQL, jq).
    UpcastFailed,
    /// Two rows share an `event_id` but differ in stream, type, version or payload.
    ConflictingDuplicate,
    /// A hole in per-partition offsets (only with `source.contiguous_seq`).
    Gap,
    /// A row a segment holds but that cannot be decoded: a text column's value is not
    /// UTF-8. Quarantined with the value's raw bytes.
    Undecodable,
}

impl AnomalyKind {
    /// All kinds, in policy-key order.
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::NoUpcastPath,
        AnomalyKind::UnknownType,
        AnomalyKind::UnknownVersion,
        AnomalyKind::InvalidPayload,
        AnomalyKind::UpcastFailed,
        AnomalyKind::ConflictingDuplicate,
        AnomalyKind::Gap,
        AnomalyKind::Undecodable,
    ];

    /// The policy key and the name used in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::NoUpcastPath => "no_upcast_path",
            AnomalyKind::UnknownType => "unknown_type",
            AnomalyKind::UnknownVersion => "unknown_version",
            AnomalyKind::InvalidPayload => "invalid_payload",
            AnomalyKind::UpcastFailed => "upcast_failed",
            AnomalyKind::ConflictingDuplicate => "conflicting_duplicate",
            AnomalyKind::Gap => "gap",
            AnomalyKind::Undecodable => "undecodable",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with an event that raised an anomaly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Stop the run (the default for every kind).
    #[default]
    Halt,
    /// Set the event aside in the run's anomalies file; it counts against the budget.
    Quarantine,
    /// Skip the event, count it, and go on.
    Allow,
}
