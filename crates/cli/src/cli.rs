//! Flags and subcommands (clap derive). The config file says what to replay;
//! these flags say how this process runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Rebuild event-sourced projections from archived history, predictably.
#[derive(Debug, Parser)]
#[command(
    name = "replayfleet",
    version = replayfleet_replay::LONG_VERSION,
    about,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `replayfleet=debug`.
    #[arg(long, global = true, env = "REPLAYFLEET_LOG", default_value = "warn")]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, env = "REPLAYFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Threads of this process: every shard's replay (decoding, dedupe, upcast and the
    /// fold) spreads its work over them. Default: `--workers` for `run`,
    /// the machine's cores otherwise.
    #[arg(long, global = true, env = "REPLAYFLEET_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Who commits, recorded in commits (`committed_by`) and acceptances: a person or a
    /// pipeline. Default: `$USER@host`.
    #[arg(long, global = true, env = "REPLAYFLEET_BY")]
    pub by: Option<String>,
}

impl Cli {
    /// The threads of this process's runtime (`--threads`, or the command's default).
    pub fn threads(&self) -> usize {
        let explicit = self.global.threads.map(usize::from);
        let default = match &self.command {
            Command::Run(args) => Some(args.workers),
            _ => None,
        };
        explicit.or(default).unwrap_or_else(default_workers).max(1)
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List an archive's segments from their Parquet footers: rows, seq ranges,
    /// partitions, bytes, etags, and the (event type, version) pairs present.
    Inventory(InventoryArgs),
    /// Write a synthetic event history with the edge cases real archives have.
    Generate(GenerateArgs),
    /// Check or test a contract catalog.
    #[command(subcommand)]
    Contracts(ContractsCommand),
    /// Dry run: shards, events, bytes, versions present per type, upcaster coverage and
    /// an estimate. Writes nothing unless --out.
    Plan(PlanArgs),
    /// Embedded run: plan, replay with N worker tasks, verify, commit — one process.
    Run(RunArgs),
    /// Verify a run and commit it by hand (idempotent), or refuse with a report.
    Finalize(FinalizeArgs),
    /// The versions of a projection.
    History(HistoryArgs),
    /// Commit a new version whose segments are those of an older version.
    Rollback(RollbackArgs),
    /// Convert a target whose versions are in `_commits/` (written before the Delta log)
    /// into a Delta Lake table: each version becomes the Delta version of the same number.
    Migrate(MigrateArgs),
    /// Fleet coordinator: plan (or resume) a run, publish its leases over NATS, watch the
    /// shards and finalize.
    Coordinator(CoordinatorArgs),
    /// Fleet worker: claim leases over NATS and replay their shards (stateless: each
    /// lease names its run, whose plan is in the target).
    Worker(WorkerArgs),
    /// The kill switch: halt a fleet run for good (its remaining leases are removed; a
    /// run the finalizer already claimed cannot be halted).
    Halt(HaltArgs),
    /// Pause a fleet run: workers claim none of its leases until it is resumed.
    Pause(ControlArgs),
    /// Resume a paused fleet run.
    Resume(ControlArgs),
    /// Progress of a run: from NATS for a fleet run, from the target's run folder otherwise.
    Status(StatusArgs),
    /// Print the first rows of a projection version (the current one by default).
    // `--version N` names a projection version here, as in `explain` and `verify`.
    #[command(disable_version_flag = true)]
    Show(ShowArgs),
    /// Re-check a committed version from the target and the archive alone: re-hash its
    /// segments and input segments, and replay a sample of its shards from the plan's
    /// snapshot into a scratch folder. Exit 3 names every mismatch.
    #[command(disable_version_flag = true)]
    Verify(VerifyArgs),
    /// Delete run folders (and losing attempts of committed runs) that no commit
    /// references and that are older than --older-than; never a file a commit names.
    Gc(GcArgs),
    /// One row of a projection version and every event behind it: event id, seq,
    /// segment, type, input version, each upcaster applied, payload before and after.
    #[command(disable_version_flag = true)]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Serve Prometheus metrics on this address (`/metrics`), e.g. `0.0.0.0:9464`.
    #[arg(long, env = "REPLAYFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The run's backfill.toml (`fleet.nats_url` or --nats names the server).
    #[arg(long, env = "REPLAYFLEET_CONFIG")]
    pub config: PathBuf,
    /// With --metrics-addr: after the outcome, keep serving `/metrics` this long so a
    /// scraper sees the run's final phase (`replayfleet_run_phase`) before the exit.
    #[arg(long, env = "REPLAYFLEET_METRICS_LINGER", default_value = "0s", value_parser = humantime::parse_duration)]
    pub metrics_linger: std::time::Duration,
    /// Resume this run id instead of the config's unfinished run or a new one.
    #[arg(long)]
    pub run: Option<String>,
    /// NATS URL (overrides `fleet.nats_url`).
    #[arg(long, env = "REPLAYFLEET_NATS")]
    pub nats: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Serve Prometheus metrics on this address (`/metrics`), e.g. `0.0.0.0:9464`.
    #[arg(long, env = "REPLAYFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Client certificate for mutual TLS.
    #[arg(long, env = "REPLAYFLEET_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long, env = "REPLAYFLEET_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Replay tasks in this process.
    #[arg(long, env = "REPLAYFLEET_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Lease time-to-live of the fleet's consumer (the coordinator's `fleet.lease_ttl`).
    #[arg(long, env = "REPLAYFLEET_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// On SIGTERM or Ctrl-C: how long to finish the shards in hand (claiming no more)
    /// before abandoning them and releasing their leases for other workers. Keep it
    /// below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "REPLAYFLEET_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
}

/// How to reach the fleet's NATS server.
#[derive(Debug, Args, Clone)]
pub struct NatsArgs {
    /// NATS URL.
    #[arg(long, env = "REPLAYFLEET_NATS")]
    pub nats: String,
    /// A NATS credentials file.
    #[arg(long, env = "REPLAYFLEET_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS user nkey seed (`SU...`), for nkey authentication.
    #[arg(long, env = "REPLAYFLEET_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// CA bundle for the NATS server's certificate.
    #[arg(long, env = "REPLAYFLEET_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The run id.
    #[arg(long)]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct HaltArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Why (recorded in the run state).
    #[arg(long, default_value = "halted by an operator")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// The run (default: the newest run in the target).
    #[arg(long)]
    pub run: Option<String>,
    /// NATS URL, for a fleet run's live progress.
    #[arg(long, env = "REPLAYFLEET_NATS")]
    pub nats: Option<String>,
    /// A NATS credentials file.
    #[arg(long, env = "REPLAYFLEET_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS user nkey seed.
    #[arg(long, env = "REPLAYFLEET_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// CA bundle for the NATS server's certificate.
    #[arg(long, env = "REPLAYFLEET_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Refresh every second until the run ends.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// The version (default: the current one).
    #[arg(long)]
    pub version: Option<u64>,
    /// Rows to print, in key order.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// The version (default: the current one).
    #[arg(long)]
    pub version: Option<u64>,
    /// Share of the shards to replay again, 0 to 1 (at least one shard when above 0).
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub sample: f64,
    /// Seed of the sample (default: the version): the same seed re-runs the same shards.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// Only folders whose newest file is older than this (`7d`, `12h`, `0s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// A key column and its value, `COL=VALUE`; repeat for a composite key.
    #[arg(long = "key", value_name = "COL=VALUE", required = true, value_parser = parse_key_value)]
    pub key: Vec<(String, String)>,
    /// The version (default: the current one).
    #[arg(long)]
    pub version: Option<u64>,
    /// Events to print in full, the first ones in (partition, seq) order (0: all); the
    /// summary counts them all, and `--json` has them all.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("`{s}` is not a fraction between 0 and 1"))
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The run's backfill.toml.
    #[arg(long, env = "REPLAYFLEET_CONFIG")]
    pub config: PathBuf,
    /// Also write the plan (plan.json format) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Serve Prometheus metrics on this address (`/metrics`), e.g. `0.0.0.0:9464`.
    #[arg(long, env = "REPLAYFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The run's backfill.toml.
    #[arg(long, env = "REPLAYFLEET_CONFIG")]
    pub config: PathBuf,
    /// Worker tasks in this process.
    #[arg(long, env = "REPLAYFLEET_WORKERS", default_value_t = default_workers())]
    pub workers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// The run id (`<name>-<ULID>`).
    #[arg(long)]
    pub run: String,
    /// Commit although discrepancy checks (baseline diff, invariants, anomaly budget)
    /// failed; the reason and who gave it go into the commit.
    #[arg(long, value_name = "REASON")]
    pub accept: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The projection's home: a URL or a path.
    #[arg(long, env = "REPLAYFLEET_TARGET")]
    pub target: String,
    /// The version whose segments become current again.
    #[arg(long)]
    pub to: u64,
    /// Why, recorded in the commit (`rollback_reason`) for whoever audits the history.
    #[arg(long)]
    pub reason: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The archive: a URL (file://, s3://, gs://, az://, memory://) or a path.
    #[arg(long, env = "REPLAYFLEET_SOURCE", required_unless_present = "config")]
    pub source: Option<String>,
    /// Take the source URL, its mapping (`[source.columns]`, `key_pattern`, `segments`)
    /// and options from this backfill.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An object_store option for the source, `key=value` (repeatable); credentials
    /// come from `REPLAYFLEET_SOURCE_*` or the provider's environment.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
    /// Show the first N rows of a segment (the first holding N) as the mapping reads them (the
    /// envelope), to check a `[source]` mapping before a run; 0 shows none.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub sample: usize,
    /// Also read every page of every segment as a replay would (every byte fetched and
    /// every row decoded): a corrupt page behind an intact footer, or text that is not
    /// UTF-8, exits 2 naming the segment, before any run.
    #[arg(long)]
    pub verify: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the archive: a URL or a path.
    #[arg(long)]
    pub out: String,
    /// Number of events (before duplicates are added).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Number of archive partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Number of streams (accounts).
    #[arg(long, default_value_t = 1_000)]
    pub streams: u64,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Rows per segment (default: a third of a partition's events).
    #[arg(long)]
    pub segment_rows: Option<u64>,
    /// An object_store option for the output, `key=value` (repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
    /// Switch on every edge case below at its default rate, except conflicting
    /// duplicates and future versions.
    #[arg(long)]
    pub all_edge_cases: bool,
    /// Exact duplicates of earlier events, resent at a later seq [rate, default 0.01].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub duplicates: Option<Option<f64>>,
    /// Same event id, different payload: a conflicting duplicate [rate, default 0.001].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub conflicting_duplicates: Option<Option<f64>>,
    /// Rows out of seq order inside a segment [rate per row, default 0.005].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub out_of_order: Option<Option<f64>>,
    /// Null metadata and null metadata fields [rate, default 0.005].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub nulls: Option<Option<f64>>,
    /// 100 KiB strings in payloads [rate, default 0.0002].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub long_strings: Option<Option<f64>>,
    /// Payload fields no contract declares [rate, default 0.005].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub unknown_fields: Option<Option<f64>>,
    /// Events of types the catalog does not know [rate, default 0.002].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub unknown_types: Option<Option<f64>>,
    /// Payloads that fail their schema [rate, default 0.002].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub invalid_payloads: Option<Option<f64>>,
    /// Events of versions newer than the catalog knows [rate, default 0.001].
    #[arg(long, value_name = "RATE", num_args = 0..=1)]
    pub future_versions: Option<Option<f64>>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ContractsCommand {
    /// Validate a catalog: schemas compile, every version after the first has an
    /// upcaster, jq and SQL steps compile, examples validate.
    Check(ContractsArgs),
    /// Run the schema-upgrade matrix: every example and generated edge cases from
    /// every version to the target; a table of pass/fail per (type, from-version).
    Test(ContractsArgs),
}

#[derive(Debug, Args)]
pub struct ContractsArgs {
    /// The catalog folder.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
