//! Arrow errors as replay errors.

use crate::Error;

pub(crate) fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: "-".into(),
        message: e.to_string(),
    }
}
