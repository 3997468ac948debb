//! replayfleet-generate
