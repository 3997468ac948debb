//! replayfleet-testkit
