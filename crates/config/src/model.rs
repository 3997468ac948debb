//! The validated run model and how it is loaded (file, then environment overrides).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AnomalyKind, Error, Policy, Result, SourceMapping,
    raw::{RawConfig, RawPartitionSpec},
    redact_url,
};

/// Prefix of every environment variable the config reads.
pub const ENV_PREFIX: &str = "REPLAYFLEET_";

/// Object-store option names that carry secrets: refused in the file, taken from the
/// environment (`REPLAYFLEET_SOURCE_<OPTION>` / `REPLAYFLEET_TARGET_<OPTION>`).
const SECRET_OPTIONS: [&str; 12] = [
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "azure_storage_account_key",
    "account_key",
    "client_secret",
    "service_account_key",
    "password",
];

/// The run configuration, validated: what to replay.
///
/// Its `Debug` shows URLs through [`redact_url`] and secret store options as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The run's human name.
    pub name: String,
    /// The archive.
    pub source: SourceConfig,
    /// The contract catalog folder (absolute).
    pub contracts_dir: PathBuf,
    /// The projection.
    pub projection: ProjectionConfig,
    /// The projection's home.
    pub target: StoreConfig,
    /// Shards are groups of whole partitions of about this many events.
    pub shard_target_events: u64,
    /// Canary and prefix windows.
    pub window: Window,
    /// Checks before commit.
    pub checks: Checks,
    /// Fleet-wide events per second; 0 is unlimited.
    pub pacing_events_per_second: u64,
    /// NATS and lease settings.
    pub fleet: FleetConfig,
    /// OpenLineage HTTP endpoint.
    pub lineage_url: Option<String>,
    /// OpenLineage namespace of the run's jobs (`lineage.namespace`, default `replayfleet`).
    pub lineage_namespace: String,
    /// Memory per worker in bytes.
    pub memory_limit_bytes: u64,
    /// Where spill files go (`limits.spill_dir`); `None`: the OS temp folder.
    pub spill_dir: Option<PathBuf>,
    /// How many bytes one shard may spill, for its rows and for its projection each
    /// (`limits.spill_max`; default 16 × `limits.memory`).
    pub spill_max_bytes: u64,
    /// The time one shard's projection SQL may run (`limits.projection_time`).
    pub projection_time: Duration,
    /// The time one jq step may run on one event (`limits.step_time`).
    pub step_time: Duration,
    /// How a shard's spilled rows are written (`limits.spill_compression`).
    pub spill_compression: SpillCompression,
    /// The folder relative paths were resolved against (the config file's).
    pub base_dir: PathBuf,
}

/// The archive: where, how its columns map, and its store options.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// A URL, or an absolute path (relative paths are resolved at load).
    pub url: String,
    /// Which objects are segments, what their keys say, and where every envelope
    /// column comes from.
    #[serde(flatten)]
    pub mapping: SourceMapping,
    /// object_store options, secrets from the environment included.
    #[serde(skip_serializing)]
    pub options: BTreeMap<String, String>,
    /// Gap-free per-partition offsets promised.
    pub contiguous_seq: bool,
}

/// A store location with its options.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// A URL, or an absolute path.
    pub url: String,
    /// object_store options, secrets from the environment included.
    #[serde(skip_serializing)]
    pub options: BTreeMap<String, String>,
}

/// The projection: name, key and the fold's SQL text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionConfig {
    /// The projection's name.
    pub name: String,
    /// Unique key columns.
    pub key: Vec<String>,
    /// The SQL (read from `sql_file` when that was given).
    pub sql: String,
}

/// Canary (partition subset) and prefix (seq / time) windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Only these partitions, sorted and deduplicated.
    pub partitions: Option<Vec<i32>>,
    /// Only events with `seq <= until_seq`.
    pub until_seq: Option<i64>,
    /// Only events with `occurred_at <= until_time`.
    pub until_time: Option<DateTime<Utc>>,
}

impl Window {
    /// A windowed run verifies and reports but never commits.
    pub fn is_windowed(&self) -> bool {
        self.partitions.is_some() || self.until_seq.is_some() || self.until_time.is_some()
    }
}

/// Anomaly policies, budget, invariants and the baseline limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// One policy per anomaly kind (every kind present).
    pub anomalies: BTreeMap<AnomalyKind, Policy>,
    /// Quarantined / events read, over the run.
    pub max_quarantined_ratio: f64,
    /// SQL selecting violating rows of `projection`.
    pub invariants: Vec<String>,
    /// Share of keys that may differ from the current version.
    pub max_changed_ratio: f64,
}

impl Checks {
    /// The policy for one kind.
    pub fn policy(&self, kind: AnomalyKind) -> Policy {
        self.anomalies.get(&kind).copied().unwrap_or_default()
    }
}

/// Fleet settings (ignored by the embedded fleet except TTL and attempts).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// NATS URL; `None` runs the embedded fleet.
    pub nats_url: Option<String>,
    /// A NATS credentials file.
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS user nkey seed.
    pub nats_nkey: Option<PathBuf>,
    /// CA bundle for the NATS server's certificate.
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub nats_tls_key: Option<PathBuf>,
    /// Lease time-to-live.
    #[serde(with = "duration_ms")]
    pub lease_ttl: Duration,
    /// Real failures of a shard before the run halts.
    pub max_attempts: u32,
}

/// Store options for `Debug`: the values of secret options as `***`.
struct ShownOptions<'a>(&'a BTreeMap<String, String>);

impl std::fmt::Debug for ShownOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let secret = SECRET_OPTIONS.contains(&k.to_ascii_lowercase().as_str());
                (
                    k,
                    if secret {
                        "***".to_owned()
                    } else {
                        redact_url(v)
                    },
                )
            }))
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("contracts_dir", &self.contracts_dir)
            .field("projection", &self.projection)
            .field("target", &self.target)
            .field("shard_target_events", &self.shard_target_events)
            .field("window", &self.window)
            .field("checks", &self.checks)
            .field("pacing_events_per_second", &self.pacing_events_per_second)
            .field("fleet", &self.fleet)
            .field("lineage_url", &self.lineage_url.as_deref().map(redact_url))
            .field("lineage_namespace", &self.lineage_namespace)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("spill_dir", &self.spill_dir)
            .field("spill_max_bytes", &self.spill_max_bytes)
            .field("projection_time", &self.projection_time)
            .field("step_time", &self.step_time)
            .field("spill_compression", &self.spill_compression)
            .field("base_dir", &self.base_dir)
            .finish()
    }
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redact_url(&self.url))
            .field("mapping", &self.mapping)
            .field("options", &ShownOptions(&self.options))
            .field("contiguous_seq", &self.contiguous_seq)
            .finish()
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("options", &ShownOptions(&self.options))
            .finish()
    }
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("nats_url", &self.nats_url.as_deref().map(redact_url))
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey", &self.nats_nkey)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Config {
    /// Reads `path`, applies `REPLAYFLEET_<SECTION>__<KEY>` overrides and the
    /// `REPLAYFLEET_SOURCE_*` / `REPLAYFLEET_TARGET_*` store secrets from the process
    /// environment, and validates.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parses config text that was read from `path` (used for messages and to resolve
    /// relative paths).
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let env = Env::collect(env)?;
        // First from the text itself, so that errors carry line and column.
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if !env.overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            for (var, keys, value) in &env.overrides {
                set_path(&mut table, keys, value.clone()).map_err(|message| Error::Env {
                    var: var.clone(),
                    message,
                })?;
            }
            raw = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| Error::Env {
                    var: env
                        .overrides
                        .iter()
                        .map(|(v, ..)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message: e.message().to_owned(),
                })?;
        }
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_owned();
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        validate(raw, path, base_dir, &env)
    }

    /// Resolves a path from the file against its folder.
    pub fn resolve_path(&self, relative: &str) -> PathBuf {
        resolve(&self.base_dir, relative)
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// A location string: URLs stay as they are, bare paths become absolute.
fn resolve_location(base: &Path, s: &str) -> String {
    if s.contains("://") {
        s.to_owned()
    } else {
        resolve(base, s).display().to_string()
    }
}

struct Env {
    /// (variable, key path, value)
    overrides: Vec<(String, Vec<String>, toml::Value)>,
    source_options: BTreeMap<String, String>,
    target_options: BTreeMap<String, String>,
}

impl Env {
    fn collect(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut env = Env {
            overrides: Vec::new(),
            source_options: BTreeMap::new(),
            target_options: BTreeMap::new(),
        };
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let rest = &var[ENV_PREFIX.len()..];
            if rest.contains("__") {
                let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
                if keys.iter().any(|k| k.is_empty()) {
                    return Err(Error::Env {
                        var,
                        message: "expected REPLAYFLEET_<SECTION>__<KEY>".into(),
                    });
                }
                env.overrides
                    .push((var.clone(), keys, parse_env_value(&value)));
            } else if let Some(opt) = rest.strip_prefix("SOURCE_") {
                env.source_options.insert(opt.to_ascii_lowercase(), value);
            } else if let Some(opt) = rest.strip_prefix("TARGET_") {
                env.target_options.insert(opt.to_ascii_lowercase(), value);
            }
            // Other REPLAYFLEET_* variables belong to command-line flags.
        }
        Ok(env)
    }
}

/// An override's value as TOML when it parses as one (numbers, booleans, arrays),
/// otherwise as a plain string.
fn parse_env_value(value: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Probe {
        v: toml::Value,
    }
    match toml::from_str::<Probe>(&format!("v = {value}")) {
        Ok(p) => p.v,
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(
    table: &mut toml::Table,
    keys: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut current = table;
    for (i, k) in parents.iter().enumerate() {
        let entry = current
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a section", keys[..=i].join(".")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn validate(raw: RawConfig, path: &Path, base_dir: PathBuf, env: &Env) -> Result<Config> {
    let invalid = |key: &str, message: String| Error::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };

    let name = raw.run.name.trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "run.name",
            format!(
                "`{}` must be non-empty and use only letters, digits, `-`, `_` and `.` (it names run ids)",
                shorten(&raw.run.name)
            ),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "run.name",
            format!(
                "`{}` is {} bytes long; at most {MAX_NAME_BYTES} are allowed (run ids `<name>-<ULID>` name the folder `runs/<run_id>/`, and a file name has at most 255 bytes)",
                shorten(&name),
                name.len()
            ),
        ));
    }

    for (section, options) in [
        ("source", &raw.source.options),
        ("target", &raw.target.options),
    ] {
        for k in options.keys() {
            if SECRET_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    &format!("{section}.options.{k}"),
                    format!(
                        "secrets come only from the environment: set REPLAYFLEET_{}_{} instead",
                        section.to_ascii_uppercase(),
                        k.to_ascii_uppercase()
                    ),
                ));
            }
        }
    }
    let merge = |file: &BTreeMap<String, String>, env: &BTreeMap<String, String>| {
        let mut all = file.clone();
        all.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    };

    if raw.source.url.trim().is_empty() {
        return Err(invalid("source.url", "must not be empty".into()));
    }
    if raw.target.url.trim().is_empty() {
        return Err(invalid("target.url", "must not be empty".into()));
    }
    let mapping = SourceMapping {
        columns: raw.source.columns,
        key_pattern: raw.source.key_pattern,
        segments: raw.source.segments,
    };
    mapping
        .validate()
        .map_err(|(key, message)| invalid(&key, message))?;

    let projection_name = raw.projection.name.trim().to_owned();
    if projection_name.is_empty() {
        return Err(invalid("projection.name", "must not be empty".into()));
    }
    if raw.projection.key.is_empty() {
        return Err(invalid(
            "projection.key",
            "must name at least one column".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for k in &raw.projection.key {
        if !seen.insert(k) {
            return Err(invalid(
                "projection.key",
                format!("column `{k}` is listed twice"),
            ));
        }
    }
    let sql = match (raw.projection.sql, raw.projection.sql_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "projection.sql_file",
                "give either `projection.sql` or `projection.sql_file`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "projection.sql",
                "one of `projection.sql` or `projection.sql_file` is required".into(),
            ));
        }
        (Some(sql), None) => sql,
        (None, Some(file)) => {
            let p = resolve(&base_dir, &file);
            std::fs::read_to_string(&p).map_err(|source| Error::Read { path: p, source })?
        }
    };
    if sql.trim().is_empty() {
        return Err(invalid("projection.sql", "the SQL is empty".into()));
    }

    let shard_target_events = match raw.shards.target_events {
        None => 5_000_000,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(invalid(
                "shards.target_events",
                format!("must be positive, got {n}"),
            ));
        }
    };

    let window = window(raw.window, &invalid)?;
    let checks = checks(raw.checks, &invalid)?;

    let pacing_events_per_second = match raw.pacing.events_per_second {
        None => 0,
        Some(n) if n >= 0 => n as u64,
        Some(n) => {
            return Err(invalid(
                "pacing.events_per_second",
                format!("must be 0 (unlimited) or positive, got {n}"),
            ));
        }
    };

    let lease_ttl = match &raw.fleet.lease_ttl {
        None => Duration::from_secs(30),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            invalid(
                "fleet.lease_ttl",
                format!("`{s}` is not a duration like \"30s\": {e}"),
            )
        })?,
    };
    if lease_ttl < Duration::from_millis(500) {
        return Err(invalid(
            "fleet.lease_ttl",
            format!(
                "{} is too short: leases need at least 500ms",
                humantime::format_duration(lease_ttl)
            ),
        ));
    }
    let projection_time = limit_time(
        raw.limits.projection_time.as_deref(),
        DEFAULT_PROJECTION_TIME,
    )
    .map_err(|m| invalid("limits.projection_time", m))?;
    let step_time = limit_time(raw.limits.step_time.as_deref(), DEFAULT_STEP_TIME)
        .map_err(|m| invalid("limits.step_time", m))?;
    let spill_compression = match raw.limits.spill_compression.as_deref().map(str::trim) {
        None | Some("none") => SpillCompression::None,
        Some("lz4") => SpillCompression::Lz4,
        Some(other) => {
            return Err(invalid(
                "limits.spill_compression",
                format!("`{other}` is not a spill compression: \"none\" or \"lz4\""),
            ));
        }
    };
    let max_attempts = match raw.fleet.max_attempts {
        None => 3,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            return Err(invalid(
                "fleet.max_attempts",
                format!("must be between 1 and 1000, got {n}"),
            ));
        }
    };
    if let Some(url) = &raw.fleet.nats_url
        && !(url.starts_with("nats://")
            || url.starts_with("tls://")
            || url.starts_with("ws://")
            || url.starts_with("wss://")
            || url.contains(':'))
    {
        return Err(invalid(
            "fleet.nats_url",
            format!(
                "`{}` is not a NATS URL (nats://host:4222)",
                shorten(&redact_url(url))
            ),
        ));
    }
    if let Some(url) = &raw.lineage.url {
        let shown = || shorten(&redact_url(url));
        match url::Url::parse(url.trim()) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(parsed) => {
                return Err(invalid(
                    "lineage.url",
                    format!(
                        "`{}` is not an HTTP endpoint: expected http:// or https://, got {}://",
                        shown(),
                        parsed.scheme()
                    ),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    "lineage.url",
                    format!(
                        "`{}` is not a URL ({e}); an OpenLineage endpoint looks like http://marquez:5000",
                        shown()
                    ),
                ));
            }
        }
    }

    // A size setting: bytes as an integer or text ("2GiB"), `default` when absent, at
    // least `min` bytes (`min_text` in messages).
    let size = |key: &str, value: &Option<toml::Value>, default: u64, min: u64, min_text: &str| {
        let bytes = match value {
            None => default,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
            Some(toml::Value::String(s)) => parse_bytes(s).map_err(|m| invalid(key, m))?,
            Some(other) => {
                return Err(invalid(
                    key,
                    format!("expected a size like \"2GiB\", got {other}"),
                ));
            }
        };
        if bytes < min {
            return Err(invalid(key, format!("must be at least {min_text}")));
        }
        Ok(bytes)
    };
    let memory_limit_bytes = size(
        "limits.memory",
        &raw.limits.memory,
        2 << 30,
        64 << 20,
        "64MiB",
    )?;
    let spill_max_bytes = size(
        "limits.spill_max",
        &raw.limits.spill_max,
        memory_limit_bytes.saturating_mul(16),
        1 << 20,
        "1MiB",
    )?;

    let lineage_namespace = raw
        .lineage
        .namespace
        .unwrap_or_else(|| "replayfleet".to_owned());
    if lineage_namespace.trim().is_empty() {
        return Err(invalid("lineage.namespace", "must not be empty".into()));
    }

    let opt_path = |p: &Option<String>| p.as_deref().map(|p| resolve(&base_dir, p));
    if raw
        .limits
        .spill_dir
        .as_deref()
        .is_some_and(|d| d.trim().is_empty())
    {
        return Err(invalid(
            "limits.spill_dir",
            "must not be empty (leave it out for the OS temp folder)".into(),
        ));
    }
    let spill_dir = opt_path(&raw.limits.spill_dir);
    Ok(Config {
        name,
        source: SourceConfig {
            url: resolve_location(&base_dir, &raw.source.url),
            mapping,
            options: merge(&raw.source.options, &env.source_options),
            contiguous_seq: raw.source.contiguous_seq,
        },
        contracts_dir: resolve(&base_dir, &raw.contracts.dir),
        projection: ProjectionConfig {
            name: projection_name,
            key: raw.projection.key,
            sql,
        },
        target: StoreConfig {
            url: resolve_location(&base_dir, &raw.target.url),
            options: merge(&raw.target.options, &env.target_options),
        },
        shard_target_events,
        window,
        checks,
        pacing_events_per_second,
        fleet: FleetConfig {
            nats_url: raw.fleet.nats_url,
            nats_creds: opt_path(&raw.fleet.nats_creds),
            nats_nkey: opt_path(&raw.fleet.nats_nkey),
            nats_tls_ca: opt_path(&raw.fleet.nats_tls_ca),
            nats_tls_cert: opt_path(&raw.fleet.nats_tls_cert),
            nats_tls_key: opt_path(&raw.fleet.nats_tls_key),
            lease_ttl,
            max_attempts,
        },
        lineage_url: raw.lineage.url.map(|u| u.trim().to_owned()),
        lineage_namespace,
        memory_limit_bytes,
        spill_dir,
        spill_max_bytes,
        projection_time,
        step_time,
        spill_compression,
        base_dir,
    })
}

/// `[checks]`: a policy for every anomaly kind (halt when absent), the ratios in 0..=1,
/// no empty invariant.
fn checks(raw: crate::raw::RawChecks, invalid: &dyn Fn(&str, String) -> Error) -> Result<Checks> {
    let a = &raw.anomalies;
    let anomalies: BTreeMap<AnomalyKind, Policy> = [
        (AnomalyKind::NoUpcastPath, a.no_upcast_path),
        (AnomalyKind::UnknownType, a.unknown_type),
        (AnomalyKind::UnknownVersion, a.unknown_version),
        (AnomalyKind::InvalidPayload, a.invalid_payload),
        (AnomalyKind::UpcastFailed, a.upcast_failed),
        (AnomalyKind::ConflictingDuplicate, a.conflicting_duplicate),
        (AnomalyKind::Gap, a.gap),
        (AnomalyKind::Undecodable, a.undecodable),
    ]
    .into_iter()
    .map(|(k, p)| (k, p.unwrap_or_default()))
    .collect();
    let ratio = |key: &str, v: Option<f64>, default: f64| -> Result<f64> {
        let v = v.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(key, format!("must be between 0 and 1, got {v}")));
        }
        Ok(v)
    };
    let max_quarantined_ratio = ratio(
        "checks.anomalies.max_quarantined_ratio",
        a.max_quarantined_ratio,
        0.0,
    )?;
    let max_changed_ratio = ratio(
        "checks.baseline.max_changed_ratio",
        raw.baseline.max_changed_ratio,
        1.0,
    )?;
    for (i, q) in raw.invariants.iter().enumerate() {
        if q.trim().is_empty() {
            return Err(invalid(
                &format!("checks.invariants[{i}]"),
                "is empty".into(),
            ));
        }
    }
    Ok(Checks {
        anomalies,
        max_quarantined_ratio,
        invariants: raw.invariants,
        max_changed_ratio,
    })
}

/// `[window]`: partitions as numbers or ranges, an RFC 3339 `until_time`.
fn window(raw: crate::raw::RawWindow, invalid: &dyn Fn(&str, String) -> Error) -> Result<Window> {
    let partitions = match raw.partitions {
        None => None,
        Some(specs) => {
            let mut out = Vec::new();
            for spec in specs {
                expand_partitions(&spec, &mut out).map_err(|m| invalid("window.partitions", m))?;
            }
            out.sort_unstable();
            out.dedup();
            if out.is_empty() {
                return Err(invalid("window.partitions", "names no partition".into()));
            }
            Some(out)
        }
    };
    let until_time = match raw.until_time {
        None => None,
        Some(toml::Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(&s)
                .map_err(|e| invalid("window.until_time", format!("`{s}` is not RFC 3339: {e}")))?
                .with_timezone(&Utc),
        ),
        Some(toml::Value::Datetime(d)) => {
            let s = d.to_string();
            Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| {
                        invalid(
                            "window.until_time",
                            format!("`{s}` needs a date, a time and an offset (RFC 3339): {e}"),
                        )
                    })?
                    .with_timezone(&Utc),
            )
        }
        Some(other) => {
            return Err(invalid(
                "window.until_time",
                format!("expected an RFC 3339 time, got {other}"),
            ));
        }
    };
    Ok(Window {
        partitions,
        until_seq: raw.until_seq,
        until_time,
    })
}

/// A time limit's value: a duration of at least 1s, `default` when absent; else what is
/// wrong with it.
fn limit_time(text: Option<&str>, default: Duration) -> std::result::Result<Duration, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    let time = humantime::parse_duration(text).map_err(|e| {
        format!(
            "`{text}` is not a duration like \"{}\": {e}",
            humantime::format_duration(default)
        )
    })?;
    if time < Duration::from_secs(1) {
        return Err(format!(
            "{} is too short: at least 1s",
            humantime::format_duration(time)
        ));
    }
    Ok(time)
}

/// How a shard's rows past `limits.memory` are written to their spill files
/// (`limits.spill_compression`): as they are (the default: a spilling shard runs ~16%
/// faster, docs/PERFORMANCE.md), or LZ4-compressed (about half the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpillCompression {
    /// Arrow IPC as it is.
    #[default]
    None,
    /// Arrow IPC with LZ4-framed buffers.
    Lz4,
}

/// The default of `limits.projection_time`: the time one shard's projection may run.
pub const DEFAULT_PROJECTION_TIME: Duration = Duration::from_secs(3600);

/// The default of `limits.step_time`: the time one jq step may run on one event. An
/// honest step runs in microseconds; the iteration budget alone lets one run for about a
/// second.
pub const DEFAULT_STEP_TIME: Duration = Duration::from_secs(60);

/// The longest `run.name`, in bytes: the run id `<name>-<ULID>` (27 bytes more) names a
/// folder, and file names have at most 255 bytes on common file systems.
pub const MAX_NAME_BYTES: usize = 128;

/// `text` as quoted in a message: at most 64 characters, then `…`.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn expand_partitions(
    spec: &RawPartitionSpec,
    out: &mut Vec<i32>,
) -> std::result::Result<(), String> {
    let check = |n: i64| -> std::result::Result<i32, String> {
        i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("partition {n} is out of range"))
    };
    match spec {
        RawPartitionSpec::One(n) => out.push(check(*n)?),
        RawPartitionSpec::Range(s) => {
            let parse = |t: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("`{s}` is not a partition or a range like \"0-3\""))
            };
            match s.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (check(parse(lo)?)?, check(parse(hi)?)?);
                    if lo > hi {
                        return Err(format!("range `{s}` is empty (low end above high end)"));
                    }
                    let width = (hi - lo) as usize + 1;
                    if out.len() + width > MAX_WINDOW_PARTITIONS {
                        return Err(format!(
                            "range `{s}` names {width} partitions; a window names at most {MAX_WINDOW_PARTITIONS}"
                        ));
                    }
                    out.extend(lo..=hi);
                }
                None => out.push(check(parse(s)?)?),
            }
        }
    }
    Ok(())
}

/// The most partitions `window.partitions` may name (its ranges are expanded in memory).
const MAX_WINDOW_PARTITIONS: usize = 1_000_000;

/// Parses "2GiB", "512MiB", "1.5GB", "1048576".
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like \"2GiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" | "ki" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" | "mi" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" | "gi" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" | "ti" => 1 << 40,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    Ok((num * mult as f64) as u64)
}

/// The object_store options of the process environment for one store role: every
/// `REPLAYFLEET_SOURCE_<OPTION>` (role `source`) or `REPLAYFLEET_TARGET_<OPTION>` (role
/// `target`) variable, the option name lowercased. Commands that work from a run's plan
/// rather than a config file (`finalize`, `verify`, workers) take credentials from here.
pub fn store_options_from_env(role: &str) -> BTreeMap<String, String> {
    let prefix = format!("{ENV_PREFIX}{}_", role.to_ascii_uppercase());
    std::env::vars()
        .filter_map(|(k, v)| {
            let opt = k.strip_prefix(&prefix)?;
            (!opt.is_empty() && !opt.contains("__")).then(|| (opt.to_ascii_lowercase(), v))
        })
        .collect()
}
