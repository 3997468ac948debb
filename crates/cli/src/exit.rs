//! Exit codes (docs/CONCEPTS.md, "Exit codes") and how errors map onto them.

use replayfleet_config::ErrorKind;

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

/// The exit code for an error: a [`Coded`] error's own, else the exit code of the kind
/// ([`ErrorKind`]) of the first error in the chain that has one; 1 when none has.
pub fn code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(kind) = kind_of(cause) {
            return kind.exit_code();
        }
    }
    FAILURE
}

/// The kind of an error of one of the crates (each says its own).
pub fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    macro_rules! kinds {
        ($($error:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$error>() {
                    return Some(e.kind());
                }
            )*
        };
    }
    kinds!(
        replayfleet_config::Error,
        replayfleet_archive::Error,
        replayfleet_generate::Error,
        replayfleet_contracts::Error,
        replayfleet_queue::Error,
        replayfleet_replay::Error,
        replayfleet_finalizer::Error,
        replayfleet_coordinator::Error,
        replayfleet_audit::Error,
    );
    None
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
