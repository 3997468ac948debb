//! Exit codes (docs/CONCEPTS.md, "Exit codes") and how errors map onto them.

/// Success.
pub const SUCCESS: u8 = 0;
/// An operational failure: storage unreachable after retries, a bug.
pub const FAILURE: u8 = 1;
/// Usage or input error found before replay.
pub const USAGE: u8 = 2;
/// Halted, refused by checks, or lost the commit race.
pub const REFUSED: u8 = 3;

/// An error that already knows its exit code (for outcomes that are not a crate error).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Coded {
    /// A usage or input error (exit 2).
    pub fn input(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Coded {
            code: USAGE,
            message: message.into(),
        })
    }
}

/// The exit code for an error: 2 when any error in the chain is the user's to fix.
pub fn code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if cause.downcast_ref::<replayfleet_config::Error>().is_some() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_archive::Error>() {
            return if e.is_input() { USAGE } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_generate::Error>() {
            return if e.is_input() { USAGE } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_contracts::Error>() {
            return if e.is_input() { USAGE } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_coordinator::Error>() {
            return match e {
                replayfleet_coordinator::Error::Halted {
                    by_policy: true, ..
                } => REFUSED,
                replayfleet_coordinator::Error::Finalizer(f) if f.is_refusal() => REFUSED,
                replayfleet_coordinator::Error::Refused(_) => REFUSED,
                e if e.is_input() => USAGE,
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_queue::Error>() {
            // A bad credentials or seed file, a server refusing the fleet's setup.
            return if matches!(e, replayfleet_queue::Error::Invalid { .. }) {
                USAGE
            } else {
                FAILURE
            };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_audit::Error>() {
            return if e.is_input() { USAGE } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<replayfleet_finalizer::Error>() {
            return if e.is_refusal() {
                REFUSED
            } else if e.is_input() {
                USAGE
            } else {
                FAILURE
            };
        }
    }
    FAILURE
}
