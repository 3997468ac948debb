//! What kind of failure an error is, in the manner of Quickwit's storage error kinds: every
//! crate's error says its kind, and exit codes and retries are decided from kinds alone.

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The user's to fix: the config, the contracts, the SQL, the archive's content, a
    /// path that does not exist. Never retried; exit 2.
    Input,
    /// May succeed when tried again: storage or NATS unreachable, throttled, timed out.
    /// Retried within its budget; exit 1 once the budget is spent.
    Transient,
    /// Refused on purpose: a `halt` policy or an operator halted the run, the checks
    /// refused it, another finalizer won the commit race. Never retried; exit 3.
    Refused,
    /// Anything else: a failure of the machine or a bug. Exit 1.
    Internal,
}

impl ErrorKind {
    /// The process exit code an error of this kind ends a command with.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 2,
            ErrorKind::Refused => 3,
            ErrorKind::Transient | ErrorKind::Internal => 1,
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn kinds_decide_exit_codes_and_retries() {
        assert_eq!(ErrorKind::Input.exit_code(), 2);
        assert_eq!(ErrorKind::Refused.exit_code(), 3);
        assert_eq!(ErrorKind::Transient.exit_code(), 1);
        assert_eq!(ErrorKind::Internal.exit_code(), 1);
        assert!(ErrorKind::Transient.is_retryable());
        assert!(!ErrorKind::Input.is_retryable() && !ErrorKind::Internal.is_retryable());
    }
}
