//! The one integration-test binary: real processes, real servers.

mod archive;
mod audit;
mod cli;
mod crash;
mod delta;
mod deploy;
mod engine;
mod faults;
mod fleet;
mod hostile;
mod openlineage;
mod queue;
mod replay;
mod schemas;
mod sources;
mod storage;
mod support;
