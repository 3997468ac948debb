//! One module per subcommand; each returns the exit code of a completed command.

use crate::cli::{Command, ContractsCommand};

mod audit;
mod contracts;
pub(crate) mod finalize;
mod fleet;
mod generate;
mod history;
mod inventory;
mod plan;
mod run;

/// Runs one subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Inventory(args) => inventory::run(args).await,
        Command::Generate(args) => generate::run(args).await,
        Command::Contracts(ContractsCommand::Check(args)) => contracts::check(args),
        Command::Contracts(ContractsCommand::Test(args)) => contracts::test(args),
        Command::Plan(args) => plan::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Finalize(args) => finalize::run(args).await,
        Command::History(args) => history::history(args).await,
        Command::Rollback(args) => history::rollback(args).await,
        Command::Migrate(args) => history::migrate(args).await,
        Command::Show(args) => history::show(args).await,
        Command::Coordinator(args) => fleet::coordinator(args).await,
        Command::Worker(args) => fleet::worker(args).await,
        Command::Halt(args) => fleet::halt(args).await,
        Command::Pause(args) => fleet::pause(args).await,
        Command::Resume(args) => fleet::resume(args).await,
        Command::Status(args) => fleet::status(args).await,
        Command::Verify(args) => audit::verify(args).await,
        Command::Gc(args) => audit::gc(args).await,
        Command::Explain(args) => audit::explain(args).await,
    }
}
