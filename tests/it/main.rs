//! The one integration-test binary: real processes, real servers.

mod archive;
mod cli;
mod deploy;
mod faults;
mod fleet;
mod queue;
mod replay;
mod support;
