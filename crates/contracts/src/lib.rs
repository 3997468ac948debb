//! replayfleet-contracts
