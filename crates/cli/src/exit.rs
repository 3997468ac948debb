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

/// An error and its causes on one line, `a: b: c`, a cause left out when the message
/// before it says it already (errors that print their source, as `cannot read `f`: No
/// such file or directory`, would otherwise say it twice).
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_already_says_is_not_said_twice() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = anyhow::Error::new(io).context("cannot read `f`: No such file");
        assert_eq!(super::message(&err), "cannot read `f`: No such file");
        let err = anyhow::anyhow!("the cause").context("the context");
        assert_eq!(super::message(&err), "the context: the cause");
    }
}
